"""The weights report: one row per model tensor (and per unused checkpoint tensor)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

__all__ = ["ACTIONS", "COLUMNS", "Action", "ReportRow", "build_report", "summarize_report"]

Action = Literal["loaded", "transferred", "initialized", "skipped"]
ACTIONS: tuple[Action, ...] = ("loaded", "transferred", "initialized", "skipped")
COLUMNS: tuple[str, ...] = ("key", "action", "detail", "shape", "source")


@dataclass(frozen=True)
class ReportRow:
    """What happened to one tensor.

    Attributes:
        key: the model's state-dict key (for ``"skipped"``: the checkpoint's key).
        action: ``"loaded"`` (copied as is), ``"transferred"`` (computed from checkpoint tensors),
            ``"initialized"`` (the model's own or a set init value) or ``"skipped"`` (a checkpoint
            tensor nothing used).
        detail: a human-readable explanation (shapes, exactness, reconstruction error...).
        shape: the tensor's shape (the model's; the checkpoint's for skipped rows).
        source: the checkpoint keys the value came from, comma-separated ("" when none).
    """

    key: str
    action: Action
    detail: str
    shape: tuple[int, ...]
    source: str = ""


def build_report(
    rows: Iterable[ReportRow], *, attrs: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Rows -> a DataFrame with :data:`COLUMNS`; ``attrs`` lands in ``DataFrame.attrs``."""
    frame = pd.DataFrame(
        [(r.key, r.action, r.detail, r.shape, r.source) for r in rows], columns=list(COLUMNS)
    )
    frame.attrs.update(attrs or {})
    return frame


def summarize_report(report: pd.DataFrame) -> str:
    """One line of counts, e.g. ``"120 loaded, 3 transferred, 2 initialized, 0 skipped"``."""
    counts = report["action"].value_counts()
    return ", ".join(f"{int(counts.get(action, 0))} {action}" for action in ACTIONS)
