"""Accuracy: test top-1 of every arm at its selected setting, and the declared comparisons.

The reported number is ``top1`` of the training cells: test top-1 at the final budget, at the
arm's selected lr (selected on validation only). Every comparison is a row of the study's one
declared family (``comparisons``: each arm vs the reference, or all pairs); the forest plot of
those rows opens the report.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory
from scipy import stats

from stemlab.probes.contract import FigureSpec
from stemlab.report.sections import ReportView, StudySection, TableSpec, register_section
from stemlab.report.sections._common import (
    arm_counts,
    arms,
    diverged_sentence,
    family_table,
    pct,
    row_sentence,
    short_sentences,
    values_of,
)

__all__ = ["SECTION", "accuracy_table", "comparison_table", "forest_plot", "selected_settings"]

SHOWN = (
    "top1_mean",
    "top1_std",
    "top5_mean",
    "train_loss",
    "val_loss",
    "val_top1",
    "test_loss",
    "lr",
    "weight_decay",
    "n_seeds",
    "n_failed",
    "train_stem_width",
    "train_params",
    "train_gflops",
    "train_seconds",
)
_FROM_SUMMARY = ("train_stem_width", "train_params", "train_gflops", "train_seconds")


def _trained(view: ReportView) -> pd.DataFrame:
    trained = view.trained()
    if trained.empty or "top1" not in trained:
        return trained.iloc[0:0] if not trained.empty else trained
    return trained.dropna(subset=["top1"])


def selected_settings(view: ReportView) -> pd.DataFrame:
    """Per arm: backbone, stem, lr, weight_decay and where they come from (``source``)."""
    rows = []
    selection = view.tables.get("selection")
    training = view.config.get("training") or {}
    cells = view.trained()
    for backbone, stem in arms(view):
        row = {"backbone": backbone, "stem": stem, "lr": math.nan, "weight_decay": math.nan}
        row["source"] = "study"
        hit = pd.DataFrame()
        if isinstance(selection, pd.DataFrame) and not selection.empty:
            hit = selection[(selection["backbone"] == backbone) & (selection["stem"] == stem)]
        if len(hit):
            row.update(
                lr=float(hit["lr"].iloc[0]),
                weight_decay=float(values_of(hit, "weight_decay").iloc[0]),
                source="selected",
            )
        elif not cells.empty and "lr" in cells:
            mine = cells[(cells["backbone"] == backbone) & (cells["stem"] == stem)]
            if len(mine) and mine["lr"].notna().any():
                row["lr"] = float(mine["lr"].dropna().iloc[0])
                row["weight_decay"] = (
                    float(values_of(mine, "weight_decay").dropna().iloc[0])
                    if (values_of(mine, "weight_decay").notna().any())
                    else math.nan
                )
        if math.isnan(row["lr"]) and training.get("lr") is not None:
            row["lr"] = float(training["lr"])
            if training.get("weight_decay") is not None:
                row["weight_decay"] = float(training["weight_decay"])
        rows.append(row)
    return pd.DataFrame(rows, columns=["backbone", "stem", "lr", "weight_decay", "source"])


def _mean_interval(values: np.ndarray) -> tuple[float, float]:
    """95% t-interval of the mean of ``values``, clipped to [0, 1] (NaN below 2 values)."""
    if len(values) < 2 or np.ptp(values) == 0:
        return math.nan, math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return max(0.0, values.mean() - half), min(1.0, values.mean() + half)


def accuracy_table(view: ReportView) -> pd.DataFrame:
    """One row per arm: selected lr / wd, test top-1 (mean, 95% interval, std; percent),
    validation top-1, the losses and their gap, seeds finished / failed / diverged."""
    trained = _trained(view)
    settings = selected_settings(view).set_index(["backbone", "stem"])
    counts = arm_counts(view).set_index(["backbone", "stem"])
    summary = view.summary.set_index(["backbone", "stem"]) if not view.summary.empty else None
    hide_top5 = view.num_classes is not None and view.num_classes <= 5
    rows = []
    for backbone, stem in arms(view):
        mine = trained[(trained["backbone"] == backbone) & (trained["stem"] == stem)]
        top1 = values_of(mine, "top1").dropna().to_numpy(float)
        low, high = _mean_interval(top1)
        row = {"backbone": backbone, "stem": stem}
        row["lr"] = settings.loc[(backbone, stem), "lr"]
        if settings["weight_decay"].notna().any():
            row["weight_decay"] = settings.loc[(backbone, stem), "weight_decay"]
        row["top1_mean"] = round(100 * top1.mean(), 1) if len(top1) else math.nan
        row["top1_ci"] = f"{100 * low:.1f} to {100 * high:.1f}" if not math.isnan(low) else ""
        row["top1_std"] = round(100 * top1.std(ddof=1), 1) if len(top1) > 1 else math.nan
        for column, name, scale in (
            ("top5", "top5_mean", 100),
            ("val_top1", "val_top1", 100),
            ("test_loss", "test_loss", 1),
            ("val_loss", "val_loss", 1),
            ("train_loss", "train_loss", 1),
        ):
            if column == "top5" and hide_top5:
                continue
            values = values_of(mine, column)
            if values.notna().any():
                row[name] = round(scale * values.mean(), 1 if scale == 100 else 3)
        if "val_loss" in row and "train_loss" in row:
            row["gap"] = round(row["val_loss"] - row["train_loss"], 3)
        if (backbone, stem) in counts.index:
            count = counts.loc[(backbone, stem)]
            row.update(
                n_seeds=int(count["ok"]), n_failed=int(count["failed"]),
                n_diverged=int(count["diverged"]),
            )  # fmt: skip
        if summary is not None and (backbone, stem) in summary.index:
            for column in _FROM_SUMMARY:
                if column in summary and pd.notna(summary.loc[(backbone, stem), column]):
                    row[column] = summary.loc[(backbone, stem), column]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    order = ["backbone", "stem", "lr", "weight_decay", "top1_mean", "top1_ci", "top1_std",
             "top5_mean", "val_top1", "test_loss", "val_loss", "train_loss", "gap", "n_seeds",
             "n_failed", "n_diverged", *_FROM_SUMMARY]  # fmt: skip
    frame = frame[[c for c in order if c in frame]].dropna(axis=1, how="all")
    if "n_diverged" in frame and not frame["n_diverged"].any():
        frame = frame.drop(columns=["n_diverged"])
    if frame["backbone"].nunique() == 1:
        frame = frame.drop(columns=["backbone"])
    return frame


def comparison_table(view: ReportView) -> pd.DataFrame:
    """The declared family on test top-1 (paired by seed); see :func:`family_table`."""
    return family_table(view, _trained(view), "top1", pair_by="seed")


def _n_row(row) -> str:
    if row.test in ("paired t", "sign-flip"):
        return f"n={row.n_pairs}"
    return f"n={row.n_a}" if row.n_a == row.n_b else f"n={row.n_a} vs {row.n_b}"


def forest_plot(table: pd.DataFrame, *, what: str = "test top-1", n_text: str = "") -> Figure:
    """Each compared pair's difference (b - a, points) with its simultaneous interval.

    Args:
        table: a :func:`family_table` (attrs m, family).
        what: the metric's name on the x axis.
        n_text: replicates, for the title (``"3 seeds"``).

    Returns:
        The figure: filled markers for significant pairs, hollow for not distinguishable, a
        cross and the note for pairs that cannot be tested; the zero line; intervals clipped
        to +-100 points (the metric's range), said in the title when that happened.
    """
    rows = table.reset_index(drop=True)
    height = 1.5 + 0.42 * max(len(rows), 1)
    figure = Figure(figsize=(10.0, height), layout="constrained")
    ax = figure.subplots()
    ys = np.arange(len(rows))[::-1]
    # the numbers go in a column right of the axes, so clipped bars never hide them
    column = blended_transform_factory(ax.transAxes, ax.transData)
    for y, row in zip(ys, rows.itertuples()):
        x = 100 * row.diff
        if row.note:
            ax.plot([x], [y], marker="x", color="0.4", ms=7, ls="none")
            ax.text(
                1.01, y, "no test: " + row.note.removeprefix("no test possible: "),
                transform=column, fontsize=7, color="0.3", va="center",
            )  # fmt: skip
            continue
        low, high = 100 * row.ci_low, 100 * row.ci_high
        color = "C3" if row.significant and row.diff > 0 else "C0" if row.significant else "0.45"
        ax.plot([low, high], [y, y], color=color, lw=2, solid_capstyle="butt")
        for end, edge in ((low, -100.0), (high, 100.0)):
            clipped_end = row.clipped and abs(end - edge) < 1e-9
            ax.plot(
                [end], [y], ls="none", color=color, ms=9 if not clipped_end else 7,
                marker="|" if not clipped_end else ("<" if edge < 0 else ">"),
            )  # fmt: skip
        ax.plot(
            [x], [y], marker="o", ms=7, ls="none", color=color,
            markerfacecolor=color if row.significant else "white",
        )  # fmt: skip
        p = row.p_adjusted
        ax.text(
            1.01, y, f"{x:+.1f} [{low:+.1f}, {high:+.1f}]  p_Holm {'< 0.001' if p < 0.001 else f'{p:.2g}'}",
            transform=column, fontsize=7, va="center",
        )  # fmt: skip
    ax.axvline(0, color="black", ls="--", lw=1)
    ax.set_yticks(ys, [f"{r.b} vs {r.a} ({_n_row(r)})" for r in rows.itertuples()] or [""])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(f"{what} difference, b - a (points; dashed: no difference)")
    finite = pd.concat([100 * rows["ci_low"], 100 * rows["ci_high"], 100 * rows["diff"]])
    finite = finite[np.isfinite(finite.to_numpy(float))]
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        pad = max(2.0, 0.05 * (hi - lo))
        ax.set_xlim(max(-102.0, min(lo, 0) - pad), min(102.0, max(hi, 0) + pad))
    m = table.attrs.get("m", len(rows))
    clipped = (
        "\nIntervals clipped to the metric's range (arrow: clipped end)."
        if rows["clipped"].any()
        else ""
    )
    family = str(table.attrs.get("family", "")).replace("`", "")
    ax.set_title(
        f"{family[:1].upper() + family[1:]}{'; ' + n_text if n_text else ''}\nBars: simultaneous "
        f"95% intervals (Bonferroni over {m}, more conservative than Holm); filled: significant "
        f"after Holm.{clipped}",
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    return figure


def _n_seeds(view: ReportView) -> str:
    trained = _trained(view)
    if trained.empty:
        return ""
    counts = trained.groupby(["backbone", "stem"])["seed"].nunique()
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo} seeds" if lo == hi else f"{lo}-{hi} seeds"


def _headline_figures(view: ReportView) -> list[FigureSpec]:
    table = comparison_table(view)
    if table.empty:
        return []
    what = view.accuracy_text().split(" (")[0]
    return [
        FigureSpec(
            "accuracy_forest",
            f"Each compared pair's {what} difference (b - a, points) at each arm's selected "
            "setting, over the study's declared comparison family; bars are simultaneous 95% "
            "intervals (Bonferroni over the family, clipped to the metric's range), filled "
            "markers are significant after Holm's correction, crosses are pairs with no test "
            "possible. Dashed: no difference.",
            lambda: forest_plot(table, what=what, n_text=_n_seeds(view)),
        )
    ]


def _setting_text(row: pd.Series) -> str:
    if pd.isna(row["lr"]):
        return ""
    text = f"lr {row['lr']:.3g}"
    if pd.notna(row["weight_decay"]):
        text += f", wd {row['weight_decay']:.2g}"
    return text


def _per_arm(view: ReportView) -> str:
    trained = _trained(view)
    settings = selected_settings(view)
    parts = []
    for row in settings.itertuples():
        mine = trained[(trained["backbone"] == row.backbone) & (trained["stem"] == row.stem)]
        if mine.empty:
            continue
        setting = _setting_text(pd.Series(row._asdict()))
        parts.append(
            f"`{view.label(row.backbone, row.stem)}` {pct(mine['top1'].mean())}"
            + (f" ({setting})" if setting else "")
        )
    source = set(settings["source"])
    how = (
        "lr selected per arm on validation only"
        if source == {"selected"}
        else "at the study's training lr (no sweep)"
        if "selected" not in source
        else "lr selected on validation where the sweep finished"
    )
    return (
        f"{view.accuracy_text().capitalize()} over {_n_seeds(view)}, {how}: "
        + "; ".join(parts)
        + "."
    )


def _best(view: ReportView, table: pd.DataFrame) -> str:
    trained = _trained(view)
    means = (
        trained.groupby(["backbone", "stem"], sort=False)["top1"]
        .mean()
        .sort_values(ascending=False)
    )
    if len(means) < 2:
        return ""
    best = view.label(*means.index[0])
    text = f"Highest mean {view.accuracy_text().split(' (')[0]}: `{best}` ({pct(means.iloc[0])})"
    if view.comparisons != "all_pairs":
        is_reference = means.index[0][1] == view.baseline
        return (
            text
            + "; the declared family compares each arm with the reference only, so it does "
            + "not rank the other arms against each other"
            + (" (the best arm is the reference)." if is_reference else ".")
        )
    involving = table[((table["a"] == best) | (table["b"] == best)) & (table["note"] == "")]
    tied = [r.b if r.a == best else r.a for r in involving.itertuples() if not r.significant]
    if tied:
        return (
            text
            + f"; not distinguishable from {', '.join(f'`{t}`' for t in tied)} "
            + f"({table.attrs['family']}), so no single best arm can be named."
        )
    return text + f"; significantly above every other arm ({table.attrs['family']})."


def _findings(view: ReportView) -> list[str]:
    trained = _trained(view)
    if trained.empty:
        return [
            "No training cell finished, so there is no accuracy to compare.",
            *view.reference_notes,
        ]
    lines = [_per_arm(view)]
    lines += list(view.reference_notes)
    lines += diverged_sentence(view)
    table = comparison_table(view)
    if table.empty:
        return lines
    family = table.attrs["family"]
    above = table[table["significant"] & (table["diff"] > 0)]
    below = table[table["significant"] & (table["diff"] < 0)]
    unclear = table[~table["significant"] & (table["note"] == "")]
    noted = table[table["note"] != ""]
    if len(above):
        lines.append(
            f"Higher ({len(above)} of {len(table)}; {family}): "
            + "; ".join(row_sentence(r) for _, r in above.iterrows())
            + "."
        )
    if len(below):
        lines.append(
            f"Lower ({len(below)} of {len(table)}; {family}): "
            + "; ".join(row_sentence(r) for _, r in below.iterrows())
            + "."
        )
    if len(unclear):
        lines.append(
            f"Not distinguishable ({family}): "
            + "; ".join(row_sentence(r) for _, r in unclear.iterrows())
            + "."
        )
    if len(noted):
        lines.append("; ".join(row_sentence(r) for _, r in noted.iterrows()) + ".")
    best = _best(view, table)
    return lines + ([best] if best else [])


def _headline(view: ReportView) -> list[str]:
    trained = _trained(view)
    if trained.empty:
        return [
            "No training cell finished, so there is no accuracy to compare.",
            *view.reference_notes,
        ]
    lines = list(view.reference_notes) + diverged_sentence(view)
    lines += short_sentences(comparison_table(view))
    best = _best(view, comparison_table(view))
    return lines + ([best.split(";")[0] + "."] if best else [])


def _show(view: ReportView) -> list[TableSpec]:
    frame = accuracy_table(view)
    if frame.empty:
        return []
    what = view.accuracy_text()
    descriptions = {
        **view.descriptions,
        "lr": "learning rate of the reported cells (the arm's selected setting)",
        "weight_decay": "weight decay of the reported cells",
        "top1_mean": f"{what} of the trained CPU-scale model at the final budget, mean over "
        "seeds (%)",
        "top1_ci": "95% t-interval of that mean, per arm (unadjusted; clipped to 0-100%)",
        "top1_std": "sample std over seeds (points)",
        "top5_mean": "top-5 on the same clips, mean over seeds (%)",
        "val_top1": "validation top-1, mean over seeds (%; selection only)",
        "test_loss": "test loss, mean over seeds",
        "val_loss": "validation loss, mean over seeds",
        "train_loss": "training loss of the last epoch, mean over seeds",
        "gap": "validation loss minus training loss",
        "n_seeds": "seeds that finished",
        "n_failed": "seeds that failed",
        "n_diverged": "seeds that diverged (excluded from findings)",
    }
    legend = "; ".join(f"**{c}**: {descriptions[c]}" for c in frame.columns if c in descriptions)
    hidden = (
        " Top-5 is hidden: with 5 or fewer classes it says nothing."
        if view.num_classes is not None and view.num_classes <= 5
        else ""
    )
    specs = [
        TableSpec(
            None, frame, f"Accuracies in percent; the trained models are the CPU-scale ones of "
            f"the study.{hidden} {legend}."
        )
    ]  # fmt: skip
    table = comparison_table(view)
    if len(table):
        shown = table[
            ["a", "b", "n_pairs", "diff", "ci_low", "ci_high", "p_adjusted", "significant",
             "test", "note"]
        ].copy()  # fmt: skip
        for column in ("diff", "ci_low", "ci_high"):
            shown[column] = (100 * shown[column]).round(1)
        if not shown["note"].astype(bool).any():
            shown = shown.drop(columns=["note"])
        references = sorted(set(view.references.values()))
        if view.comparisons == "all_pairs":
            scope = "Every pair of arms"
        elif (
            len(references) == 1
            and len(set(table["a"])) == 1
            and table["a"].iloc[0]
            in (references[0], *[f"{b}/{references[0]}" for b in view.references])
        ):
            scope = f"Each stem against `{references[0]}`"
        else:
            scope = f"Each arm against `{table['a'].iloc[0]}`"
        specs.append(
            TableSpec(
                "Comparisons",
                shown,
                f"{scope}: {what} difference (b - a, points) with its simultaneous 95% "
                f"interval (Bonferroni over the {table.attrs['m']} tested pairs, clipped to the "
                "metric's range) and the Holm-adjusted p of a paired t-test over seeds (Welch "
                "where the seeds differ); `significant`: adjusted p < 0.05. This is the study's "
                f"one declared family ({table.attrs['family']}); every accuracy finding uses "
                "it. A `note` says why a pair has no test.",
            )
        )
    return specs


SECTION = register_section(
    StudySection(
        name="accuracy",
        title="Accuracy",
        description="",
        summary=SHOWN,
        show=_show,
        findings=_findings,
        headline=_headline,
        headline_figures=_headline_figures,
        order=0,
    )
)
