"""Parse stem specs such as ``"wide:width=128,kernel_size=(3,9,9)"`` (literals only, never eval)."""

from __future__ import annotations

import ast
from typing import Any

__all__ = ["format_stem_spec", "parse_stem_spec"]

_FORM = "NAME or NAME:key=value,key=value (values are Python literals)"


def parse_stem_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a stem spec into a name and keyword arguments.

    Values are parsed with :func:`ast.literal_eval` on each keyword's expression, so only literals
    (numbers, strings, tuples, lists, dicts, booleans, None) are accepted.

    Args:
        spec: ``"name"`` or ``"name:key=value,..."``.

    Returns:
        ``(name, kwargs)``.

    Raises:
        TypeError: if ``spec`` is not a string.
        ValueError: if the spec is malformed, a value is not a literal, or a key repeats.
    """
    if not isinstance(spec, str):
        raise TypeError(f"stem spec must be a str, got {type(spec).__name__} {spec!r}")
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if not name.isidentifier():
        raise ValueError(f"stem spec {spec!r}: bad name {name!r}; expected {_FORM}")
    rest = rest.strip()
    if not rest:
        return name, {}
    try:
        call = ast.parse(f"_({rest})", mode="eval").body
    except SyntaxError as exc:
        raise ValueError(
            f"stem spec {spec!r} cannot be parsed ({exc.msg}); expected {_FORM}"
        ) from None
    if not isinstance(call, ast.Call) or call.args:
        raise ValueError(f"stem spec {spec!r}: only key=value pairs are allowed; expected {_FORM}")
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ValueError(f"stem spec {spec!r}: '**' is not allowed; expected {_FORM}")
        if keyword.arg in kwargs:
            raise ValueError(f"stem spec {spec!r}: key {keyword.arg!r} is given twice")
        try:
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError):
            source = ast.get_source_segment(f"_({rest})", keyword.value)
            raise ValueError(
                f"stem spec {spec!r}: value of {keyword.arg!r} must be a Python literal, got {source!r}"
            ) from None
    return name, kwargs


def format_stem_spec(name: str, kwargs: dict[str, Any] | None = None) -> str:
    """Inverse of :func:`parse_stem_spec` for literal kwargs (keys sorted)."""
    if not kwargs:
        return name
    return name + ":" + ",".join(f"{k}={kwargs[k]!r}" for k in sorted(kwargs))
