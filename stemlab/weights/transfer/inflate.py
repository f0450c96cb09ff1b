"""2-D -> 3-D inflation (I3D, Carreira & Zisserman 2017): an image ResNet's weights in a video ResNet.

A 2-D checkpoint (4-D conv weights: torchvision's ``resnet18`` keys ``conv1``, ``bn1``,
``layerI.J.conv1`` .., ``fc``, or stemlab's ``resnet18``) is rewritten into the model's 3-D keys:

- a 3-D conv of temporal size ``t``: the ``k x k`` kernel repeated over ``t`` taps and divided by
  ``t`` (``t = 1``: the kernel as it is). On a static clip every tap sees the same frame, so the
  conv gives the 2-D conv's output (away from the temporal border, where zero padding removes taps).
- an R(2+1)D conv (spatial ``1 x k x k`` -> mid norm -> ReLU -> temporal ``t x 1 x 1``): the 2-D
  kernel goes into the spatial conv and the temporal conv passes the centre tap, an identity on
  every clip. The ReLU inside the (2+1)D conv is handled by what follows the conv in the block:

  * followed by norm + ReLU (a block's ``conv1``): the 2-D norm becomes the mid norm, so the inner
    ReLU is the 2-D ReLU; the outer norm is the identity (eval mode) and the outer ReLU sees only
    non-negative values. Exact when ``mid >= out``.
  * followed by norm only (``conv2``, before the residual sum): each channel passes as a +/- pair,
    ``relu(z) - relu(-z) = z``, with an identity mid norm and the 2-D norm outside. Exact when
    ``mid >= 2 * out``; otherwise the channels without a pair pass only their positive part (the
    report counts them). torchvision's mid width is ``2.25 * out`` when a block keeps its width and
    ``1.8 * out`` when it doubles it, so the first block of a widening stage is approximate there.

- norms are copied under their 3-D names; tensors that need no change (the head, shortcut norms)
  pass through, and the usual loader decides (a 1000-class head is kept for ``num_classes=1000``
  and re-initialised otherwise). The stem's conv is inflated to the model's stem conv's temporal
  size and then goes through the stem transfer rules like any other checkpoint stem (an R(2+1)D
  stem: the ``3d_to_2plus1d`` rule on the centre-tap kernel, exact with enough mid channels).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from stemlab.backbones.layout import Layout
from stemlab.weights.transfer.base import NORM_SUFFIXES

__all__ = ["Inflation", "inflate_2d_to_3d", "is_2d_checkpoint"]

_CONV_KEY = re.compile(r"(?P<block>.+)\.conv(?P<index>\d+)\.weight")
_NOTE = "inflated 2-D -> 3-D"


@dataclass
class Inflation:
    """A 2-D checkpoint rewritten for a 3-D model.

    Attributes:
        state: the rewritten state dict, in the model's keys (plus the untouched extras).
        sources: rewritten key -> the checkpoint keys it was computed from.
        notes: rewritten key -> what was done (starting with ``"inflated 2-D -> 3-D"``).
        metrics: ``inflated_convs`` and ``inflation_approximate_channels`` (channels of (2+1)D
            convs that carry only part of the 2-D output; 0 means exact).
    """

    state: dict[str, torch.Tensor] = field(default_factory=dict)
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(
        default_factory=lambda: {"inflated_convs": 0, "inflation_approximate_channels": 0}
    )

    def put(self, key: str, value: torch.Tensor, sources: tuple[str, ...], note: str) -> None:
        self.state[key] = value
        self.sources[key] = sources
        self.notes[key] = f"{_NOTE}: {note}"


def is_2d_checkpoint(
    model: nn.Module, checkpoint: Mapping[str, torch.Tensor], *, layout: Layout
) -> bool:
    """Whether ``checkpoint`` is an image (2-D) network's and ``model``'s first block is 3-D.

    True when the checkpoint has 4-D tensors under the first block's prefix and no 5-D tensor at
    all, while the model's first block has 5-D conv weights.
    """
    block = layout.block_prefix
    model_3d = any(k.startswith(block) and v.dim() == 5 for k, v in model.state_dict().items())
    checkpoint_2d = any(k.startswith(block) and v.dim() == 4 for k, v in checkpoint.items())
    return model_3d and checkpoint_2d and not any(v.dim() == 5 for v in checkpoint.values())


def _repeat(weight: torch.Tensor, frames: int) -> torch.Tensor:
    return weight.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames


def _repeat_note(frames: int, kernel: tuple[int, ...]) -> str:
    size = "x".join(map(str, kernel))
    if frames == 1:
        return f"the {size} kernel as a 1x{size} kernel (exact frame by frame)"
    return (
        f"the {size} kernel repeated over {frames} taps and divided by {frames} (exact on static "
        "clips away from the temporal border)"
    )


def _identity_norm(norm: nn.BatchNorm3d) -> dict[str, torch.Tensor]:
    """Eval-mode identity: ``(x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + 0``."""
    channels = norm.num_features
    return {
        "weight": torch.full((channels,), (1.0 + norm.eps) ** 0.5),
        "bias": torch.zeros(channels),
        "running_mean": torch.zeros(channels),
        "running_var": torch.ones(channels),
        "num_batches_tracked": torch.zeros((), dtype=torch.long),
    }


def _norm(checkpoint: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {s: checkpoint[prefix + s] for s in NORM_SUFFIXES if prefix + s in checkpoint}


def _two_plus_one(conv: nn.Module) -> tuple[nn.Conv3d, nn.BatchNorm3d, nn.Conv3d] | None:
    """(spatial conv, mid norm, temporal conv) of a torchvision ``Conv2Plus1D``, else None."""
    if not isinstance(conv, nn.Sequential) or len(conv) != 4:
        return None
    spatial, norm, _, temporal = conv
    kinds = (nn.Conv3d, nn.BatchNorm3d, nn.ReLU, nn.Conv3d)
    if not all(isinstance(m, k) for m, k in zip(conv, kinds)):
        return None
    if spatial.kernel_size[0] != 1 or temporal.kernel_size[1:] != (1, 1):
        return None
    if temporal.kernel_size[0] % 2 == 0 or temporal.padding[0] != temporal.kernel_size[0] // 2:
        return None
    if spatial.groups != 1 or temporal.groups != 1:
        return None
    return spatial, norm, temporal


def _put_norm(
    result: Inflation,
    prefix: str,
    values: Mapping[str, torch.Tensor],
    sources: Mapping[str, str],
    note: str,
) -> None:
    for suffix, value in values.items():
        origin = sources.get(suffix)
        result.put(prefix + suffix, value, (origin,) if origin else (), note)


def _inflate_2plus1d(
    result: Inflation,
    target: str,
    parts: tuple[nn.Conv3d, nn.BatchNorm3d, nn.Conv3d],
    outer: nn.BatchNorm3d,
    weight: torch.Tensor,
    norm: dict[str, torch.Tensor],
    keys: tuple[str, str],
    relu_after: bool,
) -> None:
    """Fill ``target`` (``layerI.J.convN.``) from a 2-D conv + norm; see the module docstring."""
    spatial, mid_norm, temporal = parts
    conv_key, norm_prefix = keys
    out, mid, taps = temporal.out_channels, spatial.out_channels, temporal.kernel_size[0]
    kept = min(mid, out)
    pairs = 0 if relu_after else min(out, mid - kept)
    s = torch.zeros(mid, *weight.shape[1:2], 1, *weight.shape[2:], dtype=weight.dtype)
    s[:kept, :, 0] = weight[:kept]
    s[kept : kept + pairs, :, 0] = -weight[:pairs]
    t = torch.zeros(out, mid, taps, 1, 1, dtype=weight.dtype)
    index = torch.arange(kept)
    t[index, index, taps // 2] = 1.0
    t[torch.arange(pairs), kept + torch.arange(pairs), taps // 2] = -1.0
    exact = kept if relu_after else pairs
    result.metrics["inflation_approximate_channels"] += out - exact
    result.metrics["inflated_convs"] += 1
    if exact == out:
        claim = "exact in eval mode"
    else:
        short = "mid channels" if relu_after else "mid channels for +/- pairs"
        claim = f"approximate: {out - exact} of {out} channels lack {short} (mid {mid})"
    norm_sources = {suffix: norm_prefix + suffix for suffix in norm}
    mid_values = _identity_norm(mid_norm)
    outer_values = _identity_norm(outer)
    if relu_after:
        for suffix, value in norm.items():
            if suffix == "num_batches_tracked":
                mid_values[suffix] = value.clone()
            else:
                mid_values[suffix] = mid_values[suffix].to(value.dtype)
                mid_values[suffix][:kept] = value[:kept]
        how = (
            f"(2+1)D: the 2-D kernel in the spatial conv, the 2-D norm as the mid norm (its ReLU "
            f"is the 2-D ReLU), centre-tap identity in time, identity outer norm; {claim}"
        )
        mid_sources = norm_sources
        outer_sources: dict[str, str] = {}
    else:
        outer_values = dict(norm)
        how = (
            f"(2+1)D: the 2-D kernel in the spatial conv as +/- pairs through the ReLU "
            f"(relu(z) - relu(-z) = z), identity mid norm, centre-tap identity in time, the 2-D "
            f"norm outside; {claim}"
        )
        mid_sources, outer_sources = {}, norm_sources
    result.put(f"{target}0.0.weight", s, (conv_key,), how)
    result.put(f"{target}0.3.weight", t, (conv_key,), how)
    _put_norm(result, f"{target}0.1.", mid_values, mid_sources, how)
    _put_norm(result, f"{target}1.", outer_values, outer_sources, how)


def inflate_2d_to_3d(
    model: nn.Module, checkpoint: Mapping[str, torch.Tensor], *, layout: Layout
) -> Inflation:
    """Rewrite a 2-D ResNet checkpoint for the 3-D ``model`` (see the module docstring).

    Args:
        model: the 3-D model (read only).
        checkpoint: the 2-D state dict, stem keys already under the model's stem prefix.
        layout: the model's declared layout.

    Returns:
        The :class:`Inflation`; tensors it cannot place pass through unchanged, so the loader
        reports them (missing or mismatched backbone tensors stay an error).
    """
    state = model.state_dict()
    modules = dict(model.named_modules())
    result = Inflation()
    consumed: set[str] = set()
    for key, weight in checkpoint.items():
        match = _CONV_KEY.fullmatch(key)
        if match is None or key in state or weight.dim() != 4:
            continue
        block, index = match["block"], match["index"]
        target = f"{block}.conv{index}."
        sequence = modules.get(target[:-1])
        if not isinstance(sequence, nn.Sequential) or len(sequence) < 2:
            continue
        outer = sequence[1]
        if not isinstance(outer, nn.BatchNorm3d):
            continue
        norm_prefix = f"{block}.bn{index}."
        norm = _norm(checkpoint, norm_prefix)
        relu_after = len(sequence) > 2 and isinstance(sequence[2], nn.ReLU)
        conv = sequence[0]
        if isinstance(conv, nn.Conv3d):
            frames = conv.kernel_size[0]
            note = _repeat_note(frames, tuple(weight.shape[2:]))
            result.put(f"{target}0.weight", _repeat(weight, frames), (key,), note)
            sources = {suffix: norm_prefix + suffix for suffix in norm}
            _put_norm(result, f"{target}1.", norm, sources, f"the 2-D norm {norm_prefix[:-1]}")
            result.metrics["inflated_convs"] += 1
        else:
            parts = _two_plus_one(conv)
            if parts is None:
                continue
            _inflate_2plus1d(
                result, target, parts, outer, weight, norm, (key, norm_prefix), relu_after
            )
        consumed.add(key)
        consumed.update(norm_prefix + suffix for suffix in norm)
    for key, value in checkpoint.items():
        if key in consumed or key in result.state:
            continue
        theirs = state.get(key)
        owner = modules.get(key.rsplit(".", 1)[0])
        if (
            theirs is not None
            and value.dim() == 4
            and theirs.dim() == 5
            and isinstance(owner, nn.Conv3d)
        ):
            frames = owner.kernel_size[0]
            note = _repeat_note(frames, tuple(value.shape[2:]))
            result.put(key, _repeat(value, frames), (key,), note)
            result.metrics["inflated_convs"] += 1
        else:
            result.state[key] = value
    return result
