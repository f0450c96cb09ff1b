"""A plain PyTorch training loop: TrainConfig, fit() -> TrainResult (per-epoch rows), evaluate().

Modules: ``config`` (TrainConfig), ``loop`` (fit), ``epoch`` (one epoch of training),
``evaluate``, ``checkpoints`` (writing/reading last.pt and previous.pt), ``resume`` (which
checkpoint a resumed run continues from), ``freeze`` (the head and frozen modules), ``optim``
(parameter groups), ``state`` (the one save/restore of a model's state), ``batches``, ``losses``,
``schedule``.
"""

from stemlab.device import resolve_device
from stemlab.train.checkpoints import CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME
from stemlab.train.config import FREEZE_MODES, TrainConfig
from stemlab.train.evaluate import evaluate
from stemlab.train.freeze import FreezePlan, plan_freeze, resolve_head
from stemlab.train.loop import HISTORY_COLUMNS, TrainResult, fit
from stemlab.train.losses import FocalLoss, build_loss
from stemlab.train.schedule import WarmupCosine, build_scheduler
from stemlab.train.state import ModelState, preserved_model_state

__all__ = [
    "CHECKPOINT_NAME",
    "FREEZE_MODES",
    "HISTORY_COLUMNS",
    "PREVIOUS_CHECKPOINT_NAME",
    "FocalLoss",
    "FreezePlan",
    "ModelState",
    "TrainConfig",
    "TrainResult",
    "WarmupCosine",
    "build_loss",
    "build_scheduler",
    "evaluate",
    "fit",
    "plan_freeze",
    "preserved_model_state",
    "resolve_device",
    "resolve_head",
]
