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

__all__ = ["Layout", "Stage", "layout_of", "torchvision_weights_enum"]


@dataclass(frozen=True)
class Stage:
    """One stage's output as a builder records it (``model.feature_info`` is a view of these).

    Attributes:
        module: the stage's module name (``"layer1"``; ``"stem"`` for the stem output).
        width: output channels.
        stride: total stride of that output relative to the input (``(t, h, w)`` for video),
            or ``None`` where it is not known.
        time_folded: whether the stage runs on frames folded into the batch.
        tokens: whether the output is a token sequence ``(N, L, C)`` (or channels-last
            ``(N, T, H, W, C)``) rather than a ``(N, C, ...)`` feature map.
    """

    module: str
    width: int
    stride: tuple[int, ...] | None
    time_folded: bool = False
    tokens: bool = False

    def as_feature_info(self) -> dict[str, Any]:
        """The timm-style ``feature_info`` entry: ``module``, ``num_chs``, ``reduction``."""
        entry: dict[str, Any] = {
            "module": self.module,
            "num_chs": self.width,
            "reduction": self.stride,
        }
        if self.time_folded:
            entry["time_folded"] = True
        if self.tokens:
            entry["tokens"] = True
        return entry

    @classmethod
    def from_feature_info(cls, entry: dict[str, Any]) -> Stage:
        """A stage from a ``feature_info`` entry.

        Raises:
            TypeError: an entry that is not a dict with ``module`` and ``num_chs``.
        """
        if not isinstance(entry, dict) or "module" not in entry or "num_chs" not in entry:
            raise TypeError(
                f"feature_info entries are dicts with 'module', 'num_chs' and 'reduction', got {entry!r}"
            )
        reduction = entry.get("reduction")
        return cls(
            module=str(entry["module"]),
            width=int(entry["num_chs"]),
            stride=None if reduction is None else tuple(int(r) for r in reduction),
            time_folded=bool(entry.get("time_folded", False)),
            tokens=bool(entry.get("tokens", False)),
        )


@dataclass(frozen=True, kw_only=True)
class Layout:
    """Where a backbone keeps its parts (module names, as in ``model.named_modules()``).

    Attributes:
        stem: the stem module (``model.stem``).
        first_block: the first module that reads the stem's output (``"layer1.0"``); its input
            width follows the stem's.
        head: the classifier, an ``nn.Linear`` with ``num_classes`` outputs (``"fc"``, ``"fc8"``).
        stages: the stem and stage modules for models whose builder records no stages
            (``stemlab.anatomy`` prefers the built model's own records: widths, strides and the
            number of stages follow the builder's kwargs).
        torchvision_weights: name of the torchvision weights enum whose checkpoints load
            strictly (``"R2Plus1D_18_Weights"``), or ``None``.
        time_folded: whether the stages run on frames folded into the batch
            (``(N*T, C, H, W)``), as the recurrent frame encoders do.
        consumers: every module reading the stem's output where there are several (a block and
            a separate shortcut); empty means ``(first_block,)``.
        input_shape: an example input shape ``(1, C, T, H, W)`` at which ``stemlab.anatomy``
            measures stage widths and strides (on the meta device) for models that record none.
    """

    stem: str = "stem"
    first_block: str
    head: str
    stages: tuple[str, ...] = ()
    torchvision_weights: str | None = None
    time_folded: bool = False
    consumers: tuple[str, ...] = ()
    input_shape: tuple[int, ...] | None = None

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
        if not isinstance(self.consumers, tuple) or not all(
            isinstance(c, str) and c for c in self.consumers
        ):
            raise TypeError(
                f"Layout.consumers must be a tuple of module names, got {self.consumers!r}"
            )
        if self.input_shape is not None and (
            not isinstance(self.input_shape, tuple)
            or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.input_shape
            )
        ):
            raise TypeError(
                f"Layout.input_shape must be a tuple of positive ints or None, got {self.input_shape!r}"
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

    @property
    def stem_consumers(self) -> tuple[str, ...]:
        """The modules reading the stem's output: ``consumers``, else ``(first_block,)``."""
        return self.consumers or (self.first_block,)

    def for_model(self, model: nn.Module) -> Layout:
        """This layout with ``stages`` taken from the model's recorded stages where it has them."""
        records = getattr(model, "stage_records", None)
        if not records:
            return self
        stages = tuple(stage.module for stage in records)
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
