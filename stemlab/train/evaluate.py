"""evaluate(): loss and top-1 / top-5 accuracy of a classifier on a dataset."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from stemlab._validation import check_positive_int
from stemlab.device import resolve_device
from stemlab.train.batches import autocast, check_dataset, split_batch, to_input
from stemlab.train.precision import ExecutionSettings, resolve_amp
from stemlab.train.state import preserved_model_state

__all__ = ["evaluate"]


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

    The model is evaluated in eval mode on ``device`` and left as it was found (modes, device,
    ``requires_grad``, layout).

    Args:
        model: a classifier returning logits ``[N, num_classes]``.
        data: a dataset of ``(clip, label)`` or ``(clip, label, mask)``.
        batch_size: clips per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        amp: mixed precision: ``"auto"`` (on CUDA only), ``"bf16"``, ``"fp16"`` (CUDA),
            ``"off"``, or a bool (see :func:`stemlab.train.precision.resolve_amp`).
        num_workers: DataLoader worker processes.
        progress: show a progress bar.

    Returns:
        ``{"loss", "top1", "top5", "clips", "clips_per_s"}``; top-5 is top-``min(5, classes)``.

    Raises:
        TypeError, ValueError: on invalid arguments or an unavailable device.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_workers", num_workers, allow_zero=True)
    check_dataset("data", data)
    resolved = resolve_device(device)
    amp_mode = resolve_amp(amp, resolved)
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
    with preserved_model_state(model):
        model.to(resolved).eval()
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
            x, y = split_batch(batch)
            x, y = to_input(x, resolved, False), y.to(resolved, non_blocking=True)
            with autocast(resolved, amp_mode != "off", ExecutionSettings.dtype_of(amp_mode)):
                logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            k = min(5, logits.shape[1])
            hits = logits.topk(k, dim=1).indices == y[:, None]
            top1 += hits[:, 0].sum()
            top5 += hits.any(dim=1).sum()
            count += y.numel()
    seconds = time.perf_counter() - start
    return {
        "loss": float(loss_sum) / count,
        "top1": int(top1) / count,
        "top5": int(top5) / count,
        "clips": float(count),
        "clips_per_s": count / seconds if seconds > 0 else math.inf,
    }
