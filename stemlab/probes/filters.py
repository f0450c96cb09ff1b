"""The stem's first-layer filters and per-filter statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from stemlab.probes._modules import check_model

__all__ = ["FirstLayerFilters", "compose_2plus1d", "filter_stats", "first_layer_filters"]

_CONV_TYPES = (nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class FirstLayerFilters:
    """What :func:`first_layer_filters` returns.

    Attributes:
        module: name of the first conv (``"stem.0"``).
        weight: its weights, a detached float32 CPU copy, ``(O, C, k, k)`` or ``(O, C, t, k, k)``.
        effective: for (2+1)D stems, the composed ``(O, C, t, k, k)`` kernel of the spatial conv
            followed by the temporal conv; ``None`` otherwise.
        effective_module: name of the temporal conv composed into ``effective``, or ``None``.
        table: per-filter statistics, see :func:`filter_stats`, for ``weight`` (kernel
            ``"conv"``) then ``effective`` (kernel ``"effective"``).
    """

    module: str
    weight: torch.Tensor
    effective: torch.Tensor | None
    effective_module: str | None
    table: pd.DataFrame


def compose_2plus1d(spatial: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
    """Compose a ``(1, k, k)`` spatial conv and a ``(t, 1, 1)`` temporal conv into one kernel.

    ``out[o] = sum_m temporal[o, m, :] (outer) spatial[m]``: the linear part of the pair only,
    i.e. as if nothing (BatchNorm, ReLU) ran between them.

    Args:
        spatial: ``(M, C, 1, k, k)`` weights of the first conv.
        temporal: ``(O, M, t, 1, 1)`` weights of the second conv.

    Returns:
        ``(O, C, t, k, k)``.

    Raises:
        ValueError: if the shapes do not chain as described.
    """
    if spatial.ndim != 5 or spatial.shape[2] != 1:
        raise ValueError(f"spatial must be (M, C, 1, k, k), got {tuple(spatial.shape)}")
    if temporal.ndim != 5 or temporal.shape[3:] != (1, 1) or temporal.shape[1] != spatial.shape[0]:
        raise ValueError(
            f"temporal must be (O, {spatial.shape[0]}, t, 1, 1), got {tuple(temporal.shape)}"
        )
    return torch.einsum("omt,mcyx->octyx", temporal[:, :, :, 0, 0], spatial[:, :, 0])


def _dominant_frequency(filters: torch.Tensor) -> torch.Tensor:
    # Power spectrum of each (k, k) slice, zero-padded for resolution, summed over the other axes.
    size = filters.shape[-1]
    pad = max(32, 1 << (max(size, filters.shape[-2]) - 1).bit_length())
    power = torch.fft.rfft2(filters, s=(pad, pad)).abs().square()
    power = power.flatten(1, -3).sum(dim=1)
    fy = torch.fft.fftfreq(pad)
    fx = torch.fft.rfftfreq(pad)
    radius = (fy[:, None].square() + fx[None, :].square()).sqrt()
    return radius.flatten()[power.flatten(1).argmax(dim=1)]


def filter_stats(weight: torch.Tensor, *, duplicate_threshold: float = 0.95) -> pd.DataFrame:
    """Statistics of each filter of a conv weight ``(O, C, [t,] kh, kw)``.

    Args:
        weight: the conv weights.
        duplicate_threshold: cosine similarity from which two filters count as near-duplicates.

    Returns:
        DataFrame, one row per filter: filter, l2_norm, temporal_energy_fraction (the energy of
        the kernel minus its mean over time, divided by its energy: 0 for a kernel constant in
        time, NaN for 2-D kernels), dominant_frequency (cycles per pixel of the strongest bin of
        the spatial power spectrum, 0 = DC), nearest_filter and max_cosine (the most similar
        other filter), near_duplicate (``max_cosine >= duplicate_threshold``).

    Raises:
        ValueError: if ``weight`` is not 4-D or 5-D.
    """
    if not isinstance(weight, torch.Tensor) or weight.ndim not in (4, 5):
        raise ValueError(
            f"weight must be (O, C, [t,] kh, kw), got {getattr(weight, 'shape', weight)}"
        )
    w = weight.detach().float().cpu()
    count = w.shape[0]
    flat = w.flatten(1)
    energy = flat.square().sum(dim=1)
    if w.ndim == 5:
        varying = (w - w.mean(dim=2, keepdim=True)).flatten(1).square().sum(dim=1)
        temporal = torch.where(energy > 0, varying / energy.clamp_min(1e-30), math.nan)
    else:
        temporal = torch.full((count,), math.nan)
    if count > 1:
        unit = F.normalize(flat, dim=1)
        cosine = unit @ unit.T
        cosine.fill_diagonal_(-math.inf)
        max_cosine, nearest = cosine.max(dim=1)
    else:
        max_cosine, nearest = torch.full((1,), math.nan), torch.full((1,), -1)
    return pd.DataFrame(
        {
            "filter": range(count),
            "l2_norm": energy.sqrt().tolist(),
            "temporal_energy_fraction": temporal.tolist(),
            "dominant_frequency": _dominant_frequency(w).tolist(),
            "nearest_filter": nearest.tolist(),
            "max_cosine": max_cosine.tolist(),
            "near_duplicate": (max_cosine >= duplicate_threshold).tolist(),
        }
    )


def _stem_convs(model: nn.Module) -> list[tuple[str, nn.Module]]:
    stem = getattr(model, "stem", None)
    root, prefix = (stem, "stem.") if isinstance(stem, nn.Module) else (model, "")
    convs = [(prefix + n, m) for n, m in root.named_modules() if isinstance(m, _CONV_TYPES)]
    if not convs:
        where = "model.stem" if prefix else "the model"
        raise ValueError(f"no Conv2d/Conv3d module found in {where}")
    return convs


def _temporal_partner(first: nn.Module, convs: list[tuple[str, nn.Module]]) -> str | None:
    if len(convs) < 2:
        return None
    name, second = convs[1]
    chained = (
        isinstance(first, nn.Conv3d)
        and isinstance(second, nn.Conv3d)
        and first.kernel_size[0] == 1
        and second.kernel_size[0] > 1
        and second.kernel_size[1:] == (1, 1)
        and first.groups == second.groups == 1
        and second.in_channels == first.out_channels
    )
    return name if chained else None


def first_layer_filters(
    model: nn.Module, *, duplicate_threshold: float = 0.95
) -> FirstLayerFilters:
    """The weights of the stem's first conv (the first conv in ``model.stem.modules()`` order).

    For (2+1)D stems, whose first conv is ``(1, k, k)`` and whose next conv is ``(t, 1, 1)`` on
    its output, the composed ``t x k x k`` kernel is returned too. It is the linear composition
    only: the BatchNorm and ReLU between the two convs are ignored.

    Args:
        model: a model with a ``.stem`` (any model: its first conv is used otherwise).
        duplicate_threshold: cosine similarity from which filters count as near-duplicates.

    Returns:
        A :class:`FirstLayerFilters` with the weights and the per-filter table (columns kernel,
        module, then those of :func:`filter_stats`).

    Raises:
        TypeError: if ``model`` is not a module.
        ValueError: if there is no convolution.
    """
    check_model(model)
    convs = _stem_convs(model)
    name, first = convs[0]
    weight = first.weight.detach().float().cpu().clone()
    partner = _temporal_partner(first, convs)
    effective = None
    tables = [filter_stats(weight, duplicate_threshold=duplicate_threshold)]
    tables[0].insert(0, "module", name)
    tables[0].insert(0, "kernel", "conv")
    if partner is not None:
        temporal = dict(convs)[partner].weight.detach().float().cpu()
        effective = compose_2plus1d(weight, temporal)
        composed = filter_stats(effective, duplicate_threshold=duplicate_threshold)
        composed.insert(0, "module", f"{partner} o {name} (linear; BN/ReLU between ignored)")
        composed.insert(0, "kernel", "effective")
        tables.append(composed)
    return FirstLayerFilters(
        module=name,
        weight=weight,
        effective=effective,
        effective_module=partner,
        table=pd.concat(tables, ignore_index=True),
    )
