"""(2+1)-D factorisation: one 3-D stem conv -> spatial conv, identity norm, ReLU, temporal conv."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stemlab.weights.transfer.base import (
    NORM_SUFFIXES,
    Item,
    NoTransfer,
    StemPair,
    Working,
    identity_norm,
    shape_of,
    span,
)
from stemlab.weights.transfer.kernels import resize_kernel

__all__ = ["factorise_2plus1d", "two_conv_layout"]


def two_conv_layout(stem: nn.Module) -> tuple[str, str, str, str] | None:
    """Names of (spatial conv, its norm, temporal conv, its norm) in a (2+1)-D stem, else None."""
    children = list(stem.named_children()) if isinstance(stem, nn.Sequential) else []
    kinds = [type(m) for _, m in children]
    expected = [nn.Conv3d, nn.BatchNorm3d, nn.ReLU, nn.Conv3d, nn.BatchNorm3d]
    if kinds[:5] != expected or any(k is not nn.ReLU for k in kinds[5:]):
        return None
    spatial, temporal = children[0][1], children[3][1]
    if spatial.kernel_size[0] != 1 or temporal.kernel_size[1:] != (1, 1):
        return None
    if spatial.bias is not None or temporal.bias is not None or spatial.groups != 1:
        return None
    if spatial.padding[0] != 0 or spatial.stride[0] != 1 or temporal.stride[1:] != (1, 1):
        return None
    return children[0][0], children[1][0], children[3][0], children[4][0]


def _checkpoint_convs(pair: StemPair, working: Working) -> list[str]:
    return [
        k
        for k, item in working.items()
        if k.startswith(pair.stem_prefix)
        and k.endswith(".weight")
        and item.from_checkpoint
        and item.tensor.dim() >= 3
    ]


def factorise_2plus1d(pair: StemPair, working: Working, metrics: dict[str, Any]) -> bool:
    """One 3-D conv + norm -> spatial conv, identity norm, ReLU, temporal conv, norm.

    The ``(out, in, t, h, w)`` kernel, read as a matrix ``(out*t, in*h*w)``, is cut to rank
    ``r = mid // 2`` by SVD: spatial filters ``sqrt(s) v``, temporal filters ``u sqrt(s)``. Each
    spatial filter appears twice, as ``+f`` and ``-f``, with temporal weights ``+g`` and ``-g``, so
    ``g*relu(z) - g*relu(-z) = g*z`` carries the composition exactly through the ReLU; the norm
    between is the identity in eval mode. The composed kernel is the rank-``r`` truncation, whose
    relative Frobenius error goes into the report.
    """
    stem = pair.stem
    layout = two_conv_layout(stem)
    convs = _checkpoint_convs(pair, working)
    if layout is None or len(convs) != 1 or working[convs[0]].tensor.dim() != 5:
        return False
    a, na, b, nb = layout
    prefix = pair.stem_prefix
    conv_key = convs[0]
    conv_prefix = conv_key[: -len("weight")]
    if conv_prefix + "bias" in working:
        raise NoTransfer(f"{conv_prefix}bias: a biased 3-D stem conv cannot be factorised exactly")
    norm_keys = [k for k in working if k.startswith(prefix) and k != conv_key]
    norm_prefixes = {k.rsplit(".", 1)[0] + "." for k in norm_keys}
    if len(norm_prefixes) != 1 or any(k.rsplit(".", 1)[1] not in NORM_SUFFIXES for k in norm_keys):
        raise NoTransfer(
            "3-D -> (2+1)-D needs a checkpoint stem of one conv and one norm, got "
            + ", ".join(sorted(norm_keys))
        )
    (norm_prefix,) = norm_prefixes

    spatial: nn.Conv3d = stem.get_submodule(a)
    temporal: nn.Conv3d = stem.get_submodule(b)
    source = working.pop(conv_key)
    norm_items = {k[len(norm_prefix) :]: working.pop(k) for k in norm_keys}
    size = (temporal.kernel_size[0], *spatial.kernel_size[1:])
    dilation = (temporal.dilation[0], *spatial.dilation[1:])
    weight, notes = resize_kernel(source.tensor, size, temporal_first=True, dilation=dilation)
    out, cin, kt, kh, kw = shape_of(weight)
    if cin != spatial.in_channels:
        raise NoTransfer(
            f"{conv_key}: {cin} input channels, the model's stem takes {spatial.in_channels}"
        )
    mid = spatial.out_channels
    matrix = weight.permute(0, 2, 1, 3, 4).reshape(out * kt, cin * kh * kw)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = min(mid // 2, s.numel())
    if rank == 0:
        raise NoTransfer(f"the (2+1)-D stem has {mid} mid channels; ± pairs need at least 2")
    root = s[:rank].sqrt()
    spatial_filters = (root[:, None] * vh[:rank]).reshape(rank, cin, 1, kh, kw)
    temporal_filters = (u[:, :rank] * root).reshape(out, kt, rank).permute(0, 2, 1)
    total = s.square().sum()
    error = float((s[rank:].square().sum() / total).sqrt()) if total > 0 else 0.0
    metrics.update(svd_rank=rank, svd_max_rank=s.numel(), svd_relative_error=error)

    a_key, b_key = f"{prefix}{a}.weight", f"{prefix}{b}.weight"
    a_weight = pair.target[a_key].clone()
    a_weight[:rank] = spatial_filters
    a_weight[rank : 2 * rank] = -spatial_filters
    b_weight = weight.new_zeros(out, mid, kt, 1, 1)
    b_weight[:, :rank, :, 0, 0] = temporal_filters
    b_weight[:, rank : 2 * rank, :, 0, 0] = -temporal_filters
    spare = f"; {span('mid channel', 2 * rank, mid)} keep(s) their init" if 2 * rank < mid else ""
    claim = (
        f"rank-{rank} truncated SVD of the 3-D kernel {shape_of(weight)} (rank <= {s.numel()}), "
        f"relative reconstruction error {error:.4g}"
    )
    working[a_key] = Item(
        a_weight,
        source.sources,
        [*source.notes, *notes, f"spatial factor: {claim}; ± pairs{spare}"],
    )
    working[b_key] = Item(
        b_weight,
        source.sources,
        [
            *source.notes,
            *notes,
            f"temporal factor: {claim}; ± pairs carry it exactly through the ReLU",
        ],
    )
    identity_norm(
        pair,
        f"{prefix}{na}.",
        working,
        "identity in eval mode between the factorised convs",
        channels=mid,
    )
    for suffix, item in norm_items.items():
        working[f"{prefix}{nb}.{suffix}"] = Item(
            item.tensor,
            item.sources,
            [*item.notes, f"the 3-D stem's norm, from {norm_prefix}{suffix}"],
        )
    return True
