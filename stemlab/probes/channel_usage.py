"""Channel usage: how strongly the first stage reads each stem output channel, from its weights.

For stem channel ``c`` the usage is the L2 norm of every weight that reads ``c`` in the first
conv of the first block after the stem (``layer1.0``: for (2+1)D blocks the spatial conv of
``Conv2Plus1D``) together with the block's 1x1 projection shortcut when it has one::

    usage[c] = sqrt(sum W_first[:, c]^2 + sum W_projection[:, c]^2)

A channel the first stage gives (almost) no weight is a channel the rest of the network cannot
see, whatever the stem puts there. No data is needed.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from stemlab._validation import check_positive_float
from stemlab.probes._baselines import init_columns, on_trained_and_init, training_change_findings
from stemlab.probes._modules import check_model
from stemlab.probes._plots import new_figure
from stemlab.probes.contract import (
    CellContext,
    FigureSpec,
    ProbeOutput,
    StudyProbe,
    StudyView,
    SummaryColumn,
    register_probe,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["channel_usage", "channels_for_share", "first_block_convs"]

_CONVS = (nn.Conv2d, nn.Conv3d)
_SHORTCUT_NAMES = ("downsample", "shortcut", "proj", "projection")


def _stem(model: nn.Module) -> tuple[str, int]:
    stem = getattr(model, "stem", None)
    channels = getattr(stem, "out_channels", None)
    if (
        not isinstance(stem, nn.Module)
        or isinstance(channels, bool)
        or not isinstance(channels, int)
    ):
        raise ValueError(
            f"{type(model).__name__} has no .stem with an int .out_channels; channel usage needs "
            "a stemlab model (stemlab.create_model)"
        )
    name = next(n for n, m in model.named_modules() if m is stem)
    return name, channels


def _block_name(model: nn.Module, stem_name: str) -> str:
    layout = getattr(model, "layout", None)
    declared = getattr(layout, "first_block", None)
    if isinstance(declared, str) and declared:
        return declared
    info = getattr(model, "feature_info", None) or []
    stages = [entry["module"] for entry in info if entry.get("module") != stem_name]
    if stages:
        return stages[0]
    names = {n for n, _ in model.named_modules()}
    if "layer1" in names:
        return "layer1"
    raise ValueError(
        f"{type(model).__name__} declares no first stage (feature_info or layout.first_block) "
        "and has no 'layer1'"
    )


def _is_shortcut(relative: str) -> bool:
    return any(part in _SHORTCUT_NAMES for part in relative.split("."))


def first_block_convs(model: nn.Module) -> dict[str, Any]:
    """Locate the convs of the first block that read the stem output.

    Args:
        model: a stemlab model with ``.stem`` (``out_channels``) and ``feature_info`` or a declared
            ``layout.first_block``.

    Returns:
        ``{"stem_channels": C, "first_block": name, "first_conv": name,
        "projection": name or None}``; the first conv is the first ``Conv2d``/``Conv3d`` of the
        first block (or of the first stage) taking ``C`` input channels outside a
        ``downsample``/``shortcut`` branch; the projection is the block's 1x1 conv taking ``C``
        inputs inside such a branch.

    Raises:
        ValueError: no stem, no first stage, or no conv in it that consumes the stem output.
    """
    check_model(model)
    stem_name, channels = _stem(model)
    declared = getattr(getattr(model, "layout", None), "first_block", None)
    search = _block_name(model, stem_name)
    modules = dict(model.named_modules())
    if search not in modules:
        raise ValueError(f"{type(model).__name__} has no module {search!r} (its first block)")
    first = next(
        (
            relative
            for relative, module in modules[search].named_modules()
            if isinstance(module, _CONVS)
            and module.in_channels == channels
            and not _is_shortcut(relative)
        ),
        None,
    )
    if first is None:
        raise ValueError(
            f"no Conv2d/Conv3d in {search!r} of {type(model).__name__} takes the stem's "
            f"{channels} output channels, so its usage cannot be read from the weights"
        )
    # Searching the whole first stage: the block is the stage's child that holds the conv.
    block = search if search == declared or not first else f"{search}.{first.split('.')[0]}"
    projection = next(
        (
            relative
            for relative, module in modules[block].named_modules()
            if isinstance(module, _CONVS)
            and module.in_channels == channels
            and _is_shortcut(relative)
            and all(k == 1 for k in module.kernel_size)
        ),
        None,
    )
    return {
        "stem_channels": channels,
        "first_block": block,
        "first_conv": f"{search}.{first}" if first else search,
        "projection": f"{block}.{projection}" if projection else None,
    }


def _squared_input_norms(conv: nn.Module) -> torch.Tensor:
    """Sum of squared weights reading each input channel (grouped convs handled)."""
    weight = conv.weight.detach().to(torch.float64)
    groups = conv.groups
    out_channels, per_group = weight.shape[0], weight.shape[1]
    squares = weight.reshape(groups, out_channels // groups, per_group, -1).square()
    return squares.sum(dim=(1, 3)).reshape(groups * per_group).cpu()


def channels_for_share(table: pd.DataFrame, *, share: float = 0.9) -> int:
    """How many channels, taken by decreasing share, carry at least ``share`` of the total.

    Args:
        table: a :func:`channel_usage` table (a ``share`` column summing to 1).
        share: the fraction of the total, in (0, 1].

    Returns:
        The smallest ``k`` such that the ``k`` largest shares sum to ``>= share``.

    Raises:
        TypeError: ``table`` is not a DataFrame with a ``share`` column.
        ValueError: ``share`` outside (0, 1], or shares that do not sum to 1 (all-zero usage).
    """
    if not isinstance(table, pd.DataFrame) or "share" not in table:
        raise TypeError("table must be a DataFrame with a 'share' column (from channel_usage)")
    share = check_positive_float("share", share)
    if share > 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    shares = np.sort(table["share"].to_numpy(dtype=np.float64))[::-1]
    total = float(shares.sum()) if len(shares) else math.nan
    if not math.isclose(total, 1.0, rel_tol=0, abs_tol=1e-9):
        raise ValueError(f"table shares must sum to 1, got {total} (is every usage zero?)")
    cumulative = np.cumsum(shares)
    return int(np.searchsorted(cumulative, share - 1e-12) + 1)


def channel_usage(model: nn.Module) -> pd.DataFrame:
    """For each stem output channel, the L2 norm of the first block's weights reading it.

    Args:
        model: a stemlab model (``.stem.out_channels``, ``feature_info``); the weights are read,
            nothing is run or changed.

    Returns:
        DataFrame ``channel, usage, share`` (``share = usage / sum(usage)``, summing to 1; NaN if
        every usage is 0). ``.attrs``: ``channels_for_90pct`` (see :func:`channels_for_share`;
        None if every usage is 0), ``first_block``, ``first_conv``, ``projection``.

    Raises:
        ValueError: no stem, or no conv of the first stage consumes the stem output (see
            :func:`first_block_convs`).
    """
    located = first_block_convs(model)
    modules = dict(model.named_modules())
    squares = _squared_input_norms(modules[located["first_conv"]])
    if located["projection"] is not None:
        squares = squares + _squared_input_norms(modules[located["projection"]])
    usage = squares.sqrt().numpy()
    total = float(usage.sum())
    share = usage / total if total > 0 else np.full_like(usage, math.nan)
    frame = pd.DataFrame({"channel": np.arange(len(usage)), "usage": usage, "share": share})
    frame.attrs.update(
        {
            "channels_for_90pct": channels_for_share(frame, share=0.9) if total > 0 else None,
            "first_block": located["first_block"],
            "first_conv": located["first_conv"],
            "projection": located["projection"],
        }
    )
    return frame


# Study integration: how this probe runs in a study cell and what it adds to the report.


def _usage_measure(model: nn.Module) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    table = channel_usage(model)
    count = table.attrs["channels_for_90pct"]
    metrics = {
        "usage_channels_90": None if count is None else int(count),
        "usage_fraction_90": None if count is None else int(count) / len(table),
        "usage_top_share": float(table["share"].max()),
        "usage_top_quarter": top_quarter_share(table),
    }
    return metrics, {"channel_usage": table.to_dict(orient="records")}


def _usage_run(context: CellContext) -> ProbeOutput:
    return on_trained_and_init(context, _usage_measure)


def top_quarter_share(table: pd.DataFrame) -> float:
    """Share of the usage carried by the most-read quarter of the channels (0.25: equal use)."""
    shares = np.sort(table["share"].to_numpy(dtype=float))[::-1]
    return float(shares[: max(1, round(len(shares) / 4))].sum())


def _usage_findings(view: StudyView) -> list[str]:
    cells = view.trained()
    if cells.empty:
        return []
    if "usage_top_quarter" not in cells:  # cells stored before the metric existed
        table = view.tables.get("channel_usage")
        if table is None or table.empty:
            return []
        if "state" in table:
            table = table[table["state"] == "trained"]
        per_cell = table.groupby("key").apply(top_quarter_share, include_groups=False)
        cells = cells.assign(usage_top_quarter=cells["key"].map(per_cell))
        view = replace(view, cells=cells)
    return training_change_findings(
        view,
        "usage_top_quarter",
        "Share of layer1's input weight norm on the most-read quarter of stem channels (0.25 = "
        "every channel read equally)",
        digits=3,
    )


def _usage_figures(view: StudyView) -> list[FigureSpec]:
    table = view.tables.get("channel_usage")
    if table is None or table.empty:
        return []
    first = set(view.first_seed_cells()["key"])
    rows = table[table["key"].isin(first)]
    rows = rows.assign(group=view.labels(rows))

    if "state" not in rows:
        rows = rows.assign(state="trained")

    def make() -> Figure:
        figure = new_figure(6.8, 4.2)
        ax = figure.subplots()
        for i, (name, group) in enumerate(rows.groupby("group", sort=False)):
            for state, style in (("trained", "-"), ("init", "--")):
                part = group[group["state"] == state]
                if part.empty:
                    continue
                shares = np.sort(part["share"].to_numpy(dtype=float))[::-1]
                x = np.arange(1, len(shares) + 1) / len(shares)
                ax.plot(
                    np.r_[0, x],
                    np.r_[0, np.cumsum(shares)],
                    color=f"C{i % 10}",
                    ls=style,
                    lw=1.4 if state == "trained" else 1.0,
                    label=name if state == "trained" else None,
                )
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="equal use")
        if (rows["state"] == "init").any():
            ax.plot([], [], color="black", ls="--", lw=1.0, label="before training (init)")
        ax.axhline(0.9, color="gray", ls="-.", lw=1)
        ax.set_xlabel("fraction of stem channels (most-read first)")
        ax.set_ylabel("cumulative share of layer1's input weight norm")
        ax.set_title("How layer1 reads the stem's channels (smallest seed)", fontsize=10)
        ax.grid(alpha=0.3)
        figure.legend(loc="outside right upper", fontsize=8)
        return figure

    return [
        FigureSpec(
            "channel_usage",
            "Channel usage: cumulative share of layer1's input weight (L2 norm over each stem "
            "channel in the first block's first conv and projection) against the fraction of "
            "stem channels; solid: trained, dashed coloured: the same model before training, "
            "grey dash-dot: 90%, dotted: every channel read equally.",
            make,
        )
    ]


register_probe(
    StudyProbe(
        name="channel_usage",
        description="how strongly the first block reads each stem channel (weight norms)",
        run=_usage_run,
        tables=("channel_usage",),
        summary=init_columns(
            (
                SummaryColumn(
                    "usage_channels_90", "stem channels carrying 90% of layer1's input weight norm"
                ),
                SummaryColumn("usage_fraction_90", "usage_channels_90 / stem width"),
                SummaryColumn(
                    "usage_top_quarter",
                    "share of layer1's input weight norm on the most-read quarter of stem "
                    "channels (0.25: equal use)",
                ),
            )
        ),
        figures=_usage_figures,
        findings=_usage_findings,
        order=80,
    )
)
