"""Per-module FLOPs and parameters from one fvcore trace, with handles for video operators.

fvcore counts convolutions, matrix products, normalisation and a few 2-D operators. Video nets
also run 3-D pooling, residual adds, activations, 3-D upsampling and recurrent layers; fvcore
leaves those uncounted, so this module registers its own handles for them. Every operator still
without a handle is listed in the ``unsupported_ops`` column of the table, never dropped silently.
One fused multiply-add counts as one flop.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import torch
from torch import nn

from stemlab.probes._modules import check_model, model_device

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

__all__ = ["FLOP_FAMILIES", "flop_handles", "flops_table"]

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
) -> pd.DataFrame:
    """FLOPs and parameters of every module, from one fvcore trace of ``model(x)``.

    The model is traced in eval mode under ``torch.no_grad()`` (inference FLOPs); its mode is
    restored afterwards. ``x`` is moved to the model's device; the model is not moved.

    Args:
        model: the model to count.
        x: the input tensor, or a tuple of positional inputs.
        handles: extra or replacement fvcore handles, ``{"aten::op": handle}``; a handle may
            return a number (counted in the op's own ``flops_<op>`` column) or a
            ``Counter({family: flops})``.

    Returns:
        DataFrame, one row per module in ``named_modules()`` order, the model itself first as
        module ``""``: module, type, depth, params (parameters of the module and its children),
        flops (one FMA = one flop), ``flops_<family>`` for :data:`FLOP_FAMILIES` (plus any family
        the extra handles report), and unsupported_ops (operators run inside the module that no
        handle counts, as ``"aten::op xN, ..."``; empty when everything was counted).

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
    was_training = model.training
    hooks_before = _hook_ids(model)
    try:
        model.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            by_module = analysis.by_module_and_operator()
    finally:
        model.train(was_training)
        _remove_new_hooks(model, hooks_before)

    families = list(FLOP_FAMILIES)
    for counts in by_module.values():
        families.extend(f for f in counts if f not in families)
    rows = []
    for name, module in model.named_modules():
        counts = by_module.get(name, Counter())
        rows.append(
            {
                "module": name,
                "type": type(module).__name__,
                "depth": name.count(".") + 1 if name else 0,
                "params": sum(p.numel() for p in module.parameters()),
                "flops": int(sum(counts.values())),
                **{f"flops_{f}": int(counts.get(f, 0)) for f in families},
                "unsupported_ops": _format_unsupported(analysis.unsupported_ops(name)),
            }
        )
    return pd.DataFrame(rows)
