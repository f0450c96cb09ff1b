"""Sweep: every arm over the shared hyperparameter samples (``tables/sweep.csv``).

Arms are compared as distributions (Radosavovic et al. 2019): the EDF of each arm's test error
over the sweep samples, the validation and test top-1 against the learning rate, and findings
paired over samples (each sample is one shared (lr, weight decay) setting; its value is the mean
over the sweep seeds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stemlab.probes.contract import FigureSpec
from stemlab.report.sections import ReportView, StudySection, register_section
from stemlab.report.sections._common import (
    arms,
    family_table,
    finished,
    pct,
    row_sentence,
    short_sentences,
)

__all__ = ["SECTION", "per_sample", "sweep_edf", "sweep_lr"]


def _with_test_top1(view: ReportView, sweep: pd.DataFrame) -> pd.DataFrame:
    """``sweep`` with ``test_top1`` filled from the sweep cells' ``top1`` (test top-1 at the final
    budget) where the table left it empty."""
    cells = view.cells
    keys = ["backbone", "stem", "seed", "sample"]
    if "test_top1" in sweep and sweep["test_top1"].notna().all():
        return sweep
    if cells.empty or "top1" not in cells or not set(keys) <= set(cells.columns):
        return sweep.assign(test_top1=sweep.get("test_top1"))
    done = cells[(cells["kind"] == "sweep") & (cells["status"] == "ok")][[*keys, "top1"]]
    done = done.astype({"seed": "Int64", "sample": "Int64"})
    merged = sweep.astype({"seed": "Int64", "sample": "Int64"}).merge(done, on=keys, how="left")
    if "test_top1" in merged:
        merged["test_top1"] = pd.to_numeric(merged["test_top1"], errors="coerce").fillna(
            merged["top1"]
        )
    else:
        merged["test_top1"] = merged["top1"]
    return merged.drop(columns=["top1"])


def per_sample(view: ReportView) -> pd.DataFrame:
    """One row per (backbone, stem, sample): lr, weight_decay, and the mean over the sweep seeds
    of val_top1 / test_top1 (``n_seeds``: seeds averaged; ``selected``: the arm's setting)."""
    sweep = finished(view.tables.get("sweep", pd.DataFrame()))
    columns = ["backbone", "stem", "sample", "lr", "weight_decay", "val_top1", "test_top1"]
    if sweep.empty:
        return pd.DataFrame(columns=[*columns, "n_seeds", "selected"])
    sweep = _with_test_top1(view, sweep).dropna(subset=["test_top1"])
    grouped = sweep.groupby(["backbone", "stem", "sample"], sort=False)
    frame = grouped.agg(
        lr=("lr", "first"),
        weight_decay=("weight_decay", "first"),
        val_top1=("val_top1", "mean"),
        test_top1=("test_top1", "mean"),
        n_seeds=("seed", "nunique"),
        selected=("selected", "max") if "selected" in sweep else ("lr", lambda s: False),
    ).reset_index()
    frame["selected"] = frame["selected"].astype(bool)
    return frame


def _arm_rows(view: ReportView, frame: pd.DataFrame):
    for backbone, stem in arms(view):
        rows = frame[(frame["backbone"] == backbone) & (frame["stem"] == stem)]
        if len(rows):
            yield view.label(backbone, stem), rows


def sweep_edf(view: ReportView) -> Figure:
    """Each arm's empirical distribution of test error over the sweep samples.

    x: test error (%, 100 - test top-1; mean over the sweep seeds of a sample), y: fraction of
    the arm's samples with at most that error. A dot marks the selected sample; dashed: chance.
    """
    frame = per_sample(view)
    figure = Figure(figsize=(8.4, 4.6), layout="constrained")
    ax = figure.subplots()
    for i, (label, rows) in enumerate(_arm_rows(view, frame)):
        error = np.sort(100 * (1 - rows["test_top1"].to_numpy(float)))
        fraction = np.arange(1, len(error) + 1) / len(error)
        color = f"C{i % 10}"
        ax.step(
            np.concatenate([[error[0]], error]), np.concatenate([[0.0], fraction]),
            where="post", color=color, lw=1.8, label=f"{label} ({len(error)} samples)",
        )  # fmt: skip
        chosen = rows[rows["selected"]]
        for value in 100 * (1 - chosen["test_top1"].to_numpy(float)):
            ax.plot(
                [value], [np.searchsorted(error, value, side="right") / len(error)], "o",
                color=color, ms=6, markeredgecolor="black",
            )  # fmt: skip
    if view.chance is not None:
        ax.axvline(100 * (1 - view.chance), color="gray", ls="--", lw=1, label="chance error")
    ax.set_xlabel("test error (%), mean over the sweep seeds of a sample")
    ax.set_ylabel("cumulative fraction of sweep samples")
    ax.set_ylim(0, 1.02)
    ax.set_title(
        "Test-error EDF over the shared hyperparameter samples\n(dot: the arm's setting "
        "selected on validation)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    figure.legend(loc="outside right center", fontsize=8)
    return figure


def sweep_lr(view: ReportView) -> Figure:
    """Validation and test top-1 against the learning rate, one line per arm (per-sample means;
    star: the selected sample; dashed: chance)."""
    frame = per_sample(view)
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for i, (label, rows) in enumerate(_arm_rows(view, frame)):
        rows = rows.sort_values("lr", kind="stable")
        color = f"C{i % 10}"
        for ax, column in zip(axes, ("val_top1", "test_top1")):
            ax.plot(rows["lr"], 100 * rows[column], marker="o", ms=3, color=color, label=label)
            chosen = rows[rows["selected"]]
            ax.plot(
                chosen["lr"], 100 * chosen[column], ls="none", marker="*", ms=12, color=color,
                markeredgecolor="black",
            )  # fmt: skip
    for ax, what in zip(axes, ("validation", "test")):
        if view.chance is not None:
            ax.axhline(
                100 * view.chance, color="gray", ls="--", lw=1,
                label=f"chance ({100 * view.chance:.0f}%)",
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_title(f"{what.capitalize()} top-1 per sweep sample (star: selected)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("top-1 (%), mean over the sweep seeds")
    axes[0].set_ylim(0, 102)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=8)
    return figure


def comparison_table(view: ReportView) -> pd.DataFrame:
    """The declared family on test top-1 over the sweep, paired by sample."""
    return family_table(
        view, per_sample(view), "test_top1", pair_by="sample", replicate="sample",
        test="sign_flip",
    )  # fmt: skip


def _space(view: ReportView) -> str:
    sweep = view.config.get("sweep") or {}
    parts = []
    for name in ("lr", "weight_decay"):
        value = sweep.get(name)
        if isinstance(value, (list, tuple)) and value and value[0] == "log":
            parts.append(f"{name} log-uniform in [{value[1]:g}, {value[2]:g}]")
        elif isinstance(value, (list, tuple)) and value:
            parts.append(f"{name} in {{{', '.join(f'{v:g}' for v in value)}}}")
    return "; ".join(parts)


def _findings(view: ReportView) -> list[str]:
    frame = per_sample(view)
    if frame.empty:
        return ["No sweep cell finished, so no arm can be described over the sweep."]
    n = frame.groupby(["backbone", "stem"])["sample"].nunique()
    seeds = int(frame["n_seeds"].max())
    space = _space(view)
    lines = [
        f"Sweep: {int(n.min())}{'' if n.min() == n.max() else f'-{int(n.max())}'} shared "
        f"hyperparameter samples per arm{' (' + space + ')' if space else ''}, {seeds} seed(s) "
        "each; each arm's setting is selected on validation top-1 only (tie: lower validation "
        "loss), and test top-1 is never read to select."
    ]
    parts = []
    for label, rows in _arm_rows(view, frame):
        error = 100 * (1 - rows["test_top1"])
        chosen = rows[rows["selected"]]
        text = f"`{label}` median {error.median():.1f}%, best {error.min():.1f}%"
        if len(chosen):
            row = chosen.iloc[0]
            text += (
                f", selected lr {row['lr']:.3g}"
                + (f" wd {row['weight_decay']:.2g}" if pd.notna(row["weight_decay"]) else "")
                + f" (validation {pct(row['val_top1'])})"
            )
        parts.append(text)
    lines.append("Test error over the sweep samples: " + "; ".join(parts) + ".")
    table = comparison_table(view)
    if len(table):
        lines.append(
            f"Over the sweep distribution (paired by sample; {table.attrs['family']}): "
            + "; ".join(row_sentence(r, replicate="sample") for _, r in table.iterrows())
            + "."
        )
    return lines


def _headline(view: ReportView) -> list[str]:
    table = comparison_table(view)
    if table.empty:
        return []
    return short_sentences(table, what="over the sweep samples")


def _figures(view: ReportView) -> list[FigureSpec]:
    if per_sample(view).empty:
        return []
    return [
        FigureSpec(
            "sweep_edf",
            "Empirical distribution of each arm's test error over the shared sweep samples "
            "(x: test error in %, the mean over the sweep seeds of one sample; y: cumulative "
            "fraction of samples; Radosavovic et al. 2019). A curve to the left and above is "
            "better over the whole design space; dots: the setting selected on validation; "
            "dashed: chance error.",
            lambda: sweep_edf(view),
        ),
        FigureSpec(
            "sweep_lr",
            "Validation (left) and test (right) top-1 of each sweep sample against its learning "
            "rate (mean over the sweep seeds; star: the sample selected on validation; dashed: "
            "chance).",
            lambda: sweep_lr(view),
        ),
    ]


SECTION = register_section(
    StudySection(
        name="sweep",
        title="Sweep",
        description="Every arm over the same hyperparameter samples (tables/sweep.csv).",
        tables=("sweep",),
        figures=_figures,
        findings=_findings,
        headline=_headline,
        order=2,
    )
)
