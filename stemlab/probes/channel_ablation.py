"""Channel ablation: how much the model relies on each output channel of a layer (e.g. the stem).

Each channel of ``layer`` is set to zero (one at a time, or cumulatively for the curve) by a
forward hook that multiplies the layer output by a 0/1 channel mask, and the model's accuracy or
loss is measured on the data. captum's ``LayerFeatureAblation`` does the same single-channel
ablation with a channel ``layer_mask``, but it re-runs a baseline per batch, returns a per-sample
attribution of the layer's full size and cannot remove channel *sets* cumulatively; the hook here
serves both tables with one code path (the tests check it against captum).

The data are read once: every batch is run with all masks before the next batch is read, so no
batch is cached (except for :func:`ablation_curve` on a one-shot iterator when it must first
rank the channels itself). Within a batch, the layer's unablated output is computed once and
replayed for every ablation (when the layer runs once per forward pass), so the layer itself
(for the stem: everything before the ablation) is not recomputed per channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from stemlab._validation import check_choice, check_positive_int
from stemlab.probes._modules import check_model, first_tensor, model_device
from stemlab.probes._plots import new_figure
from stemlab.probes.cka import _evaluating, _iter_batches, _resolve_layer
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

__all__ = ["ABLATION_METRICS", "CURVE_ORDERS", "ablation_curve", "channel_ablation"]

ABLATION_METRICS: tuple[str, ...] = ("accuracy", "loss")
CURVE_ORDERS: tuple[str, ...] = ("importance", "random")

_Removed = tuple[int, ...]


class _ChannelMask:
    """A forward hook zeroing a set of output channels (dim 1) of one module; none by default.

    While ``recording`` it keeps a copy of the unablated output, so that the ablated passes of
    the same batch can replay it instead of recomputing the layer (see :func:`_replaying`).
    """

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = module
        self.name = name
        self.removed: _Removed = ()
        self.channels: int | None = None
        self.recording = False
        self.calls = 0
        self.output: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or output.ndim < 2:
            found = first_tensor(output)
            shape = tuple(found.shape) if found is not None else None
            raise ValueError(
                f"layer {self.name!r} must output one tensor with channels in dim 1, got "
                f"{type(output).__name__} {shape or ''}"
            )
        if self.channels is None:
            self.channels = output.shape[1]
        if self.recording:
            self.calls += 1
            self.output = output.detach().clone()  # later in-place ops must not change it
        if not self.removed:
            return None
        keep = torch.ones(output.shape[1], dtype=output.dtype, device=output.device)
        keep[list(self.removed)] = 0
        return output * keep.view(1, -1, *([1] * (output.ndim - 2)))

    def record(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The unablated forward pass, keeping the layer's output."""
        self.removed, self.recording, self.calls, self.output = (), True, 0, None
        try:
            return model(x)
        finally:
            self.recording = False


_MISSING = object()


@contextmanager
def _replaying(mask: _ChannelMask) -> Iterator[None]:
    """Make the layer return its recorded output without computing it (hooks still run).

    Only when the layer ran exactly once in the recorded pass; the module's own ``forward`` is
    put back afterwards.
    """
    if mask.calls != 1 or mask.output is None:
        yield
        return
    module, output = mask.module, mask.output
    saved = module.__dict__.get("forward", _MISSING)
    module.forward = lambda *args, **kwargs: output
    try:
        yield
    finally:
        if saved is _MISSING:
            del module.forward
        else:
            module.forward = saved


@contextmanager
def _masked(model: nn.Module, layer: str) -> Iterator[_ChannelMask]:
    mask = _ChannelMask(_resolve_layer(model, layer), layer)
    try:
        yield mask
    finally:
        mask.handle.remove()
        mask.output = None


def _check_labels(label: Any, logits: torch.Tensor, index: int) -> torch.Tensor:
    if label is None:
        raise ValueError(
            f"data: batch {index} has no label; channel ablation needs batches (clip, label, ...)"
        )
    label = torch.as_tensor(label)
    if label.dtype.is_floating_point or label.dtype == torch.bool or label.ndim != 1:
        raise TypeError(
            f"data: batch {index} labels must be a 1-D integer tensor of class indices, got "
            f"dtype {label.dtype} shape {tuple(label.shape)}"
        )
    if logits.ndim != 2 or logits.shape[0] != label.shape[0]:
        raise ValueError(
            f"the model must return (N, classes) logits for N={label.shape[0]} labels, got "
            f"{tuple(logits.shape)}"
        )
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= logits.shape[1]):
        raise ValueError(
            f"data: batch {index} labels must lie in [0, {logits.shape[1]}), got "
            f"{label.min().item()}..{label.max().item()}"
        )
    return label.to(logits.device)


def _metric_sum(logits: torch.Tensor, label: torch.Tensor, metric: str) -> float:
    if metric == "accuracy":
        return float((logits.argmax(dim=1) == label).sum())
    return float(F.cross_entropy(logits.double(), label, reduction="sum"))


def _evaluate(
    model: nn.Module,
    data: Iterable[Any],
    *,
    layer: str,
    metric: str,
    removals: Callable[[int], list[_Removed]],
    max_batches: int | None,
) -> tuple[dict[_Removed, float], int, int, int]:
    """Mean metric with each channel set of ``removals(C)`` zeroed, data read once.

    Returns:
        ``({removed: metric}, channels, samples, batches)``; ``()`` is the unablated model.
    """
    totals: dict[_Removed, float] = {}
    samples = batches = 0
    device = model_device(model)
    with _evaluating(model), _masked(model, layer) as mask:
        sets: list[_Removed] | None = None
        for index, (x, label) in enumerate(_iter_batches(data, max_batches=max_batches)):
            x = x.to(device)
            logits = mask.record(model, x)
            label = _check_labels(label, logits, index)
            if sets is None:  # the hook has just seen the layer's channel count
                sets = list(dict.fromkeys(removals(int(mask.channels or 0))))
                totals = dict.fromkeys([(), *sets], 0.0)
            totals[()] += _metric_sum(logits, label, metric)
            with _replaying(mask):
                for removed in sets:
                    if removed:
                        mask.removed = removed
                        totals[removed] += _metric_sum(model(x), label, metric)
            samples += x.shape[0]
            batches += 1
    if not samples:
        raise ValueError("data yielded no batch (or only empty ones); nothing to evaluate")
    return {k: v / samples for k, v in totals.items()}, int(mask.channels or 0), samples, batches


def _check_channels(channels: Any) -> list[int] | None:
    if channels is None:
        return None
    if isinstance(channels, (int, str)) or not isinstance(channels, Iterable):
        raise TypeError(f"channels must be a sequence of channel indices, got {channels!r}")
    values = list(channels)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"channels must hold ints, got {value!r} in {channels!r}")
        if value < 0:
            raise ValueError(f"channels must hold indices >= 0, got {value} in {channels!r}")
    if not values:
        raise ValueError("channels must name at least one channel (or be None for all)")
    return [int(v) for v in values]


def _in_range(channels: list[int], count: int, layer: str) -> list[int]:
    outside = [c for c in channels if c >= count]
    if outside:
        raise ValueError(f"channels {outside} do not exist: layer {layer!r} has {count} channels")
    return channels


def channel_ablation(
    model: nn.Module,
    data: Iterable[Any],
    *,
    layer: str = "stem",
    metric: Literal["accuracy", "loss"] = "accuracy",
    channels: Sequence[int] | None = None,
    max_batches: int | None = None,
) -> pd.DataFrame:
    """Zero one output channel of ``layer`` at a time and measure the metric on ``data``.

    Implemented with a forward hook multiplying the layer output by a channel mask (see the
    module docstring for why not captum's ``LayerFeatureAblation``). Eval mode, ``no_grad``;
    the model's modes are restored and the hook removed; parameters are not touched.

    Args:
        model: a classifier returning ``(N, classes)`` logits.
        data: iterable of labelled batches ``(clip, label, ...)``; read once.
        layer: module whose output channels (dim 1) are ablated, e.g. ``"stem"``, ``"layer1"``.
        metric: ``"accuracy"`` (top-1) or ``"loss"`` (mean cross-entropy).
        channels: channel indices to ablate; ``None`` = all.
        max_batches: use at most this many batches.

    Returns:
        DataFrame ``channel, metric, baseline, ablated, drop``, one row per channel. ``drop`` is
        positive when the channel matters: ``baseline - ablated`` for accuracy, ``ablated -
        baseline`` for loss. ``.attrs``: ``layer``, ``metric``, ``num_channels``, ``samples``,
        ``batches``.

    Raises:
        TypeError / ValueError: unknown layer (with close matches), bad metric, channels,
            labels or ``max_batches``.
    """
    check_model(model)
    check_choice("metric", metric, ABLATION_METRICS)
    _resolve_layer(model, layer)
    wanted = _check_channels(channels)

    def removals(count: int) -> list[_Removed]:
        chosen = range(count) if wanted is None else _in_range(wanted, count, layer)
        return [(c,) for c in chosen]

    values, count, samples, batches = _evaluate(
        model, data, layer=layer, metric=metric, removals=removals, max_batches=max_batches
    )
    baseline = values[()]
    chosen = list(range(count)) if wanted is None else wanted
    rows = []
    for channel in chosen:
        ablated = values[(channel,)]
        drop = baseline - ablated if metric == "accuracy" else ablated - baseline
        rows.append(
            {
                "channel": channel,
                "metric": metric,
                "baseline": baseline,
                "ablated": ablated,
                "drop": drop,
            }
        )
    frame = pd.DataFrame(rows, columns=["channel", "metric", "baseline", "ablated", "drop"])
    frame.attrs.update(
        {
            "layer": layer,
            "metric": metric,
            "num_channels": count,
            "samples": samples,
            "batches": batches,
        }
    )
    return frame


def _importance_order(importance: pd.DataFrame, count: int) -> list[int]:
    if not isinstance(importance, pd.DataFrame) or not {"channel", "drop"} <= set(importance):
        raise TypeError(
            "importance must be a channel_ablation table (a DataFrame with channel and drop)"
        )
    table = importance.sort_values(["drop", "channel"], ascending=[False, True], kind="stable")
    order = [int(c) for c in table["channel"]]
    if sorted(order) != list(range(count)):
        raise ValueError(
            f"importance must rank every channel 0..{count - 1} of the layer exactly once, got "
            f"{sorted(order)}"
        )
    return order


def ablation_curve(
    model: nn.Module,
    data: Iterable[Any],
    *,
    layer: str = "stem",
    metric: Literal["accuracy", "loss"] = "accuracy",
    order: Literal["importance", "random"] | None = None,
    importance: pd.DataFrame | None = None,
    seed: int = 0,
    max_batches: int | None = None,
    steps: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The metric as channels of ``layer`` are removed cumulatively, 0 to all of them.

    In ``"importance"`` order the channel with the largest :func:`channel_ablation` drop goes
    first (ties by channel index); in ``"random"`` order a seeded permutation is used. A curve
    that falls much faster in importance order than in random order means the model relies on a
    few channels.

    Args:
        model: a classifier returning ``(N, classes)`` logits.
        data: iterable of labelled batches ``(clip, label, ...)``. Read once, twice when the
            importance order must first be measured (a one-shot iterator is then cached).
        layer: module whose output channels are removed.
        metric: ``"accuracy"`` or ``"loss"``.
        order: ``"importance"``, ``"random"`` or ``None`` for both.
        importance: a :func:`channel_ablation` table over every channel of ``layer`` (with any
            metric: its ``drop`` is positive when a channel matters for both); measured here,
            with ``metric``, when ``None`` and needed.
        seed: seed of the random order.
        max_batches: use at most this many batches.
        steps: numbers of removed channels to evaluate (each in ``0..C``); ``None`` = all of
            ``0..C``. Fewer steps cost fewer passes over the data.

    Returns:
        DataFrame ``order, removed, metric_value``: for each order, rows ``removed`` in
        ``steps`` (default ``0..C``).
        ``.attrs``: ``layer``, ``metric``, ``num_channels``, ``orders`` (``{order: [channel, ...]}``),
        ``samples``.

    Raises:
        TypeError / ValueError: unknown layer, bad metric/order/seed, or an importance table that
            does not rank every channel.
    """
    check_model(model)
    check_choice("metric", metric, ABLATION_METRICS)
    if order is not None:
        check_choice("order", order, CURVE_ORDERS)
    check_positive_int("seed", seed, allow_zero=True)
    _resolve_layer(model, layer)
    orders = list(CURVE_ORDERS) if order is None else [order]
    if steps is not None:
        if isinstance(steps, (str, bytes)) or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in steps
        ):
            raise TypeError(f"steps must be a sequence of ints, got {steps!r}")
        steps = sorted({int(k) for k in steps})
    if "importance" in orders and importance is None:
        if iter(data) is data:  # a one-shot iterator: keep its batches for the second pass
            data = [batch for _, batch in zip(range(max_batches or 2**62), data)]
        importance = channel_ablation(
            model, data, layer=layer, metric=metric, max_batches=max_batches
        )
    sequences: dict[str, list[int]] = {}

    def counts(count: int) -> list[int]:
        if steps is None:
            return list(range(count + 1))
        bad = [k for k in steps if not 0 <= k <= count]
        if bad:
            raise ValueError(f"steps {bad} are outside 0..{count} (the layer's channels)")
        return steps

    def removals(count: int) -> list[_Removed]:
        for name in orders:
            if name == "importance":
                sequences[name] = _importance_order(importance, count)
            else:
                sequences[name] = [int(c) for c in np.random.default_rng(seed).permutation(count)]
        return [tuple(sorted(s[:k])) for s in sequences.values() for k in counts(count)]

    values, count, samples, _ = _evaluate(
        model, data, layer=layer, metric=metric, removals=removals, max_batches=max_batches
    )
    rows = [
        {"order": name, "removed": k, "metric_value": values[tuple(sorted(sequence[:k]))]}
        for name, sequence in sequences.items()
        for k in counts(count)
    ]
    frame = pd.DataFrame(rows, columns=["order", "removed", "metric_value"])
    frame.attrs.update(
        {
            "layer": layer,
            "metric": metric,
            "num_channels": count,
            "orders": sequences,
            "samples": samples,
        }
    )
    return frame


# Study integration: how this probe runs in a study cell and what it adds to the report.


CURVE_POINTS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)


def _ablation_run(context: CellContext) -> ProbeOutput:
    from stemlab.probes.channel_ablation import ablation_curve, channel_ablation

    data = context.batch_list("ablation_samples", 64)
    table = channel_ablation(context.model, data, metric="loss")
    width = len(table)
    steps = sorted({round(f * width) for f in CURVE_POINTS})
    curve = ablation_curve(
        context.model,
        data,
        importance=table,
        metric="accuracy",
        seed=int(context.config.get("seed", 0)),
        steps=steps,
    )
    curve["fraction"] = curve["removed"] / width
    quarter = curve[curve["removed"] == round(0.25 * width)].set_index("order")["metric_value"]
    return ProbeOutput(
        metrics={
            "ablation_max_loss_rise": float(table["drop"].max()),
            "ablation_quarter_importance": float(quarter.get("importance", np.nan)),
            "ablation_quarter_random": float(quarter.get("random", np.nan)),
        },
        tables={
            "channel_ablation": table.to_dict(orient="records"),
            "ablation_curve": curve.to_dict(orient="records"),
        },
    )


def _ablation_figures(view: StudyView) -> list[FigureSpec]:
    curve = view.tables.get("ablation_curve")
    if curve is None or curve.empty:
        return []
    curve = curve.assign(group=view.labels(curve))
    chance = None
    if "num_classes" in view.cells and view.cells["num_classes"].notna().any():
        chance = 1.0 / float(view.cells["num_classes"].dropna().iloc[0])
    groups = list(dict.fromkeys(curve["group"]))

    def make() -> Figure:
        columns = min(4, len(groups))
        rows = -(-len(groups) // columns)
        figure = new_figure(2.9 * columns + 0.6, 2.5 * rows + 0.6)
        axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
        for ax, name in zip(axes.flat, groups):
            part = curve[curve["group"] == name]
            for order, color in (("importance", "C3"), ("random", "C0")):
                lines = part[part["order"] == order].groupby("fraction")["metric_value"]
                mean, low, high = lines.mean(), lines.min(), lines.max()
                ax.plot(
                    100 * mean.index,
                    100 * mean.values,
                    marker="o",
                    ms=3,
                    color=color,
                    label=f"{order} order",
                )
                ax.fill_between(
                    100 * mean.index, 100 * low.values, 100 * high.values, color=color, alpha=0.15
                )
            if chance is not None:
                ax.axhline(100 * chance, color="gray", ls="--", lw=1, label="chance")
            ax.set_title(name, fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("stem channels zeroed (%)")
        for ax in axes[:, 0]:
            ax.set_ylabel("top-1 on probe clips (%)")
        for ax in list(axes.flat)[len(groups) :]:
            ax.set_visible(False)
        figure.legend(
            *axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8
        )
        return figure

    seeds = view.trained()["seed"].nunique() if not view.trained().empty else 0
    return [
        FigureSpec(
            "ablation_curves",
            "Cumulative ablation of stem channels: top-1 as more channels are zeroed, most "
            "important first (red; importance = loss rise when zeroed alone) or in random order "
            f"(blue); lines: mean over {seeds} seed(s), bands: min..max; dashed: chance.",
            make,
        )
    ]


def _ablation_findings(view: StudyView) -> list[str]:
    cells = view.trained()
    needed = {"ablation_quarter_importance", "ablation_quarter_random"}
    if cells.empty or not needed <= set(cells) or view.compare is None or view.holm is None:
        return []
    rows = cells.dropna(subset=list(needed))
    results = []
    for (backbone, stem), group in rows.groupby(["backbone", "stem"], sort=False):
        long = pd.concat(
            [
                group.assign(order="random", value=group["ablation_quarter_random"]),
                group.assign(order="importance", value=group["ablation_quarter_importance"]),
            ]
        )[["order", "seed", "value"]]
        row = view.compare(long, metric="value", by="order", baseline="random").iloc[0]
        results.append((view.label(backbone, stem), row))
    adjusted = view.holm([row["p_value"] for _, row in results])
    parts, flat = [], []
    for (label, row), p_adj in zip(results, adjusted):
        if p_adj < 0.05 and row["diff"] < 0:
            parts.append(
                f"{label} {100 * row['diff']:+.1f} points (95% CI {100 * row['ci_low']:+.1f} to "
                f"{100 * row['ci_high']:+.1f}, Holm-adjusted p {p_adj:.2g})"
            )
        else:
            flat.append(label)
    n = int(rows["seed"].nunique())
    lines = []
    if parts:
        lines.append(
            "Zeroing the most important quarter of stem channels (importance: loss rise when "
            "zeroed alone) costs more top-1 than zeroing a random quarter, paired over "
            f"{n} seeds, Holm over {len(results)} stems: " + "; ".join(parts) + "."
        )
    if flat:
        lines.append(
            f"For {', '.join(f'`{s}`' for s in flat)} the important quarter is not "
            f"distinguishable from a random quarter at n={n}: no evidence that these models "
            "rely on a few stem channels."
        )
    return lines


register_probe(
    StudyProbe(
        name="channel_ablation",
        description="loss rise when each stem channel is zeroed, and cumulative ablation curves",
        run=_ablation_run,
        needs=frozenset({"data"}),
        options=("ablation_samples",),
        tables=("channel_ablation", "ablation_curve"),
        summary=(
            SummaryColumn(
                "ablation_max_loss_rise", "largest loss rise from zeroing one stem channel"
            ),
            SummaryColumn(
                "ablation_quarter_importance",
                "top-1 with the most important quarter of stem channels zeroed",
            ),
            SummaryColumn(
                "ablation_quarter_random", "top-1 with a random quarter of stem channels zeroed"
            ),
        ),
        figures=_ablation_figures,
        findings=_ablation_findings,
        order=82,
    )
)
