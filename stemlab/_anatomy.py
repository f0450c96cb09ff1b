"""One anatomy for every model: where its stem, the stem's consumers, its stages and its head are.

``stemlab.anatomy(model)`` is the single resolver that weights, training, probes and studies read::

    a = stemlab.anatomy(stemlab.create_model("r3d_18"))
    a.stem, a.consumers, a.head                 # "stem", ("layer1.0",), "fc"
    [(s.module, s.width, s.stride) for s in a.stages]

It reads, in order: the registry entry's declared :class:`~stemlab.backbones.layout.Layout` (a model
built by ``create_model`` names its backbone), else a layout attached to the model
(``model.layout``, as :func:`stemlab.swap_stem` and user factories registered with a layout do).
Stage widths and strides come from the stages the builder recorded (``model.stage_records``, of
which ``model.feature_info`` is a view); a model that records none has them measured on the meta
device at the layout's ``input_shape``, or read from its modules (width only) without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from stemlab.backbones.layout import Layout, Stage
from stemlab.backbones.registry import BACKBONES

__all__ = ["Anatomy", "Stage", "anatomy", "module_width"]


@dataclass(frozen=True)
class Anatomy:
    """Where a model keeps its parts.

    Attributes:
        stem: the stem's module name (``"stem"``, ``"features.0"``, ``"conv_proj"``).
        stem_module: the stem module itself.
        consumers: the modules that read the stem's output (their input width follows it).
        stages: the stem output and each stage, with output width and total stride.
        head: the classifier's module name.
        layout: the declared layout this was resolved from.
        source: ``"registry"`` (the backbone's registry entry) or ``"model"`` (``model.layout``).
    """

    stem: str
    stem_module: nn.Module = field(repr=False, compare=False)
    consumers: tuple[str, ...]
    stages: tuple[Stage, ...]
    head: str
    layout: Layout
    source: str

    @property
    def stem_width(self) -> int:
        """Output channels of the stem."""
        width = getattr(self.stem_module, "out_channels", None)
        if isinstance(width, int):
            return width
        return self.stages[0].width if self.stages else module_width(self.stem_module)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Module names of the stem output and each stage."""
        return tuple(s.module for s in self.stages)

    def feature_info(self) -> list[dict[str, Any]]:
        """The stages as timm-style ``feature_info`` dicts."""
        return [s.as_feature_info() for s in self.stages]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``.

        Raises:
            ValueError: no stage has that name (the message lists them).
        """
        for s in self.stages:
            if s.module == name:
                return s
        raise ValueError(f"no stage {name!r}; the stages are {', '.join(self.stage_names)}")


def module_width(module: nn.Module) -> int:
    """Output channels of ``module`` read from its last layer that declares a width.

    Raises:
        ValueError: no submodule declares a width (conv, linear, norm or a stem).
    """
    width = getattr(module, "out_channels", None)
    if isinstance(width, int) and not isinstance(width, bool):
        return width
    found = None
    for m in module.modules():
        for attr in ("out_channels", "out_features", "num_features"):
            value = getattr(m, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                found = value
                break
        else:
            if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
                found = int(m.normalized_shape[0])
    if found is None:
        raise ValueError(
            f"{type(module).__name__} has no conv, linear or norm layer to read its width from"
        )
    return found


def _declared(model: nn.Module) -> tuple[Layout, str]:
    name = getattr(model, "backbone_name", None)
    if isinstance(name, str) and name in BACKBONES:
        layout = BACKBONES.entry(name).layout
        if isinstance(layout, Layout):
            return layout, "registry"
    layout = getattr(model, "layout", None)
    if isinstance(layout, Layout):
        return layout, "model"
    what = f"backbone {name!r} declares no layout" if isinstance(name, str) else "no layout"
    raise ValueError(
        f"{type(model).__name__} has {what}: stemlab.anatomy needs the stem, the first block and "
        "the head; build it with stemlab.create_model, register its factory with "
        "register_backbone(name, layout=Layout(stem=..., first_block=..., head=...)), pass it "
        "through stemlab.swap_stem, or set model.layout = stemlab.backbones.Layout(...)"
    )


def _check_names(model: nn.Module, layout: Layout, names: dict[str, nn.Module]) -> None:
    import difflib

    wanted = [("stem", layout.stem), ("head", layout.head)]
    wanted += [("consumer", c) for c in layout.stem_consumers]
    for role, name in wanted:
        if name not in names:
            close = difflib.get_close_matches(name, [n for n in names if n], n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"{type(model).__name__}'s declared layout names the {role} {name!r}, which is "
                f"not a module of the model{hint}"
            )


def _measure(
    model: nn.Module, names: list[str], input_shape: tuple[int, ...]
) -> dict[str, tuple[int, ...]]:
    """Output shapes of the modules ``names`` for an input of ``input_shape`` (meta device)."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    handles = []

    def hook(name: str):
        def record(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                shapes.setdefault(name, tuple(out.shape))

        return record

    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(hook(name)))
        meta = {
            n: torch.empty_like(t, device="meta")
            for n, t in [*model.named_parameters(), *model.named_buffers()]
        }
        with torch.no_grad():
            functional_call(model, meta, (torch.empty(input_shape, device="meta"),))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _stages(model: nn.Module, layout: Layout, names: dict[str, nn.Module]) -> tuple[Stage, ...]:
    records = getattr(model, "stage_records", None)
    if records:
        return tuple(records)
    stage_names = list(layout.stages) or [layout.stem]
    missing = [s for s in stage_names if s not in names]
    if missing:
        raise ValueError(
            f"{type(model).__name__}'s declared layout names the stages {missing}, which are not "
            "modules of the model"
        )
    if layout.input_shape is not None:
        shapes = _measure(model, stage_names, layout.input_shape)
        spatial = layout.input_shape[2:]
        stages = []
        for s in stage_names:
            shape = shapes.get(s)
            if shape is None or len(shape) != len(layout.input_shape):
                stages.append(Stage(s, module_width(names[s]), None, layout.time_folded))
                continue
            stride = tuple(max(1, round(i / o)) for i, o in zip(spatial, shape[2:]))
            stages.append(Stage(s, int(shape[1]), stride, layout.time_folded))
        return tuple(stages)
    return tuple(
        Stage(
            s,
            module_width(names[s]),
            getattr(names[s], "stride", None) if s == layout.stem else None,
            layout.time_folded,
        )
        for s in stage_names
    )


def anatomy(model: nn.Module) -> Anatomy:
    """Resolve ``model``'s stem, the stem's consumers, its stages and its head.

    Args:
        model: a model built by ``create_model`` (or ``build_backbone``), returned by
            :func:`stemlab.swap_stem`, or carrying a declared ``model.layout``.

    Returns:
        The :class:`Anatomy`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: the model declares no layout (the message says how to declare one), or the
            layout names modules the model lacks.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layout, source = _declared(model)
    names = dict(model.named_modules())
    _check_names(model, layout, names)
    stages = _stages(model, layout, names)
    return Anatomy(
        stem=layout.stem,
        stem_module=names[layout.stem],
        consumers=layout.stem_consumers,
        stages=stages,
        head=layout.head,
        layout=layout.for_model(model),
        source=source,
    )
