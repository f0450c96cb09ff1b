"""Which part of a model is the head, and which parts a run keeps frozen.

The head comes from the backbone's declared layout (``model.layout.head``) for models built by
:func:`stemlab.create_model`; for a plain ``nn.Module`` it is its ``fc`` child, if any.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["FALLBACK_HEAD", "FreezePlan", "plan_freeze", "resolve_head"]

FALLBACK_HEAD = "fc"
"""The head's module name for a model without a declared layout."""


def resolve_head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier head of ``model`` as ``(module name, module)``, or ``None``.

    Raises:
        ValueError: if the model's layout names a head module the model does not have.
    """
    layout = getattr(model, "layout", None)
    if layout is not None:
        name = getattr(layout, "head", None)
        if name is None:
            return None
        if not isinstance(name, str):
            raise TypeError(
                f"model.layout.head must be a module name, got {type(name).__name__} {name!r}"
            )
        try:
            return name, model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"the model's layout declares the head {name!r}, but the model has no module "
                "of that name"
            ) from None
    module = dict(model.named_children()).get(FALLBACK_HEAD)
    return (FALLBACK_HEAD, module) if module is not None else None


def _freezable_names(model: nn.Module) -> list[str]:
    """Names to suggest: the layout's stem and stages, then the top-level modules."""
    layout = getattr(model, "layout", None)
    names: list[str] = []
    if layout is not None:
        stem = getattr(layout, "stem", None)
        names += [stem] if isinstance(stem, str) else []
        names += [s for s in getattr(layout, "stages", ()) or () if isinstance(s, str)]
    names += [name for name, _ in model.named_children()]
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class FreezePlan:
    """What a run trains.

    Attributes:
        mode: ``"none"``, ``"backbone"`` or ``"modules"``.
        head: the head module, if the model has one.
        frozen: the modules kept fixed (eval mode, ``requires_grad=False``); with
            ``"backbone"`` every module outside the head.
    """

    mode: str
    head: nn.Module | None
    frozen: tuple[nn.Module, ...]

    def frozen_parameter_ids(self, model: nn.Module) -> set[int]:
        """``id()`` of every parameter this plan freezes."""
        if self.mode == "backbone":
            head = {id(p) for p in self.head.parameters()} if self.head is not None else set()
            return {id(p) for p in model.parameters() if id(p) not in head}
        return {id(p) for module in self.frozen for p in module.parameters()}

    def freeze_parameters(self, model: nn.Module) -> None:
        """Set ``requires_grad=False`` on the frozen parameters (the caller restores the flags)."""
        frozen = self.frozen_parameter_ids(model)
        for param in model.parameters():
            if id(param) in frozen:
                param.requires_grad_(False)

    def set_train_mode(self, model: nn.Module) -> None:
        """Train mode for what trains, eval mode (fixed batch-norm statistics) for what is frozen."""
        if self.mode == "backbone":
            model.eval()
            if self.head is not None:
                self.head.train()
            return
        model.train()
        for module in self.frozen:
            module.eval()


def plan_freeze(model: nn.Module, freeze: str | Sequence[str]) -> FreezePlan:
    """Check ``freeze`` against the model and say what stays fixed.

    Args:
        model: the model to train.
        freeze: ``"none"``, ``"backbone"`` (all but the head) or module names such as
            ``("stem", "layer1")`` (names from ``model.named_modules()``).

    Returns:
        The :class:`FreezePlan`.

    Raises:
        ValueError: ``"backbone"`` on a model without a known head, an unknown module name
            (with close matches), or a plan that leaves no parameter to train.
    """
    found = resolve_head(model)
    head = found[1] if found is not None else None
    if freeze == "none":
        return FreezePlan("none", head, ())
    if freeze == "backbone":
        if head is None:
            raise ValueError(
                "freeze='backbone' needs a model whose head is known: a model from "
                "stemlab.create_model (its layout declares the head) or a module with an "
                f"{FALLBACK_HEAD!r} child"
            )
        return FreezePlan("backbone", head, ())
    if isinstance(freeze, str):
        raise ValueError(
            f"freeze={freeze!r} is not allowed: use 'none', 'backbone' or a list of module names"
        )
    modules = dict(model.named_modules())
    modules.pop("", None)
    frozen = []
    for name in freeze:
        if name not in modules:
            close = difflib.get_close_matches(str(name), list(modules), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"freeze names an unknown module {name!r}.{hint} Stages and top-level modules: "
                f"{', '.join(_freezable_names(model))} (any name from model.named_modules())"
            )
        frozen.append(modules[name])
    plan = FreezePlan("modules", head, tuple(frozen))
    fixed = plan.frozen_parameter_ids(model)
    if all(id(p) in fixed or not p.requires_grad for p in model.parameters()):
        raise ValueError(
            f"freeze={list(freeze)!r} leaves no parameter to train; freeze fewer modules"
        )
    return plan
