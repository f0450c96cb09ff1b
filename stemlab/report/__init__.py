"""Reports: matplotlib figures of the probes, and the study report (report.md, index.html)."""

from stemlab.report.figures import (
    filter_mosaic,
    plot_activation_stats,
    plot_filter_grid,
    plot_flops_breakdown,
    plot_grad_cam_strip,
)
from stemlab.report.stats import compare, describe, holm
from stemlab.report.study_report import render_report

__all__ = [
    "compare",
    "describe",
    "filter_mosaic",
    "holm",
    "plot_activation_stats",
    "plot_filter_grid",
    "plot_flops_breakdown",
    "plot_grad_cam_strip",
    "render_report",
]
