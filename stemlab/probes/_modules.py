"""Finding modules by name, pattern, type or predicate; small helpers shared by the probes."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from stemlab._anatomy import anatomy

__all__ = [
    "ModuleSelector",
    "check_model",
    "default_modules",
    "first_tensor",
    "model_device",
    "module_names_hint",
    "resolve_modules",
    "stem_of",
]

_Selector = str | type[nn.Module] | Callable[[str, nn.Module], bool]
ModuleSelector = _Selector | Sequence[_Selector]
"""Names, fnmatch patterns (``"layer1.*"``), module types, or ``(name, module) -> bool`` predicates."""

_PATTERN_CHARS = frozenset("*?[")


def check_model(model: object, *, argument: str = "model") -> nn.Module:
    """Return ``model`` if it is an ``nn.Module``, else raise TypeError."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{argument} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def first_tensor(output: Any) -> torch.Tensor | None:
    """The output itself if it is a tensor, else the first tensor found in a tuple/list/dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def module_names_hint(model: nn.Module, name: str) -> str:
    """A sentence with close matches for ``name`` and the model's top-level layers."""
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    info = getattr(model, "feature_info", None)
    if info:
        candidates = [entry["module"] for entry in info]
    else:
        candidates = [n for n, _ in model.named_children()]
    return f"{hint} Candidate layers: {', '.join(candidates)} (or any dotted module name)"


def stem_of(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The stem's name and module: :func:`stemlab.anatomy`'s, else the ``.stem`` attribute."""
    try:
        found = anatomy(model)
    except ValueError:
        found = None
    if found is not None:
        return found.stem, found.stem_module
    stem = getattr(model, "stem", None)
    if not isinstance(stem, nn.Module):
        return None
    return next(n for n, m in model.named_modules() if m is stem), stem


def default_modules(model: nn.Module) -> list[str]:
    """The stem, its children and each stage; the top-level children for models without a stem."""
    names = dict(model.named_modules())
    found = stem_of(model)
    if found is None:
        return [n for n, _ in model.named_children()]
    stem_name, stem = found
    selected = [stem_name] + [f"{stem_name}.{child}" for child, _ in stem.named_children()]
    try:
        declared: tuple[str, ...] = anatomy(model).stage_names
    except ValueError:
        declared = ()
    info = getattr(model, "feature_info", None)
    if declared:
        stages = [s for s in declared if s != stem_name]
    elif info:
        stages = [entry["module"] for entry in info if entry["module"] != stem_name]
    else:
        stages = [n for n, _ in model.named_children() if fnmatch.fnmatchcase(n, "layer[0-9]*")]
    return selected + [s for s in stages if s in names]


def _matches(selector: Any, name: str, module: nn.Module) -> bool:
    if isinstance(selector, str):
        if _PATTERN_CHARS.intersection(selector):
            return bool(name) and fnmatch.fnmatchcase(name, selector)
        return name == selector
    if isinstance(selector, type):
        return isinstance(module, selector)
    return bool(selector(name, module))


def _as_selectors(spec: ModuleSelector, argument: str) -> list[Any]:
    items: Iterable[Any] = [spec] if isinstance(spec, (str, type)) or callable(spec) else spec
    if not isinstance(items, (list, tuple)):
        raise TypeError(
            f"{argument} must be a name, pattern, module type, predicate or a list of them, "
            f"got {type(spec).__name__}"
        )
    selectors = list(items)
    for item in selectors:
        is_type = isinstance(item, type) and issubclass(item, nn.Module)
        if not (
            isinstance(item, str) or is_type or (callable(item) and not isinstance(item, type))
        ):
            raise TypeError(
                f"{argument} entries must be str, nn.Module subclasses or callables, got {item!r}"
            )
    return selectors


def resolve_modules(
    model: nn.Module, spec: ModuleSelector, *, argument: str = "modules"
) -> dict[str, nn.Module]:
    """Resolve a module selector to ``{name: module}`` in the model's module order.

    A plain name must exist (``""`` is the model itself); patterns never match the model itself.

    Raises:
        TypeError: if ``spec`` has an entry of an unsupported type.
        ValueError: if a name does not exist or a pattern/type/predicate matches nothing.
    """
    selectors = _as_selectors(spec, argument)
    named = list(model.named_modules())
    known = {n for n, _ in named}
    for selector in selectors:
        if isinstance(selector, str) and not _PATTERN_CHARS.intersection(selector):
            if selector not in known:
                raise ValueError(
                    f"{argument}: the model has no module {selector!r}."
                    + module_names_hint(model, selector)
                )
        elif not any(_matches(selector, n, m) for n, m in named):
            raise ValueError(f"{argument}: {selector!r} matches no module of the model")
    return {n: m for n, m in named if any(_matches(s, n, m) for s in selectors)}
