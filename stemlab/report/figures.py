"""Matplotlib figures for stem comparisons, drawn without pyplot (no global state, Agg canvas).

Every function returns a :class:`matplotlib.figure.Figure` and, given ``out``, also saves it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stemlab.probes.filters import FirstLayerFilters

__all__ = [
    "filter_mosaic",
    "plot_activation_stats",
    "plot_filter_grid",
    "plot_flops_breakdown",
    "plot_grad_cam_strip",
]

_PAD = 1


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _finish(figure: Figure, out: str | Path | None, dpi: int) -> Figure:
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi)
    return figure


def _unit_range(tile: np.ndarray) -> np.ndarray:
    low, high = float(tile.min()), float(tile.max())
    return (tile - low) / (high - low) if high > low else np.full_like(tile, 0.5)


def filter_mosaic(weight: torch.Tensor, *, columns: int = 16) -> np.ndarray:
    """Lay out conv filters as one image, each filter scaled to [0, 1] on its own.

    2-D filters ``(O, C, k, k)`` become tiles in a grid of ``columns``; 3-D filters
    ``(O, C, t, k, k)`` become columns of ``t`` tiles, one row per time slice, in bands of
    ``columns`` filters. 3-channel filters are RGB; other channel counts show the channel mean
    in grey.

    Args:
        weight: conv weights.
        columns: filters per row (band).

    Returns:
        ``(H, W, 3)`` float array in [0, 1]; gaps between tiles are white.

    Raises:
        ValueError: if ``weight`` is not 4-D or 5-D or ``columns`` < 1.
    """
    if not isinstance(weight, torch.Tensor) or weight.ndim not in (4, 5):
        raise ValueError(
            f"weight must be (O, C, [t,] k, k), got {getattr(weight, 'shape', weight)}"
        )
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    w = weight.detach().float().cpu()
    if w.ndim == 4:
        w = w.unsqueeze(2)
    count, channels, steps, height, width = w.shape
    w = w if channels == 3 else w.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1, -1)
    tiles = w.permute(0, 2, 3, 4, 1).numpy()  # (O, t, k, k, 3)
    columns = min(columns, count)
    bands = math.ceil(count / columns)
    rows_per_band = steps
    tile_h, tile_w = height + _PAD, width + _PAD
    gap = _PAD * 2 if steps > 1 else 0
    mosaic = np.ones(
        (bands * (rows_per_band * tile_h + gap) + _PAD, columns * tile_w + _PAD, 3), dtype=float
    )
    for index in range(count):
        band, column = divmod(index, columns)
        scaled = _unit_range(tiles[index])
        for step in range(steps):
            top = _PAD + band * (rows_per_band * tile_h + gap) + step * tile_h
            left = _PAD + column * tile_w
            mosaic[top : top + height, left : left + width] = scaled[step]
    return mosaic


def plot_filter_grid(
    filters: FirstLayerFilters | torch.Tensor,
    *,
    columns: int = 16,
    title: str | None = None,
    out: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Filter grid of a first layer: RGB tiles for 2-D filters, time-slice rows for 3-D ones.

    Args:
        filters: :func:`stemlab.probes.first_layer_filters` output (its composed (2+1)D kernel,
            if any, gets a second panel) or a conv weight tensor.
        columns: filters per row.
        title: figure title.
        out: where to save the figure (PNG, PDF, ... by suffix); ``None`` to only return it.
        dpi: resolution when saving.

    Returns:
        The figure.
    """
    if isinstance(filters, FirstLayerFilters):
        panels = [(f"{filters.module}  {tuple(filters.weight.shape)}", filters.weight)]
        if filters.effective is not None:
            label = f"{filters.effective_module} o {filters.module} composed (BN/ReLU ignored)"
            panels.append((f"{label}  {tuple(filters.effective.shape)}", filters.effective))
    elif isinstance(filters, torch.Tensor):
        panels = [(f"weights {tuple(filters.shape)}", filters)]
    else:
        raise TypeError(
            f"filters must be FirstLayerFilters or a tensor, got {type(filters).__name__}"
        )
    mosaics = [(label, filter_mosaic(w, columns=columns)) for label, w in panels]
    width = 8.0
    heights = [width * m.shape[0] / m.shape[1] for _, m in mosaics]
    figure = _new_figure(width, sum(heights) + 0.5 * len(mosaics) + (0.4 if title else 0))
    axes = figure.subplots(len(mosaics), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, (label, mosaic) in zip(axes, mosaics):
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    if title:
        figure.suptitle(title)
    return _finish(figure, out, dpi)


def _as_frame(tables: pd.DataFrame | Mapping[str, pd.DataFrame], key: str) -> pd.DataFrame:
    if isinstance(tables, pd.DataFrame):
        return tables if key in tables.columns else tables.assign(**{key: ""})
    if not isinstance(tables, Mapping) or not tables:
        raise TypeError(
            f"expected a DataFrame or a non-empty mapping of DataFrames, got {tables!r}"
        )
    return pd.concat([t.assign(**{key: name}) for name, t in tables.items()], ignore_index=True)


def plot_activation_stats(
    tables: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    stats: Sequence[str] = ("mean", "std", "zero_fraction", "dead_channel_fraction"),
    modules: Sequence[str] | None = None,
    group: str = "stem",
    title: str | None = None,
    out: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Activation statistics per layer, one line per stem (or other group).

    Args:
        tables: ``record_activations(...).table()`` outputs keyed by stem, or one DataFrame
            with a ``group`` column. The first call of each module is used.
        stats: statistic columns to plot, one panel each.
        modules: modules on the x axis, in this order; default: those recorded for every group,
            in the order they were first seen.
        group: the column that tells the lines apart.
        title: figure title.
        out: where to save the figure; ``None`` to only return it.
        dpi: resolution when saving.

    Returns:
        The figure.

    Raises:
        ValueError: if a statistic is not a column of the tables.
    """
    frame = _as_frame(tables, group)
    missing = [s for s in stats if s not in frame.columns]
    if missing:
        raise ValueError(f"stats {missing} are not columns; available: {list(frame.columns)}")
    if "call" in frame.columns:
        frame = frame[frame["call"] == 0]
    if modules is None:
        seen = frame.groupby("module", sort=False)[group].nunique()
        order = [m for m, n in seen.items() if n == frame[group].nunique()]
    else:
        order = list(modules)
    frame = frame[frame["module"].isin(order)]
    if frame.empty:
        raise ValueError(f"none of the modules {order} was recorded")
    positions = {m: i for i, m in enumerate(order)}
    figure = _new_figure(max(6.0, 0.45 * len(order) + 2), 2.4 * len(stats) + 0.6)
    axes = figure.subplots(len(stats), 1, sharex=True, squeeze=False)[:, 0]
    for ax, stat in zip(axes, stats):
        for name, rows in frame.groupby(group, sort=False):
            rows = rows.sort_values("module", key=lambda c: c.map(positions))
            xs = [positions[m] for m in rows["module"]]
            ax.plot(xs, rows[stat].to_numpy(dtype=float), marker="o", label=str(name))
        ax.set_ylabel(stat.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=8)
    if frame[group].nunique() > 1:
        axes[0].legend(fontsize=8, ncols=min(4, frame[group].nunique()))
    if title:
        figure.suptitle(title)
    return _finish(figure, out, dpi)


def plot_flops_breakdown(
    tables: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    depth: int = 1,
    group: str = "stem",
    title: str | None = None,
    out: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """GFLOPs and parameters per module at ``depth``, stacked, one bar per stem (or group).

    Args:
        tables: :func:`stemlab.probes.flops_table` outputs keyed by stem, or one DataFrame with a
            ``group`` column.
        depth: module depth to break down by (1: stem, layer1, ..., fc).
        group: the column that tells the bars apart.
        title: figure title.
        out: where to save the figure; ``None`` to only return it.
        dpi: resolution when saving.

    Returns:
        The figure.
    """
    frame = _as_frame(tables, group)
    frame = frame[frame["depth"] == depth]
    modules = list(dict.fromkeys(frame["module"]))
    groups = list(dict.fromkeys(frame[group]))
    figure = _new_figure(max(5.0, 1.1 * len(groups) + 3), 4.2)
    axes = figure.subplots(1, 2)
    for ax, column, scale, label in (
        (axes[0], "flops", 1e9, "GFLOPs (1 FMA = 1 flop)"),
        (axes[1], "params", 1e6, "parameters (M)"),
    ):
        table = frame.pivot_table(index=group, columns="module", values=column, aggfunc="sum")
        table = table.reindex(index=groups, columns=modules).fillna(0) / scale
        bottom = np.zeros(len(groups))
        for module in modules:
            values = table[module].to_numpy()
            ax.bar(range(len(groups)), values, bottom=bottom, label=module)
            bottom += values
        ax.set_xticks(range(len(groups)), [str(g) for g in groups], rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        figure.suptitle(title)
    return _finish(figure, out, dpi)


def plot_grad_cam_strip(
    clip: torch.Tensor,
    cam: torch.Tensor,
    *,
    frames: Sequence[int] | None = None,
    alpha: float = 0.5,
    title: str | None = None,
    out: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Frames of a clip (top row) and the Grad-CAM heat map over them (bottom row).

    Args:
        clip: ``(C, T, H, W)`` clip or ``(C, H, W)`` image (any value range; shown min-max
            scaled; 1 or 3 channels).
        cam: ``(T, H, W)`` or ``(H, W)`` map in [0, 1], as :func:`stemlab.probes.grad_cam` returns
            per sample.
        frames: frame indices to show; default up to 8 evenly spaced frames.
        alpha: opacity of the heat map.
        title: figure title.
        out: where to save the figure; ``None`` to only return it.
        dpi: resolution when saving.

    Returns:
        The figure.

    Raises:
        ValueError: if the shapes of ``clip`` and ``cam`` do not match.
    """
    clip = clip.detach().float().cpu()
    cam = cam.detach().float().cpu()
    if clip.ndim == 3:
        clip, cam = clip.unsqueeze(1), cam.unsqueeze(0)
    if clip.ndim != 4 or cam.ndim != 3 or tuple(clip.shape[1:]) != tuple(cam.shape):
        raise ValueError(
            f"clip (C, T, H, W) and cam (T, H, W) must match, got {tuple(clip.shape)} and "
            f"{tuple(cam.shape)}"
        )
    steps = clip.shape[1]
    if frames is None:
        frames = sorted(set(np.linspace(0, steps - 1, min(8, steps)).round().astype(int).tolist()))
    bad = [f for f in frames if not 0 <= f < steps]
    if bad:
        raise ValueError(f"frames {bad} out of range for a clip of {steps} frames")
    images = clip.permute(1, 2, 3, 0).numpy()
    images = _unit_range(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    figure = _new_figure(1.6 * len(frames) + 0.6, 3.6)
    axes = figure.subplots(2, len(frames), squeeze=False)
    for column, frame in enumerate(frames):
        axes[0, column].imshow(images[frame])
        axes[0, column].set_title(f"t={frame}", fontsize=8)
        axes[1, column].imshow(images[frame])
        heat = axes[1, column].imshow(cam[frame].numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
        for row in (0, 1):
            axes[row, column].set_axis_off()
    figure.colorbar(heat, ax=axes[1, :].tolist(), shrink=0.8, label="Grad-CAM")
    if title:
        figure.suptitle(title)
    return _finish(figure, out, dpi)
