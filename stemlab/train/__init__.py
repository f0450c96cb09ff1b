"""A plain PyTorch training loop: TrainConfig, fit() -> TrainResult (per-epoch rows), evaluate()."""

from stemlab.train.config import TrainConfig
from stemlab.train.loop import HISTORY_COLUMNS, TrainResult, evaluate, fit, resolve_device
from stemlab.train.losses import FocalLoss, build_loss
from stemlab.train.schedule import WarmupCosine, build_scheduler

__all__ = [
    "HISTORY_COLUMNS",
    "FocalLoss",
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "build_loss",
    "build_scheduler",
    "evaluate",
    "fit",
    "resolve_device",
]
