"""Figures that compare the cells of a study: accuracy vs cost, training curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["accuracy_vs_gflops", "training_curves"]


def accuracy_vs_gflops(summary: pd.DataFrame) -> Figure:
    """Mean top-1 (error bars: seed standard deviation) against GFLOPs at the profiling size.

    Stems without a profile are placed at their training-size GFLOPs; stems without accuracy
    are left out.
    """
    rows = summary.dropna(subset=["top1_mean"])
    x_column = "gflops" if rows["gflops"].notna().any() else "train_gflops"
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    for _, row in rows.iterrows():
        x = row[x_column]
        if pd.isna(x):
            continue
        std = row["top1_std"] if pd.notna(row["top1_std"]) else 0.0
        ax.errorbar(x, 100 * row["top1_mean"], yerr=100 * std, fmt="o", capsize=4)
        label = (
            row["stem"] if rows["backbone"].nunique() == 1 else f"{row['backbone']}/{row['stem']}"
        )
        ax.annotate(
            label,
            (x, 100 * row["top1_mean"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel("GFLOPs (profiling input)" if x_column == "gflops" else "GFLOPs (training input)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Accuracy vs cost (error bars: seed std)")
    ax.grid(alpha=0.3)
    return fig


def training_curves(epochs: pd.DataFrame) -> Figure:
    """Validation top-1 and training loss per epoch, one line per stem (mean over seeds)."""
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    if not epochs.empty:
        for (backbone, stem), rows in epochs.groupby(["backbone", "stem"], sort=False):
            label = stem if epochs["backbone"].nunique() == 1 else f"{backbone}/{stem}"
            by_epoch = rows.groupby("epoch")
            mean_acc = 100 * by_epoch["val_top1"].mean()
            (line,) = ax_acc.plot(mean_acc.index, mean_acc.values, marker="o", ms=3, label=label)
            ax_acc.fill_between(
                mean_acc.index,
                100 * by_epoch["val_top1"].min(),
                100 * by_epoch["val_top1"].max(),
                color=line.get_color(),
                alpha=0.15,
            )
            loss = by_epoch["train_loss"].mean()
            ax_loss.plot(
                loss.index, loss.values, marker="o", ms=3, color=line.get_color(), label=label
            )
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation top-1 (%) — band: min..max over seeds")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_acc.grid(alpha=0.3)
    ax_loss.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)
    return fig
