"""The stem's first-layer filters and per-filter statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from stemlab._validation import check_choice
from stemlab.probes._modules import check_model, stem_of
from stemlab.probes._plots import slug
from stemlab.probes.contract import (
    CellContext,
    FigureSpec,
    ProbeOutput,
    StudyProbe,
    StudyView,
    SummaryColumn,
    register_probe,
)

__all__ = [
    "FILTER_ORDERS",
    "FirstLayerFilters",
    "colour_split",
    "compose_2plus1d",
    "filter_stats",
    "first_layer_filters",
    "order_filters",
    "temporal_energy_fraction",
    "weight_change",
]

_CONV_TYPES = (nn.Conv2d, nn.Conv3d)
_NORM_TYPES = (nn.BatchNorm3d,)

FILTER_ORDERS: tuple[str, ...] = ("l2_norm", "temporal_energy_fraction", "index")
"""Criteria filters can be ordered by: descending L2 norm, descending temporal energy fraction,
or the channel index."""


@dataclass(frozen=True)
class FirstLayerFilters:
    """What :func:`first_layer_filters` returns.

    Attributes:
        module: name of the first conv (``"stem.0"``).
        weight: its weights, a detached float32 CPU copy, ``(O, C, k, k)`` or ``(O, C, t, k, k)``.
        effective: for (2+1)D stems, the composed ``(O, C, t, k, k)`` kernel of the spatial conv,
            the eval-mode scale of the BatchNorm between them and the temporal conv; ``None``
            otherwise.
        effective_module: name of the temporal conv composed into ``effective``, or ``None``.
        table: per-filter statistics, see :func:`filter_stats`, for ``weight`` (kernel
            ``"conv"``) then ``effective`` (kernel ``"effective"``), each with a ``rank`` (1 =
            first by ``order_by``).
        effective_bias: ``(O,)`` constant the BatchNorm shift adds to the composed output away
            from the temporal borders (``effective`` + this = the affine part); ``None`` when
            there is no composed kernel.
        note: what the composed kernel leaves out (the ReLU between the convs), or ``""``.
        order_by: the criterion of ``rank`` and ``order`` (one of :data:`FILTER_ORDERS`).
        order: filter indices of :attr:`kernel` in rank order.
    """

    module: str
    weight: torch.Tensor
    effective: torch.Tensor | None
    effective_module: str | None
    table: pd.DataFrame
    effective_bias: torch.Tensor | None = None
    note: str = ""
    order_by: str = "l2_norm"
    order: tuple[int, ...] = ()

    @property
    def kernel(self) -> torch.Tensor:
        """The kernel to show and summarise: ``effective`` when there is one, else ``weight``."""
        return self.effective if self.effective is not None else self.weight

    @property
    def kernel_name(self) -> str:
        """``"effective"`` or ``"conv"``: the ``kernel`` value of :attr:`kernel`'s table rows."""
        return "effective" if self.effective is not None else "conv"

    @property
    def temporal_energy(self) -> float:
        """Mean temporal energy fraction over the filters of :attr:`kernel` (NaN for 2-D)."""
        return float(temporal_energy_fraction(self.kernel).mean())


def compose_2plus1d(
    spatial: torch.Tensor, temporal: torch.Tensor, *, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Compose a ``(1, k, k)`` spatial conv and a ``(t, 1, 1)`` temporal conv into one kernel.

    ``out[o] = sum_m temporal[o, m, :] (outer) scale[m] * spatial[m]``: the linear part of the
    pair with a per-channel ``scale`` between them (the eval-mode BatchNorm scale
    ``gamma / sqrt(running_var + eps)``; 1 by default). Anything nonlinear between the convs
    (a ReLU) is not part of it.

    Args:
        spatial: ``(M, C, 1, k, k)`` weights of the first conv.
        temporal: ``(O, M, t, 1, 1)`` weights of the second conv.
        scale: ``(M,)`` factor of each intermediate channel, or None.

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
    middle = spatial[:, :, 0]
    if scale is not None:
        if scale.shape != (spatial.shape[0],):
            raise ValueError(f"scale must be ({spatial.shape[0]},), got {tuple(scale.shape)}")
        middle = middle * scale.to(middle.dtype)[:, None, None, None]
    return torch.einsum("omt,mcyx->octyx", temporal[:, :, :, 0, 0], middle)


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


def temporal_energy_fraction(weight: torch.Tensor) -> torch.Tensor:
    """Share of each filter's energy that varies over time.

    ``||w - mean_t(w)||^2 / ||w||^2`` per filter of a ``(O, C, t, kh, kw)`` kernel: 0 for a
    kernel constant in time (every ``t = 1`` kernel, e.g. r2d's ``(1, 7, 7)``), 1 for one whose
    time slices sum to zero. NaN for 2-D kernels and all-zero filters.

    Args:
        weight: conv weights ``(O, C, [t,] kh, kw)``.

    Returns:
        ``(O,)`` float32 tensor.

    Raises:
        ValueError: if ``weight`` is not 4-D or 5-D.
    """
    _check_weight(weight)
    w = weight.detach().float().cpu()
    if w.ndim == 4:
        return torch.full((w.shape[0],), math.nan)
    energy = w.flatten(1).square().sum(dim=1)
    varying = (w - w.mean(dim=2, keepdim=True)).flatten(1).square().sum(dim=1)
    return torch.where(energy > 0, varying / energy.clamp_min(1e-30), math.nan)


def colour_split(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split RGB filters into their luminance and colour-opponent parts.

    At every tap the filter's RGB vector is projected onto the luminance axis
    ``(1, 1, 1) / sqrt(3)`` (the channel mean, repeated) and onto the plane orthogonal to it
    (the opponent part: the vector minus its mean; red-green and blue-yellow directions). The two
    parts are orthogonal, so their energies add up to the filter's.

    Args:
        weight: ``(O, 3, [t,] kh, kw)`` conv weights.

    Returns:
        ``(luminance, opponent, share)``: the two parts (shape of ``weight``) and each filter's
        luminance energy share ``||luminance||^2 / ||w||^2``, ``(O,)`` (NaN for an all-zero filter;
        1/3 on average for random filters).

    Raises:
        ValueError: if ``weight`` is not 4-D or 5-D with 3 input channels.
    """
    _check_weight(weight)
    if weight.shape[1] != 3:
        raise ValueError(f"colour_split needs 3 input channels (RGB), got {weight.shape[1]}")
    w = weight.detach().float().cpu()
    luminance = w.mean(dim=1, keepdim=True).expand_as(w).clone()
    opponent = w - luminance
    energy = w.flatten(1).square().sum(dim=1)
    share = luminance.flatten(1).square().sum(dim=1) / energy.clamp_min(1e-30)
    return luminance, opponent, torch.where(energy > 0, share, math.nan)


def weight_change(weight: torch.Tensor, init: torch.Tensor) -> tuple[float, torch.Tensor]:
    """How far training moved a kernel from its initial value.

    Args:
        weight: trained conv weights ``(O, C, [t,] kh, kw)``.
        init: the same kernel before training, same shape.

    Returns:
        ``(relative, per_filter)``: ``||W - W0|| / ||W0||`` over the whole kernel (Frobenius
        norms) and ``||w_i - w0_i|| / ||w0_i||`` per filter, ``(O,)`` (NaN where ``w0_i`` is 0).

    Raises:
        ValueError: if the shapes differ or are not conv weights.
    """
    _check_weight(weight)
    _check_weight(init)
    if weight.shape != init.shape:
        raise ValueError(
            f"weight {tuple(weight.shape)} and init {tuple(init.shape)} must have one shape"
        )
    w, w0 = weight.detach().float().cpu(), init.detach().float().cpu()
    delta = (w - w0).flatten(1).norm(dim=1)
    base = w0.flatten(1).norm(dim=1)
    total = float(base.square().sum().sqrt())
    relative = float(delta.square().sum().sqrt()) / total if total > 0 else math.nan
    return relative, torch.where(base > 0, delta / base.clamp_min(1e-30), math.nan)


def _check_weight(weight: object) -> None:
    if not isinstance(weight, torch.Tensor) or weight.ndim not in (4, 5):
        raise ValueError(
            f"weight must be (O, C, [t,] kh, kw), got {getattr(weight, 'shape', weight)}"
        )


def order_filters(table: pd.DataFrame, *, order_by: str = "l2_norm") -> list[int]:
    """Filter indices of one kernel's :func:`filter_stats` table, best first.

    Args:
        table: rows of one kernel, with ``filter`` and the criterion column.
        order_by: ``"l2_norm"`` or ``"temporal_energy_fraction"`` (descending; NaN last) or
            ``"index"`` (ascending channel). Ties keep the channel order.

    Returns:
        The ``filter`` values in rank order.

    Raises:
        ValueError: if ``order_by`` is not one of :data:`FILTER_ORDERS`.
    """
    check_choice("order_by", order_by, FILTER_ORDERS)
    if order_by == "index":
        return sorted(int(f) for f in table["filter"])
    ranked = table.sort_values(order_by, ascending=False, kind="stable", na_position="last")
    return [int(f) for f in ranked["filter"]]


def filter_stats(weight: torch.Tensor, *, duplicate_threshold: float = 0.95) -> pd.DataFrame:
    """Statistics of each filter of a conv weight ``(O, C, [t,] kh, kw)``.

    Args:
        weight: the conv weights.
        duplicate_threshold: cosine similarity from which two filters count as near-duplicates.

    Returns:
        DataFrame, one row per filter: filter, l2_norm, temporal_energy_fraction (see
        :func:`temporal_energy_fraction`), dominant_frequency (cycles per pixel of the strongest bin of
        the spatial power spectrum, 0 = DC), nearest_filter and max_cosine (the most similar
        other filter), near_duplicate (``max_cosine >= duplicate_threshold``), luminance_share
        (see :func:`colour_split`; NaN unless the kernel has 3 input channels).

    Raises:
        ValueError: if ``weight`` is not 4-D or 5-D.
    """
    _check_weight(weight)
    w = weight.detach().float().cpu()
    count = w.shape[0]
    flat = w.flatten(1)
    energy = flat.square().sum(dim=1)
    temporal = temporal_energy_fraction(w)
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
            "luminance_share": (
                colour_split(w)[2] if w.shape[1] == 3 else torch.full((count,), math.nan)
            ).tolist(),
        }
    )


def _stem_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found = stem_of(model)
    root, prefix = (found[1], found[0] + ".") if found is not None else (model, "")
    modules = [(prefix + n, m) for n, m in root.named_modules() if n]
    if not any(isinstance(m, _CONV_TYPES) for _, m in modules):
        where = "model.stem" if prefix else "the model"
        raise ValueError(f"no Conv2d/Conv3d module found in {where}")
    return modules


def _temporal_partner(
    modules: list[tuple[str, nn.Module]],
) -> tuple[int, int | None]:
    # Index of the first conv and, for a (2+1)D pair, of the temporal conv that follows it.
    convs = [i for i, (_, m) in enumerate(modules) if isinstance(m, _CONV_TYPES)]
    first_index = convs[0]
    if len(convs) < 2:
        return first_index, None
    first, second = modules[first_index][1], modules[convs[1]][1]
    chained = (
        isinstance(first, nn.Conv3d)
        and isinstance(second, nn.Conv3d)
        and first.kernel_size[0] == 1
        and second.kernel_size[0] > 1
        and second.kernel_size[1:] == (1, 1)
        and second.stride == (1, 1, 1)
        and first.groups == second.groups == 1
        and second.in_channels == first.out_channels
    )
    return first_index, convs[1] if chained else None


def _fold_between(
    between: list[tuple[str, nn.Module]], channels: int
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    # Per-channel eval-mode scale and shift of the BatchNorms between the convs, what was folded
    # and what was left out.
    scale, shift = torch.ones(channels), torch.zeros(channels)
    folded, left_out = [], []
    for name, module in between:
        if module.__class__ in (nn.Sequential, nn.ModuleList) or isinstance(module, nn.Identity):
            continue
        usable = (
            isinstance(module, _NORM_TYPES)
            and module.running_var is not None
            and module.num_features == channels
        )
        if not usable:
            left_out.append(f"{name} ({type(module).__name__})")
            continue
        with torch.no_grad():
            factor = (module.running_var.float().cpu() + module.eps).rsqrt()
            if module.weight is not None:
                factor = factor * module.weight.float().cpu()
            offset = -module.running_mean.float().cpu() * factor
            if module.bias is not None:
                offset = offset + module.bias.float().cpu()
        scale, shift = scale * factor, shift * factor + offset
        folded.append(f"{name} ({type(module).__name__})")
    return scale, shift, folded, left_out


def first_layer_filters(
    model: nn.Module, *, order_by: str = "l2_norm", duplicate_threshold: float = 0.95
) -> FirstLayerFilters:
    """The weights of the stem's first conv (the first conv in ``model.stem.modules()`` order).

    For (2+1)D stems, whose first conv is ``(1, k, k)`` and whose next conv is ``(t, 1, 1)`` on
    its output, the effective ``t x k x k`` kernel is returned too: spatial conv, then the
    eval-mode scale ``gamma / sqrt(running_var + eps)`` of the BatchNorm between them (whatever
    mode the model is in), then the temporal conv. This is the linear part of the pair: the
    ReLU between the convs is left out (``note`` says so) and the BatchNorm shift goes to
    ``effective_bias``.

    Args:
        model: a model with a ``.stem`` (any model: its first conv is used otherwise).
        order_by: how filters are ranked, one of :data:`FILTER_ORDERS` (default: descending L2
            norm of each kernel).
        duplicate_threshold: cosine similarity from which filters count as near-duplicates.

    Returns:
        A :class:`FirstLayerFilters` with the weights and the per-filter table (columns kernel,
        module, rank, then those of :func:`filter_stats`).

    Raises:
        TypeError: if ``model`` is not a module.
        ValueError: if there is no convolution or ``order_by`` is unknown.
    """
    check_model(model)
    check_choice("order_by", order_by, FILTER_ORDERS)
    modules = _stem_modules(model)
    first_index, partner_index = _temporal_partner(modules)
    name, first = modules[first_index]
    weight = first.weight.detach().float().cpu().clone()
    effective = effective_bias = partner = None
    note = ""
    kernels = [("conv", name, weight)]
    if partner_index is not None:
        partner, second = modules[partner_index]
        between = modules[first_index + 1 : partner_index]
        scale, shift, folded, left_out = _fold_between(between, weight.shape[0])
        temporal = second.weight.detach().float().cpu()
        effective = compose_2plus1d(weight, temporal, scale=scale)
        if first.bias is not None:
            shift = shift + scale * first.bias.detach().float().cpu()
        effective_bias = temporal.sum(dim=(2, 3, 4)) @ shift
        if second.bias is not None:
            effective_bias = effective_bias + second.bias.detach().float().cpu()
        note = (
            f"effective kernel = {partner} o "
            + "".join(f"scale of {f}, eval mode, o " for f in folded)
            + f"{name}: the linear part"
            + (f"; left out: {', '.join(left_out)}, not linear" if left_out else "")
            + ("; the BatchNorm shift is in effective_bias" if folded else "")
        )
        kernels.append(("effective", f"{partner} o {name}", effective))
    tables, order = [], ()
    for kind, label, kernel in kernels:
        table = filter_stats(kernel, duplicate_threshold=duplicate_threshold)
        ranked = order_filters(table, order_by=order_by)
        table.insert(0, "rank", table["filter"].map({f: r + 1 for r, f in enumerate(ranked)}))
        table.insert(0, "module", label)
        table.insert(0, "kernel", kind)
        tables.append(table)
        order = tuple(ranked)
    return FirstLayerFilters(
        module=name,
        weight=weight,
        effective=effective,
        effective_module=partner,
        table=pd.concat(tables, ignore_index=True),
        effective_bias=effective_bias,
        note=note,
        order_by=order_by,
        order=order,
    )


# Study integration: how this probe runs in a study cell and what it adds to the report.

# per-filter summary metrics: metric -> filter_stats column (mean over the shown kernel's filters)
_FILTER_METRICS = {
    "filter_temporal_energy": "temporal_energy_fraction",
    "filter_luminance_share": "luminance_share",
}


def _kernel_metrics(filters: FirstLayerFilters) -> dict[str, float]:
    rows = filters.table[filters.table["kernel"] == filters.kernel_name]
    return {name: float(rows[column].mean()) for name, column in _FILTER_METRICS.items()}


def _filters_run(context: CellContext) -> ProbeOutput:
    filters = first_layer_filters(context.model)
    table = filters.table.assign(state="trained")
    output = ProbeOutput(metrics=_kernel_metrics(filters))
    output.arrays["weight"] = filters.weight.numpy().astype(np.float32)
    if filters.effective is not None:
        output.arrays["effective"] = filters.effective.numpy().astype(np.float32)
    init_model = context.init_model
    if init_model is not None:
        init = first_layer_filters(init_model)
        for name, value in _kernel_metrics(init).items():
            output.metrics[f"{name}_init"] = value
        output.metrics["filter_rel_change"], _ = weight_change(filters.kernel, init.kernel)
        change = []
        for kind, trained, before in (
            ("conv", filters.weight, init.weight),
            ("effective", filters.effective, init.effective),
        ):
            if trained is not None and before is not None:
                change.append(pd.Series(weight_change(trained, before)[1].tolist(), name=kind))
        table["rel_change"] = np.nan
        for series in change:
            rows = table.index[table["kernel"] == series.name]
            table.loc[rows, "rel_change"] = series.to_numpy()[table.loc[rows, "filter"]]
        table = pd.concat([table, init.table.assign(state="init")], ignore_index=True)
        output.arrays["weight_init"] = init.weight.numpy().astype(np.float32)
        if init.effective is not None:
            output.arrays["effective_init"] = init.effective.numpy().astype(np.float32)
    output.tables["filters"] = table.to_dict(orient="records")
    return output


def _filters_figures(view: StudyView) -> list[FigureSpec]:
    from stemlab.probes.figures import plot_filter_change, plot_filter_grid

    specs = []
    for _, cell in view.first_seed_cells().iterrows():
        arrays = view.arrays(cell["key"])
        factorised = "filters.effective" in arrays
        name = "filters.effective" if factorised else "filters.weight"
        if name not in arrays:
            continue
        title = view.label(cell["backbone"], cell["stem"])
        seed = int(cell["seed"])
        kernel_text = (
            "the (2+1)D stem as its composed t x k x k kernel with the eval-mode BN scale folded "
            "in (the ReLU between the convolutions is left out)"
            if factorised
            else "the first convolution's weights"
        )
        tensor = torch.from_numpy(arrays[name].astype("float32"))
        init = arrays.get(f"{name}_init")
        if init is None:  # a store from before init baselines: the trained filters alone
            caption = (
                f"First-layer filters of {title} after training (seed {seed}), ordered by L2 "
                f"norm (largest first); {kernel_text}."
            )
            make = partial(plot_filter_grid, tensor, title=title)
        else:
            before = torch.from_numpy(init.astype("float32"))
            relative, _ = weight_change(tensor, before)
            caption = (
                f"First-layer filters of {title} (seed {seed}): trained W, the change W - W0 "
                f"from the same model before training, and W's luminance and colour-opponent "
                f"parts with the luminance share of each filter's energy; filters ranked by "
                f"||w - w0|| (largest change first); ||W - W0|| / ||W0|| = {relative:.2f}; "
                f"{kernel_text}."
            )
            make = partial(plot_filter_change, tensor, before, title=title)
        specs.append(FigureSpec(f"filters_{slug(title)}", caption, make))
    return specs


def _filters_findings(view: StudyView) -> list[str]:
    cells = view.trained()
    if cells.empty or "filter_rel_change" not in cells:
        return []
    cells = cells.dropna(subset=["filter_rel_change"])
    if cells.empty:
        return []
    arms = cells.assign(arm=view.labels(cells))
    lines = []
    parts = []
    for arm, rows in arms.groupby("arm", sort=False):
        values = rows["filter_rel_change"].to_numpy(float)
        spread = f" ({values.min():.2f}-{values.max():.2f})" if len(values) > 1 else ""
        parts.append(f"{arm} {values.mean():.2f}{spread}")
    seeds = int(arms.groupby("arm")["seed"].nunique().min())
    lines.append(
        "Training moved the stem's first convolution (composed kernel for (2+1)D) by "
        "||W - W0|| / ||W0|| = " + "; ".join(parts) + f" (mean over {seeds} seed(s), range)."
    )
    if view.compare is None or view.holm is None:
        return lines
    for metric, what in (
        ("filter_luminance_share", "luminance share of first-layer filter energy"),
        ("filter_temporal_energy", "temporal energy fraction of first-layer filters"),
    ):
        if f"{metric}_init" not in arms or arms[[metric, f"{metric}_init"]].isna().all().any():
            continue
        tests, at_init = [], []
        for arm, rows in arms.groupby("arm", sort=False):
            rows = rows.dropna(subset=[metric, f"{metric}_init"])
            if len(rows) < 2:
                continue
            long = pd.concat(
                [
                    pd.DataFrame(
                        {"state": "init", "seed": rows["seed"], "value": rows[f"{metric}_init"]}
                    ),
                    pd.DataFrame({"state": "trained", "seed": rows["seed"], "value": rows[metric]}),
                ],
                ignore_index=True,
            )
            row = view.compare(long, metric="value", by="state", baseline="init").iloc[0]
            tests.append((arm, row))
            at_init.append(f"{arm} {rows[f'{metric}_init'].mean():.2f}")
        if not tests:
            continue
        adjusted = view.holm([row["p_value"] for _, row in tests])
        described = []
        for (arm, row), p_adj in zip(tests, adjusted):
            if not np.isfinite(row["ci_low"]):
                described.append(f"{arm} {row['diff']:+.3f} (no test possible: no spread)")
                continue
            verdict = "" if p_adj < 0.05 else ", not distinguishable from init"
            described.append(
                f"{arm} {row['diff']:+.3f} (95% CI {row['ci_low']:+.3f} to {row['ci_high']:+.3f}, "
                f"p_adj {p_adj:.2g}{verdict})"
            )
        lines.append(
            f"Trained minus init, {what} (paired over seeds, Holm over {len(tests)} arms): "
            + "; ".join(described)
            + f". At init it is already: {'; '.join(at_init)}."
        )
    return lines


register_probe(
    StudyProbe(
        name="filters",
        description="the stem's first-layer filters (composed kernel for (2+1)D stems), "
        "trained and at init",
        run=_filters_run,
        tables=("filters",),
        summary=(
            SummaryColumn(
                "filter_temporal_energy",
                "share of first-layer filter energy that varies over time (effective kernel)",
            ),
            SummaryColumn(
                "filter_temporal_energy_init", "filter_temporal_energy of the model before training"
            ),
            SummaryColumn(
                "filter_luminance_share",
                "share of first-layer filter energy on the luminance axis (1,1,1)/sqrt(3); "
                "1/3 for random filters",
            ),
            SummaryColumn(
                "filter_luminance_share_init", "filter_luminance_share of the model before training"
            ),
            SummaryColumn(
                "filter_rel_change",
                "||W - W0|| / ||W0|| of the stem's first conv (composed kernel for (2+1)D): how far "
                "training moved it",
            ),
        ),
        figures=_filters_figures,
        findings=_filters_findings,
        order=70,
    )
)
