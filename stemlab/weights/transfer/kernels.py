"""Kernel resizing: centred zero-padding, temporal folding, spatial cropping, dilated sampling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.modules.conv import _ConvNd

from stemlab.weights.transfer.base import NoTransfer, StemPair, Working, energy_ratio, shape_of

__all__ = ["resize_kernel", "resize_kernels"]


def _dim_names(ndim: int) -> tuple[str, ...]:
    return ("time", "height", "width")[-(ndim - 2) :] if ndim > 2 else ()


def resize_kernel(
    weight: torch.Tensor,
    size: Sequence[int],
    *,
    temporal_first: bool,
    dilation: Sequence[int],
) -> tuple[torch.Tensor, list[str]]:
    """Resize the kernel dims of a conv weight ``(out, in, *kernel)`` to ``size``.

    Per dim: growing zero-pads centrally (exact for centred convs); shrinking in time sums the
    outer taps into the edge taps (exact on static clips away from the temporal border); shrinking
    in space crops the centre; a dilated target samples every ``d``-th tap. The last two are
    approximate, and their note says how much of the kernel's energy survived.

    Args:
        weight: the conv weight.
        size: the new kernel size.
        temporal_first: whether the first kernel dim is time (3-D convs).
        dilation: the target conv's dilation.

    Returns:
        ``(resized weight, notes)``.

    Raises:
        NoTransfer: an odd size difference (no centre) or a dilated target that cannot be sampled.
    """
    old_size = shape_of(weight)[2:]
    names = _dim_names(weight.dim())
    pad, fold, approx = [], [], []
    kept = 1.0
    for axis, (old, new, d) in enumerate(zip(old_size, size, dilation)):
        dim = axis + 2
        if old == new:
            continue
        if d > 1 and new < old:
            span = (new - 1) * d + 1
            if span > old or (old - span) % 2:
                raise NoTransfer(f"cannot sample {new} taps at dilation {d} from {old} taps")
            start = (old - span) // 2
            sampled = weight.index_select(dim, torch.arange(start, start + span, d))
            kept *= energy_ratio(sampled, weight)
            weight = sampled
            approx.append(f"every {d}th tap in {names[axis]} (dilation {d})")
            continue
        if (old - new) % 2 or d > 1:
            raise NoTransfer(
                f"kernel {old_size} -> {tuple(size)}: a {names[axis]} size change of {new - old} "
                "taps cannot stay centred"
            )
        cut = abs(old - new) // 2
        if new > old:
            padded = weight.new_zeros(*weight.shape[:dim], new, *weight.shape[dim + 1 :])
            padded.narrow(dim, cut, old).copy_(weight)
            weight = padded
            pad.append(names[axis])
        elif temporal_first and axis == 0:
            core = weight.narrow(dim, cut, new).clone()
            core.select(dim, 0).add_(weight.narrow(dim, 0, cut).sum(dim))
            core.select(dim, new - 1).add_(weight.narrow(dim, old - cut, cut).sum(dim))
            weight = core
            fold.append(names[axis])
        else:
            cropped = weight.narrow(dim, cut, new).clone()
            kept *= energy_ratio(cropped, weight)
            weight = cropped
            approx.append(f"centre crop in {names[axis]}")
    head = f"kernel {old_size} -> {tuple(size)}"
    notes = []
    if pad:
        notes.append(f"{head}: zero-padded centrally in {', '.join(pad)} (exact)")
    if fold:
        notes.append(
            f"{head}: outer taps summed into the kept ones in time (exact on static clips away "
            "from the temporal border)"
        )
    if approx:
        notes.append(
            f"{head}: {', '.join(approx)} (approximate: {kept:.1%} of the kernel's energy kept)"
        )
    return weight, notes


def resize_kernels(pair: StemPair, working: Working, metrics: dict[str, Any]) -> bool:
    """Stem convs whose kernel size differs get :func:`resize_kernel`."""
    changed = False
    for key, item in working.items():
        target = pair.target.get(key)
        if not key.startswith(pair.stem_prefix) or target is None or not item.from_checkpoint:
            continue
        if item.tensor.dim() < 3 or item.tensor.dim() != target.dim():
            continue
        if item.tensor.shape[2:] == target.shape[2:]:
            continue
        conv = pair.module(key)
        if not isinstance(conv, _ConvNd):
            continue
        item.tensor, notes = resize_kernel(
            item.tensor,
            shape_of(target)[2:],
            temporal_first=target.dim() == 5,
            dilation=conv.dilation,
        )
        item.notes.extend(notes)
        changed = True
    return changed
