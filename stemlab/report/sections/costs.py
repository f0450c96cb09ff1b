"""Costs: the full-size profiling model's cost, the stems at full size, accuracy against cost."""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib.figure import Figure

from stemlab.probes.contract import FigureSpec
from stemlab.report.sections import ReportView, StudySection, TableSpec, register_section
from stemlab.report.sections._common import arms
from stemlab.report.sections._summary import summary_table
from stemlab.report.sections.accuracy import _mean_interval, _trained

__all__ = ["SECTION", "accuracy_vs_gflops"]

COST = (
    "params",
    "gflops",
    "gflops_conv_linear",
    "stem_gflops",
    "downstream_gflops",
    "latency_ms",
    "latency_fwd_bwd_ms",
)
STEM = ("stem_kernel", "stem_stride", "stem_width", "stem_params")


def accuracy_vs_gflops(view: ReportView) -> Figure:
    """Mean top-1 of each arm (at its selected setting) against the trained model's GFLOPs.

    Error bars: 95% t-interval of the mean over seeds, clipped to 0-100%; dashed: chance.
    Without a FLOPs column the arms are spread along x in study order.
    """
    trained = _trained(view)
    summary = view.summary.set_index(["backbone", "stem"]) if not view.summary.empty else None
    points = []
    for backbone, stem in arms(view):
        values = trained.loc[
            (trained["backbone"] == backbone) & (trained["stem"] == stem), "top1"
        ].to_numpy(float)
        if not len(values):
            continue
        gflops = np.nan
        if summary is not None and "train_gflops" in summary and (backbone, stem) in summary.index:
            gflops = float(summary.loc[(backbone, stem), "train_gflops"])
        points.append((view.label(backbone, stem), gflops, values))
    has_x = any(np.isfinite(x) for _, x, _ in points)
    xs = np.array([x if has_x else i for i, (_, x, _) in enumerate(points)], dtype=float)
    span = np.nanmax(xs) - np.nanmin(xs) if len(xs) > 1 else 1.0
    step = 0.012 * (span if span > 0 else 1.0)
    shown = xs.copy()
    for previous, current in itertools.pairwise(np.argsort(xs, kind="stable")):
        if shown[current] - shown[previous] < step:  # dodge points that would overlap
            shown[current] = shown[previous] + step
    figure = Figure(figsize=(8.2, 4.6), layout="constrained")
    ax = figure.subplots()
    for i, ((label, _, values), x) in enumerate(zip(points, shown)):
        if np.isnan(x):
            continue
        y = 100 * values.mean()
        low, high = _mean_interval(values)
        yerr = [[0.0], [0.0]] if np.isnan(low) else [[y - 100 * low], [100 * high - y]]
        ax.errorbar(x, y, yerr=yerr, fmt="o", capsize=4, color=f"C{i % 10}", label=label)
        ax.annotate(label, (x, y), xytext=(6, -3), textcoords="offset points", fontsize=7)
    if view.chance is not None:
        ax.axhline(
            100 * view.chance, color="gray", ls="--", lw=1,
            label=f"chance ({100 * view.chance:.0f}%)",
        )  # fmt: skip
    ax.set_xlabel(
        "GFLOPs of the trained CPU-scale model (one training clip)"
        if has_x
        else "arm (no FLOPs probe)"
    )
    ax.set_ylabel(f"{view.accuracy_text().split(' (')[0]} (%)")
    ax.set_title(
        "Accuracy at each arm's selected setting vs cost (error bars: 95% CI of the mean over "
        "seeds, clipped to 0-100%)",
        fontsize=10,
    )
    ax.set_ylim(0, 104)
    ax.grid(alpha=0.3)
    figure.legend(loc="outside right center", fontsize=8)
    return figure


def _show(view: ReportView) -> list[TableSpec]:
    return summary_table(
        view,
        None,
        COST,
        f"The full-size profiling model ({view.profile_text()}); one FMA = one flop.",
        {"latency_ms": "median forward time of the profiling model (ms, this machine)"},
    ) + summary_table(view, "Stems", STEM, "The stems at full size (profiling model).")


def _figures(view: ReportView) -> list[FigureSpec]:
    if _trained(view).empty:
        return []
    return [
        FigureSpec(
            "accuracy_vs_gflops",
            f"{view.accuracy_text().split(' (')[0].capitalize()} of the trained CPU-scale models "
            "at each arm's selected setting against their own GFLOPs (one training clip); error "
            "bars: 95% interval of the mean over seeds (clipped to 0-100%); dashed: chance. The "
            "full-size profiling GFLOPs are in the cost table.",
            lambda: accuracy_vs_gflops(view),
        )
    ]


SECTION = register_section(
    StudySection(
        name="costs",
        title="Cost at full size",
        summary=COST + STEM,
        show=_show,
        figures=_figures,
        order=9,
    )
)
