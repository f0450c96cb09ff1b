"""Learning-rate schedule: linear warm-up then cosine decay (or constant), stepped per batch."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosine", "build_scheduler"]


class WarmupCosine:
    """Factor on the base learning rate after ``step`` optimisation steps.

    Warm-up ramps linearly from ``1 / warmup_steps`` to 1 over ``warmup_steps``; then the factor
    follows half a cosine from 1 down to ``min_factor`` at ``total_steps`` (``cosine=True``) or
    stays 1.
    """

    def __init__(
        self, *, warmup_steps: int, total_steps: int, cosine: bool, min_factor: float = 0.0
    ) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.cosine = cosine
        self.min_factor = min_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if not self.cosine:
            return 1.0
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / decay_steps, 1.0)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float,
    schedule: str,
    min_lr: float = 0.0,
) -> LambdaLR:
    """A per-step :class:`LambdaLR` with :class:`WarmupCosine` for every parameter group."""
    factor = WarmupCosine(
        warmup_steps=round(warmup_epochs * steps_per_epoch),
        total_steps=epochs * steps_per_epoch,
        cosine=schedule == "cosine",
        min_factor=min_lr,
    )
    return LambdaLR(optimizer, factor)
