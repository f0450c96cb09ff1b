"""Plain-words accuracy findings, for callers outside a study folder.

The report's findings come from its sections (:mod:`stemlab.report.sections`); this module
gives the accuracy section's findings for a bare ``cells`` table: every comparison is a row of
the declared family (each stem vs the reference, or all pairs), Holm-adjusted, with
simultaneous intervals; everything else is "not distinguishable at n=...".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = ["accuracy_findings", "findings"]


def accuracy_findings(
    cells: pd.DataFrame,
    *,
    baseline: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Findings about top-1 from the per-seed training cells.

    Args:
        cells: the study's ``cells`` table (kind, status, backbone, stem, seed, top1).
        baseline: the reference stem (overrides ``config["baseline"]``).
        config: the study config (``comparisons``, ``seeds``, ``training``...).

    Returns:
        Sentences (Markdown allowed).
    """
    from stemlab.report.sections.accuracy import SECTION
    from stemlab.report.study_report import build_view

    if cells.empty or "top1" not in cells:
        return ["No training cell finished, so there is no accuracy to compare."]
    config = dict(config or {})
    if baseline is not None:
        config["baseline"] = baseline
    view = build_view(config, {"cells": cells})
    return SECTION.findings(view)


def findings(
    summary: pd.DataFrame,
    options: Mapping[str, Any] | None = None,
    *,
    cells: pd.DataFrame | None = None,
) -> list[str]:
    """Accuracy findings (kept for callers of the first API; see :func:`accuracy_findings`).

    Args:
        summary: the study summary (unused beyond an emptiness check when ``cells`` is given).
        options: ``{"baseline": stem}``.
        cells: the per-seed ``cells`` table; required for any statistical claim.

    Returns:
        Sentences.
    """
    options = dict(options or {})
    if cells is None:
        return [
            "Per-seed results are needed to compare stems; only a summary was given, so no "
            "difference is claimed."
        ]
    return accuracy_findings(cells, baseline=options.get("baseline"))
