"""Per-module FLOPs and parameters in the field's two conventions, side by side.

Multiply-adds (columns ``flops`` and ``flops_<family>``) come from one fvcore trace, with handles
for video operators; torchvision's published GFLOPs are in this convention. FLOPs (two per
multiply-add, columns ``counter_flops_fwd`` and ``counter_flops_fwd_bwd``) come from
``torch.utils.flop_counter.FlopCounterMode``, for the forward pass and for forward + backward (the
cost of one training step), run on a copy of the model on the meta device (no arithmetic done).

fvcore counts convolutions, matrix products, normalisation and a few 2-D operators. Video nets
also run 3-D pooling, residual adds, activations, 3-D upsampling and recurrent layers; fvcore
leaves those uncounted, so this module registers its own handles for them. Every operator still
without a handle is listed in the ``unsupported_ops`` column of the table, never dropped silently.
One fused multiply-add counts as one flop in the fvcore columns. FlopCounterMode counts only
convolutions, matrix products and attention; the operators it ran without counting are listed in
``counter_uncounted_ops``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from stemlab._modes import preserved_modes
from stemlab.probes._modules import check_model, model_device
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

with warnings.catch_warnings():
    # fvcore scripts a loss function at import time, which recent torch flags as deprecated.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import (
        addmm_flop_jit,
        batchnorm_flop_jit,
        bmm_flop_jit,
        conv_flop_jit,
        einsum_flop_jit,
        get_shape,
        linear_flop_jit,
        matmul_flop_jit,
        norm_flop_counter,
    )

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CONVENTIONS", "FLOP_FAMILIES", "counter_flops", "flop_handles", "flops_table"]

Handle = Callable[[list[Any], list[Any]], Any]

FLOP_FAMILIES: tuple[str, ...] = (
    "conv",
    "linear",
    "matmul",
    "norm",
    "pool",
    "elementwise",
    "activation",
    "upsample",
    "rnn",
)
"""Operator families; :func:`flops_table` has one ``flops_<family>`` column for each."""


def _numel(value: Any) -> int:
    shape = get_shape(value)
    return math.prod(shape) if shape is not None else 0


def _int_list(value: Any) -> list[int]:
    constant = value.toIValue()
    if constant is not None:
        return [int(constant)] if isinstance(constant, int) else [int(v) for v in constant]
    return [int(v.toIValue()) for v in value.node().inputs()]


def _per_output(scale: int) -> Handle:
    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        # 0-dim results are shape arithmetic recorded by the tracer, not model computation.
        shape = get_shape(outputs[0])
        return scale * math.prod(shape) if shape else 0

    return handle


def _per_input(inputs: list[Any], outputs: list[Any]) -> int:
    return _numel(inputs[0])


def _pool(inputs: list[Any], outputs: list[Any]) -> int:
    # One compare or add per kernel element and output element; a 1-element kernel list means
    # the same size along every pooled dimension.
    kernel = _int_list(inputs[1])
    pooled_dims = len(get_shape(outputs[0]) or ()) - 2
    volume = math.prod(kernel) if len(kernel) > 1 else kernel[0] ** max(pooled_dims, 1)
    return volume * _numel(outputs[0])


def _rnn(inputs: list[Any], outputs: list[Any]) -> int:
    # aten::lstm/gru/rnn_* come in two overloads: (input, hx, params, has_biases, ...) and the
    # packed-sequence one (data, batch_sizes, hx, params, ...). Every step of every sequence
    # multiplies each gate weight matrix once: flops = steps x batch x weight elements.
    packed = inputs[3].type().kind() == "ListType"
    params = inputs[3] if packed else inputs[2]
    weights = [get_shape(v) for v in params.node().inputs()]
    weight_elements = sum(math.prod(s) for s in weights if s is not None and len(s) == 2)
    shape = get_shape(inputs[0]) or []
    steps_times_batch = shape[0] if packed else math.prod(shape[:2])
    return steps_times_batch * weight_elements


def _in_family(family: str, handle: Handle) -> Handle:
    def counted(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        result = handle(inputs, outputs)
        total = sum(result.values()) if isinstance(result, Mapping) else result
        return Counter({family: int(total)})

    return counted


def flop_handles() -> dict[str, Handle]:
    """fvcore handles for every operator stemlab counts, each reporting its family.

    Returns:
        ``{"aten::op": handle}``; a handle returns ``Counter({family: flops})``.
    """
    families: dict[str, dict[str, Handle]] = {
        "conv": {"aten::_convolution": conv_flop_jit},
        "linear": {"aten::addmm": addmm_flop_jit, "aten::linear": linear_flop_jit},
        "matmul": {
            "aten::bmm": bmm_flop_jit,
            "aten::einsum": einsum_flop_jit,
            "aten::matmul": matmul_flop_jit,
            "aten::mm": matmul_flop_jit,
        },
        "norm": {
            "aten::batch_norm": batchnorm_flop_jit,
            "aten::group_norm": norm_flop_counter(2),
            "aten::layer_norm": norm_flop_counter(2),
            "aten::instance_norm": norm_flop_counter(1),
        },
        "pool": {
            **{f"aten::{kind}_pool{d}d": _pool for kind in ("max", "avg") for d in (1, 2, 3)},
            **{
                f"aten::adaptive_{kind}_pool{d}d": _per_input
                for kind in ("max", "avg")
                for d in (1, 2, 3)
            },
            "aten::mean": _per_input,
            "aten::sum": _per_input,
            "aten::amax": _per_input,
        },
        "elementwise": {
            f"aten::{op}{suffix}": _per_output(1)
            for op in ("add", "sub", "mul", "div", "rsub")
            for suffix in ("", "_")
        },
        "activation": {
            f"aten::{op}{suffix}": _per_output(1)
            for op in (
                "relu",
                "relu6",
                "leaky_relu",
                "elu",
                "gelu",
                "silu",
                "sigmoid",
                "tanh",
                "hardtanh",
                "hardsigmoid",
                "hardswish",
                "clamp",
                "clamp_min",
                "softmax",
                "log_softmax",
            )
            for suffix in ("", "_")
        },
        "upsample": {
            "aten::upsample_nearest1d": _per_output(1),
            "aten::upsample_nearest2d": _per_output(1),
            "aten::upsample_nearest3d": _per_output(1),
            "aten::upsample_linear1d": _per_output(2),
            "aten::upsample_bilinear2d": _per_output(4),
            "aten::upsample_trilinear3d": _per_output(8),
            "aten::upsample_bicubic2d": _per_output(16),
            "aten::grid_sampler": _per_output(4),
        },
        "rnn": {f"aten::{op}": _rnn for op in ("lstm", "gru", "rnn_tanh", "rnn_relu")},
    }
    return {
        op: _in_family(family, handle)
        for family, handles in families.items()
        for op, handle in handles.items()
    }


def _format_unsupported(ops: Counter[str]) -> str:
    return ", ".join(f"{op} x{count}" for op, count in sorted(ops.items()))


CONVENTIONS: dict[str, str] = {
    "flops": "multiply-adds (fvcore; one fused multiply-add = one flop; torchvision's GFLOPs)",
    "counter_flops_fwd": "FLOPs of the forward pass (FlopCounterMode; 2 per multiply-add)",
    "counter_flops_fwd_bwd": (
        "FLOPs of forward + backward, gradients of the trainable parameters (FlopCounterMode; "
        "the cost of one training step)"
    ),
}
"""What each FLOP column of :func:`flops_table` counts (also in the table's ``attrs``)."""

# Operators that move, create or reshape data without arithmetic: not listed as uncounted.
_NO_ARITHMETIC = frozenset(
    {
        "_to_copy",
        "cat",
        "clone",
        "constant_pad_nd",
        "contiguous",
        "copy_",
        "detach",
        "empty",
        "empty_like",
        "empty_strided",
        "fill_",
        "full",
        "full_like",
        "new_empty",
        "new_empty_strided",
        "new_zeros",
        "ones_like",
        "scalar_tensor",
        "stack",
        "zero_",
        "zeros",
        "zeros_like",
    }
)


class _UncountedOps(TorchDispatchMode):
    """Records, per module, the arithmetic operators FlopCounterMode has no formula for."""

    def __init__(self, counter: FlopCounterMode, root: str) -> None:
        super().__init__()
        self.counter = counter
        self.root = root
        self.ops: dict[str, Counter[str]] = {}

    def _module(self, tracked: str) -> str | None:
        # "Global" holds the whole run; the root module's own entry can miss backward ops
        if tracked == "Global":
            return ""
        prefix = self.root + "."
        return tracked[len(prefix) :] if tracked.startswith(prefix) else None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        packet = func.overloadpacket
        schema = func._schema
        is_view = any(r.alias_info is not None for r in schema.returns) and not any(
            r.alias_info is not None and r.alias_info.is_write for r in schema.returns
        )
        name = schema.name.split("::")[-1]
        if packet not in self.counter.flop_registry and not is_view and name not in _NO_ARITHMETIC:
            for tracked in set(self.counter.mod_tracker.parents):
                module = self._module(tracked)
                if module is not None:
                    self.ops.setdefault(module, Counter())[f"aten::{name}"] += 1
        return func(*args, **(kwargs or {}))


def _on_meta(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[nn.Module, tuple]:
    """A copy of ``model`` and ``inputs`` on the meta device (shapes only, no storage)."""
    meta = copy.deepcopy(model).to("meta")
    return meta, tuple(t.to("meta") for t in inputs)


def counter_flops(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], *, backward: bool
) -> tuple[dict[str, int], dict[str, Counter[str]]]:
    """FlopCounterMode's FLOPs per module for ``model(*inputs)`` (and the backward pass).

    The model runs in eval mode, on a copy on the meta device where every operator has a meta
    kernel (else on its own device under ``no_grad`` / with ``torch.autograd.grad``, leaving
    ``.grad`` and the buffers untouched). The backward pass differentiates the output's sum with respect to the trainable parameters (the input when there are none).

    Args:
        model: the model.
        inputs: positional inputs.
        backward: count forward + backward instead of the forward pass.

    Returns:
        ``({module: flops}, {module: Counter(uncounted operator -> calls)})``, modules named as in
        ``named_modules()`` (the model itself ``""``).
    """
    try:
        run_model, run_inputs = _on_meta(model, inputs)
        return _count(run_model, run_inputs, backward=backward)
    except (NotImplementedError, RuntimeError):
        saved = [b.detach().clone() for b in model.buffers()]
        try:
            return _count(model, inputs, backward=backward)
        finally:
            with torch.no_grad():
                for buffer, value in zip(model.buffers(), saved):
                    buffer.copy_(value)


def _count(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], *, backward: bool
) -> tuple[dict[str, int], dict[str, Counter[str]]]:
    from stemlab.probes._modules import first_tensor

    was_training = model.training
    counter = FlopCounterMode(display=False)
    root = type(model).__name__
    uncounted = _UncountedOps(counter, root)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        model.eval()
        with counter, torch.enable_grad():
            if backward:
                sources = params or [t.detach().requires_grad_(True) for t in inputs[:1]]
                run_inputs = inputs if params else (sources[0], *inputs[1:])
                with uncounted:
                    output = first_tensor(model(*run_inputs))
                if output is None:
                    raise TypeError("the model output holds no tensor to differentiate")
                loss = output.float().sum()  # the loss is not the model's: not listed
                with uncounted:
                    torch.autograd.grad(loss, sources, allow_unused=True)
            else:
                with torch.no_grad(), uncounted:
                    model(*inputs)
    finally:
        model.train(was_training)
    flops = {}
    for tracked, counts in counter.get_flop_counts().items():
        module = uncounted._module(tracked)
        if module is not None:
            flops[module] = int(sum(counts.values()))
    return flops, uncounted.ops


_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
)


def _hook_ids(model: nn.Module) -> dict[nn.Module, set[int]]:
    """The hook ids each module holds now."""
    return {
        module: {key for attr in _HOOK_DICTS for key in getattr(module, attr, {})}
        for module in model.modules()
    }


def _remove_new_hooks(model: nn.Module, before: dict[nn.Module, set[int]]) -> None:
    """Remove every hook added since ``before`` (fvcore leaves its tracing hooks when the
    traced forward raises)."""
    for module in model.modules():
        kept = before.get(module, set())
        for attr in _HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if hooks:
                for key in [k for k in hooks if k not in kept]:
                    del hooks[key]


def flops_table(
    model: nn.Module,
    x: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    handles: Mapping[str, Handle] | None = None,
    counter: bool = True,
) -> pd.DataFrame:
    """Multiply-adds (fvcore) and FLOPs (FlopCounterMode) of every module of ``model(x)``.

    The model is traced in eval mode under ``torch.no_grad()`` (inference multiply-adds); its
    mode is restored afterwards. ``x`` is moved to the model's device; the model is not moved.
    FlopCounterMode runs on a meta-device copy (see :func:`counter_flops`). The table's
    ``attrs["conventions"]`` is :data:`CONVENTIONS`.

    Args:
        model: the model to count.
        x: the input tensor, or a tuple of positional inputs.
        handles: extra or replacement fvcore handles, ``{"aten::op": handle}``; a handle may
            return a number (counted in the op's own ``flops_<op>`` column) or a
            ``Counter({family: flops})``.
        counter: also count with FlopCounterMode (forward, and forward + backward).

    Returns:
        DataFrame, one row per module in ``named_modules()`` order, the model itself first as
        module ``""``: module, type, depth, params (parameters of the module and its children),
        flops (one FMA = one flop), ``flops_<family>`` for :data:`FLOP_FAMILIES` (plus any family
        the extra handles report), and unsupported_ops (operators run inside the module that no
        handle counts, as ``"aten::op xN, ..."``; empty when everything was counted); with
        ``counter``: counter_flops_fwd, counter_flops_fwd_bwd (two flops per multiply-add,
        convolutions, matrix products and attention only) and counter_uncounted_ops (the
        arithmetic operators of the forward + backward run FlopCounterMode has no formula for).

    Raises:
        TypeError: if ``model`` is not a module or ``x`` is not a tensor or tuple of tensors.
        Exception: whatever the model's forward raises; every hook the trace added is removed
            first, and the model's mode is restored.
    """
    check_model(model)
    inputs = (x,) if isinstance(x, torch.Tensor) else x
    if not isinstance(inputs, tuple) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise TypeError(f"x must be a tensor or a tuple of tensors, got {type(x).__name__}")
    device = model_device(model)
    inputs = tuple(t.to(device) for t in inputs)
    all_handles = {**flop_handles(), **(handles or {})}
    analysis = (
        FlopCountAnalysis(model, inputs)
        .clear_op_handles()
        .set_op_handle(**all_handles)
        .unsupported_ops_warnings(False)
        .uncalled_modules_warnings(False)
    )
    hooks_before = _hook_ids(model)
    try:
        with preserved_modes(model), torch.no_grad(), warnings.catch_warnings():
            model.eval()
            warnings.simplefilter("ignore", FutureWarning)
            by_module = analysis.by_module_and_operator()
    finally:
        _remove_new_hooks(model, hooks_before)

    if counter:
        forward, _ = counter_flops(model, inputs, backward=False)
        training, uncounted = counter_flops(model, inputs, backward=True)
    families = list(FLOP_FAMILIES)
    for counts in by_module.values():
        families.extend(f for f in counts if f not in families)
    rows = []
    for name, module in model.named_modules():
        counts = by_module.get(name, Counter())
        row = {
            "module": name,
            "type": type(module).__name__,
            "depth": name.count(".") + 1 if name else 0,
            "params": sum(p.numel() for p in module.parameters()),
            "flops": int(sum(counts.values())),
            **{f"flops_{f}": int(counts.get(f, 0)) for f in families},
            "unsupported_ops": _format_unsupported(analysis.unsupported_ops(name)),
        }
        if counter:
            row["counter_flops_fwd"] = forward.get(name, 0)
            row["counter_flops_fwd_bwd"] = training.get(name, 0)
            row["counter_uncounted_ops"] = _format_unsupported(uncounted.get(name, Counter()))
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["conventions"] = dict(CONVENTIONS)
    return table


# Study integration: how this probe runs in a study cell and what it adds to the report.


def _stem_geometry(model: torch.nn.Module) -> dict[str, Any]:
    stem = model.stem
    convs = [m for m in stem.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    kernel = "+".join("x".join(str(k) for k in c.kernel_size) for c in convs)
    stride = getattr(stem, "stride", None)
    return {
        "stem_kernel": kernel,
        "stem_stride": "x".join(str(s) for s in stride) if stride is not None else "",
        "stem_width": int(stem.out_channels),
        "stem_params": int(sum(p.numel() for p in stem.parameters())),
    }


def _flops_run(context: CellContext) -> ProbeOutput:
    from stemlab.probes.flops import flops_table

    model = context.model
    if context.kind == "trained":
        table = flops_table(model, context.inputs[:1].to(context.device), counter=False)
        total = float(table.loc[table["module"] == "", "flops"].iloc[0])
        return ProbeOutput(metrics={"train_gflops": total / 1e9})
    table = flops_table(model, context.inputs)
    total = table[table["module"] == ""].iloc[0]
    top = table[table["depth"] == 1].set_index("module")["flops"]
    stages = [info["module"] for info in getattr(model, "feature_info", [])[1:]]
    gflops = float(total["flops"]) / 1e9
    stem_gflops = float(top.get("stem", 0.0)) / 1e9
    metrics = {
        "params": int(total["params"]),
        "gflops": gflops,
        "gflops_conv_linear": float(total["flops_conv"] + total["flops_linear"]) / 1e9,
        "stem_gflops": stem_gflops,
        "downstream_gflops": gflops - stem_gflops,
        "first_stage_gflops": float(top.get(stages[0], math.nan)) / 1e9 if stages else None,
        "unsupported_ops": str(total.get("unsupported_ops", "") or ""),
        "counter_gflops_fwd": float(total["counter_flops_fwd"]) / 1e9,
        "counter_gflops_fwd_bwd": float(total["counter_flops_fwd_bwd"]) / 1e9,
        "counter_uncounted_ops": str(total.get("counter_uncounted_ops", "") or ""),
        **_stem_geometry(model),
    }
    return ProbeOutput(metrics=metrics, tables={"flops": table.to_dict(orient="records")})


def plot_flops_by_module(rows: pd.DataFrame, *, group: str = "group") -> Figure:
    """Horizontal stacked GFLOPs (left) and parameters (right) per top-level module and group."""
    frame = rows[rows["depth"] == 1]
    modules = list(dict.fromkeys(frame["module"]))
    groups = list(dict.fromkeys(frame[group]))
    figure = new_figure(11.0, 0.42 * len(groups) + 1.8)
    axes = figure.subplots(1, 2, sharey=True)
    colors = {m: f"C{i % 10}" for i, m in enumerate(modules)}
    for ax, column, scale, label in (
        (axes[0], "flops", 1e9, "GFLOPs (one FMA = one flop)"),
        (axes[1], "params", 1e6, "parameters (millions)"),
    ):
        table = frame.pivot_table(index=group, columns="module", values=column, aggfunc="sum")
        table = table.reindex(index=groups, columns=modules).fillna(0) / scale
        left = np.zeros(len(groups))
        for module in modules:
            values = table[module].to_numpy()
            ax.barh(range(len(groups)), values, left=left, color=colors[module], label=module)
            left += values
        ax.set_xlim(0, left.max() * 1.05 if len(left) and left.max() > 0 else 1)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(groups)), groups, fontsize=8)
    axes[0].invert_yaxis()
    figure.legend(
        *axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8, title="module"
    )
    return figure


def _flops_figures(view: StudyView) -> list[FigureSpec]:
    table = view.tables.get("flops")
    if table is None or table.empty:
        return []
    rows = table.assign(group=[f"{b}/{s}" for b, s in zip(table["backbone"], table["stem"])])
    if rows["backbone"].nunique() == 1:
        rows["group"] = rows["stem"]
    backbones = ", ".join(sorted(rows["backbone"].unique()))
    return [
        FigureSpec(
            "flops_breakdown",
            f"GFLOPs and parameters per top-level module of the full-size profiling models "
            f"({backbones}, random weights) at the profiling input.",
            lambda: plot_flops_by_module(rows),
        )
    ]


CONVENTION = (
    "FLOPs are counted by fvcore with one fused multiply-add = one flop: convolutions and linear "
    "layers exactly as torchvision's published GFLOPs; batch norm, activations, pooling and "
    "residual adds by fvcore-style per-element conventions (a small share of the total). "
    "`counter_gflops_*` are torch.utils.flop_counter's FLOPs (two per multiply-add, "
    "convolutions and matrix products only), for the forward pass and for one training step."
)


def _flops_findings(view: StudyView) -> list[str]:
    summary = view.summary
    if "gflops" not in summary or summary["gflops"].isna().all():
        return []
    rows = summary.dropna(subset=["gflops"])
    cheap, dear = rows.loc[rows["gflops"].idxmin()], rows.loc[rows["gflops"].idxmax()]

    def name(row: pd.Series) -> str:
        profiled = row.get("profile_backbone") or row["backbone"]
        return f"`{profiled}` with `{row['stem']}`"

    lines = [
        f"Profiled at full size ({view.profile_text()}), the {len(rows)} "
        f"(backbone, stem) rows span {cheap['gflops']:.2f} GFLOPs ({name(cheap)}) to "
        f"{dear['gflops']:.2f} GFLOPs ({name(dear)}), and {rows['params'].min() / 1e6:.2f} M to "
        f"{rows['params'].max() / 1e6:.2f} M parameters. {CONVENTION}"
    ]
    baseline = view.baseline
    if baseline is not None and "stem_gflops" in rows and baseline in set(rows["stem"]):
        parts = []
        for _, group in rows.groupby("backbone", sort=False):
            base = group[group["stem"] == baseline]
            if base.empty:
                continue
            base = base.iloc[0]
            for _, row in group[group["stem"] != baseline].iterrows():
                d_stem = row["stem_gflops"] - base["stem_gflops"]
                d_down = row["downstream_gflops"] - base["downstream_gflops"]
                # float noise of an unchanged downstream must not print as "-0.00"
                d_stem, d_down = (0.0 if abs(d) < 0.005 else d for d in (d_stem, d_down))
                parts.append(
                    f"{row['stem']} {row['gflops'] - base['gflops']:+.2f} "
                    f"(stem {d_stem:+.2f}, downstream {d_down:+.2f})"
                )
        if parts:
            lines.append(
                f"Cost of each stem change against `{baseline}`, in GFLOPs at the profiling input, "
                f"split into the stem itself and what it adds after the stem (a wider stem makes "
                f"the first stage read more channels): {'; '.join(parts)}."
            )
    return lines


register_probe(
    StudyProbe(
        name="flops",
        description=(
            "multiply-adds (fvcore; one FMA = one flop) and FlopCounterMode FLOPs "
            "(forward, forward+backward) and parameters per module"
        ),
        run=_flops_run,
        runs_on=frozenset({"trained", "profile"}),
        tables=("flops",),
        summary=(
            SummaryColumn("params", "parameters of the full-size profiling model", "profile"),
            SummaryColumn(
                "gflops", "GFLOPs of the profiling model at the profiling input", "profile"
            ),
            SummaryColumn(
                "gflops_conv_linear",
                "GFLOPs of its convolutions and linear layers only (torchvision's convention)",
                "profile",
            ),
            SummaryColumn(
                "counter_gflops_fwd",
                "GFLOPs of the profiling model's forward pass in FlopCounterMode's convention "
                "(2 flops per multiply-add; convolutions, matrix products and attention only)",
                "profile",
            ),
            SummaryColumn(
                "counter_gflops_fwd_bwd",
                "GFLOPs of one training step (forward + backward) of the profiling model, "
                "FlopCounterMode's convention",
                "profile",
            ),
            SummaryColumn("stem_gflops", "GFLOPs of the stem alone (profiling model)", "profile"),
            SummaryColumn(
                "downstream_gflops", "GFLOPs after the stem (profiling model)", "profile"
            ),
            SummaryColumn("stem_kernel", "kernel(s) of the stem's convolutions", "profile"),
            SummaryColumn("stem_stride", "total stride of the stem (t x h x w)", "profile"),
            SummaryColumn("stem_width", "stem output channels at full size", "profile"),
            SummaryColumn("stem_params", "parameters of the stem at full size", "profile"),
            SummaryColumn(
                "train_gflops",
                "GFLOPs of the trained CPU-scale model on one training clip",
            ),
        ),
        figures=_flops_figures,
        findings=_flops_findings,
        order=10,
    )
)
