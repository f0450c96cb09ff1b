"""Shape inference without computation: run a module on the ``meta`` device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["infer_output_shape"]


def infer_output_shape(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Output shape of ``module`` for an input of ``input_shape``, computed on the meta device.

    The module itself is neither moved nor changed: its parameters and buffers are replaced by
    meta tensors for this one call.
    """
    meta_state = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*module.named_parameters(), *module.named_buffers()]
    }
    x = torch.empty(tuple(input_shape), device="meta")
    with torch.no_grad():
        return tuple(functional_call(module, meta_state, (x,)).shape)
