"""Stem weight transfer: adapt a checkpoint's stem, and the first block that reads it, to another stem.

Each rule handles one kind of difference and is function-preserving where the maths allows:

- ``3d_to_2plus1d``: one 3-D conv -> an R(2+1)D stem (spatial conv, norm, ReLU, temporal conv).
  Truncated SVD; exact up to the reconstruction error it reports (eval mode).
- ``gate``: an added squeeze-excitation gate. Exact: the gate starts as the identity.
- ``kernel_size``: other kernel sizes. Larger: centred zero-padding, exact. Fewer taps in time:
  outer taps summed in, exact on static clips away from the temporal border. Smaller in space:
  centre crop, approximate (the report gives the kernel energy kept).
- ``width``: more stem channels (Net2Wider). Exact in eval mode, through the stem and the first
  block, including the projection shortcut the wider stem needs.

Rules run in that order on a working copy of the checkpoint's stem and first-block tensors (float64,
CPU); the first two change which tensors exist, the last two reshape tensors. The transfer succeeds
only if every model tensor of the stem and first block ends up with its exact shape and every
checkpoint stem tensor was used; otherwise :class:`NoTransfer` says why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from stemlab.stems.layers import SqueezeExcitation

__all__ = [
    "STEM_TRANSFERS",
    "Item",
    "NoTransfer",
    "StemPair",
    "StemRule",
    "StemTransfer",
    "resize_kernel",
    "transfer_stem",
]

_NORM_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class NoTransfer(Exception):
    """The checkpoint's stem cannot be adapted to the model's stem; the message says why."""


@dataclass
class Item:
    """A tensor on its way into the model, with where it came from and what was done to it.

    Attributes:
        tensor: the value (float64 on CPU for floating tensors).
        sources: checkpoint keys it was computed from (empty for init values).
        notes: what was done, in order, for the report.
        from_checkpoint: ``False`` for values set by a rule rather than derived from the checkpoint.
    """

    tensor: torch.Tensor
    sources: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    from_checkpoint: bool = True


@dataclass(frozen=True)
class StemPair:
    """The model side of a transfer.

    Attributes:
        model: the model receiving the weights (read only).
        target: the model's tensors under ``stem_prefix`` and ``block_prefix`` (CPU, float64).
        stem_prefix: state-dict prefix of the stem (``"stem."``).
        block_prefix: prefix of the first module reading the stem output (``"layer1.0."``) or None.
        checkpoint_width: output channels of the checkpoint's stem.
        model_width: output channels of the model's stem.
    """

    model: nn.Module
    target: Mapping[str, torch.Tensor]
    stem_prefix: str
    block_prefix: str | None
    checkpoint_width: int
    model_width: int

    def module(self, key: str) -> nn.Module:
        """The module that owns the tensor ``key``."""
        return self.model.get_submodule(key.rsplit(".", 1)[0])

    def stem_keys(self) -> list[str]:
        return [k for k in self.target if k.startswith(self.stem_prefix)]

    def block_keys(self) -> list[str]:
        if self.block_prefix is None:
            return []
        return [k for k in self.target if k.startswith(self.block_prefix)]


Working = dict[str, Item]


@dataclass(frozen=True)
class StemRule:
    """One transfer rule of :data:`STEM_TRANSFERS`.

    Attributes:
        handles: the difference it adapts, for docs and the report.
        apply: ``apply(pair, working, metrics) -> bool``; edits ``working`` in place, returns whether
            it changed anything, raises :class:`NoTransfer` when it applies but cannot succeed.
        structural: rules that add or rename tensors (run before the key sets are compared).
    """

    handles: str
    apply: Callable[[StemPair, Working, dict[str, Any]], bool]
    structural: bool


@dataclass(frozen=True)
class StemTransfer:
    """Result of :func:`transfer_stem`.

    Attributes:
        items: model key -> :class:`Item`, for every tensor of the stem and the first block.
        rules: names of the rules that changed something, in order.
        metrics: numbers for the report (``svd_rank``, ``svd_relative_error``...).
    """

    items: dict[str, Item]
    rules: tuple[str, ...]
    metrics: dict[str, Any]


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


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
    old_size = _shape(weight)[2:]
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
            kept *= _energy_ratio(sampled, weight)
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
            kept *= _energy_ratio(cropped, weight)
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


def _energy_ratio(part: torch.Tensor, whole: torch.Tensor) -> float:
    total = float(whole.square().sum())
    return float(part.square().sum()) / total if total > 0 else 1.0


def _span(what: str, start: int, stop: int) -> str:
    return f"{what} {start}" if stop - start == 1 else f"{what}s {start}..{stop - 1}"


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


def _identity_norm(
    pair: StemPair, prefix: str, working: Working, note: str, *, channels: int
) -> None:
    """Eval-mode identity BatchNorm: ``(x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + 0``."""
    norm = pair.model.get_submodule(prefix.rstrip("."))
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or not norm.affine:
        raise NoTransfer(f"{prefix.rstrip('.')} is not an affine BatchNorm")
    if not norm.track_running_stats:
        raise NoTransfer(f"{prefix.rstrip('.')} does not track running statistics")
    dtype = torch.float64
    values = {
        "weight": torch.full((channels,), (1.0 + norm.eps) ** 0.5, dtype=dtype),
        "bias": torch.zeros(channels, dtype=dtype),
        "running_mean": torch.zeros(channels, dtype=dtype),
        "running_var": torch.ones(channels, dtype=dtype),
    }
    for suffix, value in values.items():
        working[prefix + suffix] = Item(value, (), [note], from_checkpoint=False)
    key = prefix + "num_batches_tracked"
    if key in pair.target:
        working[key] = Item(pair.target[key].clone(), (), ["keeps its init"], False)


def _two_conv_layout(stem: nn.Module) -> tuple[str, str, str, str] | None:
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
    stem = pair.model.stem
    layout = _two_conv_layout(stem)
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
    if len(norm_prefixes) != 1 or any(k.rsplit(".", 1)[1] not in _NORM_SUFFIXES for k in norm_keys):
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
    out, cin, kt, kh, kw = _shape(weight)
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
    spare = f"; {_span('mid channel', 2 * rank, mid)} keep(s) their init" if 2 * rank < mid else ""
    claim = (
        f"rank-{rank} truncated SVD of the 3-D kernel {_shape(weight)} (rank <= {s.numel()}), "
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
    _identity_norm(
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


def add_identity_gates(pair: StemPair, working: Working, metrics: dict[str, Any]) -> bool:
    """Squeeze-excitation gates the checkpoint lacks start as the identity (``fc2`` zeroed)."""
    changed = False
    for name, module in pair.model.stem.named_modules():
        if not isinstance(module, SqueezeExcitation):
            continue
        prefix = f"{pair.stem_prefix}{name}."
        keys = [k for k in pair.target if k.startswith(prefix)]
        if any(k in working for k in keys):
            continue
        for key in keys:
            if key.startswith(prefix + "fc2."):
                value = torch.zeros_like(pair.target[key])
                note = "zeroed: the gate 2*sigmoid(0) = 1 starts as the identity (exact)"
            else:
                value = pair.target[key].clone()
                note = "keeps its init (with fc2 zeroed the gate is exactly 1)"
            working[key] = Item(value, (), [note], from_checkpoint=False)
        changed = True
    return changed


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
            _shape(target)[2:],
            temporal_first=target.dim() == 5,
            dilation=conv.dilation,
        )
        item.notes.extend(notes)
        changed = True
    return changed


def _widen_stem(pair: StemPair, working: Working) -> bool:
    changed = False
    for key in pair.stem_keys():
        item = working[key]
        old, new = _shape(item.tensor), _shape(pair.target[key])
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
        old, new = _shape(item.tensor), _shape(target)
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
                notes.append(f"{_span('input', old[1], new[1])} zeroed (they read new channels)")
        if old[0] != new[0]:
            extended = target.clone()
            extended[: old[0]] = tensor
            tensor = extended
            grown.add((old[0], new[0]))
            notes.append(f"{_span('channel', old[0], new[0])} keep(s) their init")
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
    _identity_norm(pair, f"{prefix}1.", working, f"{note} (identity norm)", channels=narrow)


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


STEM_TRANSFERS: dict[str, StemRule] = {
    "3d_to_2plus1d": StemRule("a 3-D conv stem -> an R(2+1)D stem", factorise_2plus1d, True),
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
        if _shape(item.tensor) != _shape(pair.target[key]):
            raise NoTransfer(
                f"{key}: checkpoint gives {_shape(item.tensor)}, the model has "
                f"{_shape(pair.target[key])}"
            )
    used = {s for k in pair.stem_keys() for s in working[k].sources}
    unused = sorted(checkpoint_stem - used)
    if unused:
        raise NoTransfer(f"checkpoint stem tensors {', '.join(unused[:4])} would go unused")


def transfer_stem(
    model: nn.Module,
    checkpoint: Mapping[str, torch.Tensor],
    *,
    stem_prefix: str = "stem.",
    block_prefix: str | None = "layer1.0.",
) -> StemTransfer:
    """Adapt the checkpoint's stem (and the first block) to ``model``'s stem.

    Args:
        model: the model with the new stem (not modified).
        checkpoint: the checkpoint's state dict (only stem and first-block keys are read).
        stem_prefix: state-dict prefix of the stem.
        block_prefix: prefix of the module reading the stem's output, or ``None``.

    Returns:
        A :class:`StemTransfer` with a value for every model tensor of the stem and first block.

    Raises:
        NoTransfer: no sequence of rules maps the checkpoint's stem onto the model's.
    """
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
    pair = StemPair(
        model=model,
        target=target,
        stem_prefix=stem_prefix,
        block_prefix=block_prefix
        if any(k.startswith(block_prefix or "\0") for k in target)
        else None,
        checkpoint_width=stem_output_width(checkpoint, stem_prefix=stem_prefix)
        or model.stem.out_channels,
        model_width=model.stem.out_channels,
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


def stem_output_width(
    state: Mapping[str, torch.Tensor], *, stem_prefix: str = "stem."
) -> int | None:
    """Output channels of a checkpoint's stem: dim 0 of its last conv weight (None if it has none)."""
    convs = [
        v
        for k, v in state.items()
        if k.startswith(stem_prefix) and k.endswith("weight") and v.dim() >= 3
    ]
    return int(convs[-1].shape[0]) if convs else None
