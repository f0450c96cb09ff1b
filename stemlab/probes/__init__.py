"""Probes: activation statistics, FLOPs/params, latency, training memory, Grad-CAM, first-layer filters, and the
filter-channel probes (CKA, channel ablation, usage, redundancy).

Every probe returns tidy pandas tables or tensors. Hooks live only inside a context manager or a
single call and are removed in ``finally``; the model's train/eval mode is restored. Each probe
module also declares, with :func:`stemlab.probes.contract.register_probe`, how it runs in a study
cell and what it adds to the report; importing this package registers them all.
"""

from stemlab.probes.activations import (
    STAT_COLUMNS,
    ActivationRecorder,
    activation_stats,
    record_activations,
)
from stemlab.probes.channel_ablation import ablation_curve, channel_ablation
from stemlab.probes.channel_redundancy import channel_redundancy, effective_rank
from stemlab.probes.channel_usage import channel_usage, channels_for_share
from stemlab.probes.cka import cka, cka_from_grams, gram_matrices, linear_cka
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
from stemlab.probes.memory import saved_tensor_memory, stage_memory, training_step_memory

__all__ = [
    "FLOP_FAMILIES",
    "GRAD_CAM_MODES",
    "STAT_COLUMNS",
    "ActivationRecorder",
    "FirstLayerFilters",
    "ablation_curve",
    "activation_stats",
    "attribution_per_frame",
    "channel_ablation",
    "channel_redundancy",
    "channel_usage",
    "channels_for_share",
    "cka",
    "cka_from_grams",
    "compose_2plus1d",
    "confusion_matrix",
    "effective_rank",
    "filter_stats",
    "first_layer_filters",
    "flop_handles",
    "flops_table",
    "grad_cam",
    "gram_matrices",
    "latency",
    "linear_cka",
    "record_activations",
    "saved_tensor_memory",
    "stage_memory",
    "training_step_memory",
]
