"""One epoch of training: the optimisation steps, with divergence detection and running metrics."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from stemlab.train.batches import autocast, split_batch, to_input
from stemlab.train.freeze import FreezePlan

__all__ = [
    "EpochStats",
    "TrainingDiverged",
    "TrainingParts",
    "check_finite_row",
    "train_one_epoch",
]


class TrainingDiverged(Exception):
    """A loss, a weight or an evaluation metric became NaN or infinite (the message says which)."""


def _first_non_finite_parameter(model: nn.Module) -> tuple[str, float] | None:
    """``(name, a bad value)`` of the first parameter holding a NaN or an infinity, else None."""
    named = list(model.named_parameters())
    if not named:
        return None
    with torch.no_grad():
        finite = torch.stack([torch.isfinite(p).all() for _, p in named])
        if bool(finite.all()):
            return None
        name, param = named[int((~finite).nonzero()[0])]
        return name, float(param[~torch.isfinite(param)].flatten()[0])


def check_finite_row(row: dict[str, float], *, epoch: int, validated: bool) -> None:
    """Raise :class:`TrainingDiverged` naming the first non-finite quantity of an epoch's row.

    Args:
        row: the epoch's history row.
        epoch: its number, for the message.
        validated: whether the ``val_*`` columns were measured (they are NaN otherwise).

    Raises:
        TrainingDiverged: e.g. ``"epoch 2: val_loss is nan"``.
    """
    names = ["train_loss", "train_top1", "lr"]
    if validated:
        names += ["val_loss", "val_top1", "val_top5"]
    for name in names:
        if not math.isfinite(row[name]):
            raise TrainingDiverged(f"epoch {epoch}: {name} is {row[name]}")


@dataclass
class TrainingParts:
    """Everything one optimisation step touches, built once per :func:`stemlab.train.fit`.

    Attributes:
        model: the model, already on ``device`` and with its frozen parameters fixed.
        loader: the shuffled training loader; ``generator`` seeds its order.
        generator: the loader's generator, re-seeded at the start of every epoch.
        optimizer, scheduler, scaler, criterion: the usual.
        freeze: the freeze plan (train/eval mode per module).
        device: where the batches go.
        use_amp: mixed precision on (in ``amp_dtype``; ``None``: the device's default).
        channels_last: channels-last inputs.
        grad_clip: maximum global gradient norm, or ``None``.
        base_lr: ``config.lr``, to report the scheduled learning rate.
        data_seed: the run's seed; epoch ``e`` shuffles with ``data_seed * 1_000_003 + e``.
    """

    model: nn.Module
    loader: DataLoader
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    freeze: FreezePlan
    device: torch.device
    use_amp: bool
    channels_last: bool
    grad_clip: float | None
    base_lr: float
    data_seed: int
    amp_dtype: torch.dtype | None = None


@dataclass(frozen=True)
class EpochStats:
    """Running averages of one training epoch.

    Attributes:
        train_loss: mean loss over the epoch's clips.
        train_top1: training accuracy over the epoch's clips.
        lr: the scheduled backbone learning rate at the end of the epoch.
        clips_per_s: training throughput.
    """

    train_loss: float
    train_top1: float
    lr: float
    clips_per_s: float


def _start_epoch(parts: TrainingParts, epoch: int) -> None:
    parts.generator.manual_seed(parts.data_seed * 1_000_003 + epoch)
    dataset: Any = parts.loader.dataset
    set_epoch = getattr(dataset, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)
    parts.freeze.set_train_mode(parts.model)


def train_one_epoch(
    parts: TrainingParts, *, epoch: int, epochs: int, progress: bool = False
) -> EpochStats:
    """Run epoch ``epoch`` (from 1) over the training loader.

    Args:
        parts: the model, data and optimisation state.
        epoch: the epoch number, which seeds the data order.
        epochs: the total, for the progress bar.
        progress: show a progress bar.

    Returns:
        The epoch's :class:`EpochStats`.

    Raises:
        TrainingDiverged: a NaN or infinite loss, or a NaN or infinite weight after an
            optimisation step (naming the epoch, the step and the loss or parameter).
    """
    start = time.perf_counter()
    _start_epoch(parts, epoch)
    params = [p for group in parts.optimizer.param_groups for p in group["params"]]
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(
        total=len(parts.loader),
        desc=f"epoch {epoch}/{epochs}",
        unit="batch",
        leave=False,
        disable=not progress,
    )
    try:
        for step, batch in enumerate(parts.loader):
            x, y = split_batch(batch)
            x = to_input(x, parts.device, parts.channels_last)
            y = y.to(parts.device, non_blocking=True)
            with autocast(parts.device, parts.use_amp, parts.amp_dtype):
                logits = parts.model(x)
            loss = parts.criterion(logits.float(), y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingDiverged(
                    f"epoch {epoch}, step {step + 1}: train_loss is {loss_value}"
                )
            parts.optimizer.zero_grad(set_to_none=True)
            parts.scaler.scale(loss).backward()
            if parts.grad_clip is not None:
                parts.scaler.unscale_(parts.optimizer)
                torch.nn.utils.clip_grad_norm_(params, parts.grad_clip)
            try:
                parts.scaler.step(parts.optimizer)
            except RuntimeError as exc:
                # A learning rate beyond float32 range fails inside the optimizer's update.
                if "overflow" not in str(exc):
                    raise
                raise TrainingDiverged(
                    f"epoch {epoch}, step {step + 1}: the optimizer step overflowed float32 "
                    f"(lr={parts.base_lr:g})"
                ) from exc
            parts.scaler.update()
            bad = _first_non_finite_parameter(parts.model)
            if bad is not None:
                raise TrainingDiverged(
                    f"epoch {epoch}, step {step + 1}: weight {bad[0]} is {bad[1]} after the step"
                )
            parts.scheduler.step()
            batch_size = y.numel()
            loss_sum += loss_value * batch_size
            correct += int((logits.argmax(1) == y).sum())
            seen += batch_size
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    group = parts.optimizer.param_groups[0]
    return EpochStats(
        train_loss=loss_sum / seen,
        train_top1=correct / seen,
        lr=parts.base_lr * group["lr"] / group["initial_lr"],
        clips_per_s=seen / seconds,
    )
