"""Pretrained weights: safe checkpoint reading, stem weight transfer and a per-tensor report.

::

    model = stemlab.create_model("r3d_18", stem="large_kernel", weights="KINETICS400_V1")
    model.weights_report      # key, action (loaded/transferred/initialized/skipped), detail, ...
    stemlab.weights.load_weights(model, "my_checkpoint.pth", stem_init="random")
"""

from stemlab.weights.checkpoint import (
    Checkpoint,
    UnsafeCheckpointError,
    read_checkpoint,
    resolve_torchvision_weights,
    torchvision_weights_enums,
    torchvision_weights_path,
)
from stemlab.weights.load import guess_backbones, load_weights
from stemlab.weights.report import ACTIONS, summarize_report
from stemlab.weights.transfer import STEM_TRANSFERS, NoTransfer, resize_kernel, transfer_stem

__all__ = [
    "ACTIONS",
    "STEM_TRANSFERS",
    "Checkpoint",
    "NoTransfer",
    "UnsafeCheckpointError",
    "guess_backbones",
    "load_weights",
    "read_checkpoint",
    "resize_kernel",
    "resolve_torchvision_weights",
    "summarize_report",
    "torchvision_weights_enums",
    "torchvision_weights_path",
    "transfer_stem",
]
