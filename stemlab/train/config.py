"""TrainConfig: every training hyper-parameter, checked when the config is built."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stemlab._validation import check_choice, check_positive_float, check_positive_int

__all__ = ["TrainConfig"]

# Fields that change how a run is executed or shown but not the numbers it produces; a
# checkpoint can be resumed under a config that differs only in these.
EXECUTION_FIELDS = frozenset({"device", "num_workers", "checkpoint_dir", "resume", "progress"})


def _check_auto_flag(argument: str, value: Any) -> str | bool:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f"{argument} must be 'auto', True or False, got {value!r}")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`stemlab.train.fit`.

    Args:
        epochs: passes over the training data.
        batch_size: clips per optimisation step.
        lr: peak learning rate of the backbone (the head gets ``lr * head_lr_multiplier``).
        optimizer: ``"adamw"`` or ``"sgd"`` (with Nesterov momentum when ``momentum > 0``).
        weight_decay: decoupled (AdamW) or L2 (SGD) decay, applied to weights of rank >= 2 only
            (biases and normalisation parameters are not decayed).
        momentum: SGD momentum.
        warmup_epochs: linear warm-up length in epochs (fractions allowed), stepped per batch.
        schedule: ``"cosine"`` (decay to ``min_lr`` after the warm-up) or ``"constant"``.
        min_lr: final learning rate of the cosine schedule, as a fraction of ``lr``.
        loss: ``"cross_entropy"`` or ``"focal"``.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        focal_gamma: focusing exponent of the focal loss (0 gives cross-entropy).
        focal_alpha: optional constant weight of the focal loss.
        head_lr_multiplier: learning-rate factor for ``model.fc`` (10 trains the new head faster
            than a transferred backbone).
        freeze_backbone: train only ``model.fc``; the rest stays fixed, batch-norm statistics
            included.
        grad_clip: maximum global gradient norm, or ``None``.
        drop_last: drop the last incomplete training batch.
        seed: seeds parameter-free randomness: data order, dropout, random clip sampling.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        amp: mixed precision; ``"auto"`` enables it on CUDA only.
        channels_last: channels-last memory format; ``"auto"`` enables it on CUDA only.
        num_workers: DataLoader worker processes.
        checkpoint_dir: folder for ``last.pt``, written atomically after every epoch.
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        progress: show tqdm progress bars.

    Raises:
        ValueError, TypeError: on an invalid field, naming it.
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    min_lr: float = 0.0
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    head_lr_multiplier: float = 1.0
    freeze_backbone: bool = False
    grad_clip: float | None = None
    drop_last: bool = False
    seed: int = 0
    device: str = "auto"
    amp: str | bool = "auto"
    channels_last: str | bool = "auto"
    num_workers: int = 0
    checkpoint_dir: str | os.PathLike[str] | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        self.lr = check_positive_float("lr", self.lr)
        check_choice("optimizer", self.optimizer, ("adamw", "sgd"))
        self.weight_decay = check_positive_float("weight_decay", self.weight_decay, allow_zero=True)
        self.momentum = check_positive_float("momentum", self.momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be < 1, got {self.momentum}")
        self.warmup_epochs = check_positive_float(
            "warmup_epochs", self.warmup_epochs, allow_zero=True
        )
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs} must not exceed epochs={self.epochs}"
            )
        check_choice("schedule", self.schedule, ("cosine", "constant"))
        self.min_lr = check_positive_float("min_lr", self.min_lr, allow_zero=True)
        if self.min_lr > 1:
            raise ValueError(f"min_lr is a fraction of lr and must be <= 1, got {self.min_lr}")
        check_choice("loss", self.loss, ("cross_entropy", "focal"))
        self.label_smoothing = check_positive_float(
            "label_smoothing", self.label_smoothing, allow_zero=True
        )
        if self.label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be < 1, got {self.label_smoothing}")
        if self.label_smoothing and self.loss != "cross_entropy":
            raise ValueError("label_smoothing applies to loss='cross_entropy' only")
        self.focal_gamma = check_positive_float("focal_gamma", self.focal_gamma, allow_zero=True)
        if self.focal_alpha is not None:
            self.focal_alpha = check_positive_float("focal_alpha", self.focal_alpha)
        self.head_lr_multiplier = check_positive_float(
            "head_lr_multiplier", self.head_lr_multiplier
        )
        for flag in ("freeze_backbone", "drop_last", "resume", "progress"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.grad_clip is not None:
            self.grad_clip = check_positive_float("grad_clip", self.grad_clip)
            if math.isinf(self.grad_clip):
                raise ValueError("grad_clip must be finite (use None for no clipping)")
        check_positive_int("seed", self.seed, allow_zero=True)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        _check_auto_flag("amp", self.amp)
        _check_auto_flag("channels_last", self.channels_last)
        check_positive_int("num_workers", self.num_workers, allow_zero=True)
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, (str, os.PathLike)):
                raise TypeError(f"checkpoint_dir must be a path, got {self.checkpoint_dir!r}")
            self.checkpoint_dir = Path(self.checkpoint_dir)
        elif self.resume:
            raise ValueError("resume=True needs a checkpoint_dir")

    def to_dict(self) -> dict[str, Any]:
        """Plain, serialisable dict of the fields (paths as strings)."""
        out = asdict(self)
        if out["checkpoint_dir"] is not None:
            out["checkpoint_dir"] = os.fspath(out["checkpoint_dir"])
        return out
