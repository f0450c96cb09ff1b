"""The training loop: fit() trains a model epoch by epoch and returns one row per epoch."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from stemlab._validation import check_positive_int
from stemlab.train.config import EXECUTION_FIELDS, TrainConfig
from stemlab.train.losses import build_loss
from stemlab.train.schedule import build_scheduler

__all__ = ["HISTORY_COLUMNS", "TrainResult", "evaluate", "fit", "resolve_device"]

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
CHECKPOINT_NAME = "last.pt"


class _Diverged(Exception):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    """Outcome of :func:`fit`.

    Attributes:
        history: one row per finished epoch, columns :data:`HISTORY_COLUMNS`.
        status: ``"completed"``, ``"diverged"`` (non-finite loss) or ``"failed"`` (an exception).
        error: what went wrong, or ``None``.
        final: the last history row as a dict (empty if no epoch finished).
        traceback: the formatted traceback of a ``"failed"`` run.
        checkpoint: path of the last checkpoint written, if any.
    """

    history: pd.DataFrame
    status: str
    error: str | None = None
    final: dict[str, float] = field(default_factory=dict)
    traceback: str | None = None
    checkpoint: Path | None = None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given.

    Raises:
        ValueError: if CUDA is asked for but not available.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for but CUDA is not available")
    return device


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips and labels of a batch from a dataset returning (clip, label[, mask, ...])."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            "the dataset must return (clip, label) or (clip, label, mask) tuples, "
            f"got a batch of type {type(batch).__name__}"
        )
    return batch[0], batch[1]


def _memory_format(model: nn.Module) -> torch.memory_format:
    has_3d = any(isinstance(m, nn.Conv3d) for m in model.modules())
    return torch.channels_last_3d if has_3d else torch.channels_last


def _to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() in (4, 5):
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        x = x.contiguous(memory_format=fmt)
    return x


def _set_param_layout(model: nn.Module, channels_last: bool) -> None:
    """Put rank-4 and rank-5 parameters in (or back out of) channels-last layout."""
    for param in model.parameters():
        if param.dim() == 5:
            fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        elif param.dim() == 4:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
        else:
            continue
        param.data = param.data.contiguous(memory_format=fmt)


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors, lists and ints (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [version, list(internal), gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _head(model: nn.Module) -> nn.Module | None:
    head = getattr(model, "fc", None)
    return head if isinstance(head, nn.Module) else None


def _param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """Backbone and head groups, each split into decayed (rank >= 2) and undecayed parameters."""
    head = _head(model)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        key = (id(param) in head_ids, param.dim() >= 2)
        buckets.setdefault(key, []).append(param)
    groups = []
    for (is_head, decayed), params in sorted(buckets.items()):
        groups.append(
            {
                "params": params,
                "lr": config.lr * (config.head_lr_multiplier if is_head else 1.0),
                "weight_decay": config.weight_decay if decayed else 0.0,
                "name": ("head" if is_head else "backbone") + ("" if decayed else "_no_decay"),
            }
        )
    if not groups:
        raise ValueError("the model has no trainable parameter")
    return groups


def _build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=config.lr)


@contextlib.contextmanager
def _training_state(
    model: nn.Module, device: torch.device, channels_last: bool, freeze_backbone: bool
) -> Iterator[None]:
    """Move, re-layout and (un)freeze the model for training; undo all of it afterwards."""
    first = next(model.parameters(), None)
    original_device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        model.to(device)
        if channels_last:
            _set_param_layout(model, True)
        if freeze_backbone:
            head = _head(model)
            if head is None:
                raise ValueError("freeze_backbone=True needs a model with an .fc head")
            head_ids = {id(p) for p in head.parameters()}
            for param in model.parameters():
                if id(param) not in head_ids:
                    param.requires_grad_(False)
        yield
    finally:
        if channels_last:
            _set_param_layout(model, False)
        model.to(original_device)
        for name, param in model.named_parameters():
            param.requires_grad_(requires_grad[name])
        model.train(was_training)


def _set_train_mode(model: nn.Module, frozen_head: nn.Module | None) -> None:
    """Train mode; with a frozen backbone only ``frozen_head`` trains (batch-norm stats fixed)."""
    if frozen_head is None:
        model.train()
    else:
        model.eval()
        frozen_head.train()


def _check_dataset(argument: str, data: Any) -> None:
    if not isinstance(data, Dataset) and not (
        hasattr(data, "__getitem__") and hasattr(data, "__len__")
    ):
        raise TypeError(f"{argument} must be a map-style dataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{argument} is empty")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    amp: str | bool = "auto",
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Loss and accuracy of ``model`` on ``data`` (cross-entropy, no label smoothing).

    The model is evaluated in eval mode on ``device`` and left as it was found (mode, device).

    Args:
        model: a classifier returning logits ``[N, num_classes]``.
        data: a dataset of ``(clip, label)`` or ``(clip, label, mask)``.
        batch_size: clips per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        amp: mixed precision (``"auto"``: on CUDA only).
        num_workers: DataLoader worker processes.
        progress: show a progress bar.

    Returns:
        ``{"loss", "top1", "top5", "clips", "clips_per_s"}``; top-5 is top-``min(5, classes)``.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_workers", num_workers, allow_zero=True)
    _check_dataset("data", data)
    resolved = resolve_device(device)
    use_amp = resolved.type == "cuda" if amp == "auto" else bool(amp)
    first = next(model.parameters(), None)
    original_device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=resolved.type == "cuda",
    )
    loss_sum = torch.zeros((), dtype=torch.float64, device=resolved)
    top1 = torch.zeros((), dtype=torch.int64, device=resolved)
    top5 = torch.zeros((), dtype=torch.int64, device=resolved)
    count = 0
    start = time.perf_counter()
    try:
        model.to(resolved).eval()
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
            x, y = _split_batch(batch)
            x, y = _to_input(x, resolved, False), y.to(resolved, non_blocking=True)
            with _autocast(resolved, use_amp):
                logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            k = min(5, logits.shape[1])
            ranked = logits.topk(k, dim=1).indices
            hits = ranked == y[:, None]
            top1 += hits[:, 0].sum()
            top5 += hits.any(dim=1).sum()
            count += y.numel()
    finally:
        model.to(original_device)
        model.train(was_training)
    seconds = time.perf_counter() - start
    return {
        "loss": float(loss_sum) / count,
        "top1": int(top1) / count,
        "top5": int(top5) / count,
        "clips": float(count),
        "clips_per_s": count / seconds if seconds > 0 else math.inf,
    }


def _summary(row: dict[str, float], epochs: int) -> str:
    text = (
        f"epoch {int(row['epoch'])}/{epochs}: train_loss {row['train_loss']:.4f} "
        f"train_top1 {row['train_top1']:.3f}"
    )
    if not math.isnan(row["val_loss"]):
        text += f" val_loss {row['val_loss']:.4f} val_top1 {row['val_top1']:.3f}"
    return text + f" lr {row['lr']:.3g} {row['clips_per_s']:.1f} clips/s {row['seconds']:.1f} s"


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _check_resumable(saved: dict[str, Any], config: TrainConfig) -> None:
    current = config.to_dict()
    different = sorted(
        key for key in current if key not in EXECUTION_FIELDS and saved.get(key) != current[key]
    )
    if different:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in different)
        raise ValueError(
            f"cannot resume: the checkpoint was written with a different config ({details}); "
            "use another checkpoint_dir or resume=False"
        )


def fit(
    model: nn.Module,
    train_data: Dataset,
    *,
    config: TrainConfig,
    val_data: Dataset | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train_data``; evaluate on ``val_data`` after every epoch.

    The model ends with the trained weights, in the mode, device and memory layout it came in
    with. A NaN or infinite loss stops the run with status ``"diverged"``; any other exception
    raised while training stops it with status ``"failed"``: neither escapes. Invalid arguments
    and an incompatible checkpoint raise before training starts.

    Args:
        model: a classifier returning logits; ``model.fc`` is the head for
            ``head_lr_multiplier`` and ``freeze_backbone``.
        train_data: a dataset of ``(clip, label)`` or ``(clip, label, mask)``; a ``set_epoch``
            method, if present, is called before every epoch.
        config: the hyper-parameters.
        val_data: optional validation dataset.

    Returns:
        A :class:`TrainResult`. History columns: ``epoch`` (from 1), ``train_loss`` and
        ``train_top1`` (running averages over the epoch), ``val_loss``, ``val_top1``,
        ``val_top5`` (NaN without ``val_data``), ``lr`` (the scheduled backbone learning rate at
        the end of the epoch), ``clips_per_s`` (training only), ``seconds`` (with validation).

    Raises:
        TypeError, ValueError: on invalid arguments or a checkpoint from another config.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_dataset("train_data", train_data)
    if val_data is not None:
        _check_dataset("val_data", val_data)
    if config.freeze_backbone and _head(model) is None:
        raise ValueError("freeze_backbone=True needs a model with an .fc head")
    if config.head_lr_multiplier != 1.0 and _head(model) is None:
        raise ValueError("head_lr_multiplier needs a model with an .fc head")

    device = resolve_device(config.device)
    use_amp = device.type == "cuda" if config.amp == "auto" else bool(config.amp)
    channels_last = (
        device.type == "cuda" if config.channels_last == "auto" else bool(config.channels_last)
    )
    checkpoint = Path(config.checkpoint_dir) / CHECKPOINT_NAME if config.checkpoint_dir else None
    saved = None
    if checkpoint is not None and config.resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        _check_resumable(saved["config"], config)

    _seed_everything(config.seed)
    loader_generator = torch.Generator()
    loader = DataLoader(
        train_data,
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        drop_last=config.drop_last and len(train_data) > config.batch_size,
        generator=loader_generator,
        persistent_workers=config.num_workers > 0,
    )
    steps_per_epoch = len(loader)
    rows: list[dict[str, float]] = []
    status, error, trace = "completed", None, None
    written: Path | None = None

    with _training_state(model, device, channels_last, config.freeze_backbone):
        optimizer = _build_optimizer(model, config)
        scheduler = build_scheduler(
            optimizer,
            steps_per_epoch=steps_per_epoch,
            epochs=config.epochs,
            warmup_epochs=config.warmup_epochs,
            schedule=config.schedule,
            min_lr=config.min_lr,
        )
        use_scaler = use_amp and device.type == "cuda" and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        criterion = build_loss(config)
        start_epoch = 1
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            _set_rng_state(saved["rng"])
            rows = list(saved["history"])
            start_epoch = int(saved["epoch"]) + 1
            written = checkpoint

        params = [p for group in optimizer.param_groups for p in group["params"]]
        try:
            for epoch in range(start_epoch, config.epochs + 1):
                epoch_start = time.perf_counter()
                loader_generator.manual_seed(config.seed * 1_000_003 + epoch)
                set_epoch = getattr(train_data, "set_epoch", None)
                if callable(set_epoch):
                    set_epoch(epoch)
                _set_train_mode(model, _head(model) if config.freeze_backbone else None)
                loss_sum, correct, seen = 0.0, 0, 0
                bar = tqdm(
                    total=steps_per_epoch,
                    desc=f"epoch {epoch}/{config.epochs}",
                    unit="batch",
                    leave=False,
                    disable=not config.progress,
                )
                try:
                    for step, batch in enumerate(loader):
                        x, y = _split_batch(batch)
                        x = _to_input(x, device, channels_last)
                        y = y.to(device, non_blocking=True)
                        with _autocast(device, use_amp):
                            logits = model(x)
                        loss = criterion(logits.float(), y)
                        loss_value = loss.item()
                        if not math.isfinite(loss_value):
                            raise _Diverged(
                                f"non-finite training loss ({loss_value}) at epoch {epoch}, "
                                f"step {step + 1}"
                            )
                        optimizer.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        if config.grad_clip is not None:
                            scaler.unscale_(optimizer)
                            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                        scaler.step(optimizer)
                        scaler.update()
                        scheduler.step()
                        batch_size = y.numel()
                        loss_sum += loss_value * batch_size
                        correct += int((logits.argmax(1) == y).sum())
                        seen += batch_size
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
                finally:
                    bar.close()
                train_seconds = time.perf_counter() - epoch_start
                group = optimizer.param_groups[0]
                row = {
                    "epoch": float(epoch),
                    "train_loss": loss_sum / seen,
                    "train_top1": correct / seen,
                    "val_loss": math.nan,
                    "val_top1": math.nan,
                    "val_top5": math.nan,
                    "lr": config.lr * group["lr"] / group["initial_lr"],
                    "clips_per_s": seen / train_seconds,
                    "seconds": 0.0,
                }
                if val_data is not None:
                    metrics = evaluate(
                        model,
                        val_data,
                        batch_size=config.batch_size,
                        device=device,
                        amp=use_amp,
                        num_workers=config.num_workers,
                    )
                    row.update(
                        val_loss=metrics["loss"], val_top1=metrics["top1"], val_top5=metrics["top5"]
                    )
                row["seconds"] = time.perf_counter() - epoch_start
                rows.append(row)
                if config.progress:
                    tqdm.write(_summary(row, config.epochs))
                if checkpoint is not None:
                    _save_checkpoint(
                        checkpoint,
                        {
                            "epoch": epoch,
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict(),
                            "rng": _rng_state(),
                            "history": rows,
                            "config": config.to_dict(),
                        },
                    )
                    written = checkpoint
        except _Diverged as diverged:
            status, error = "diverged", str(diverged)
        except Exception as exc:
            status = "failed"
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            trace = traceback.format_exc()

    history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    history["epoch"] = history["epoch"].astype(int)
    final = {key: float(value) for key, value in rows[-1].items()} if rows else {}
    return TrainResult(history, status, error, final, trace, written)
