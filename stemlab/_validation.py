"""Argument checks shared by every layer: clear errors that name the argument and what is allowed."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any

from stemlab.errors import StemlabTypeError

__all__ = [
    "MAX_CHANNELS",
    "MAX_CLASSES",
    "check_call_kwargs",
    "check_choice",
    "check_int_tuple",
    "check_positive_float",
    "check_positive_int",
    "unknown_name_error",
]

MAX_CHANNELS = 8192
"""Largest channel count (stem width, stage width, hidden size) a model may ask for: far above any
real stem, far below a size whose weights cannot be allocated."""

MAX_CLASSES = 100_000
"""Largest classifier a model may ask for (ImageNet-21k has 21,841 classes); larger sizes are a
typo that would end in an allocator error."""

_CHANNEL_ARGUMENTS = frozenset(
    {
        "width",
        "widths",
        "mid_width",
        "in_channels",
        "out_channels",
        "hidden_channels",
        "hidden_size",
    }
)
"""Arguments holding channel counts, bounded by :data:`MAX_CHANNELS` before anything is allocated."""


def _check_channels(argument: str, value: int, original: Any) -> None:
    if argument in _CHANNEL_ARGUMENTS and value > MAX_CHANNELS:
        raise ValueError(
            f"{argument}={original!r} is too large: channel counts must be in [1, {MAX_CHANNELS}]"
        )


def unknown_name_error(what: str, name: object, choices: Iterable[str]) -> ValueError:
    """Build the ValueError for an unknown name, with close-match suggestions.

    Args:
        what: what the name refers to, e.g. ``"stem"``.
        name: the name the user gave.
        choices: the names that exist.

    Returns:
        A ValueError (to raise) listing close matches first, then every valid name.
    """
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {what} {name!r}.{hint} Available: {', '.join(choices)}")


def check_choice(argument: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ValueError naming the argument."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{argument}={value!r} is not allowed.{hint} Choose one of: "
            + ", ".join(repr(c) for c in choices)
        )
    return value


def check_positive_int(argument: str, value: Any, *, allow_zero: bool = False) -> int:
    """Return ``value`` if it is a positive int (bools refused), else raise TypeError/ValueError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StemlabTypeError(f"{argument} must be an int, got {type(value).__name__} {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{argument} must be {bound}, got {value}")
    _check_channels(argument, value, value)
    return value


def check_positive_float(argument: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float if it is a finite positive real number (NaN and inf refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StemlabTypeError(f"{argument} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{argument} must be {bound}, got {value}")
    return float(value)


def check_int_tuple(
    argument: str, value: Any, length: int, *, allow_zero: bool = False
) -> tuple[int, ...]:
    """Normalise an int or a sequence of ints to a ``length``-tuple of positive ints.

    Raises:
        TypeError: if ``value`` is neither an int nor a sequence of ints.
        ValueError: if the sequence has the wrong length or an element is not positive.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        items: tuple[Any, ...] = (value,) * length
    elif isinstance(value, (tuple, list)):
        items = tuple(value)
        if len(items) != length:
            raise ValueError(f"{argument} must have {length} elements, got {value!r}")
    else:
        raise StemlabTypeError(
            f"{argument} must be an int or a sequence of {length} ints, "
            f"got {type(value).__name__} {value!r}"
        )
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise StemlabTypeError(f"{argument} must hold ints, got {value!r}")
        if item < 0 or (item == 0 and not allow_zero):
            raise ValueError(
                f"{argument} must hold {'non-negative' if allow_zero else 'positive'} ints, got {value!r}"
            )
        _check_channels(argument, item, value)
    return items


def check_call_kwargs(
    what: str, factory: Any, kwargs: dict[str, Any], *, reserved: Sequence[str] = ()
) -> None:
    """Raise TypeError if ``kwargs`` holds a name ``factory`` does not take.

    Args:
        what: the thing being built, for the message (``"stem 'wide'"``).
        factory: the callable the kwargs are for.
        kwargs: the user's keyword arguments.
        reserved: parameters the caller fills itself; the user may not pass them.
    """
    import inspect

    parameters = inspect.signature(factory).parameters
    clash = sorted(set(kwargs) & set(reserved))
    if clash:
        raise StemlabTypeError(
            f"{what}: {', '.join(map(repr, clash))} is set by stemlab, not by keyword"
        )
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [
        name
        for name, p in parameters.items()
        if p.kind is not inspect.Parameter.VAR_POSITIONAL and name not in reserved
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, accepted, n=1)
            hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
        raise StemlabTypeError(
            f"{what} got unknown argument(s) {', '.join(hints)}; it takes: {', '.join(accepted)}"
        )
