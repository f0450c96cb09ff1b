"""Moving batches to the device: (clip, label) splitting, channels-last inputs, autocast, seeding."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stemlab.errors import StemlabTypeError

__all__ = ["autocast", "check_dataset", "seed_everything", "split_batch", "to_input"]


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips and labels of a batch from a dataset returning (clip, label[, mask, ...])."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise StemlabTypeError(
            "the dataset must return (clip, label) or (clip, label, mask) tuples, "
            f"got a batch of type {type(batch).__name__}"
        )
    return batch[0], batch[1]


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """``x`` on ``device``, in channels-last layout if asked and it is an image or clip batch."""
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() in (4, 5):
        fmt = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        x = x.contiguous(memory_format=fmt)
    return x


def autocast(
    device: torch.device, enabled: bool, dtype: torch.dtype | None = None
) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision on ``device`` in ``dtype`` (default: bfloat16, or float16 on CUDA without
    bfloat16) or nothing."""
    if not enabled:
        return contextlib.nullcontext()
    if dtype is None and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif dtype is None:
        dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_dataset(argument: str, data: Any) -> None:
    """Raise TypeError unless ``data`` is a non-empty map-style dataset (ValueError if empty)."""
    if not isinstance(data, Dataset) and not (
        hasattr(data, "__getitem__") and hasattr(data, "__len__")
    ):
        raise StemlabTypeError(f"{argument} must be a map-style dataset, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{argument} is empty")
