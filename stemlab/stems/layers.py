"""Layers used inside stems."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from stemlab._validation import check_positive_int

__all__ = ["SqueezeExcitation"]


class SqueezeExcitation(nn.Module):
    """Channel attention for 4-D or 5-D feature maps, correct for any batch size.

    ::

        x -> global mean over all non-channel dims -> fc (C -> C/r) -> act -> fc (C/r -> C)
          -> 2 * sigmoid -> x * gate

    The gate is ``2 * sigmoid`` and the last fc starts at zero, so a freshly built block is exactly
    the identity (gate 1.0); it learns to amplify or attenuate channels from there.

    Args:
        channels: channels of the input.
        reduction: squeeze ratio; the hidden width is ``max(1, channels // reduction)``.
        activation: activation between the two fcs.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 4,
        activation: Callable[..., nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = activation()
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=tuple(range(2, x.dim())))
        gate = 2.0 * torch.sigmoid(self.fc2(self.act(self.fc1(squeezed))))
        return x * gate.view(*gate.shape, *([1] * (x.dim() - 2)))
