"""The declared layout of a backbone: where its stem, first block and head are, and what it loads.

Every backbone's registry entry carries a :class:`Layout` (as timm's pretrained configs do);
weights, training and probes read it instead of guessing from the module tree::

    layout_of("r2plus1d_18").head          # "fc"
    model = stemlab.create_model("c3d")
    model.layout.head                      # "fc8"
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

__all__ = ["Layout", "layout_of", "torchvision_weights_enum"]


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where a backbone keeps its parts (module names, as in ``model.named_modules()``).

    Attributes:
        stem: the stem module (``model.stem``).
        first_block: the first module that reads the stem's output (``"layer1.0"``); its input
            width follows the stem's.
        head: the classifier, an ``nn.Linear`` with ``num_classes`` outputs (``"fc"``, ``"fc8"``).
        stages: the stem and stage modules, as in ``model.feature_info`` (at the builder's
            default size; a model built with another number of stages carries its own).
        torchvision_weights: name of the torchvision weights enum whose checkpoints load
            strictly (``"R2Plus1D_18_Weights"``), or ``None``.
        time_folded: whether the stages run on frames folded into the batch
            (``(N*T, C, H, W)``), as the recurrent frame encoders do.
    """

    stem: str = "stem"
    first_block: str
    head: str
    stages: tuple[str, ...]
    torchvision_weights: str | None = None
    time_folded: bool = False

    def __post_init__(self) -> None:
        for name in ("stem", "first_block", "head"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise TypeError(f"Layout.{name} must be a non-empty module name, got {value!r}")
        if not isinstance(self.stages, tuple) or not all(
            isinstance(s, str) and s for s in self.stages
        ):
            raise TypeError(f"Layout.stages must be a tuple of module names, got {self.stages!r}")
        if self.torchvision_weights is not None and not isinstance(self.torchvision_weights, str):
            raise TypeError(
                "Layout.torchvision_weights must be a torchvision weights enum name or None, "
                f"got {self.torchvision_weights!r}"
            )
        if not isinstance(self.time_folded, bool):
            raise TypeError(f"Layout.time_folded must be a bool, got {self.time_folded!r}")

    @property
    def stem_prefix(self) -> str:
        """State-dict prefix of the stem (``"stem."``)."""
        return self.stem + "."

    @property
    def block_prefix(self) -> str:
        """State-dict prefix of the first block (``"layer1.0."``)."""
        return self.first_block + "."

    @property
    def head_prefix(self) -> str:
        """State-dict prefix of the head (``"fc."``)."""
        return self.head + "."

    def for_model(self, model: nn.Module) -> Layout:
        """This layout with ``stages`` taken from ``model.feature_info`` where the model has one."""
        info = getattr(model, "feature_info", None)
        if not info:
            return self
        stages = tuple(entry["module"] for entry in info)
        return self if stages == self.stages else replace(self, stages=stages)


def layout_of(model_or_name: nn.Module | str) -> Layout:
    """The declared layout of a registered backbone, or of a model built by ``create_model``.

    Args:
        model_or_name: a registered backbone name, or a model carrying ``.layout`` (or
            ``.backbone_name``).

    Returns:
        The :class:`Layout`.

    Raises:
        ValueError: an unknown backbone name (with suggestions), or a backbone or model that
            declares no layout.
        TypeError: neither a string nor a module.
    """
    from stemlab.backbones.registry import BACKBONES

    if isinstance(model_or_name, str):
        layout = BACKBONES.entry(model_or_name).layout
        if layout is None:
            raise ValueError(
                f"backbone {model_or_name!r} declares no layout; register it with "
                "register_backbone(..., layout=Layout(...))"
            )
        return layout
    if not isinstance(model_or_name, nn.Module):
        raise TypeError(
            "model_or_name must be a backbone name or an nn.Module, got "
            f"{type(model_or_name).__name__}"
        )
    layout = getattr(model_or_name, "layout", None)
    if isinstance(layout, Layout):
        return layout
    name = getattr(model_or_name, "backbone_name", None)
    if isinstance(name, str):
        return layout_of(name).for_model(model_or_name)
    raise ValueError(
        f"{type(model_or_name).__name__} declares no layout: build it with stemlab.create_model, "
        "or set model.layout = stemlab.backbones.Layout(...)"
    )


def _weights_modules() -> list[Any]:
    import torchvision.models as models

    found = [models]
    for _, module in inspect.getmembers(models, inspect.ismodule):
        if (getattr(module, "__file__", "") or "").endswith("__init__.py"):
            found.append(module)
    return found


def torchvision_weights_enum(name: str) -> type:
    """The torchvision weights enum class called ``name`` (``"R3D_18_Weights"``).

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: no torchvision weights enum has that name.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
    api = importlib.import_module("torchvision.models._api")
    for module in _weights_modules():
        found = vars(module).get(name)
        if isinstance(found, type) and issubclass(found, api.WeightsEnum):
            return found
    raise ValueError(f"torchvision has no weights enum {name!r} (e.g. 'R3D_18_Weights')")
