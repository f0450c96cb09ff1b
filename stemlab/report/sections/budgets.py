"""Budgets: learning curves of the reported cells and whether the ranking changes with budget.

Reads ``tables/budgets.csv`` (one row per budget epoch per cell; the reported cells are those of
kind ``train``), else the per-epoch history ``tables/epochs.csv``. Training loss is always shown
beside validation loss and the gap between them; it is never read as "optimisation" alone.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stemlab.probes.contract import FigureSpec
from stemlab.report.sections import ReportView, StudySection, register_section
from stemlab.report.sections._common import arms, family_table, finished, pct

__all__ = ["SECTION", "curves", "learning_curves", "ranking_by_budget"]


def curves(view: ReportView) -> pd.DataFrame:
    """Per-epoch rows of the reported (training) cells: backbone, stem, seed, epoch and what of
    train_loss, val_top1, val_loss, test_top1, test_loss the study recorded."""
    budgets = finished(view.tables.get("budgets", pd.DataFrame()))
    if not budgets.empty:
        if "kind" in budgets:
            budgets = budgets[budgets["kind"] == "train"]
        return budgets
    epochs = view.tables.get("epochs", pd.DataFrame())
    if epochs.empty:
        return epochs
    trained = view.trained()
    if not trained.empty and "key" in epochs and "key" in trained:
        epochs = epochs[epochs["key"].isin(set(trained["key"]))]
    return epochs


def _budget_epochs(view: ReportView, frame: pd.DataFrame) -> list[int]:
    declared = view.config.get("budgets")
    present = sorted(int(e) for e in frame["epoch"].dropna().unique())
    if declared:
        return [int(e) for e in declared if int(e) in present]
    return present


def learning_curves(view: ReportView) -> Figure:
    """Top-1 (validation, test) and loss (training, validation, their gap) per epoch, one colour
    per arm: mean over seeds, band min..max over seeds; dashed: chance."""
    frame = curves(view)
    accuracy = [c for c in ("val_top1", "test_top1") if c in frame and frame[c].notna().any()]
    losses = [c for c in ("train_loss", "val_loss") if c in frame and frame[c].notna().any()]
    panels = [*accuracy, *(["loss"] if losses else []), *(["gap"] if len(losses) == 2 else [])]
    figure = Figure(figsize=(3.6 * max(len(panels), 1) + 1.6, 3.9), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, max(len(panels), 1)))
    titles = {
        "val_top1": "Validation top-1 (%)",
        "test_top1": "Test top-1 (%)",
        "loss": "Loss (solid: training, dashed: validation)",
        "gap": "Validation minus training loss",
    }
    chance_line = None
    ticks = sorted(int(e) for e in frame["epoch"].dropna().unique()) if len(frame) else []
    for i, (backbone, stem) in enumerate(arms(view)):
        rows = frame[(frame["backbone"] == backbone) & (frame["stem"] == stem)]
        if rows.empty:
            continue
        color = f"C{i % 10}"
        label = view.label(backbone, stem)
        by_epoch = rows.groupby("epoch")
        for ax, panel in zip(axes, panels):
            if panel in ("val_top1", "test_top1"):
                series = [(panel, 100.0, "-")]
            elif panel == "loss":
                series = [(c, 1.0, "-" if c == "train_loss" else "--") for c in losses]
            else:
                gap = rows.assign(gap=rows["val_loss"] - rows["train_loss"]).groupby("epoch")
                mean = gap["gap"].mean()
                ax.plot(mean.index, mean.values, marker="o", ms=3, color=color)
                ax.fill_between(
                    mean.index, gap["gap"].min(), gap["gap"].max(), color=color, alpha=0.12
                )
                continue
            for column, scale, style in series:
                mean = scale * by_epoch[column].mean()
                ax.plot(
                    mean.index, mean.values, marker="o", ms=3, color=color, ls=style,
                    label=label if (ax is axes[0] and style == "-") else None,
                )  # fmt: skip
                ax.fill_between(
                    mean.index, scale * by_epoch[column].min(), scale * by_epoch[column].max(),
                    color=color, alpha=0.12,
                )  # fmt: skip
    for ax, panel in zip(axes, panels):
        ax.set_title(titles[panel], fontsize=10)
        ax.set_xlabel("epoch")
        if ticks and len(ticks) <= 12:
            ax.set_xticks(ticks)
        ax.grid(alpha=0.3)
        if panel in ("val_top1", "test_top1"):
            ax.set_ylim(0, 102)
            if view.chance is not None:
                chance_line = ax.axhline(100 * view.chance, color="gray", ls="--", lw=1)
        if panel == "gap":
            ax.axhline(0, color="black", lw=0.8)
    budgets = _budget_epochs(view, frame) if len(frame) else []
    for ax in axes:
        for epoch in budgets:
            ax.axvline(epoch, color="0.85", lw=0.8, zorder=0)
    handles, labels = axes[0].get_legend_handles_labels()
    if chance_line is not None:
        handles.append(chance_line)
        labels.append(f"chance ({100 * view.chance:.0f}%)")
    figure.legend(handles, labels, loc="outside right center", fontsize=8)
    return figure


def ranking_by_budget(view: ReportView) -> dict[str, object]:
    """Rank the arms by mean test top-1 at each budget epoch and find the pairs that flip.

    Returns:
        ``{"budgets": [epochs], "orders": {epoch: [arm, ...] best first}, "means": {epoch:
        {arm: mean}}, "flips": [(a, b, {epoch: diff b - a})], "tables": {epoch:
        family_table}}``; the tables test the declared family at each budget (Holm within a
        budget, paired by seed).
    """
    frame = curves(view)
    metric = "test_top1" if "test_top1" in frame else "val_top1"
    result: dict[str, object] = {"budgets": [], "orders": {}, "means": {}, "flips": [],
                                 "tables": {}, "metric": metric}  # fmt: skip
    if frame.empty or metric not in frame:
        return result
    budgets = _budget_epochs(view, frame)
    result["budgets"] = budgets
    labelled = frame.assign(arm=view.labels(frame))
    order = [view.label(b, s) for b, s in arms(view)]
    for epoch in budgets:
        rows = labelled[labelled["epoch"] == epoch].dropna(subset=[metric])
        means = rows.groupby("arm")[metric].mean()
        means = means.reindex([a for a in order if a in means.index])
        result["means"][epoch] = means.to_dict()
        result["orders"][epoch] = list(means.sort_values(ascending=False, kind="stable").index)
        result["tables"][epoch] = family_table(view, rows, metric, pair_by="seed")
    for a, b in itertools.combinations(order, 2):
        diffs = {
            e: result["means"][e][b] - result["means"][e][a]
            for e in budgets
            if a in result["means"][e] and b in result["means"][e]
        }
        signs = {np.sign(d) for d in diffs.values() if d != 0}
        if len(signs) > 1:
            result["flips"].append((a, b, diffs))
    return result


def _epochs_text(budgets: list[int]) -> str:
    return "/".join(str(b) for b in budgets)


def _across(view: ReportView, budgets: list[int]) -> str:
    if view.config.get("budgets"):
        return f"across budgets {_epochs_text(budgets)} epochs"
    return f"across epochs {_epochs_text(budgets)} of the training history (no declared budgets)"


def _significance(ranking: dict, a: str, b: str) -> str:
    hits = []
    for epoch, table in ranking["tables"].items():
        row = table[
            ((table["a"] == a) & (table["b"] == b)) | ((table["a"] == b) & (table["b"] == a))
        ]
        if len(row) and bool(row["significant"].iloc[0]):
            hits.append(str(epoch))
    if not any(
        len(t[((t["a"] == a) & (t["b"] == b)) | ((t["a"] == b) & (t["b"] == a))])
        for t in ranking["tables"].values()
    ):
        return "not in the declared family, so untested"
    return f"significant at {', '.join(hits)} epoch(s)" if hits else "not significant at any budget"


def _ranking_lines(view: ReportView, *, short: bool) -> list[str]:
    ranking = ranking_by_budget(view)
    budgets = ranking["budgets"]
    if len(budgets) < 2 or len(ranking["orders"][budgets[-1]]) < 2:
        return []
    what = "test" if ranking["metric"] == "test_top1" else "validation"
    if not ranking["flips"]:
        order = " > ".join(f"`{a}`" for a in ranking["orders"][budgets[-1]])
        return [
            f"Ranking by mean {what} top-1 stable {_across(view, budgets)}"
            + ("." if short else f": {order}.")
        ]
    named, quiet = [], 0
    for a, b, diffs in ranking["flips"]:
        numbers = ", ".join(f"{100 * d:+.1f} at {e}" for e, d in diffs.items())
        tested = _significance(ranking, a, b)
        if short and not tested.startswith("significant at "):
            quiet += 1
            continue
        named.append(f"`{b}` vs `{a}`" + (f" ({numbers} epochs; {tested})" if not short else ""))
    text = f"Ranking by mean {what} top-1 changes {_across(view, budgets)}"
    if named:
        text += ": " + "; ".join(named) + (" flips" if len(named) == 1 else " flip")
    if quiet:
        text += (
            f"{'; ' if named else ': '}{quiet} pair(s) flip without a significant difference "
            "at any budget (or outside the declared family)"
        )
    return [text + "."]


def _loss_line(view: ReportView) -> list[str]:
    frame = curves(view)
    if frame.empty or not {"train_loss", "val_loss"} <= set(frame.columns):
        return []
    last = int(frame["epoch"].max())
    rows = frame[frame["epoch"] == last].dropna(subset=["train_loss", "val_loss"])
    if rows.empty:
        return []
    parts = []
    for backbone, stem in arms(view):
        mine = rows[(rows["backbone"] == backbone) & (rows["stem"] == stem)]
        if mine.empty:
            continue
        train, val = mine["train_loss"].mean(), mine["val_loss"].mean()
        parts.append(f"`{view.label(backbone, stem)}` {train:.3f} / {val:.3f} / {val - train:+.3f}")
    return [
        f"Training / validation loss / gap (validation - training) at epoch {last}, mean over "
        "seeds: " + "; ".join(parts) + ". A low training loss with a large gap is memorisation, "
        "not better optimisation."
    ]


def _findings(view: ReportView) -> list[str]:
    lines = _ranking_lines(view, short=False)
    ranking = ranking_by_budget(view)
    for epoch in ranking["budgets"][:-1] if len(ranking["budgets"]) > 1 else []:
        means = ranking["means"][epoch]
        if means:
            lines.append(
                f"At {epoch} epoch(s): "
                + ", ".join(f"`{a}` {pct(v)}" for a, v in means.items())
                + f" (mean {'test' if ranking['metric'] == 'test_top1' else 'validation'} top-1)."
            )
    return lines + _loss_line(view)


def _headline(view: ReportView) -> list[str]:
    return _ranking_lines(view, short=True)


def _figures(view: ReportView) -> list[FigureSpec]:
    frame = curves(view)
    if frame.empty:
        return []
    return [
        FigureSpec(
            "learning_curves",
            "Learning curves of the reported cells (each arm at its selected setting): top-1 "
            "and loss per epoch, mean over seeds with the min..max band; training and "
            "validation loss side by side with their gap; grey verticals: the budget epochs; "
            "dashed: chance.",
            lambda: learning_curves(view),
        )
    ]


SECTION = register_section(
    StudySection(
        name="budgets",
        title="Budgets and learning curves",
        description="",
        tables=("budgets", "epochs"),
        figures=_figures,
        findings=_findings,
        headline=_headline,
        order=4,
    )
)
