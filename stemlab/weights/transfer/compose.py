"""(2+1)D -> 3-D composition: an R(2+1)D stem's two convs as one 3-D conv (an approximation).

The spatial conv ``S`` (``1 x kh x kw``), its norm (eval mode: scale ``a``, shift ``b``), a ReLU and
the temporal conv ``T`` (``kt x 1 x 1``) become one ``kt x kh x kw`` conv::

    W[o, i, t, h, w] = sum_m T[o, m, t] * a[m] * S[m, i, h, w]

and the shift ``b`` reaches the output as the constant ``sum_{m,t} T[o, m, t] b[m]``, folded into the
running mean of the norm after the 3-D conv. This is exact only where the middle ReLU passes
everything (all mid activations positive); it drops the ReLU, so the report gives the relative error
of the composed stem against the (2+1)D stem on a fixed random clip (eval mode, before the last
activation, away from the temporal border where the two pad different tensors with zeros).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stemlab.weights.transfer.base import NORM_SUFFIXES, Item, NoTransfer, StemPair, Working

__all__ = ["compose_2plus1d"]

_PROBE_SHAPE = (1, 8, 32, 32)


def _model_conv_norm(stem: nn.Module) -> tuple[str, nn.Conv3d, str, nn.Module] | None:
    children = list(stem.named_children()) if isinstance(stem, nn.Sequential) else []
    convs = [(n, m) for n, m in children if isinstance(m, nn.Conv3d)]
    if len(convs) != 1 or len(children) < 2:
        return None
    index = [n for n, _ in children].index(convs[0][0])
    if index + 1 >= len(children):
        return None
    norm_name, norm = children[index + 1]
    if not isinstance(norm, nn.BatchNorm3d):
        return None
    return convs[0][0], convs[0][1], norm_name, norm


def _norm(working: Working, prefix: str) -> dict[str, Item] | None:
    found = {s: working[prefix + s] for s in NORM_SUFFIXES if prefix + s in working}
    return found if {"weight", "bias", "running_mean", "running_var"} <= set(found) else None


def _eval_bn(x: torch.Tensor, norm: dict[str, torch.Tensor], eps: float) -> torch.Tensor:
    return F.batch_norm(
        x, norm["running_mean"], norm["running_var"], norm["weight"], norm["bias"], False, 0.0, eps
    )


def compose_2plus1d(pair: StemPair, working: Working, metrics: dict[str, Any]) -> bool:
    """A checkpoint's (2+1)D stem -> the model's single 3-D conv + norm (see the module docstring)."""
    prefix = pair.stem_prefix
    convs = sorted(
        (
            k
            for k, item in working.items()
            if k.startswith(prefix)
            and k.endswith(".weight")
            and item.from_checkpoint
            and item.tensor.dim() == 5
        ),
        key=lambda k: [int(p) if p.isdigit() else p for p in k[len(prefix) :].split(".")],
    )
    model_side = _model_conv_norm(pair.stem)
    if len(convs) != 2 or model_side is None:
        return False
    s_key, t_key = convs
    spatial, temporal = working[s_key].tensor, working[t_key].tensor
    if spatial.shape[2] != 1 or temporal.shape[3:] != (1, 1):
        return False
    s_index = int(s_key[len(prefix) :].split(".")[0])
    t_index = int(t_key[len(prefix) :].split(".")[0])
    mid_prefix, out_prefix = f"{prefix}{s_index + 1}.", f"{prefix}{t_index + 1}."
    mid, out_norm = _norm(working, mid_prefix), _norm(working, out_prefix)
    if mid is None or out_norm is None:
        raise NoTransfer(
            "(2+1)D -> 3-D needs a norm after each of the checkpoint's stem convs "
            f"({mid_prefix}*, {out_prefix}*)"
        )
    conv_name, conv, norm_name, norm = model_side
    if conv.bias is not None:
        raise NoTransfer(f"{prefix}{conv_name} has a bias; the composition folds into the norm")
    if spatial.shape[1] != conv.in_channels or temporal.shape[0] != conv.out_channels:
        raise NoTransfer(
            f"(2+1)D stem {spatial.shape[1]} -> {temporal.shape[0]} channels, the model's conv "
            f"{conv.in_channels} -> {conv.out_channels}"
        )
    eps = norm.eps
    mid_t = {k: v.tensor for k, v in mid.items()}
    out_t = {k: v.tensor for k, v in out_norm.items()}
    scale = mid_t["weight"] / (mid_t["running_var"] + eps).sqrt()
    shift = mid_t["bias"] - mid_t["running_mean"] * scale
    t = temporal[:, :, :, 0, 0]  # (out, mid, kt)
    weight = torch.einsum("omt,m,mihw->oithw", t, scale, spatial[:, :, 0])
    constant = torch.einsum("omt,m->o", t, shift)

    kt, kh, kw = weight.shape[2:]
    stride = (conv.stride[0], conv.stride[1], conv.stride[2])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, conv.in_channels, *_PROBE_SHAPE[1:], generator=generator, dtype=weight.dtype)
    y = F.conv3d(x, spatial, stride=(1, *stride[1:]), padding=(0, kh // 2, kw // 2))
    y = F.relu(_eval_bn(y, mid_t, eps))
    y = F.conv3d(y, temporal, stride=(stride[0], 1, 1), padding=(kt // 2, 0, 0))
    reference = _eval_bn(y, out_t, eps)
    folded = dict(out_t, running_mean=out_t["running_mean"] - constant)
    composed = _eval_bn(
        F.conv3d(x, weight, stride=stride, padding=(kt // 2, kh // 2, kw // 2)), folded, eps
    )
    # zero padding in time differs (the 3-D conv pads the clip, T pads the mid activation)
    edge = kt // 2
    inner = slice(edge, composed.shape[2] - edge)
    diff = composed[:, :, inner] - reference[:, :, inner]
    error = float(diff.norm() / reference[:, :, inner].norm().clamp_min(1e-12))
    metrics.update(composition_relative_error=error)

    claim = (
        f"(2+1)D -> 3-D: T * diag(mid-norm scale) * S composed into one {kt}x{kh}x{kw} kernel, "
        "the middle ReLU dropped (approximate: relative error "
        f"{error:.3g} on a random clip away from the temporal border, eval mode)"
    )
    sources = (s_key, t_key, *(i.sources[0] for i in mid.values() if i.sources))
    for key in [
        k
        for k in working
        if k.startswith((s_key[: -len("weight")], t_key[: -len("weight")], mid_prefix, out_prefix))
    ]:
        working.pop(key)
    working[f"{prefix}{conv_name}.weight"] = Item(weight, sources, [claim])
    for suffix, item in out_norm.items():
        value = folded.get(suffix, item.tensor)
        note = f"from {out_prefix}{suffix}"
        if suffix == "running_mean":
            note += "; minus the mid norm's shift carried through the temporal conv"
            src = (*item.sources, *sources)
        else:
            src = item.sources
        working[f"{prefix}{norm_name}.{suffix}"] = Item(value, src, [note, claim])
    return True
