"""What every stem transfer rule shares: the working items, the model side, the rule record."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "NORM_SUFFIXES",
    "Item",
    "NoTransfer",
    "StemPair",
    "StemRule",
    "StemTransfer",
    "Working",
    "energy_ratio",
    "identity_norm",
    "shape_of",
    "span",
]

NORM_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class NoTransfer(Exception):
    """The checkpoint's stem cannot be adapted to the model's stem; the message says why."""


@dataclass
class Item:
    """A tensor on its way into the model, with where it came from and what was done to it.

    Attributes:
        tensor: the value (float64 on CPU for floating tensors).
        sources: checkpoint keys it was computed from (empty for init values).
        notes: what was done, in order, for the report.
        from_checkpoint: ``False`` for values set by a rule rather than derived from the checkpoint.
    """

    tensor: torch.Tensor
    sources: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    from_checkpoint: bool = True


@dataclass(frozen=True)
class StemPair:
    """The model side of a transfer.

    Attributes:
        model: the model receiving the weights (read only).
        target: the model's tensors under ``stem_prefix`` and ``block_prefix`` (CPU, float64).
        stem_prefix: state-dict prefix of the stem (``"stem."``).
        block_prefix: prefix of the first module reading the stem output (``"layer1.0."``) or None.
        checkpoint_width: output channels of the checkpoint's stem.
        model_width: output channels of the model's stem.
    """

    model: nn.Module
    target: Mapping[str, torch.Tensor]
    stem_prefix: str
    block_prefix: str | None
    checkpoint_width: int
    model_width: int

    @property
    def stem(self) -> nn.Module:
        """The model's stem module (the one ``stem_prefix`` names)."""
        return self.model.get_submodule(self.stem_prefix.rstrip("."))

    def module(self, key: str) -> nn.Module:
        """The module that owns the tensor ``key``."""
        return self.model.get_submodule(key.rsplit(".", 1)[0])

    def stem_keys(self) -> list[str]:
        return [k for k in self.target if k.startswith(self.stem_prefix)]

    def block_keys(self) -> list[str]:
        if self.block_prefix is None:
            return []
        return [k for k in self.target if k.startswith(self.block_prefix)]


Working = dict[str, Item]


@dataclass(frozen=True)
class StemRule:
    """One transfer rule of :data:`STEM_TRANSFERS`.

    Attributes:
        handles: the difference it adapts, for docs and the report.
        apply: ``apply(pair, working, metrics) -> bool``; edits ``working`` in place, returns whether
            it changed anything, raises :class:`NoTransfer` when it applies but cannot succeed.
        structural: rules that run before the key sets are compared: those that add or rename
            tensors, and those that must see the checkpoint's own stem (input channels).
    """

    handles: str
    apply: Callable[[StemPair, Working, dict[str, Any]], bool]
    structural: bool


@dataclass(frozen=True)
class StemTransfer:
    """Result of :func:`transfer_stem`.

    Attributes:
        items: model key -> :class:`Item`, for every tensor of the stem and the first block.
        rules: names of the rules that changed something, in order.
        metrics: numbers for the report (``svd_rank``, ``svd_relative_error``...).
    """

    items: dict[str, Item]
    rules: tuple[str, ...]
    metrics: dict[str, Any]


def shape_of(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def energy_ratio(part: torch.Tensor, whole: torch.Tensor) -> float:
    total = float(whole.square().sum())
    return float(part.square().sum()) / total if total > 0 else 1.0


def span(what: str, start: int, stop: int) -> str:
    return f"{what} {start}" if stop - start == 1 else f"{what}s {start}..{stop - 1}"


def identity_norm(
    pair: StemPair, prefix: str, working: Working, note: str, *, channels: int
) -> None:
    """Eval-mode identity BatchNorm: ``(x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + 0``."""
    norm = pair.model.get_submodule(prefix.rstrip("."))
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or not norm.affine:
        raise NoTransfer(f"{prefix.rstrip('.')} is not an affine BatchNorm")
    if not norm.track_running_stats:
        raise NoTransfer(f"{prefix.rstrip('.')} does not track running statistics")
    dtype = torch.float64
    values = {
        "weight": torch.full((channels,), (1.0 + norm.eps) ** 0.5, dtype=dtype),
        "bias": torch.zeros(channels, dtype=dtype),
        "running_mean": torch.zeros(channels, dtype=dtype),
        "running_var": torch.ones(channels, dtype=dtype),
    }
    for suffix, value in values.items():
        working[prefix + suffix] = Item(value, (), [note], from_checkpoint=False)
    key = prefix + "num_batches_tracked"
    if key in pair.target:
        working[key] = Item(pair.target[key].clone(), (), ["keeps its init"], False)
