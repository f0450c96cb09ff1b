"""Parameter groups (backbone / head, decayed / not) and the optimizer built from them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stemlab.train.config import TrainConfig

__all__ = ["build_optimizer", "param_groups"]


def param_groups(
    model: nn.Module, config: TrainConfig, *, head: nn.Module | None
) -> list[dict[str, Any]]:
    """Backbone and head groups, each split into decayed (rank >= 2) and undecayed parameters.

    Args:
        model: the model; parameters with ``requires_grad=False`` are left out.
        config: gives ``lr``, ``head_lr_multiplier`` and ``weight_decay``.
        head: the head module (its group gets ``lr * head_lr_multiplier``), or ``None``.

    Raises:
        ValueError: if no parameter is trainable.
    """
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


def build_optimizer(
    model: nn.Module, config: TrainConfig, *, head: nn.Module | None
) -> torch.optim.Optimizer:
    """AdamW, or SGD (Nesterov when ``momentum > 0``), over :func:`param_groups`."""
    groups = param_groups(model, config, head=head)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=config.lr)
