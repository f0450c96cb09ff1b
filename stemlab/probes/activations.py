"""Activation statistics recorded with forward hooks, computed on the fly.

Each hooked call yields one row of statistics. They are reduced on the fly, channel block by
channel block, so no full-size temporary is allocated and nothing is synchronised with the device
until :meth:`ActivationRecorder.table` is called. Full feature maps are kept only when asked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from stemlab._validation import check_positive_int
from stemlab.probes._baselines import init_columns, on_trained_and_init, training_change_findings
from stemlab.probes._modules import (
    ModuleSelector,
    check_model,
    default_modules,
    first_tensor,
    resolve_modules,
)
from stemlab.probes._plots import stage_roles
from stemlab.probes.contract import (
    CellContext,
    FigureSpec,
    ProbeOutput,
    StudyProbe,
    StudyView,
    SummaryColumn,
    register_probe,
)

__all__ = ["STAT_COLUMNS", "ActivationRecorder", "activation_stats", "record_activations"]

STAT_COLUMNS: tuple[str, ...] = (
    "mean",
    "std",
    "min",
    "max",
    "zero_fraction",
    "dead_channel_fraction",
    "temporal_std",
)
"""The statistics of one activation, in the order :func:`activation_stats` returns them."""

_COLUMNS = ("module", "call", "type", "shape", "numel", "bytes", *STAT_COLUMNS)


# Temporaries of at most 8 MiB (float32): small next to the video activations they summarise.
_BLOCK_ELEMENTS = 1 << 21


def _channels_per_block(x: torch.Tensor) -> int:
    """Channels (dim 1) per block so that a block of ``x`` holds about ``_BLOCK_ELEMENTS``."""
    if x.ndim < 2:
        return 1
    per_channel = max(1, x.numel() // max(1, x.shape[1]))
    return max(1, _BLOCK_ELEMENTS // per_channel)


@torch.no_grad()
def activation_stats(x: torch.Tensor) -> torch.Tensor:
    """Statistics of one activation tensor, as a float32 tensor on its device.

    The order is :data:`STAT_COLUMNS`. ``std`` is the population standard deviation. Channels are
    dim 1; a channel is *dead* when its maximum is <= 0 (all zero after a ReLU). ``temporal_std``
    (5-D ``(N, C, T, H, W)`` only, else NaN) is the standard deviation over ``T`` at each
    ``(n, c, h, w)``, averaged.

    Args:
        x: any tensor; integer and bool tensors are converted to float.

    Returns:
        A tensor of ``len(STAT_COLUMNS)`` values (NaN where a statistic does not apply).
    """
    x = x.detach()
    if not x.is_floating_point():
        x = x.float()
    count = x.numel()
    nan = torch.full((), math.nan, device=x.device)
    if count == 0:
        return nan.expand(len(STAT_COLUMNS)).clone()
    if x.ndim >= 2:
        channel_max = x.amax(dim=tuple(d for d in range(x.ndim) if d != 1))
        maximum = channel_max.max()
        dead = (channel_max <= 0).sum() / channel_max.numel()
    else:
        maximum, dead = x.amax(), nan
    minimum = x.amin()
    channels = _channels_per_block(x)
    blocks = x.split(channels, dim=1) if x.ndim >= 2 else (x,)
    # b.bool() marks the non-zeros: the cheapest full pass that counts them.
    index_type = torch.int32 if count < 2**31 else torch.int64
    nonzero = torch.stack([b.bool().sum(dtype=index_type) for b in blocks]).sum()
    if x.ndim == 5:
        # Moments over T at every position, taken relative to the first frame (exact zero for a
        # static clip, little cancellation); the global moments follow by the law of total
        # variance. The offsets are formed a bounded block of channels at a time.
        steps = x.shape[2]
        first = x[:, :, :1]
        sums, squares = [], []
        for block, block_first in zip(blocks, first.split(channels, dim=1)):
            offset = block - block_first
            sums.append(offset.sum(dim=2))
            squares.append(offset.square_().sum(dim=2))
            del offset
        frame_sum = sums[0] if len(sums) == 1 else torch.cat(sums, dim=1)
        frame_sq = squares[0] if len(squares) == 1 else torch.cat(squares, dim=1)
        shift = frame_sum / steps
        variances = (frame_sq / steps - shift.square()).clamp_min_(0)
        temporal_std = variances.sqrt().mean()
        means = shift.add_(first[:, :, 0])
        mean = means.mean()
        std = (variances.mean() + means.var(correction=0)).sqrt()
    else:
        mean = x.sum().double() / count
        square_mean = torch.linalg.vector_norm(x).double().square() / count
        std = (square_mean - mean.square()).clamp_min(0).sqrt()
        temporal_std = nan
    values = (mean, std, minimum, maximum, 1 - nonzero / count, dead, temporal_std)
    return torch.stack([v.float() for v in values])


@dataclass
class _Call:
    module: str
    call: int
    type: str
    shape: tuple[int, ...] | None
    numel: int
    bytes: int
    stats: torch.Tensor | None


class ActivationRecorder:
    """What :func:`record_activations` yields: the recorded calls, their table and kept maps.

    Attributes:
        modules: ``{name: module}`` being recorded, in the model's module order.
        maps: ``{name: [tensor per call]}``, detached clones of the outputs of the modules asked for
            with ``keep``; empty otherwise.
    """

    def __init__(
        self, modules: dict[str, nn.Module], keep: set[str], stats: bool, stat_threads: int | None
    ) -> None:
        self.modules = modules
        self.maps: dict[str, list[torch.Tensor]] = {}
        self._keep = keep
        self._stats = stats
        self._stat_threads = stat_threads
        self._calls: list[_Call] = []
        self._counts: dict[str, int] = {}

    def _hook(self, name: str) -> Any:
        type_name = type(self.modules[name]).__name__

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            tensor = first_tensor(output)
            call = self._counts.get(name, 0)
            self._counts[name] = call + 1
            if tensor is None:
                self._calls.append(_Call(name, call, type_name, None, 0, 0, None))
                return
            stats = self._statistics(tensor) if self._stats else None
            numel = tensor.numel()
            self._calls.append(
                _Call(
                    name,
                    call,
                    type_name,
                    tuple(tensor.shape),
                    numel,
                    numel * tensor.element_size(),
                    stats,
                )
            )
            if name in self._keep:
                self.maps.setdefault(name, []).append(tensor.detach().clone())

        return hook

    def _statistics(self, tensor: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        if tensor.device.type != "cpu" or self._stat_threads is None:
            return activation_stats(tensor)
        if threads <= self._stat_threads:
            return activation_stats(tensor)
        # Each statistic is a short memory-bound pass; with several threads every pass pays an
        # OpenMP fork/join, which costs more than it saves (and stalls when cores are shared).
        torch.set_num_threads(self._stat_threads)
        try:
            return activation_stats(tensor)
        finally:
            torch.set_num_threads(threads)

    def clear(self) -> None:
        """Forget every recorded call and kept map."""
        self._calls.clear()
        self._counts.clear()
        self.maps.clear()

    def table(self) -> pd.DataFrame:
        """One row per (module, call) in call order.

        Returns:
            DataFrame with columns module, call, type, shape, numel, bytes and
            :data:`STAT_COLUMNS` (NaN when recorded with ``stats=False``).
        """
        stacked = [c.stats for c in self._calls if c.stats is not None]
        values = torch.stack(stacked).cpu().tolist() if stacked else []
        rows, taken = [], iter(values)
        nan_row = [math.nan] * len(STAT_COLUMNS)
        for c in self._calls:
            stat_values = next(taken) if c.stats is not None else nan_row
            rows.append((c.module, c.call, c.type, c.shape, c.numel, c.bytes, *stat_values))
        return pd.DataFrame(rows, columns=list(_COLUMNS))


@contextmanager
def record_activations(
    model: nn.Module,
    modules: ModuleSelector | None = None,
    *,
    keep: bool | ModuleSelector = False,
    stats: bool = True,
    stat_threads: int | None = 1,
) -> Iterator[ActivationRecorder]:
    """Record activation statistics of ``modules`` for every forward run inside the block.

    Example::

        with record_activations(model) as rec:
            model(clip)
        rec.table()

    Args:
        model: the model; it is not changed (hooks are removed on exit, also after an error).
        modules: ``None`` for the stem, its children and each stage (the top-level children when
            the model has no ``stem``); else names (``""`` is the model), fnmatch patterns,
            module types, ``(name, module) -> bool`` predicates, or a list of them.
        keep: also keep detached clones of the outputs: ``True`` for every recorded module, or a
            selector like ``modules`` (restricted to the recorded modules).
        stats: compute the statistics; ``False`` records shapes and sizes only.
        stat_threads: CPU threads for the statistics (torch's intra-op setting is lowered to it
            inside each hook and restored); ``None`` keeps torch's setting.

    Yields:
        An :class:`ActivationRecorder`; call ``.table()`` after the forward passes.

    Raises:
        TypeError: if ``model`` is not a module or a selector has the wrong type.
        ValueError: if a module name does not exist or a pattern matches nothing.
    """
    check_model(model)
    if stat_threads is not None:
        check_positive_int("stat_threads", stat_threads)
    selected = resolve_modules(model, default_modules(model) if modules is None else modules)
    if isinstance(keep, bool):
        kept = set(selected) if keep else set()
    else:
        kept = set(resolve_modules(model, keep, argument="keep")) & set(selected)
    recorder = ActivationRecorder(selected, kept, bool(stats), stat_threads)
    handles = []
    try:
        for name, module in selected.items():
            handles.append(module.register_forward_hook(recorder._hook(name)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


def _run_in_study(context: CellContext) -> ProbeOutput:
    inputs = context.inputs.to(context.device)

    def measure(model: nn.Module) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        with torch.no_grad(), record_activations(model) as recorder:
            model(inputs)
        table = recorder.table()
        table.insert(1, "role", table["module"].map(stage_roles(model)))
        metrics: dict[str, Any] = {}
        stem_rows = table[table["module"] == "stem"]
        if context.kind == "trained" and not stem_rows.empty:
            metrics["dead_channel_fraction"] = float(stem_rows["dead_channel_fraction"].iloc[0])
        return metrics, {"activations": table.to_dict(orient="records")}

    return on_trained_and_init(context, measure)


def _findings(view: StudyView) -> list[str]:
    return training_change_findings(
        view,
        "dead_channel_fraction",
        "Fraction of stem output channels never positive on the probe batch",
    )


_ROLE_STATS = ("std", "zero_fraction", "dead_channel_fraction", "temporal_std")


def _plot_by_role(rows: pd.DataFrame, where: str) -> Figure:
    """The shared activation plot, its x axis the declared roles (stem output, each stage)."""
    from stemlab.probes.figures import plot_activation_stats

    rows = rows[rows["role"].notna()]
    stats = [s for s in _ROLE_STATS if s in rows and rows[s].notna().any()]
    return plot_activation_stats(
        rows.assign(module=rows["role"]),
        stats=stats,
        modules=list(dict.fromkeys(rows["role"])),
        group="group",
        title=f"Activations by layer role ({where.split(' (')[0]})",
    )


def _figures(view: StudyView) -> list[FigureSpec]:
    table = view.tables.get("activations")
    if table is None or table.empty or "role" not in table:
        return []
    specs = []
    first = set(view.first_seed_cells()["key"]) if not view.trained().empty else set()
    for source, where in (
        ("trained", "the trained CPU-scale models (smallest seed, probe batch)"),
        ("profile", "the full-size profiling models (random weights, random input)"),
    ):
        rows = table[table["source"] == source]
        if source == "trained":
            rows = rows[rows["key"].isin(first)]
            if "state" in rows:
                rows = rows[rows["state"] == "trained"]
        if rows.empty:
            continue
        rows = rows.assign(group=[view.label(b, s) for b, s in zip(rows["backbone"], rows["stem"])])
        specs.append(
            FigureSpec(
                f"activations_{source}",
                f"Activation statistics of the stem output and each stage on {where}; "
                "layers are aligned by role, so every stem is compared at the same depth. "
                "temporal std is 0 by construction where a layer's time axis has one step "
                "(layer4 of an 8-frame clip).",
                lambda rows=rows, where=where: _plot_by_role(rows, where),
            )
        )
    trained = table[(table["source"] == "trained") & table["key"].isin(first)]
    if "state" in trained and (trained["state"] == "init").any():
        from stemlab.probes.figures_channels import plot_activation_change

        trained = trained.assign(group=view.labels(trained))
        stats = [s for s in _ROLE_STATS if s in trained and trained[s].notna().any()]
        specs.append(
            FigureSpec(
                "activations_change",
                "What training changed in the activations: each statistic of the stem output and "
                "each stage on the trained model minus the same arm and seed's model before "
                "training (smallest seed, probe batch); 0 (grey line): no change.",
                lambda rows=trained, stats=stats: plot_activation_change(rows, stats),
            )
        )
    return specs


PROBE = register_probe(
    StudyProbe(
        name="activations",
        description="activation statistics of the stem, its layers and each stage",
        run=_run_in_study,
        runs_on=frozenset({"trained", "profile"}),
        tables=("activations",),
        summary=init_columns(
            (
                SummaryColumn(
                    "dead_channel_fraction",
                    "stem output channels never positive on the probe batch (trained model)",
                ),
            )
        ),
        figures=_figures,
        findings=_findings,
        order=30,
    )
)
