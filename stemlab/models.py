"""``create_model``: one place that builds backbone + stem (+ weights and stem transfer)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from stemlab._validation import check_choice
from stemlab.backbones.build import build_backbone, resolve_stem
from stemlab.weights.load import load_weights

__all__ = ["StemInit", "create_model", "resolve_stem"]

StemInit = Literal["transfer", "random"]


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
        The model, with ``.stem``, ``.backbone_name``, ``.stem_spec``, ``.layout`` (the
        backbone's declared :class:`~stemlab.backbones.layout.Layout`) and, with weights,
        ``.weights_report`` (a DataFrame: key, action, detail).

    Raises:
        ValueError: unknown names (with suggestions) or invalid values.
        TypeError: arguments of the wrong type or unknown backbone kwargs.
        FileNotFoundError: weights that are not on disk (the message names the expected path).
    """
    check_choice("stem_init", stem_init, ("transfer", "random"))
    model = build_backbone(backbone, stem=stem, num_classes=num_classes, **backbone_kwargs)
    if weights is not None:
        load_weights(model, weights, stem_init=stem_init)
    return model
