"""Plain-words findings from a study's summary table: what the numbers show, and how sure they are."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

__all__ = ["findings"]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def findings(summary: pd.DataFrame, options: Mapping[str, Any] | None = None) -> list[str]:
    """Sentences describing ``summary`` (one row per backbone x stem).

    Differences in accuracy are called real only when they exceed the sum of the two seed
    standard deviations; with fewer than two seeds per stem no accuracy difference is called real.

    Args:
        summary: the study's ``summary`` table.
        options: ``{"baseline": stem, "temporal": [stems]}`` to compare a group against a baseline.

    Returns:
        A list of sentences (Markdown allowed).
    """
    options = dict(options or {})
    lines: list[str] = []
    trained = summary.dropna(subset=["top1_mean"]) if "top1_mean" in summary else summary.iloc[:0]
    if trained.empty:
        return ["No cell finished training, so there is no accuracy to compare."]
    if trained["backbone"].nunique() > 1 and trained.groupby("backbone").size().max() == 1:
        return [*_backbone_ranking(trained), *_costs(summary), *_attribution(trained)]
    for backbone, rows in trained.groupby("backbone", sort=False):
        rows = rows.sort_values("top1_mean", ascending=False)
        best = rows.iloc[0]
        seeds = int(rows["n_seeds"].min())
        lines.append(
            f"On `{backbone}`, the most accurate stem is **{best['stem']}** "
            f"({_pct(best['top1_mean'])} top-1, mean of {int(best['n_seeds'])} seed(s)); "
            f"the least accurate is **{rows.iloc[-1]['stem']}** ({_pct(rows.iloc[-1]['top1_mean'])})."
        )
        if seeds < 2:
            lines.append(
                "Each stem was trained with fewer than two seeds, so the seed spread is unknown and "
                "no accuracy difference here can be called real."
            )
        baseline = options.get("baseline")
        if baseline is not None and baseline in set(rows["stem"]):
            lines += _against_baseline(rows, baseline, list(options.get("temporal", [])), seeds)
    lines += _costs(summary)
    lines += _attribution(trained)
    return lines


def _backbone_ranking(trained: pd.DataFrame) -> list[str]:
    """One stem per backbone: rank the backbones and compare the best with the rest."""
    rows = trained.sort_values("top1_mean", ascending=False)
    seeds = int(rows["n_seeds"].min())
    ranking = ", ".join(f"`{r.backbone}` ({r.stem}) {_pct(r.top1_mean)}" for r in rows.itertuples())
    lines = [f"Backbones ranked by top-1 (mean of {seeds}+ seed(s)): {ranking}."]
    if seeds < 2:
        lines.append(
            "With fewer than two seeds per backbone no difference here can be called real."
        )
        return lines
    best = rows.iloc[0]
    below = [
        f"`{row['backbone']}` (-{100 * (best['top1_mean'] - row['top1_mean']):.1f} points)"
        for _, row in rows.iloc[1:].iterrows()
        if best["top1_mean"] - row["top1_mean"] > _spread(best) + _spread(row)
    ]
    if below:
        lines.append(
            f"`{best['backbone']}` beats, by more than the seed spread: {', '.join(below)}; the other "
            "differences are within the seed spread."
        )
    else:
        lines.append("No backbone beats the others by more than the seed spread.")
    return lines


def _spread(row: pd.Series) -> float:
    std = row.get("top1_std")
    return float(std) if _finite(std) else float("nan")


def _against_baseline(rows: pd.DataFrame, baseline: str, group: list[str], seeds: int) -> list[str]:
    base = rows[rows["stem"] == baseline].iloc[0]
    group = [s for s in group if s in set(rows["stem"])] or [
        s for s in rows["stem"] if s != baseline
    ]
    clear, unclear, worse = [], [], []
    for stem in group:
        row = rows[rows["stem"] == stem].iloc[0]
        diff = float(row["top1_mean"] - base["top1_mean"])
        spread = _spread(row) + _spread(base)
        text = f"{stem} ({'+' if diff >= 0 else ''}{100 * diff:.1f} points)"
        if seeds >= 2 and _finite(spread) and abs(diff) > spread:
            (clear if diff > 0 else worse).append(text)
        else:
            unclear.append(text)
    lines = []
    total = len(group)
    if clear:
        lines.append(
            f"{len(clear)} of {total} compared stems beat the `{baseline}` stem "
            f"({_pct(base['top1_mean'])}) by more than the seed spread (sum of the two seed standard "
            f"deviations): {', '.join(clear)}."
        )
    if worse:
        lines.append(f"Stems below `{baseline}` by more than the seed spread: {', '.join(worse)}.")
    if unclear:
        lines.append(
            f"Within the seed spread of `{baseline}` (no difference can be claimed): {', '.join(unclear)}."
        )
    return lines


def _costs(summary: pd.DataFrame) -> list[str]:
    if "gflops" not in summary or summary["gflops"].isna().all():
        return []
    profiled = summary.dropna(subset=["gflops"]).drop_duplicates("stem")
    reference = profiled[profiled["stem"] == "basic"]
    reference = reference.iloc[0] if not reference.empty else profiled.iloc[0]
    cheapest = profiled.loc[profiled["gflops"].idxmin()]
    dearest = profiled.loc[profiled["gflops"].idxmax()]
    return [
        f"At the profiling size the stems span {cheapest['gflops']:.2f} GFLOPs (`{cheapest['stem']}`) "
        f"to {dearest['gflops']:.2f} GFLOPs (`{dearest['stem']}`), "
        f"{dearest['gflops'] / reference['gflops']:.2f}x the `{reference['stem']}` model's; "
        f"parameters range from {profiled['params'].min() / 1e6:.2f} M to "
        f"{profiled['params'].max() / 1e6:.2f} M. These counts are exact (fvcore, one FMA = one flop)."
    ]


def _attribution(trained: pd.DataFrame) -> list[str]:
    if "gradcam_on_object" not in trained or trained["gradcam_on_object"].isna().all():
        return []
    rows = trained.dropna(subset=["gradcam_on_object"])
    area = float(rows["object_area"].mean()) if "object_area" in rows else float("nan")
    best = rows.loc[rows["gradcam_on_object"].idxmax()]
    worst = rows.loc[rows["gradcam_on_object"].idxmin()]
    chance = f"; a map spread uniformly would put {_pct(area)} there" if _finite(area) else ""
    if _finite(area) and area > 0 and best["gradcam_on_object"] < 1.25 * area:
        return [
            f"Grad-CAM puts {_pct(worst['gradcam_on_object'])} to {_pct(best['gradcam_on_object'])} "
            f"of its mass on the moving object{chance}: no stem's map localises the object better "
            "than a uniform map, so these numbers say nothing about where the models look (check "
            "the size of the Grad-CAM layer's maps at this input size)."
        ]
    return [
        f"Grad-CAM puts {_pct(worst['gradcam_on_object'])} (`{worst['stem']}`) to "
        f"{_pct(best['gradcam_on_object'])} (`{best['stem']}`) of its mass on the moving object"
        f"{chance}. This is measured on a few validation clips per seed; read it as a tendency."
    ]
