"""One save/restore of a model's state: device, train/eval mode per module, requires_grad, layout.

Training and evaluation both change a model (move it, switch modes, freeze parameters, put weights
in channels-last layout); :func:`preserved_model_state` records all of that first and puts it back
in ``finally``, so the caller gets its model back as it gave it (with the new weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "ModelState",
    "capture_model_state",
    "model_device",
    "preserved_model_state",
    "restore_model_state",
    "set_parameter_layout",
]


@dataclass(frozen=True)
class ModelState:
    """What training or evaluation may change about a model, other than its weights.

    Attributes:
        device: the device of the first parameter (CPU for a model without parameters).
        modes: ``module.training`` for every module, in ``model.modules()`` order.
        requires_grad: ``param.requires_grad`` for every parameter, in ``model.parameters()``
            order.
        formats: the memory format of every parameter (channels-last or contiguous).
    """

    device: torch.device
    modes: tuple[bool, ...]
    requires_grad: tuple[bool, ...]
    formats: tuple[torch.memory_format, ...]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter, CPU when it has none."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.is_contiguous():
        return torch.contiguous_format
    if tensor.dim() == 5 and tensor.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def capture_model_state(model: nn.Module) -> ModelState:
    """Record ``model``'s device, modes, ``requires_grad`` flags and parameter layouts."""
    params = list(model.parameters())
    return ModelState(
        device=model_device(model),
        modes=tuple(module.training for module in model.modules()),
        requires_grad=tuple(p.requires_grad for p in params),
        formats=tuple(_memory_format(p) for p in params),
    )


def restore_model_state(model: nn.Module, state: ModelState) -> None:
    """Put back what :func:`capture_model_state` recorded (the weights are left as they are)."""
    model.to(state.device)
    params = list(model.parameters())
    for param, fmt, flag in zip(params, state.formats, state.requires_grad, strict=True):
        if not param.is_contiguous(memory_format=fmt):
            param.data = param.data.contiguous(memory_format=fmt)
        param.requires_grad_(flag)
    for module, mode in zip(model.modules(), state.modes, strict=True):
        module.training = mode


@contextlib.contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[ModelState]:
    """Record the model's state on entry and restore it on exit, even after an exception.

    Yields:
        The recorded :class:`ModelState`.
    """
    state = capture_model_state(model)
    try:
        yield state
    finally:
        restore_model_state(model, state)


def set_parameter_layout(model: nn.Module, *, channels_last: bool) -> None:
    """Put rank-4 and rank-5 parameters in (or back out of) channels-last layout."""
    for param in model.parameters():
        if param.dim() == 5:
            fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        elif param.dim() == 4:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
        else:
            continue
        param.data = param.data.contiguous(memory_format=fmt)
