"""Probes: activation statistics, FLOPs/params, latency, Grad-CAM and first-layer filters.

Every probe returns tidy pandas tables or tensors. Hooks live only inside a context manager or a
single call and are removed in ``finally``; the model's train/eval mode is restored.
"""

from stemlab.probes import _study_builtin, _study_channels  # noqa: F401  (registrations)
from stemlab.probes.activations import (
    STAT_COLUMNS,
    ActivationRecorder,
    activation_stats,
    record_activations,
)
from stemlab.probes.confusion import confusion_matrix
from stemlab.probes.filters import (
    FirstLayerFilters,
    compose_2plus1d,
    filter_stats,
    first_layer_filters,
)
from stemlab.probes.flops import FLOP_FAMILIES, flop_handles, flops_table
from stemlab.probes.grad_cam import GRAD_CAM_MODES, attribution_per_frame, grad_cam
from stemlab.probes.latency import latency

__all__ = [
    "FLOP_FAMILIES",
    "GRAD_CAM_MODES",
    "STAT_COLUMNS",
    "ActivationRecorder",
    "FirstLayerFilters",
    "activation_stats",
    "attribution_per_frame",
    "compose_2plus1d",
    "confusion_matrix",
    "filter_stats",
    "first_layer_filters",
    "flop_handles",
    "flops_table",
    "grad_cam",
    "latency",
    "record_activations",
]
