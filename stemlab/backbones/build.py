"""Build a registered backbone with a stem: the model without weights (``create_model`` adds them)."""

from __future__ import annotations

from typing import Any

from torch import nn

from stemlab._validation import MAX_CLASSES, check_call_kwargs, check_positive_int
from stemlab.backbones.registry import BACKBONES
from stemlab.spec import format_stem_spec, parse_stem_spec
from stemlab.stems.base import FrameWise, check_stem, stem_kind
from stemlab.stems.registry import STEMS, create_stem

__all__ = ["build_backbone", "resolve_stem"]


def resolve_stem(stem: str | nn.Module | None, *, backbone: str) -> tuple[nn.Module, str]:
    """Build the stem a model of ``backbone`` will use.

    Image stems on video backbones are wrapped in :class:`~stemlab.stems.base.FrameWise`.

    Args:
        stem: ``None`` (the backbone's native stem), a registered name or spec string, or a module.
        backbone: registered backbone name.

    Returns:
        ``(stem_module, spec)``; ``spec`` is the canonical spec string (a class name for modules).

    Raises:
        ValueError: unknown names, or a video stem for an image backbone.
        TypeError: a stem of the wrong type or lacking the stem attributes.
    """
    entry = BACKBONES.entry(backbone)
    if stem is None:
        stem = entry.default_stem
    if isinstance(stem, str):
        name, kwargs = parse_stem_spec(stem)
        module = create_stem(name, **kwargs)
        spec = format_stem_spec(name, kwargs)
    elif isinstance(stem, nn.Module):
        module = check_stem(stem)
        spec = type(stem).__name__
    else:
        raise TypeError(
            f"stem must be None, a stem name/spec string or an nn.Module, got {type(stem).__name__}"
        )
    kind = stem_kind(module)
    if entry.kind == "video" and kind == "image":
        module = FrameWise(module)
    elif entry.kind == "image" and kind == "video":
        image_stems = [e.name for e in STEMS if e.kind == "image"]
        raise ValueError(
            f"stem {spec!r} is a video stem (5-D input) but backbone {backbone!r} takes images; "
            "use an image stem: " + ", ".join(image_stems)
        )
    return module, spec


def build_backbone(
    backbone: str,
    *,
    stem: str | nn.Module | None = None,
    num_classes: int = 400,
    **backbone_kwargs: Any,
) -> nn.Module:
    """Build ``backbone`` with ``stem`` and attach what it declares.

    Args:
        backbone: registered backbone name.
        stem: ``None`` (native stem), a stem name or spec string, or a stem module.
        num_classes: classifier size.
        **backbone_kwargs: the backbone's own options.

    Returns:
        The model with ``.stem``, ``.backbone_name``, ``.stem_spec`` and ``.layout`` (the registry
        entry's :class:`~stemlab.backbones.layout.Layout`; ``None`` if it declares none).

    Raises:
        ValueError / TypeError: unknown names, invalid values, unknown backbone kwargs.
    """
    entry = BACKBONES.entry(backbone)
    check_positive_int("num_classes", num_classes)
    if num_classes > MAX_CLASSES:
        raise ValueError(
            f"num_classes={num_classes} is too large: num_classes must be in [1, {MAX_CLASSES}]"
        )
    check_call_kwargs(
        f"backbone {backbone!r}", entry.factory, backbone_kwargs, reserved=("stem", "num_classes")
    )
    stem_module, spec = resolve_stem(stem, backbone=backbone)
    model = entry.factory(stem=stem_module, num_classes=num_classes, **backbone_kwargs)
    model.backbone_name = backbone
    model.stem_spec = spec
    model.layout = None if entry.layout is None else entry.layout.for_model(model)
    return model
