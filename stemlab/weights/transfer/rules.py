"""The rule table and :func:`transfer_stem`, which runs it on a checkpoint's stem."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from stemlab.backbones.layout import layout_of
from stemlab.weights.transfer.base import (
    Item,
    NoTransfer,
    StemPair,
    StemRule,
    StemTransfer,
    Working,
    shape_of,
)
from stemlab.weights.transfer.channels import adapt_input_channels
from stemlab.weights.transfer.compose import compose_2plus1d
from stemlab.weights.transfer.factorise import factorise_2plus1d
from stemlab.weights.transfer.gate import add_identity_gates
from stemlab.weights.transfer.kernels import resize_kernels
from stemlab.weights.transfer.widen import widen

__all__ = ["STEM_TRANSFERS", "stem_output_width", "transfer_stem"]


STEM_TRANSFERS: dict[str, StemRule] = {
    "in_channels": StemRule(
        "another number of input channels (grayscale, flow, RGB + depth)",
        adapt_input_channels,
        True,
    ),
    "3d_to_2plus1d": StemRule("a 3-D conv stem -> an R(2+1)D stem", factorise_2plus1d, True),
    "2plus1d_to_3d": StemRule(
        "an R(2+1)D stem -> one 3-D conv (approximate: the middle ReLU is dropped)",
        compose_2plus1d,
        True,
    ),
    "gate": StemRule("an added squeeze-excitation gate", add_identity_gates, True),
    "kernel_size": StemRule("stem convs with other kernel sizes", resize_kernels, False),
    "width": StemRule("wider stems (and the first block)", widen, False),
}
"""The transfer rules, in the order they run, keyed by name."""


def _fill_counters(pair: StemPair, working: Working, keys: Sequence[str]) -> None:
    """BatchNorm step counters older checkpoints lack keep the model's value."""
    for key in keys:
        if key.endswith(".num_batches_tracked") and key not in working:
            note = "not in the checkpoint (older format); keeps its init"
            working[key] = Item(pair.target[key].clone(), (), [note], from_checkpoint=False)


def _check_keys(pair: StemPair, working: Working, checkpoint_stem: set[str]) -> None:
    _fill_counters(pair, working, pair.stem_keys())
    stem = set(pair.stem_keys())
    have = {k for k in working if k.startswith(pair.stem_prefix)}
    missing, extra = sorted(stem - have), sorted(have - stem)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the model's {', '.join(missing[:4])} have no counterpart")
        if extra:
            parts.append(f"the checkpoint's {', '.join(extra[:4])} have no place")
        raise NoTransfer("the stems differ in structure: " + "; ".join(parts))


def _check_shapes(pair: StemPair, working: Working, checkpoint_stem: set[str]) -> None:
    _fill_counters(pair, working, pair.block_keys())
    for key in (*pair.stem_keys(), *pair.block_keys()):
        item = working.get(key)
        if item is None:
            raise NoTransfer(f"{key}: nothing in the checkpoint maps to it")
        if shape_of(item.tensor) != shape_of(pair.target[key]):
            raise NoTransfer(
                f"{key}: checkpoint gives {shape_of(item.tensor)}, the model has "
                f"{shape_of(pair.target[key])}"
            )
    used = {s for k in pair.stem_keys() for s in working[k].sources}
    unused = sorted(checkpoint_stem - used)
    if unused:
        raise NoTransfer(f"checkpoint stem tensors {', '.join(unused[:4])} would go unused")


def transfer_stem(
    model: nn.Module,
    checkpoint: Mapping[str, torch.Tensor],
    *,
    stem_prefix: str | None = None,
    block_prefix: str | None = None,
) -> StemTransfer:
    """Adapt the checkpoint's stem (and the first block) to ``model``'s stem.

    Args:
        model: the model with the new stem (not modified).
        checkpoint: the checkpoint's state dict (only stem and first-block keys are read).
        stem_prefix: state-dict prefix of the stem; ``None`` takes the stem and the first block
            from the model's declared layout (:func:`~stemlab.backbones.layout_of`).
        block_prefix: prefix of the module reading the stem's output (``None``: none, when
            ``stem_prefix`` is given).

    Returns:
        A :class:`StemTransfer` with a value for every model tensor of the stem and first block.

    Raises:
        NoTransfer: no sequence of rules maps the checkpoint's stem onto the model's.
        ValueError: ``stem_prefix`` is None and the model declares no layout.
    """
    if stem_prefix is None:
        layout = layout_of(model)
        stem_prefix, block_prefix = layout.stem_prefix, layout.block_prefix
    state = model.state_dict()
    prefixes = tuple(p for p in (stem_prefix, block_prefix) if p)
    target = {
        k: (v.detach().to("cpu", torch.float64) if v.is_floating_point() else v.detach().cpu())
        for k, v in state.items()
        if k.startswith(prefixes)
    }
    working: Working = {
        k: Item(v.to(torch.float64) if v.is_floating_point() else v.clone(), (k,))
        for k, v in checkpoint.items()
        if k.startswith(prefixes)
    }
    checkpoint_stem = {k for k in working if k.startswith(stem_prefix)}
    model_width = model.get_submodule(stem_prefix.rstrip(".")).out_channels
    pair = StemPair(
        model=model,
        target=target,
        stem_prefix=stem_prefix,
        block_prefix=block_prefix
        if any(k.startswith(block_prefix or "\0") for k in target)
        else None,
        checkpoint_width=stem_output_width(checkpoint, stem_prefix=stem_prefix) or model_width,
        model_width=model_width,
    )
    _fill_counters(pair, working, pair.block_keys())
    metrics: dict[str, Any] = {}
    applied: list[str] = []
    structural_done = False
    for name, rule in STEM_TRANSFERS.items():
        if not rule.structural and not structural_done:
            _check_keys(pair, working, checkpoint_stem)
            structural_done = True
        if rule.apply(pair, working, metrics):
            applied.append(name)
    _check_shapes(pair, working, checkpoint_stem)
    items = {k: working[k] for k in (*pair.stem_keys(), *pair.block_keys())}
    return StemTransfer(items=items, rules=tuple(applied), metrics=metrics)


def stem_output_width(state: Mapping[str, torch.Tensor], *, stem_prefix: str) -> int | None:
    """Output channels of a checkpoint's stem: dim 0 of its last conv weight (None if it has none)."""
    convs = [
        v
        for k, v in state.items()
        if k.startswith(stem_prefix) and k.endswith("weight") and v.dim() >= 3
    ]
    return int(convs[-1].shape[0]) if convs else None
