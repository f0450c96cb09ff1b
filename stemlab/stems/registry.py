"""The stem registry: ``register_stem``, ``create_stem``, ``list_stems``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from stemlab._registry import Kind, Registry
from stemlab._validation import check_call_kwargs
from stemlab.spec import parse_stem_spec
from stemlab.stems.base import check_stem, stem_kind

__all__ = ["STEMS", "create_stem", "list_stems", "register_stem"]

STEMS = Registry("stem")

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_stem(name: str, *, kind: Kind = "video") -> Callable[[F], F]:
    """Register a stem factory under ``name``.

    The factory takes keyword arguments only and returns a module with ``in_channels``,
    ``out_channels`` and ``stride``. Its docstring's first line is the description ``stemlab list``
    shows.

    Args:
        name: registry name (a Python identifier).
        kind: ``"video"`` for 5-D stems, ``"image"`` for 4-D stems.

    Raises:
        ValueError: if ``name`` is already registered.
    """
    return STEMS.register(name, kind=kind)


def list_stems(pattern: str = "*") -> list[str]:
    """Sorted names of registered stems matching the fnmatch ``pattern``."""
    return STEMS.names(pattern)


def create_stem(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered stem.

    Args:
        name: a registered name, or a spec ``"name:key=value,..."`` (kwargs given here win).
        **kwargs: keyword arguments for the stem factory (``width``, ``in_channels``, ...).

    Returns:
        The stem module, with ``in_channels``, ``out_channels`` and ``stride``.

    Raises:
        ValueError: unknown name (with suggestions) or invalid argument values.
        TypeError: an argument the stem does not take (the message lists those it takes).
    """
    stem_name, spec_kwargs = parse_stem_spec(name)
    entry = STEMS.entry(stem_name)
    merged = {**spec_kwargs, **kwargs}
    check_call_kwargs(f"stem {entry.name!r}", entry.factory, merged)
    stem = entry.factory(**merged)
    check_stem(stem, argument=f"stem {stem_name!r}")
    if stem_kind(stem) != entry.kind:
        raise TypeError(
            f"stem {stem_name!r} is registered as {entry.kind} but its stride {stem.stride} says "
            f"{stem_kind(stem)}"
        )
    return stem
