"""Figures that compare the cells of a study: accuracy vs cost, training curves."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["accuracy_vs_gflops", "training_curves"]


def _labels(frame: pd.DataFrame) -> list[str]:
    if frame["backbone"].nunique() == 1:
        return [str(s) for s in frame["stem"]]
    return [f"{b}/{s}" for b, s in zip(frame["backbone"], frame["stem"])]


def accuracy_vs_gflops(
    summary: pd.DataFrame, *, chance: float | None = None, intervals: pd.DataFrame | None = None
) -> Figure:
    """Mean top-1 of the trained models against their own GFLOPs (one training clip).

    Args:
        summary: the study summary (``top1_mean``, ``train_gflops``, ``top1_std``).
        chance: accuracy of guessing (``1 / classes``), drawn as a dashed line.
        intervals: optional ``label -> (ci_low, ci_high)`` of the mean (columns ``label``,
            ``ci_low``, ``ci_high``) used as error bars instead of the seed std.

    Returns:
        The figure.
    """
    rows = summary.dropna(subset=["top1_mean"]).copy()
    rows["label"] = _labels(rows)
    figure = Figure(figsize=(8.2, 4.6), layout="constrained")
    ax = figure.subplots()
    has_x = "train_gflops" in rows and rows["train_gflops"].notna().any()
    xs = rows["train_gflops"].to_numpy(dtype=float) if has_x else np.arange(len(rows), dtype=float)
    # dodge points that would sit on top of each other
    span = np.nanmax(xs) - np.nanmin(xs) if len(xs) > 1 else 1.0
    step = 0.012 * (span if span > 0 else 1.0)
    shown = xs.copy()
    order = np.argsort(xs, kind="stable")
    for previous, current in itertools.pairwise(order):
        if shown[current] - shown[previous] < step:
            shown[current] = shown[previous] + step
    by_label = intervals.set_index("label") if intervals is not None and len(intervals) else None
    for i, row in enumerate(rows.itertuples()):
        x, y = shown[i], 100 * row.top1_mean
        if np.isnan(x):
            continue
        if by_label is not None and row.label in by_label.index:
            low = max(0.0, 100 * by_label.loc[row.label, "ci_low"])
            high = min(100.0, 100 * by_label.loc[row.label, "ci_high"])
            yerr = [[y - low], [high - y]]
        else:
            std = row.top1_std if pd.notna(row.top1_std) else 0.0
            yerr = [[min(y, 100 * std)], [min(100 - y, 100 * std)]]
        color = f"C{i % 10}"
        ax.errorbar(x, y, yerr=yerr, fmt="o", capsize=4, color=color, label=row.label)
        ax.annotate(row.label, (x, y), xytext=(6, -3), textcoords="offset points", fontsize=7)
    if chance is not None:
        ax.axhline(100 * chance, color="gray", ls="--", lw=1, label=f"chance ({100 * chance:.0f}%)")
    ax.set_xlabel(
        "GFLOPs of the trained CPU-scale model (one training clip)"
        if has_x
        else "model (no FLOPs probe)"
    )
    ax.set_ylabel("validation top-1 (%)")
    bars = "95% CI of the mean over seeds" if by_label is not None else "seed std"
    ax.set_title(f"Accuracy vs cost (error bars: {bars}, clipped to 0-100%)", fontsize=10)
    ax.set_ylim(0, 104)
    ax.grid(alpha=0.3)
    figure.legend(loc="outside right center", fontsize=8)
    return figure


def training_curves(epochs: pd.DataFrame, *, chance: float | None = None) -> Figure:
    """Validation top-1 and training loss per epoch, one line per stem (mean over seeds).

    The band is the min..max over seeds; epochs are whole numbers on the x axis.
    """
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_loss = figure.subplots(1, 2)
    if not epochs.empty:
        single = epochs["backbone"].nunique() == 1
        for i, ((backbone, stem), rows) in enumerate(
            epochs.groupby(["backbone", "stem"], sort=False)
        ):
            label = stem if single else f"{backbone}/{stem}"
            by_epoch = rows.groupby("epoch")
            mean_acc = 100 * by_epoch["val_top1"].mean()
            color = f"C{i % 10}"
            ax_acc.plot(mean_acc.index, mean_acc.values, marker="o", ms=3, label=label, color=color)
            ax_acc.fill_between(
                mean_acc.index,
                100 * by_epoch["val_top1"].min(),
                100 * by_epoch["val_top1"].max(),
                color=color,
                alpha=0.12,
            )
            loss = by_epoch["train_loss"].mean()
            ax_loss.plot(loss.index, loss.values, marker="o", ms=3, color=color)
    if chance is not None:
        ax_acc.axhline(100 * chance, color="gray", ls="--", lw=1, label="chance")
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        if not epochs.empty and epochs["epoch"].nunique() <= 12:
            ticks = sorted(int(e) for e in epochs["epoch"].unique())
            ax.set_xticks(ticks)
            ax.set_xlim(ticks[0] - 0.5, ticks[-1] + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
    ax_acc.set_ylabel("validation top-1 (%)")
    ax_acc.set_title("Validation top-1 (band: min..max over seeds)", fontsize=10)
    ax_loss.set_ylabel("training loss (mean over seeds)")
    ax_loss.set_title("Training loss", fontsize=10)
    figure.legend(*ax_acc.get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    return figure
