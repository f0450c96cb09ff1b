"""The backbone registry: ``register_backbone`` and ``list_backbones``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from stemlab._registry import Kind, Registry
from stemlab.backbones.layout import Layout

__all__ = ["BACKBONES", "list_backbones", "register_backbone"]

BACKBONES = Registry("backbone")

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_backbone(
    name: str,
    *,
    default_stem: str = "basic",
    kind: Kind = "video",
    layout: Layout | None = None,
) -> Callable[[F], F]:
    """Register a backbone builder under ``name``.

    The builder takes keyword arguments only: ``stem`` (a built stem module), ``num_classes`` and
    its own scale-down options; it must build its first stage with ``stem.out_channels`` inputs.

    Args:
        name: registry name (a Python identifier).
        default_stem: spec of the backbone's native stem, used when ``create_model(stem=None)``.
        kind: ``"video"`` (5-D input) or ``"image"`` (4-D input).
        layout: where the stem, first block and head are, the torchvision weights enum and time
            folding (see :class:`~stemlab.backbones.layout.Layout`). Weights, training and probes
            read it; a backbone without one loads checkpoints key by key only.

    Raises:
        ValueError: if ``name`` is already registered.
        TypeError: if ``layout`` is not a :class:`Layout`.
    """
    if layout is not None and not isinstance(layout, Layout):
        raise TypeError(f"layout must be a stemlab Layout or None, got {type(layout).__name__}")
    return BACKBONES.register(name, kind=kind, default_stem=default_stem, layout=layout)


def list_backbones(pattern: str = "*") -> list[str]:
    """Sorted names of registered backbones matching the fnmatch ``pattern``."""
    return BACKBONES.names(pattern)
