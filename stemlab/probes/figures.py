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
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stemlab._validation import check_choice, check_positive_int
from stemlab.probes.filters import (
    FILTER_ORDERS,
    FirstLayerFilters,
    colour_split,
    filter_stats,
    order_filters,
    weight_change,
)

__all__ = [
    "filter_mosaic",
    "plot_activation_stats",
    "plot_confusion_matrix",
    "plot_filter_change",
    "plot_filter_grid",
    "plot_flops_breakdown",
    "plot_grad_cam_grid",
    "plot_grad_cam_strip",
    "time_slice_labels",
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


_ORDER_WORDS = {
    "l2_norm": "descending L2 norm",
    "temporal_energy_fraction": "descending temporal energy fraction",
    "index": "channel index",
}


def time_slice_labels(steps: int) -> list[str]:
    """Labels of a kernel's time slices: relative to the centre for odd ``steps``
    (``t=-1, t=0, t=+1``), from the first slice otherwise (``t=0, t=1``)."""
    if steps % 2:
        centre = steps // 2
        return [f"t={s - centre:+d}" if s != centre else "t=0" for s in range(steps)]
    return [f"t={s}" for s in range(steps)]


def _filter_source(
    filters: FirstLayerFilters | torch.Tensor, kernel: str
) -> tuple[torch.Tensor, str, str, FirstLayerFilters | None]:
    # (kernel weights, its description, the note on what it leaves out, the probe result)
    if isinstance(filters, FirstLayerFilters):
        check_choice("kernel", kernel, ("auto", "conv", "effective"))
        if kernel == "effective" and filters.effective is None:
            raise ValueError(
                f"kernel='effective' but {filters.module} has no composed (2+1)D kernel; "
                "use kernel='auto' or 'conv'"
            )
        if kernel == "conv" or filters.effective is None:
            return filters.weight, f"{filters.module} weights", "", filters
        description = (
            f"effective kernel {filters.effective_module} o BN scale o {filters.module}"
            if "scale of" in filters.note
            else f"effective kernel {filters.effective_module} o {filters.module}"
        )
        return filters.effective, description, "ReLU between (2+1)D convs omitted", filters
    if isinstance(filters, torch.Tensor):
        if filters.ndim not in (4, 5):
            raise ValueError(
                f"filters must be a conv weight (O, C, [t,] k, k), got shape {tuple(filters.shape)}"
            )
        return filters.detach().float().cpu(), "weights", "", None
    raise TypeError(f"filters must be FirstLayerFilters or a tensor, got {type(filters).__name__}")


def _filter_order(
    weight: torch.Tensor,
    order: str | Sequence[int] | None,
    result: FirstLayerFilters | None,
    shown_kernel_is_default: bool,
) -> tuple[list[int], str]:
    if order is None and result is not None and shown_kernel_is_default and result.order:
        return list(result.order), _ORDER_WORDS.get(result.order_by, result.order_by)
    if order is None:
        order = "l2_norm"
    if isinstance(order, str):
        check_choice("order", order, FILTER_ORDERS)
        return order_filters(filter_stats(weight), order_by=order), _ORDER_WORDS[order]
    indices = list(order)
    count = weight.shape[0]
    bad = [
        i for i in indices if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < count
    ]
    if bad or len(set(indices)) != len(indices) or not indices:
        raise ValueError(
            f"order must be one of {FILTER_ORDERS} or distinct filter indices in [0, {count}), "
            f"got {order!r}"
        )
    return indices, "the given order"


def _display_tiles(weight: torch.Tensor) -> np.ndarray:
    # (O, t, k, k, 3) in [0, 1]: each filter divided by its own max |w| (over channels and time),
    # 0 at mid grey; RGB for 3 input channels, the channel mean in grey otherwise.
    w = weight.detach().float().cpu()
    if w.ndim == 4:
        w = w.unsqueeze(2)
    if w.shape[1] != 3:
        w = w.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1, -1)
    peak = w.flatten(1).abs().max(dim=1).values.clamp_min(1e-30)
    scaled = 0.5 + 0.5 * w / peak[:, None, None, None, None]
    return scaled.permute(0, 2, 3, 4, 1).clamp(0, 1).numpy()


def plot_filter_grid(
    filters: FirstLayerFilters | torch.Tensor,
    *,
    title: str | None = None,
    order: str | Sequence[int] | None = None,
    time_labels: bool = True,
    kernel: str = "auto",
    max_filters: int = 64,
    rows_per_column: int | None = None,
    out: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """First-layer filters, one row per filter and one column per time slice, labelled.

    For a (2+1)D stem the effective ``t x k x k`` kernel (spatial conv, eval-mode BN scale,
    temporal conv; see :func:`stemlab.probes.first_layer_filters`) is shown. Each filter is
    divided by its own largest ``|w|``, so 0 is mid grey and the colours are comparable
    between the time slices of one filter, not between filters. Rows are labelled with the
    filter's rank and channel (``"#1 ch 12"``); at most ``max_filters`` are shown, the first by
    ``order``. A caption states the normalisation, the order, how many filters are shown and,
    for composed kernels, that the ReLU between the convs is left out.

    Args:
        filters: :func:`stemlab.probes.first_layer_filters` output or a conv weight tensor
            ``(O, C, [t,] k, k)``.
        title: figure title.
        order: a criterion of :data:`stemlab.probes.filters.FILTER_ORDERS`, or filter indices;
            None: the probe result's own order (for a tensor: descending L2 norm).
        time_labels: label the time-slice columns (``t=-1, t=0, t=+1``).
        kernel: ``"auto"`` (the effective kernel when there is one), ``"conv"`` or
            ``"effective"``; for probe results only.
        max_filters: most filters shown.
        rows_per_column: filters per column of panels; default 16 (8 for kernels of 1-2 time
            slices, which are narrow).
        out: where to save the figure (PNG, PDF, ... by suffix); ``None`` to only return it.
        dpi: resolution when saving.

    Returns:
        The figure: one axes per column of panels.

    Raises:
        TypeError: if ``filters`` is neither a probe result nor a tensor.
        ValueError: for a bad ``order``, ``kernel`` or count.
    """
    weight, description, omitted, result = _filter_source(filters, kernel)
    check_positive_int("max_filters", max_filters)
    indices, order_words = _filter_order(
        weight, order, result, result is not None and kernel in ("auto", result.kernel_name)
    )
    shown = indices[:max_filters]
    tiles = _display_tiles(weight)
    steps = tiles.shape[1]
    if rows_per_column is None:
        rows_per_column = 16 if steps >= 3 else 8
    check_positive_int("rows_per_column", rows_per_column)
    panels = math.ceil(len(shown) / rows_per_column)
    rows = min(rows_per_column, len(shown))
    gap = 0.2
    tile = 0.3  # inches per tile side
    label_width = 0.75
    panel_width = steps * tile * (1 + gap) + label_width
    figure = _new_figure(
        max(4.5, panels * panel_width + 0.3), rows * tile * (1 + gap) + 1.6 + (0.3 if title else 0)
    )
    axes = figure.subplots(1, panels, squeeze=False)[0]
    column_labels = time_slice_labels(steps) if weight.ndim == 5 else ["2-D"]
    for panel, ax in enumerate(axes):
        chunk = shown[panel * rows_per_column : (panel + 1) * rows_per_column]
        for row, channel in enumerate(chunk):
            for step in range(steps):
                left, top = step * (1 + gap), row * (1 + gap)
                ax.imshow(
                    tiles[channel, step],
                    extent=(left, left + 1, top + 1, top),
                    interpolation="nearest",
                )
        ax.set_xlim(-gap / 2, steps * (1 + gap) - gap / 2)
        ax.set_ylim(rows * (1 + gap) - gap / 2, -gap / 2)
        ax.set_aspect("equal")
        centres = [i * (1 + gap) + 0.5 for i in range(steps)]
        if time_labels:
            ax.set_xticks(centres, column_labels, fontsize=7)
        else:
            ax.set_xticks([])
        start = panel * rows_per_column
        ax.set_yticks(
            [r * (1 + gap) + 0.5 for r in range(len(chunk))],
            [f"#{start + r + 1} ch {c}" for r, c in enumerate(chunk)],
            fontsize=7,
        )
        ax.tick_params(length=0, pad=2)
        for spine in ax.spines.values():
            spine.set_visible(False)
    shape = "x".join(str(d) for d in weight.shape[2:])
    caption = (
        f"{description} ({shape}), {len(shown)} of {weight.shape[0]} filters, ranked by "
        f"{order_words}. Each filter scaled by its own max |w|: 0 = mid grey, "
        f"{'RGB = input channels' if weight.shape[1] == 3 else 'grey = mean over input channels'}."
        + (f" {omitted}." if omitted else "")
    )
    figure.supxlabel(caption, fontsize=7, wrap=True)
    if title:
        figure.suptitle(title, fontsize=10)
    return _finish(figure, out, dpi)


def _scaled_tiles(weight: torch.Tensor, peak: torch.Tensor) -> np.ndarray:
    # (O, t, k, k, 3) in [0, 1]: 0.5 + 0.5 * w / peak per filter (peak: (O,)); grey for C != 3
    w = weight.detach().float().cpu()
    if w.ndim == 4:
        w = w.unsqueeze(2)
    if w.shape[1] != 3:
        w = w.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1, -1)
    scaled = 0.5 + 0.5 * w / peak.clamp_min(1e-30)[:, None, None, None, None]
    return scaled.permute(0, 2, 3, 4, 1).clamp(0, 1).numpy()


def plot_filter_change(
    weight: torch.Tensor,
    init: torch.Tensor,
    *,
    title: str | None = None,
    max_filters: int = 16,
    out: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """What training did to first-layer filters: W, W - W0 and W's luminance / opponent parts.

    One row per filter, ranked by ``||w - w0||`` (the largest change first); for each, four
    groups of time slices: the trained filter W, its change W - W0 from the initial filter, and
    (for RGB filters) W's projection onto the luminance axis ``(1, 1, 1) / sqrt(3)`` and onto the
    opponent plane (see :func:`stemlab.probes.filters.colour_split`). All four use the same
    scale per filter, W's largest ``|w|`` (0 = mid grey), so the change and the two parts can be
    read against the filter. Each row is labelled with its rank, channel, ``||w - w0|| /
    ||w0||`` and luminance energy share; the title gives ``||W - W0|| / ||W0||`` of the kernel.

    Args:
        weight: trained conv weights ``(O, C, [t,] k, k)``.
        init: the same kernel before training.
        title: what the filters are (the relative change is appended).
        max_filters: most filters shown (the first by the ranking).
        out: where to save the figure; ``None`` to only return it.
        dpi: resolution when saving.

    Returns:
        The figure: one axes per group.

    Raises:
        ValueError: if the shapes differ or are not conv weights, or ``max_filters`` < 1.
    """
    relative, per_filter = weight_change(weight, init)
    check_positive_int("max_filters", max_filters)
    w, w0 = weight.detach().float().cpu(), init.detach().float().cpu()
    delta = w - w0
    change = delta.flatten(1).norm(dim=1)
    shown = change.argsort(descending=True, stable=True).tolist()[:max_filters]
    peak = w.flatten(1).abs().max(dim=1).values
    groups = [("W (trained)", w), ("W - W0 (change)", delta)]
    rgb = w.shape[1] == 3
    if rgb:
        luminance, opponent, share = colour_split(w)
        groups += [("luminance part of W", luminance), ("opponent part of W", opponent)]
    tiles = [(name, _scaled_tiles(g, peak)) for name, g in groups]
    steps = tiles[0][1].shape[1]
    gap, tile = 0.2, 0.34
    rows = len(shown)
    panel_width = steps * tile * (1 + gap)
    figure = _new_figure(
        max(6.0, len(groups) * (panel_width + 0.25) + 2.6),
        rows * tile * (1 + gap) + 1.9,
    )
    axes = figure.subplots(1, len(groups), squeeze=False)[0]
    column_labels = time_slice_labels(steps) if w.ndim == 5 else ["2-D"]
    for index, (ax, (name, group_tiles)) in enumerate(zip(axes, tiles)):
        for row, channel in enumerate(shown):
            for step in range(steps):
                left, top = step * (1 + gap), row * (1 + gap)
                ax.imshow(
                    group_tiles[channel, step],
                    extent=(left, left + 1, top + 1, top),
                    interpolation="nearest",
                )
        ax.set_xlim(-gap / 2, steps * (1 + gap) - gap / 2)
        ax.set_ylim(rows * (1 + gap) - gap / 2, -gap / 2)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([i * (1 + gap) + 0.5 for i in range(steps)], column_labels, fontsize=6)
        centres = [r * (1 + gap) + 0.5 for r in range(rows)]
        if index == 0:
            ax.set_yticks(centres, [f"#{r + 1} ch {c}" for r, c in enumerate(shown)], fontsize=7)
        elif index == len(groups) - 1:
            ax.yaxis.tick_right()
            labels = [
                f"{float(per_filter[c]):.2f}" + (f" | {100 * float(share[c]):.0f}%" if rgb else "")
                for c in shown
            ]
            ax.set_yticks(centres, labels, fontsize=7)
            ax.set_ylabel("||w - w0|| / ||w0||" + (" | luminance share" if rgb else ""), fontsize=7)
            ax.yaxis.set_label_position("right")
        else:
            ax.set_yticks([])
        ax.tick_params(length=0, pad=2)
        for spine in ax.spines.values():
            spine.set_visible(False)
    shape = "x".join(str(d) for d in w.shape[2:])
    caption = (
        f"{shape} kernel, {rows} of {w.shape[0]} filters ranked by ||w - w0|| (largest change "
        "first). Every group scaled by the filter's own max |w| of W: 0 = mid grey"
        + (
            "; RGB = input channels; luminance = projection on (1,1,1)/sqrt(3), opponent = the "
            "rest (the plane orthogonal to it)."
            if rgb
            else "; grey = mean over input channels."
        )
    )
    figure.supxlabel(caption, fontsize=7, wrap=True)
    head = f"||W - W0|| / ||W0|| = {relative:.2f}"
    figure.suptitle(f"{title}: {head}" if title else head, fontsize=10)
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
            in the order they were first seen, without the stem's children when there are
            several groups (``stem.1`` is a BatchNorm in one stem and a ReLU in another, so
            only the stem output and the stages line up by role).
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
        several = frame[group].nunique() > 1
        order = [
            m
            for m, n in seen.items()
            if n == frame[group].nunique() and not (several and str(m).startswith("stem."))
        ]
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
    labels = ["stem output" if m == "stem" else m for m in order]
    axes[-1].set_xticks(range(len(order)), labels, rotation=30, ha="right", fontsize=8)
    if frame[group].nunique() > 1:
        # Below the panels, so no curve (and not the title) is hidden behind it.
        figure.legend(
            *axes[0].get_legend_handles_labels(),
            loc="outside lower center",
            fontsize=8,
            ncols=min(4, frame[group].nunique()),
        )
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
        for index, total in enumerate(bottom):
            ax.annotate(
                f"{total:.3g}", (index, total), xytext=(0, 2), textcoords="offset points",
                ha="center", va="bottom", fontsize=7,
            )  # fmt: skip
        # Room above the tallest stack for its total (stacked bars leave no automatic margin).
        ax.set_ylim(0, 1.12 * bottom.max() if bottom.max() > 0 else 1.0)
        ax.set_xticks(range(len(groups)), [str(g) for g in groups], rotation=30, ha="right")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        figure.suptitle(title)
    return _finish(figure, out, dpi)


def _class_text(label: int | str | None, class_names: Sequence[str] | None) -> str | None:
    if label is None:
        return None
    if isinstance(label, str):
        return label
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise TypeError(f"labels must be class indices or names, got {label!r}")
    if class_names is None:
        return str(int(label))
    if not 0 <= label < len(class_names):
        raise ValueError(f"label {label} out of range for {len(class_names)} class_names")
    return str(class_names[label])


def plot_grad_cam_strip(
    clip: torch.Tensor,
    cam: torch.Tensor,
    *,
    mask: torch.Tensor | np.ndarray | None = None,
    true_label: int | str | None = None,
    predicted_label: int | str | None = None,
    class_names: Sequence[str] | None = None,
    frames: Sequence[int] | None = None,
    alpha: float = 0.5,
    title: str | None = None,
    out: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Frames of a clip (top row) and the Grad-CAM heat map over them (bottom row).

    The object mask's outline (its 0.5 contour) is drawn on every frame of both rows; the title
    states the true and the predicted class.

    Args:
        clip: ``(C, T, H, W)`` clip or ``(C, H, W)`` image (any value range; shown min-max
            scaled; 1 or 3 channels).
        cam: ``(T, H, W)`` or ``(H, W)`` map in [0, 1], as :func:`stemlab.probes.grad_cam` returns
            per sample.
        mask: object mask of the same shape as ``cam`` (1 on the object), or None.
        true_label: the sample's class (index into ``class_names``, or a name).
        predicted_label: the model's predicted class.
        class_names: names of the classes, for index labels.
        frames: frame indices to show; default up to 8 evenly spaced frames.
        alpha: opacity of the heat map.
        title: figure title (the classes are appended).
        out: where to save the figure; ``None`` to only return it.
        dpi: resolution when saving.

    Returns:
        The figure.

    Raises:
        ValueError: if the shapes of ``clip``, ``cam`` and ``mask`` do not match, or a frame
            or label is out of range.
    """
    clip = clip.detach().float().cpu()
    cam = cam.detach().float().cpu()
    if mask is not None:
        mask = torch.as_tensor(np.asarray(mask)).float()
    if clip.ndim == 3:
        clip, cam = clip.unsqueeze(1), cam.unsqueeze(0)
        mask = mask.unsqueeze(0) if mask is not None else None
    if clip.ndim != 4 or cam.ndim != 3 or tuple(clip.shape[1:]) != tuple(cam.shape):
        raise ValueError(
            f"clip (C, T, H, W) and cam (T, H, W) must match, got {tuple(clip.shape)} and "
            f"{tuple(cam.shape)}"
        )
    if mask is not None and tuple(mask.shape) != tuple(cam.shape):
        raise ValueError(f"mask must have cam's shape {tuple(cam.shape)}, got {tuple(mask.shape)}")
    steps = clip.shape[1]
    if frames is None:
        frames = sorted(set(np.linspace(0, steps - 1, min(8, steps)).round().astype(int).tolist()))
    bad = [f for f in frames if not 0 <= f < steps]
    if bad:
        raise ValueError(f"frames {bad} out of range for a clip of {steps} frames")
    true_text = _class_text(true_label, class_names)
    predicted_text = _class_text(predicted_label, class_names)
    images = clip.permute(1, 2, 3, 0).numpy()
    images = _unit_range(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    figure = _new_figure(1.6 * len(frames) + 1.0, 4.0)
    axes = figure.subplots(2, len(frames), squeeze=False)
    outline = [patheffects.withStroke(linewidth=2.6, foreground="black")]
    for column, frame in enumerate(frames):
        axes[0, column].imshow(images[frame])
        axes[0, column].set_title(f"frame {frame}", fontsize=8)
        axes[1, column].imshow(images[frame])
        heat = axes[1, column].imshow(cam[frame].numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
        for row in (0, 1):
            ax = axes[row, column]
            ax.set_axis_off()
            # A frame without the object (or all object) has no 0.5 contour to draw.
            if mask is not None and mask[frame].min() < 0.5 < mask[frame].max():
                contour = ax.contour(
                    mask[frame].numpy(), levels=[0.5], colors="white", linewidths=1.2
                )
                contour.set_path_effects(outline)
    figure.colorbar(heat, ax=axes[1, :].tolist(), shrink=0.8, label="Grad-CAM")
    parts = [title] if title else []
    if true_text is not None or predicted_text is not None:
        classes = f"true: {true_text if true_text is not None else '?'}"
        if predicted_text is not None:
            verdict = (
                ""
                if true_text is None
                else (" (correct)" if predicted_text == true_text else " (wrong)")
            )
            classes += f", predicted: {predicted_text}{verdict}"
        parts.append(classes)
    if parts:
        figure.suptitle(" | ".join(parts), fontsize=10)
    if mask is not None:
        figure.supxlabel("white outline: object mask (0.5 contour)", fontsize=7)
    return _finish(figure, out, dpi)


def plot_grad_cam_grid(
    panels: Sequence[Mapping[str, object]],
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.5,
    out: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """Grad-CAM maps of several clips (rows) from several models (column groups, e.g. seeds).

    Every tile is one frame with its heat map over it and the object mask's outline (0.5
    contour, white); each row is labelled with the clip's true and predicted class. A panel
    whose ``at_chance`` is true says "at chance: map uninformative" under its heading: a model
    that has learned nothing has no decision for the map to explain.

    Args:
        panels: one mapping per model with ``clips`` ``(N, C, F, H, W)``, ``cams``
            ``(N, F, H, W)`` in [0, 1], optional ``masks`` ``(N, F, H, W)``, ``labels`` ``(N,)``,
            optional ``predicted`` ``(N,)``, optional ``frames`` (the F frame numbers),
            ``heading`` (str) and optional ``at_chance`` (bool).
        class_names: names for integer labels.
        title: figure title.
        alpha: opacity of the heat maps.
        out: where to save the figure; ``None`` to only return it.
        dpi: resolution when saving.

    Returns:
        The figure (one subfigure per panel).

    Raises:
        ValueError: if ``panels`` is empty or a panel's arrays do not match.
    """
    if not panels:
        raise ValueError("panels must hold at least one model's clips")
    prepared = []
    for number, panel in enumerate(panels):
        clips = np.asarray(panel["clips"], dtype=np.float32)
        cams = np.asarray(panel["cams"], dtype=np.float32)
        masks = panel.get("masks")
        masks = None if masks is None else np.asarray(masks, dtype=np.float32)
        labels = list(np.asarray(panel["labels"]).tolist())
        predicted = panel.get("predicted")
        predicted = None if predicted is None else list(np.asarray(predicted).tolist())
        if clips.ndim == 4:  # images: one frame each
            clips, cams = clips[:, :, None], cams[:, None]
            masks = None if masks is None else masks[:, None]
        if clips.ndim != 5 or cams.shape != (clips.shape[0], *clips.shape[2:]):
            raise ValueError(
                f"panel {number}: clips (N, C, F, H, W) and cams (N, F, H, W) must match, got "
                f"{clips.shape} and {cams.shape}"
            )
        if masks is not None and masks.shape != cams.shape:
            raise ValueError(f"panel {number}: masks must have the cams' shape {cams.shape}")
        if len(labels) != len(clips) or (predicted is not None and len(predicted) != len(clips)):
            raise ValueError(f"panel {number}: one label (and prediction) per clip is needed")
        frames = list(panel.get("frames", range(clips.shape[2])))
        prepared.append((clips, cams, masks, labels, predicted, frames, panel))
    rows = max(len(p[0]) for p in prepared)
    columns = [p[0].shape[2] for p in prepared]
    figure = _new_figure(1.05 * sum(columns) + 1.9 * len(prepared) + 0.8, 1.05 * rows + 1.6)
    subfigures = figure.subfigures(1, len(prepared), squeeze=False, width_ratios=columns)[0]
    outline = [patheffects.withStroke(linewidth=2.2, foreground="black")]
    heat = None
    for subfigure, (clips, cams, masks, labels, predicted, frames, panel) in zip(
        subfigures, prepared
    ):
        axes = subfigure.subplots(rows, clips.shape[2], squeeze=False)
        for row in range(rows):
            for column in range(clips.shape[2]):
                ax = axes[row, column]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if row >= len(clips):
                    continue
                image = _unit_range(np.moveaxis(clips[row], 0, -1))  # (F, H, W, C), per clip
                frame = image[column]
                ax.imshow(np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame)
                heat = ax.imshow(cams[row, column], cmap="jet", alpha=alpha, vmin=0, vmax=1)
                if masks is not None and masks[row, column].min() < 0.5 < masks[row, column].max():
                    contour = ax.contour(
                        masks[row, column], levels=[0.5], colors="white", linewidths=1.0
                    )
                    contour.set_path_effects(outline)
                if row == 0:
                    ax.set_title(f"frame {int(frames[column])}", fontsize=7)
                if column == 0:
                    true = _class_text(int(labels[row]), class_names)
                    text = f"true {true}"
                    if predicted is not None:
                        guess = _class_text(int(predicted[row]), class_names)
                        text += f"\npred {guess} " + ("(correct)" if guess == true else "(wrong)")
                    ax.set_ylabel(text, fontsize=7)
        heading = str(panel.get("heading", ""))
        if panel.get("at_chance"):
            heading += "\nat chance: map uninformative"
        subfigure.suptitle(
            heading, fontsize=8, color="firebrick" if panel.get("at_chance") else "black"
        )
    if heat is not None:
        figure.colorbar(heat, ax=subfigures[-1].axes, shrink=0.6, label="Grad-CAM")
    figure.supxlabel(
        "Each tile: one frame (min-max scaled per clip) under its Grad-CAM map; white outline: "
        "object mask (0.5 contour).",
        fontsize=7,
    )
    if title:
        figure.suptitle(title, fontsize=10)
    return _finish(figure, out, dpi)


def plot_confusion_matrix(
    matrix: np.ndarray | torch.Tensor | Sequence[Sequence[float]],
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    out: str | Path | None = None,
    dpi: int = 150,
) -> Figure:
    """A confusion matrix: counts written in the cells, colour = share of the true class.

    Args:
        matrix: ``(K, K)`` counts, rows = true class, columns = predicted class.
        class_names: ``K`` names; default ``0 .. K-1``.
        title: axes title (the accuracy and the number of samples are appended).
        out: where to save the figure; ``None`` to only return it.
        dpi: resolution when saving.

    Returns:
        The figure (the matrix axes and its colour bar).

    Raises:
        ValueError: if ``matrix`` is not square, has negative or non-finite entries, or
            ``class_names`` has the wrong length.
    """
    counts = np.asarray(
        matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else matrix, dtype=float
    )
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"matrix must be a square (K, K) array, got shape {counts.shape}")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("matrix must hold non-negative finite counts")
    size = counts.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(size))]
    if len(names) != size:
        raise ValueError(f"class_names must have {size} names, got {len(names)}")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = max(3.2, 0.55 * size + 1.8)
    figure = _new_figure(side + 1.0, side)
    ax = figure.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    whole = counts == counts.round()
    for (row, column), value in np.ndenumerate(counts):
        text = f"{int(value)}" if whole.all() else f"{value:.3g}"
        ax.text(
            column, row, text, ha="center", va="center", fontsize=8,
            color="white" if share[row, column] > 0.6 else "black",
        )  # fmt: skip
    rotate = max(len(n) for n in names) > 4
    ax.set_xticks(
        range(size), names, rotation=45 if rotate else 0, ha="right" if rotate else "center"
    )
    ax.set_yticks(range(size), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else math.nan
    summary = f"accuracy {accuracy:.1%} (n={int(total) if whole.all() else total:g})"
    ax.set_title(f"{title}\n{summary}" if title else summary, fontsize=10)
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    return _finish(figure, out, dpi)
