"""Plain-words findings: only what :func:`stemlab.report.compare` supports, with intervals.

Accuracy differences are stated with their 95% interval and Holm-adjusted p-value (paired by
seed); a ranking is claimed only between significantly different rows, everything else is called
"not distinguishable at n=...". Each probe adds its own findings through the probe contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from stemlab.report.stats import compare, describe

__all__ = ["accuracy_findings", "findings"]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _model_text(backbone: str, config: Mapping[str, Any]) -> str:
    kwargs = (config.get("backbones") or {}).get(backbone) or {}
    scale = ""
    if kwargs.get("widths"):
        scale = " (stages " + "/".join(str(w) for w in kwargs["widths"]) + ")"
    return f"the CPU-scale `{backbone}`{scale} trained here"


def accuracy_findings(
    cells: pd.DataFrame,
    *,
    baseline: str | None = None,
    config: Mapping[str, Any] | None = None,
    alpha: float = 0.05,
) -> list[str]:
    """Findings about top-1 from the per-seed training cells.

    Args:
        cells: the study's ``cells`` table (kind, status, backbone, stem, seed, top1).
        baseline: the reference stem (each other stem is compared with it).
        config: the study config (for how the trained model is described).
        alpha: family-wise error rate of each group of comparisons.

    Returns:
        Sentences (Markdown allowed).
    """
    config = config or {}
    if cells.empty or "top1" not in cells:
        return ["No cell finished training, so there is no accuracy to compare."]
    trained = cells[(cells["kind"] == "train") & (cells["status"] == "ok")].dropna(subset=["top1"])
    if trained.empty:
        return ["No cell finished training, so there is no accuracy to compare."]
    lines: list[str] = []
    if (
        trained["backbone"].nunique() > 1
        and trained.groupby("backbone")["stem"].nunique().max() == 1
    ):
        return _backbone_ordering(trained, alpha)
    for backbone, rows in trained.groupby("backbone", sort=False):
        stems = list(dict.fromkeys(rows["stem"]))
        if len(stems) < 2:
            continue
        means = rows.groupby("stem", sort=False)["top1"].mean().sort_values(ascending=False)
        n = int(rows.groupby("stem")["seed"].nunique().min())
        lines.append(
            f"On {_model_text(backbone, config)}, mean top-1 over {n} seed(s) ranges from "
            f"{_pct(means.iloc[-1])} (`{means.index[-1]}`) to {_pct(means.iloc[0])} "
            f"(`{means.index[0]}`)."
        )
        reference = baseline if baseline in stems else stems[0]
        table = compare(rows, metric="top1", by="stem", baseline=reference, alpha=alpha)
        above = table[table["significant"] & (table["diff"] > 0)]
        below = table[table["significant"] & (table["diff"] < 0)]
        unclear = table[~table["significant"]]
        m = len(table)
        if len(above):
            lines.append(
                f"Better than `{reference}` ({len(above)} of {m}, Holm over {m} comparisons): "
                + "; ".join(describe(r) for _, r in above.iterrows())
                + "."
            )
        if len(below):
            lines.append(
                f"Worse than `{reference}`: "
                + "; ".join(describe(r) for _, r in below.iterrows())
                + "."
            )
        if len(unclear):
            lines.append(
                f"Not distinguishable from `{reference}` at n={n}: "
                + "; ".join(describe(r) for _, r in unclear.iterrows())
                + "."
            )
        lines += _top_group(rows, means, alpha, n)
    return lines


def _top_group(rows: pd.DataFrame, means: pd.Series, alpha: float, n: int) -> list[str]:
    """Which stems the most accurate one is, and is not, distinguishable from (all pairs)."""
    if len(means) < 3:
        return []
    table = compare(rows, metric="top1", by="stem", alpha=alpha)
    best = means.index[0]
    involving = table[(table["a"] == best) | (table["b"] == best)]
    tied = [
        r["b"] if r["a"] == best else r["a"]
        for _, r in involving.iterrows()
        if not r["significant"]
    ]
    beaten = [
        r["b"] if r["a"] == best else r["a"] for _, r in involving.iterrows() if r["significant"]
    ]
    text = f"Highest mean top-1: `{best}` ({_pct(means.iloc[0])}). Over all {len(table)} pairs (Holm), "
    if tied:
        text += (
            f"it is not distinguishable at n={n} from {', '.join(f'`{s}`' for s in tied)}"
            + (f" and significantly above {', '.join(f'`{s}`' for s in beaten)}" if beaten else "")
            + "; no single best stem can be named."
        )
    else:
        text += "it is significantly above every other stem."
    return [text]


def _backbone_ordering(trained: pd.DataFrame, alpha: float) -> list[str]:
    """One stem per backbone: order the backbones and say which pairs differ."""
    means = trained.groupby("backbone", sort=False)["top1"].mean().sort_values()
    n = int(trained.groupby("backbone")["seed"].nunique().min())
    table = compare(trained, metric="top1", by="backbone", alpha=alpha)
    order = " < ".join(f"`{b}` {_pct(v)}" for b, v in means.items())
    lines = [f"Backbones ordered by mean top-1 over {n} seed(s): {order}."]
    significant = table[table["significant"]]
    if len(significant):
        lines.append(
            f"Significant pairs (Holm over {len(table)}): "
            + "; ".join(describe(r) for _, r in significant.iterrows())
            + "."
        )
    rest = table[~table["significant"]]
    lines += _loss_ordering(trained, alpha, n)
    if len(rest):
        lines.append(
            f"Not distinguishable at n={n}: "
            + "; ".join(
                f"`{r['a']}` vs `{r['b']}` (p_adj {r['p_adjusted']:.2g})"
                for _, r in rest.iterrows()
            )
            + "; the order among these is not established."
        )
    return lines


def _loss_ordering(trained: pd.DataFrame, alpha: float, n: int) -> list[str]:
    """How far each backbone's training got in the same budget: its last-epoch training loss."""
    if "train_loss" not in trained or trained["train_loss"].isna().all():
        return []
    means = trained.groupby("backbone", sort=False)["train_loss"].mean().sort_values()
    table = compare(trained, metric="train_loss", by="backbone", alpha=alpha)
    significant = table[table["significant"]]
    text = (
        "Final training loss in the same budget (lower: optimised further): "
        + " < ".join(f"`{b}` {v:.3f}" for b, v in means.items())
        + f"; significant pairs (Holm over {len(table)}): "
    )
    if len(significant):
        text += "; ".join(
            describe(r, scale=1.0, unit="", digits=3) for _, r in significant.iterrows()
        )
    else:
        text += f"none at n={n}"
    return [text + "."]


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
