"""Widening (Net2Wider): more stem channels, through the stem and the first block, exactly."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from stemlab.weights.transfer.base import (
    Item,
    NoTransfer,
    StemPair,
    Working,
    identity_norm,
    shape_of,
    span,
)

__all__ = ["widen"]


def _duplicate(tensor: torch.Tensor, dim: int, new: int) -> torch.Tensor:
    """Net2Wider duplication: new channel ``j`` copies old channel ``j % old``."""
    old = tensor.shape[dim]
    return tensor.index_select(dim, torch.arange(new) % old)


def _split(tensor: torch.Tensor, dim: int, new: int) -> torch.Tensor:
    """Net2Wider split: inputs from duplicated channels share the old weight equally."""
    old = tensor.shape[dim]
    index = torch.arange(new) % old
    counts = torch.bincount(index, minlength=old)[index].to(tensor.dtype)
    shape = [1] * tensor.dim()
    shape[dim] = new
    return tensor.index_select(dim, index) / counts.view(shape)


def _widen_stem(pair: StemPair, working: Working) -> bool:
    changed = False
    for key in pair.stem_keys():
        item = working[key]
        old, new = shape_of(item.tensor), shape_of(pair.target[key])
        if old == new:
            continue
        if len(old) != len(new):
            raise NoTransfer(f"{key}: checkpoint {old} vs model {new}")
        for dim, (o, n) in enumerate(zip(old, new)):
            if o == n:
                continue
            if dim > 1 or (dim == 1 and len(old) < 2):
                raise NoTransfer(f"{key}: checkpoint {old} vs model {new} differ in dim {dim}")
            if n < o:
                raise NoTransfer(
                    f"{key}: {o} -> {n} channels; a narrower stem has no function-preserving "
                    "transfer"
                )
            if dim == 1:
                module = pair.module(key)
                if getattr(module, "groups", 1) != 1:
                    raise NoTransfer(f"{key}: grouped convs cannot be widened")
                item.tensor = _split(item.tensor, 1, n)
            else:
                item.tensor = _duplicate(item.tensor, 0, n)
        item.notes.append(
            f"{old} -> {new}: Net2Wider, new channel j copies channel j mod old "
            "(inputs from copies share the weight) (exact)"
        )
        changed = True
    return changed


def _widen_block(pair: StemPair, working: Working) -> bool:
    narrow, wide = pair.checkpoint_width, pair.model_width
    if wide < narrow:
        raise NoTransfer(
            f"stem width {narrow} -> {wide}: a narrower stem has no function-preserving transfer"
        )
    grown: set[tuple[int, int]] = set()
    zeroed: set[tuple[int, int]] = set()
    missing: list[str] = []
    for key in pair.block_keys():
        item = working.get(key)
        if item is None:
            missing.append(key)
            continue
        target = pair.target[key]
        old, new = shape_of(item.tensor), shape_of(target)
        if old == new:
            continue
        if len(old) != len(new) or any(o > n for o, n in zip(old, new)):
            raise NoTransfer(f"{key}: checkpoint {old} vs model {new}")
        notes = []
        tensor = item.tensor
        if len(old) >= 2 and old[1] != new[1]:
            if (old[1], new[1]) == (narrow, wide):
                tensor = _split(tensor, 1, new[1])
                notes.append("inputs from duplicated stem channels share the weight (Net2Wider)")
            else:
                extended = tensor.new_zeros(*tensor.shape[:1], new[1], *tensor.shape[2:])
                extended[:, : old[1]] = tensor
                tensor = extended
                zeroed.add((old[1], new[1]))
                notes.append(f"{span('input', old[1], new[1])} zeroed (they read new channels)")
        if old[0] != new[0]:
            extended = target.clone()
            extended[: old[0]] = tensor
            tensor = extended
            grown.add((old[0], new[0]))
            notes.append(f"{span('channel', old[0], new[0])} keep(s) their init")
        if any(o != n for o, n in zip(old[2:], new[2:])):
            raise NoTransfer(f"{key}: checkpoint {old} vs model {new}")
        item.tensor = tensor
        item.notes.append(f"{old} -> {new}: " + "; ".join(notes) + " (exact in eval mode)")
    if grown - zeroed:
        raise NoTransfer(
            "new first-block channels would reach the output: "
            + ", ".join(f"{o} -> {n}" for o, n in sorted(grown - zeroed))
        )
    if missing:
        _add_projection(pair, working, missing)
    return True


def _add_projection(pair: StemPair, working: Working, missing: list[str]) -> None:
    """A 1x1 projection + identity norm that equals the checkpoint's identity shortcut."""
    prefix = f"{pair.block_prefix}downsample."
    if any(not k.startswith(prefix) for k in missing):
        others = [k for k in missing if not k.startswith(prefix)]
        raise NoTransfer(f"{', '.join(others[:3])}: not in the checkpoint")
    shortcut = pair.model.get_submodule(prefix.rstrip("."))
    if not isinstance(shortcut, nn.Sequential) or len(shortcut) != 2:
        raise NoTransfer(f"{prefix.rstrip('.')} is not a (conv, norm) projection")
    conv = shortcut[0]
    if not isinstance(conv, _ConvNd) or any(k != 1 for k in conv.kernel_size) or conv.groups != 1:
        raise NoTransfer(f"{prefix}0 is not a 1x1 conv")
    if any(s != 1 for s in conv.stride) or conv.bias is not None:
        raise NoTransfer(f"{prefix}0 is strided or biased; the identity shortcut is not")
    narrow, wide = pair.checkpoint_width, pair.model_width
    if conv.out_channels != narrow or conv.in_channels != wide:
        raise NoTransfer(
            f"{prefix}0 maps {conv.in_channels} -> {conv.out_channels} channels; the checkpoint's "
            f"identity shortcut carried {narrow}"
        )
    index = torch.arange(wide) % narrow
    counts = torch.bincount(index, minlength=narrow)[index].to(torch.float64)
    weight = torch.zeros(narrow, wide, dtype=torch.float64)
    weight[index, torch.arange(wide)] = 1.0 / counts
    weight = weight.reshape(narrow, wide, *([1] * (conv.weight.dim() - 2)))
    note = "new projection shortcut: sums the duplicated stem channels back, exact in eval mode"
    working[f"{prefix}0.weight"] = Item(weight, (), [note], from_checkpoint=False)
    identity_norm(pair, f"{prefix}1.", working, f"{note} (identity norm)", channels=narrow)


def widen(pair: StemPair, working: Working, metrics: dict[str, Any]) -> bool:
    """Net2Wider: duplicate stem channels, split the first block's inputs over the copies.

    Mid channels the first block gains (R(2+1)D's ``midplanes`` grow with its input width) keep
    their init and their outgoing weights are zeroed; a projection shortcut the wider stem needs
    is built to sum the copies back, with an identity norm.
    """
    changed = _widen_stem(pair, working)
    if pair.block_prefix is not None and pair.checkpoint_width != pair.model_width:
        changed = _widen_block(pair, working) or changed
    if changed:
        metrics.update(width=(pair.checkpoint_width, pair.model_width))
    return changed
