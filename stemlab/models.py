"""``create_model``: one place that builds backbone + stem (+ weights and stem transfer)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from stemlab._validation import check_call_kwargs, check_choice, check_positive_int
from stemlab.backbones.registry import BACKBONES
from stemlab.spec import format_stem_spec, parse_stem_spec
from stemlab.stems.base import FrameWise, check_stem, stem_kind
from stemlab.stems.registry import create_stem

__all__ = ["StemInit", "create_model", "resolve_stem"]

StemInit = Literal["transfer", "random"]


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
        raise ValueError(
            f"stem {spec!r} is a video stem (5-D input) but backbone {backbone!r} takes images; "
            "use an image stem: " + ", ".join(_image_stems())
        )
    return module, spec


def _image_stems() -> list[str]:
    from stemlab.stems.registry import STEMS

    return [e.name for e in STEMS if e.kind == "image"]


def create_model(
    backbone: str,
    *,
    stem: str | nn.Module | None = None,
    num_classes: int = 400,
    weights: str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None,
    stem_init: StemInit = "transfer",
    **backbone_kwargs: Any,
) -> nn.Module:
    """Build a backbone with a stem, optionally loading weights.

    Args:
        backbone: registered backbone name (see :func:`stemlab.list_backbones`).
        stem: ``None`` for the backbone's native stem, a registered stem name or spec string
            (``"wide:width=96"``), or a stem module.
        num_classes: classifier size.
        weights: a local checkpoint path, a state dict, or a torchvision weights name
            (``"KINETICS400_V1"``, ``"DEFAULT"``) resolved from the torch hub cache; nothing is
            downloaded.
        stem_init: ``"transfer"`` adapts checkpoint stem weights to a different stem where the
            maths allows; ``"random"`` keeps the new stem's initialisation.
        **backbone_kwargs: the backbone's own options (``widths``, ``layers``, ``width_multiplier``...).

    Returns:
        The model, with ``.stem``, ``.backbone_name``, ``.stem_spec`` and, with weights,
        ``.weights_report`` (a DataFrame: key, action, detail).

    Raises:
        ValueError: unknown names (with suggestions) or invalid values.
        TypeError: arguments of the wrong type or unknown backbone kwargs.
        FileNotFoundError: weights that are not on disk (the message names the expected path).
    """
    entry = BACKBONES.entry(backbone)
    check_positive_int("num_classes", num_classes)
    check_choice("stem_init", stem_init, ("transfer", "random"))
    check_call_kwargs(
        f"backbone {backbone!r}", entry.factory, backbone_kwargs, reserved=("stem", "num_classes")
    )
    stem_module, spec = resolve_stem(stem, backbone=backbone)
    model = entry.factory(stem=stem_module, num_classes=num_classes, **backbone_kwargs)
    model.backbone_name = backbone
    model.stem_spec = spec
    if weights is not None:
        from stemlab.weights import load_weights

        load_weights(model, weights, stem_init=stem_init)
    return model
