"""TrainConfig: every training hyper-parameter, checked when the config is built."""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stemlab._validation import check_choice
from stemlab.errors import StemlabTypeError
from stemlab.train.precision import AMP_MODES

__all__ = ["FREEZE_MODES", "TrainConfig"]

# Fields that change how a run is executed or shown but not the numbers it produces; a
# checkpoint can be resumed under a config that differs only in these.
EXECUTION_FIELDS = frozenset(
    {"device", "num_workers", "checkpoint_dir", "resume", "progress", "cudnn_benchmark"}
)
FREEZE_MODES = ("none", "backbone")
"""String values of ``TrainConfig.freeze``; a list of module names is the third form."""
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _check_auto_flag(argument: str, value: Any) -> str | bool:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f"{argument} must be 'auto', True or False, got {value!r}")


def _check_int(argument: str, value: Any, *, minimum: int) -> int:
    """``value`` if it is an int >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StemlabTypeError(f"{argument} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(
            f"{argument}={value!r} is not allowed: {argument} must be an int >= {minimum}"
        )
    return value


def _check_real(
    argument: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
    hint: str = "",
) -> float:
    """``value`` as a float if it is finite and inside the interval, else TypeError/ValueError.

    The interval is ``low <= value <= high``, with ``<`` on a side marked open; ``high=inf``
    means no upper bound (infinity itself is always refused, and so is NaN).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StemlabTypeError(f"{argument} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (math.isfinite(number) and above and below):
        if math.isfinite(high):
            rule = (
                f"with {low:g} {'<' if low_open else '<='} {argument} "
                f"{'<' if high_open else '<='} {high:g}"
            )
        else:
            rule = f"{'>' if low_open else '>='} {low:g}"
        raise ValueError(
            f"{argument}={value!r} is not allowed: {argument} must be a finite number {rule}{hint}"
        )
    return number


def _check_freeze(value: Any) -> str | tuple[str, ...]:
    """``"none"``, ``"backbone"``, or a non-empty tuple of distinct module names."""
    if isinstance(value, str):
        if value in FREEZE_MODES:
            return value
        raise ValueError(
            f"freeze={value!r} is not allowed: use 'none', 'backbone' (everything but the head) "
            f"or a list of module or stage names such as [{value!r}]"
        )
    if isinstance(value, (list, tuple)):
        names = tuple(value)
        bad = [name for name in names if not isinstance(name, str) or not name]
        if not names or bad:
            raise StemlabTypeError(
                f"freeze must be 'none', 'backbone' or a non-empty list of module names, "
                f"got {value!r}"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"freeze={value!r} names {', '.join(map(repr, repeated))} twice")
        return names
    raise StemlabTypeError(
        f"freeze must be 'none', 'backbone' or a list of module names, "
        f"got {type(value).__name__} {value!r}"
    )


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
        head_lr_multiplier: learning-rate factor for the head (the module the backbone's layout
            declares; ``fc`` for a plain module). 10 trains a new head faster than a
            transferred backbone.
        freeze: ``"none"``; ``"backbone"`` (train only the head); or a list of module or stage
            names (``["stem", "layer1"]``) to keep fixed. Frozen modules stay in eval mode, so
            their batch-norm statistics stay fixed too.
        freeze_backbone: deprecated spelling of ``freeze="backbone"`` (``True``) or
            ``freeze="none"`` (``False``); it is folded into ``freeze`` and reset to ``None``.
        grad_clip: maximum global gradient norm, or ``None``.
        drop_last: drop the last incomplete training batch.
        seed: seeds parameter-free randomness: data order, dropout, random clip sampling.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        amp: mixed precision: ``"auto"`` (on CUDA only: bf16 where the GPU supports it, else
            fp16 with a GradScaler), ``"bf16"``, ``"fp16"`` (CUDA only) or ``"off"``; ``True``
            is mixed precision on any device (bf16 off CUDA), ``False`` is ``"off"``.
        channels_last: channels-last memory format; ``"auto"`` enables it on CUDA only.
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` during the run (restored after);
            ``"auto"`` and ``True`` enable it on CUDA, where alone it has an effect.
        num_workers: DataLoader worker processes.
        checkpoint_dir: folder for ``last.pt`` (written atomically after every epoch) and
            ``previous.pt`` (the epoch before, kept as a fallback). A run that does not resume
            replaces the checkpoints it finds there.
        resume: continue from ``checkpoint_dir/last.pt`` when it exists, or from
            ``previous.pt`` (with a warning) when ``last.pt`` is damaged or missing.
        progress: show tqdm progress bars.

    Raises:
        ValueError, TypeError: on an invalid field, naming it, its value and what is allowed.
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
    freeze: str | tuple[str, ...] = "none"
    freeze_backbone: bool | None = None
    grad_clip: float | None = None
    drop_last: bool = False
    seed: int = 0
    device: str = "auto"
    amp: str | bool = "auto"
    channels_last: str | bool = "auto"
    cudnn_benchmark: str | bool = "auto"
    num_workers: int = 0
    checkpoint_dir: str | os.PathLike[str] | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.epochs = _check_int("epochs", self.epochs, minimum=1)
        self.batch_size = _check_int("batch_size", self.batch_size, minimum=1)
        self.lr = _check_real("lr", self.lr, low=0, low_open=True)
        check_choice("optimizer", self.optimizer, ("adamw", "sgd"))
        self.weight_decay = _check_real("weight_decay", self.weight_decay, low=0)
        self.momentum = _check_real("momentum", self.momentum, low=0, high=1)
        self.warmup_epochs = _check_real(
            "warmup_epochs",
            self.warmup_epochs,
            low=0,
            high=self.epochs,
            high_open=False,
            hint=f" (epochs={self.epochs})",
        )
        check_choice("schedule", self.schedule, ("cosine", "constant"))
        self.min_lr = _check_real(
            "min_lr", self.min_lr, low=0, high=1, high_open=False, hint=" (a fraction of lr)"
        )
        check_choice("loss", self.loss, ("cross_entropy", "focal"))
        self.label_smoothing = _check_real("label_smoothing", self.label_smoothing, low=0, high=1)
        if self.label_smoothing and self.loss != "cross_entropy":
            raise ValueError(
                f"label_smoothing={self.label_smoothing} applies to loss='cross_entropy' only, "
                f"not loss={self.loss!r}"
            )
        self.focal_gamma = _check_real("focal_gamma", self.focal_gamma, low=0)
        if self.focal_alpha is not None:
            self.focal_alpha = _check_real("focal_alpha", self.focal_alpha, low=0, low_open=True)
        self.head_lr_multiplier = _check_real(
            "head_lr_multiplier", self.head_lr_multiplier, low=0, low_open=True
        )
        self.freeze = _check_freeze(self.freeze)
        self._fold_freeze_backbone()
        for flag in ("drop_last", "resume", "progress"):
            if not isinstance(getattr(self, flag), bool):
                raise StemlabTypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.grad_clip is not None:
            self.grad_clip = _check_real(
                "grad_clip",
                self.grad_clip,
                low=0,
                low_open=True,
                hint=" (use None for no clipping)",
            )
        self.seed = _check_int("seed", self.seed, minimum=0)
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"device={self.device!r} is not allowed: use 'auto', 'cpu', 'cuda', 'cuda:N' "
                "or 'mps'"
            )
        if not isinstance(self.amp, bool) and self.amp not in AMP_MODES:
            check_choice("amp", self.amp, AMP_MODES)
        _check_auto_flag("channels_last", self.channels_last)
        _check_auto_flag("cudnn_benchmark", self.cudnn_benchmark)
        self.num_workers = _check_int("num_workers", self.num_workers, minimum=0)
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, (str, os.PathLike)):
                raise StemlabTypeError(
                    f"checkpoint_dir must be a path, got {self.checkpoint_dir!r}"
                )
            self.checkpoint_dir = Path(self.checkpoint_dir)
        elif self.resume:
            raise ValueError("resume=True needs a checkpoint_dir")

    def _fold_freeze_backbone(self) -> None:
        """Turn the deprecated ``freeze_backbone`` flag into ``freeze``."""
        if self.freeze_backbone is None:
            return
        if not isinstance(self.freeze_backbone, bool):
            raise StemlabTypeError(
                f"freeze_backbone must be a bool (deprecated: use freeze='backbone'), "
                f"got {self.freeze_backbone!r}"
            )
        wanted = "backbone" if self.freeze_backbone else "none"
        if self.freeze not in ("none", wanted):
            raise ValueError(
                f"freeze_backbone={self.freeze_backbone} contradicts freeze={self.freeze!r}; "
                "freeze_backbone is deprecated, set only freeze"
            )
        warnings.warn(
            f"TrainConfig(freeze_backbone={self.freeze_backbone}) is deprecated; use "
            f"freeze={wanted!r}",
            DeprecationWarning,
            stacklevel=4,
        )
        self.freeze, self.freeze_backbone = wanted, None

    def to_dict(self) -> dict[str, Any]:
        """Plain, serialisable dict of the fields (paths as strings, ``freeze`` as a list)."""
        out = asdict(self)
        if out["checkpoint_dir"] is not None:
            out["checkpoint_dir"] = os.fspath(out["checkpoint_dir"])
        if isinstance(out["freeze"], tuple):
            out["freeze"] = list(out["freeze"])
        return out
