"""A name -> factory registry shared by the stem and backbone registries."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from stemlab._validation import check_choice, unknown_name_error

__all__ = ["Kind", "Registry", "RegistryEntry"]

Kind = Literal["video", "image"]
KINDS: tuple[Kind, ...] = ("video", "image")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RegistryEntry:
    """One registered factory.

    Attributes:
        name: the registered name.
        factory: the callable that builds the object.
        kind: ``"video"`` (5-D input) or ``"image"`` (4-D input).
        description: one line, taken from the factory's docstring unless given.
        default_stem: for backbones, the spec of their native stem; ``None`` for stems.
        layout: for backbones, their declared layout (a ``stemlab.backbones.Layout``); ``None``
            for stems and for backbones registered without one.
    """

    name: str
    factory: Callable[..., Any]
    kind: Kind
    description: str
    default_stem: str | None = None
    layout: Any = None


def _first_doc_line(obj: object) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


class Registry:
    """A dict registry whose decorator rejects duplicate names.

    Args:
        what: the kind of thing registered, used in error messages (``"stem"``, ``"backbone"``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, RegistryEntry] = {}

    def register(
        self,
        name: str,
        *,
        kind: Kind = "video",
        description: str | None = None,
        default_stem: str | None = None,
        layout: Any = None,
    ) -> Callable[[F], F]:
        """Decorator that registers ``factory`` under ``name``.

        Raises:
            TypeError: if ``name`` is not a string.
            ValueError: if ``name`` is empty, not an identifier, already registered, or ``kind`` unknown.
        """
        if not isinstance(name, str):
            raise TypeError(f"{self.what} name must be a str, got {type(name).__name__} {name!r}")
        if not name.isidentifier():
            raise ValueError(
                f"{self.what} name must be a Python identifier (letters, digits, _), got {name!r}"
            )
        check_choice("kind", kind, KINDS)
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")

        def decorator(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is already registered")
            if not callable(factory):
                raise TypeError(f"{self.what} {name!r}: factory must be callable, got {factory!r}")
            self._entries[name] = RegistryEntry(
                name=name,
                factory=factory,
                kind=kind,
                description=description if description is not None else _first_doc_line(factory),
                default_stem=default_stem,
                layout=layout,
            )
            return factory

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and plugins that replace an entry on purpose)."""
        self.entry(name)
        del self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the fnmatch ``pattern``."""
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, got {type(pattern).__name__} {pattern!r}")
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entry(self, name: str) -> RegistryEntry:
        """The entry for ``name``.

        Raises:
            ValueError: unknown name, with close-match suggestions.
        """
        if not isinstance(name, str):
            raise TypeError(f"{self.what} name must be a str, got {type(name).__name__} {name!r}")
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name_error(self.what, name, self._entries) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[RegistryEntry]:
        return iter(self._entries[n] for n in sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
