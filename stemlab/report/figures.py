"""The probes' figures, re-exported for the report layer (they live in :mod:`stemlab.probes.figures`)."""

from stemlab.probes.figures import (
    filter_mosaic,
    plot_activation_stats,
    plot_confusion_matrix,
    plot_filter_grid,
    plot_flops_breakdown,
    plot_grad_cam_strip,
    time_slice_labels,
)

__all__ = [
    "filter_mosaic",
    "plot_activation_stats",
    "plot_confusion_matrix",
    "plot_filter_grid",
    "plot_flops_breakdown",
    "plot_grad_cam_strip",
    "time_slice_labels",
]
