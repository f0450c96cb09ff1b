"""fit(): train a model epoch by epoch and return one row per epoch.

The parts live in their own modules: one epoch in :mod:`~stemlab.train.epoch`, evaluation in
:mod:`~stemlab.train.evaluate`, checkpoint files in :mod:`~stemlab.train.checkpoints`, resuming in
:mod:`~stemlab.train.resume`, head and freezing in :mod:`~stemlab.train.freeze`, and the one
save/restore of the model's state in :mod:`~stemlab.train.state`.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from stemlab.device import resolve_device
from stemlab.errors import StemlabTypeError
from stemlab.train.batches import check_dataset, seed_everything
from stemlab.train.checkpoints import capture_rng_state, write_training_checkpoint
from stemlab.train.config import TrainConfig
from stemlab.train.epoch import (
    TrainingDiverged,
    TrainingParts,
    check_finite_row,
    train_one_epoch,
)
from stemlab.train.evaluate import evaluate
from stemlab.train.freeze import FALLBACK_HEAD, FreezePlan, plan_freeze
from stemlab.train.losses import build_loss
from stemlab.train.optim import build_optimizer
from stemlab.train.precision import cudnn_benchmark, resolve_execution
from stemlab.train.resume import ResumePoint, apply_resume_point, find_resume_point
from stemlab.train.schedule import build_scheduler
from stemlab.train.state import preserved_model_state, set_parameter_layout

__all__ = ["HISTORY_COLUMNS", "TrainResult", "fit"]

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "lr",
    "clips_per_s",
    "seconds",
)


@dataclass
class TrainResult:
    """Outcome of :func:`fit`.

    Attributes:
        history: one row per finished epoch, columns :data:`HISTORY_COLUMNS`.
        status: ``"completed"``, ``"diverged"`` (a non-finite loss, weight or validation
            metric) or ``"failed"`` (an exception).
        error: what went wrong, or ``None``; for ``"diverged"`` the epoch and the first
            non-finite quantity (``"epoch 2: val_loss is nan"``). The diverged epoch is not
            in ``history`` and no checkpoint is written for it.
        final: the last history row as a dict (empty if no epoch finished).
        traceback: the formatted traceback of a ``"failed"`` run.
        checkpoint: path of the last checkpoint written (or resumed from), if any.
        settings: how the run executed (:meth:`ExecutionSettings.to_dict`: device, amp,
            channels_last, cudnn_benchmark, grad_scaler).
    """

    history: pd.DataFrame
    status: str
    error: str | None = None
    final: dict[str, float] = field(default_factory=dict)
    traceback: str | None = None
    checkpoint: Path | None = None
    settings: dict[str, object] = field(default_factory=dict)


def _summary(row: dict[str, float], epochs: int) -> str:
    text = (
        f"epoch {int(row['epoch'])}/{epochs}: train_loss {row['train_loss']:.4f} "
        f"train_top1 {row['train_top1']:.3f}"
    )
    if not math.isnan(row["val_loss"]):
        text += f" val_loss {row['val_loss']:.4f} val_top1 {row['val_top1']:.3f}"
    return text + f" lr {row['lr']:.3g} {row['clips_per_s']:.1f} clips/s {row['seconds']:.1f} s"


def _check_arguments(
    model: nn.Module, train_data: Dataset, config: TrainConfig, val_data: Dataset | None
) -> FreezePlan:
    if not isinstance(model, nn.Module):
        raise StemlabTypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise StemlabTypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    check_dataset("train_data", train_data)
    if val_data is not None:
        check_dataset("val_data", val_data)
    plan = plan_freeze(model, config.freeze)
    if config.head_lr_multiplier != 1.0 and plan.head is None:
        raise ValueError(
            f"head_lr_multiplier={config.head_lr_multiplier} needs a model whose head is known: "
            "a model from stemlab.create_model (its layout declares the head) or a module with "
            f"an {FALLBACK_HEAD!r} child"
        )
    return plan


def _train_loader(
    train_data: Dataset, config: TrainConfig, device: torch.device
) -> tuple[DataLoader, torch.Generator]:
    generator = torch.Generator()
    loader = DataLoader(
        train_data,
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=config.drop_last and len(train_data) > config.batch_size,
        generator=generator,
        persistent_workers=config.num_workers > 0,
    )
    return loader, generator


def _build_parts(
    model: nn.Module,
    train_data: Dataset,
    config: TrainConfig,
    plan: FreezePlan,
    device: torch.device,
) -> TrainingParts:
    """The loader, optimizer, schedule, scaler and loss, for a model already on ``device``
    with its frozen parameters fixed (they are left out of the optimizer)."""
    settings = resolve_execution(config, device)
    loader, generator = _train_loader(train_data, config, device)
    optimizer = build_optimizer(model, config, head=plan.head)
    scheduler = build_scheduler(
        optimizer,
        steps_per_epoch=len(loader),
        epochs=config.epochs,
        warmup_epochs=config.warmup_epochs,
        schedule=config.schedule,
        min_lr=config.min_lr,
    )
    return TrainingParts(
        model=model,
        loader=loader,
        generator=generator,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=settings.grad_scaler),
        criterion=build_loss(config),
        freeze=plan,
        device=device,
        use_amp=settings.amp != "off",
        channels_last=settings.channels_last,
        grad_clip=config.grad_clip,
        base_lr=config.lr,
        data_seed=config.seed,
        amp_dtype=settings.amp_dtype,
    )


def _checkpoint_state(
    parts: TrainingParts, epoch: int, rows: list[dict[str, float]], config: TrainConfig
) -> dict[str, object]:
    return {
        "epoch": epoch,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict(),
        "rng": capture_rng_state(),
        "history": rows,
        "config": config.to_dict(),
    }


def _epoch_row(
    parts: TrainingParts,
    epoch: int,
    config: TrainConfig,
    val_data: Dataset | None,
) -> dict[str, float]:
    """Train one epoch, evaluate, and return its history row."""
    start = time.perf_counter()
    stats = train_one_epoch(parts, epoch=epoch, epochs=config.epochs, progress=config.progress)
    row = {
        "epoch": float(epoch),
        "train_loss": stats.train_loss,
        "train_top1": stats.train_top1,
        "val_loss": math.nan,
        "val_top1": math.nan,
        "val_top5": math.nan,
        "lr": stats.lr,
        "clips_per_s": stats.clips_per_s,
        "seconds": 0.0,
    }
    if val_data is not None:
        metrics = evaluate(
            parts.model,
            val_data,
            batch_size=config.batch_size,
            device=parts.device,
            amp=resolve_execution(config, parts.device).amp,
            num_workers=config.num_workers,
        )
        row.update(val_loss=metrics["loss"], val_top1=metrics["top1"], val_top5=metrics["top5"])
    row["seconds"] = time.perf_counter() - start
    check_finite_row(row, epoch=epoch, validated=val_data is not None)
    return row


def fit(
    model: nn.Module,
    train_data: Dataset,
    *,
    config: TrainConfig,
    val_data: Dataset | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train_data``; evaluate on ``val_data`` after every epoch.

    The model ends with the trained weights, in the modes, device, ``requires_grad`` flags and
    memory layout it came in with. A NaN or infinite loss or weight at any step, or a NaN or
    infinite validation metric, stops the run with status ``"diverged"``; any other exception raised while training stops it with status
    ``"failed"``: neither escapes. Invalid arguments and an unusable or incompatible checkpoint
    raise before training starts, with the model untouched.

    Args:
        model: a classifier returning logits. Its head (for ``head_lr_multiplier`` and
            ``freeze="backbone"``) is the module its layout declares (``model.layout.head``,
            models from :func:`stemlab.create_model`), else its ``fc`` child.
        train_data: a dataset of ``(clip, label)`` or ``(clip, label, mask)``; a ``set_epoch``
            method, if present, is called before every epoch.
        config: the hyper-parameters.
        val_data: optional validation dataset.
        on_epoch: called as ``on_epoch(epoch, model)`` after each epoch's history row (e.g. to
            score a test split at set budgets); an exception there fails the run.

    Returns:
        A :class:`TrainResult`. History columns: ``epoch`` (from 1), ``train_loss`` and
        ``train_top1`` (running averages over the epoch), ``val_loss``, ``val_top1``,
        ``val_top5`` (NaN without ``val_data``), ``lr`` (the scheduled backbone learning rate at
        the end of the epoch), ``clips_per_s`` (training only), ``seconds`` (with validation).

    Raises:
        TypeError, ValueError: invalid arguments (unknown ``freeze`` names, no head), an
            unavailable device, ``amp="fp16"`` off CUDA, a checkpoint from another config, or
            (on resume) unreadable ``last.pt`` and ``previous.pt``.
    """
    plan = _check_arguments(model, train_data, config, val_data)
    device = resolve_device(config.device)
    settings = resolve_execution(config, device)
    directory = Path(config.checkpoint_dir) if config.checkpoint_dir is not None else None
    resume: ResumePoint | None = None
    if directory is not None and config.resume:
        resume = find_resume_point(directory, config, model)

    seed_everything(config.seed)
    rows: list[dict[str, float]] = []
    status, error, trace = "completed", None, None
    written: Path | None = None
    with preserved_model_state(model), cudnn_benchmark(settings.cudnn_benchmark):
        model.to(device)
        if settings.channels_last:
            set_parameter_layout(model, channels_last=True)
        plan.freeze_parameters(model)
        parts = _build_parts(model, train_data, config, plan, device)
        start_epoch = 1
        if resume is not None:
            rows = apply_resume_point(resume, parts)
            start_epoch = resume.epoch + 1
            written = resume.path
        try:
            for epoch in range(start_epoch, config.epochs + 1):
                row = _epoch_row(parts, epoch, config, val_data)
                rows.append(row)
                if on_epoch is not None:
                    on_epoch(epoch, model)
                if config.progress:
                    tqdm.write(_summary(row, config.epochs))
                if directory is not None:
                    written = write_training_checkpoint(
                        directory,
                        _checkpoint_state(parts, epoch, rows, config),
                        keep_previous=resume is not None or epoch > start_epoch,
                    )
        except TrainingDiverged as diverged:
            status, error = "diverged", str(diverged)
        except Exception as exc:
            status = "failed"
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            trace = traceback.format_exc()

    history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    history["epoch"] = history["epoch"].astype(int)
    final = {key: float(value) for key, value in rows[-1].items()} if rows else {}
    return TrainResult(history, status, error, final, trace, written, settings.to_dict())
