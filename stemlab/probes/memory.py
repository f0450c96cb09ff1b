"""Training memory: the bytes autograd saves for backward, per module and stage, and the peak.

Every tensor an operator saves for its backward pass goes through the pack hook of
``torch.autograd.graph.saved_tensors_hooks``; this module attributes it to the innermost module
whose forward was running (forward pre/post hooks keep the stack) and counts each storage once
(an in-place ReLU saves the storage its batch norm wrote, views share their base's storage).
Parameters and buffers saved by an operator (a convolution's weight, batch norm's running
statistics) are counted apart: they are in memory whatever the batch size.

The peak of one training step is ``torch.cuda.max_memory_allocated`` on CUDA. On other devices
there is no allocator statistic, and the saved-tensor total stands in for it, marked as an
estimate (it leaves out parameters, gradients, optimizer state and short-lived temporaries).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from stemlab.probes._modules import check_model, first_tensor, model_device
from stemlab.probes.contract import (
    CellContext,
    ProbeOutput,
    StudyProbe,
    StudyView,
    SummaryColumn,
    register_probe,
)

__all__ = ["MIB", "saved_tensor_memory", "stage_memory", "training_step_memory"]

MIB = 2**20
"""Bytes in a mebibyte: the unit of the probe's metrics."""

CPU_ESTIMATE = (
    "saved-tensor total (estimate: no allocator statistics off CUDA; leaves out parameters, "
    "gradients, optimizer state and temporaries)"
)


def _storage_key(tensor: torch.Tensor) -> tuple[str, int, int]:
    storage = tensor.untyped_storage()
    return (str(tensor.device), storage.data_ptr(), storage.nbytes())


class _SavedTensors:
    """Pack hook and module stack: who saved which storage, each storage counted once."""

    def __init__(self, model: nn.Module, inputs: Sequence[torch.Tensor]) -> None:
        self.stack: list[str] = []
        self.seen: set[tuple[str, int, int]] = set()
        self.state = {_storage_key(t) for t in (*model.parameters(), *model.buffers())}
        self.inputs = {_storage_key(t) for t in inputs}
        self.bytes: dict[str, dict[str, int]] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        module = self.stack[-1] if self.stack else ""
        counts = self.bytes.setdefault(module, {"saved": 0, "input": 0, "param": 0, "tensors": 0})
        counts["tensors"] += 1
        if key not in self.seen and key[2] > 0:
            self.seen.add(key)
            kind = "param" if key in self.state else "input" if key in self.inputs else "saved"
            counts[kind] += key[2]
        return tensor

    def hooks(self, model: nn.Module) -> list[Any]:
        handles = []
        for name, module in model.named_modules():

            def enter(_module: nn.Module, _args: Any, name: str = name) -> None:
                self.stack.append(name)

            def leave(_module: nn.Module, _args: Any, _output: Any) -> None:
                self.stack.pop()

            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave, always_call=True))
        return handles


def saved_tensor_memory(model: nn.Module, x: torch.Tensor) -> pd.DataFrame:
    """Bytes saved for backward by one training-mode forward pass of ``model(x)``, per module.

    The model runs in training mode with gradients on (the mode, ``.grad`` and the buffers, such
    as batch-norm running statistics, are restored afterwards); ``x`` is moved to its device. A
    model without trainable parameters differentiates its input instead.

    Args:
        model: the model.
        x: one input batch.

    Returns:
        DataFrame, one row per module in ``named_modules()`` order (the model itself ``""``):
        module, type, depth, saved_tensors (tensors its own operators saved, repeats included),
        saved_bytes (storages first saved by its own operators, parameters and buffers left out;
        the model's input counts here, it is kept alive for backward), saved_input_bytes (of
        those, the input's), saved_param_bytes (parameters and buffers its operators saved),
        saved_bytes_total (saved_bytes of the module and its children).

    Raises:
        TypeError: if ``model`` is not a module or ``x`` not a tensor.
        Exception: whatever the forward raises; hooks are removed and the model restored first.
    """
    check_model(model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    x = x.to(model_device(model))
    if not any(p.requires_grad for p in model.parameters()):
        x = x.detach().requires_grad_(True)
    record = _SavedTensors(model, [x])
    was_training = model.training
    saved_buffers = [b.detach().clone() for b in model.buffers()]
    handles = record.hooks(model)
    try:
        model.train()
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(record.pack, _unpack):
            output = model(x)
        del output
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), saved_buffers):
                buffer.copy_(saved)
    rows = []
    for name, module in model.named_modules():
        counts = record.bytes.get(name, {})
        rows.append(
            {
                "module": name,
                "type": type(module).__name__,
                "depth": name.count(".") + 1 if name else 0,
                "saved_tensors": counts.get("tensors", 0),
                "saved_bytes": counts.get("saved", 0) + counts.get("input", 0),
                "saved_input_bytes": counts.get("input", 0),
                "saved_param_bytes": counts.get("param", 0),
            }
        )
    table = pd.DataFrame(rows)
    names = table["module"].tolist()
    own = dict(zip(names, table["saved_bytes"]))
    table["saved_bytes_total"] = [
        sum(v for n, v in own.items() if not name or n == name or n.startswith(name + "."))
        for name in names
    ]
    return table


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def stage_memory(table: pd.DataFrame, stages: Sequence[str]) -> pd.DataFrame:
    """Saved bytes per stage from a :func:`saved_tensor_memory` table.

    Args:
        table: the per-module table.
        stages: module names of the stages (``["stem", "layer1", ...]``).

    Returns:
        DataFrame: stage, saved_bytes (the stage and its children), share (of the model's
        total), in ``stages`` order, then ``"rest"`` (everything outside the stages: head, pools,
        the model's own operators).

    Raises:
        ValueError: a stage that is not a module of the table (with close matches).
    """
    from stemlab._validation import check_choice

    totals = table.set_index("module")["saved_bytes_total"]
    for stage in stages:
        check_choice("stage", stage, [m for m in totals.index if m])
    whole = int(totals.loc[""])
    rows = [{"stage": s, "saved_bytes": int(totals.loc[s])} for s in stages]
    rows.append({"stage": "rest", "saved_bytes": whole - sum(r["saved_bytes"] for r in rows)})
    for row in rows:
        row["share"] = row["saved_bytes"] / whole if whole else math.nan
    return pd.DataFrame(rows)


def training_step_memory(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Peak memory of one training step (forward, loss, backward) of ``model`` on ``x``.

    On CUDA the step runs in training mode (gradients with ``torch.autograd.grad``, so ``.grad``
    is untouched; buffers restored) between ``reset_peak_memory_stats`` and
    ``max_memory_allocated``. Elsewhere the saved-tensor total of :func:`saved_tensor_memory`
    is returned as an estimate.

    Args:
        model: the model.
        x: one input batch.

    Returns:
        ``{"peak_bytes", "start_bytes", "estimate", "method", "device"}``: the peak allocated
        bytes (CUDA: everything allocated on the device, parameters included; ``start_bytes``
        is what was allocated before the step), whether it is an estimate, and how it was got.

    Raises:
        TypeError: if ``model`` is not a module or ``x`` not a tensor.
    """
    check_model(model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    device = model_device(model)
    if device.type != "cuda":
        table = saved_tensor_memory(model, x)
        return {
            "peak_bytes": int(table.iloc[0]["saved_bytes_total"]),
            "start_bytes": 0,
            "estimate": True,
            "method": CPU_ESTIMATE,
            "device": str(device),
        }
    x = x.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    source = x if params else x.detach().requires_grad_(True)
    was_training = model.training
    saved_buffers = [b.detach().clone() for b in model.buffers()]
    torch.cuda.synchronize(device)
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        model.train()
        with torch.enable_grad():
            output = first_tensor(model(source))
            if output is None:
                raise TypeError("the model output holds no tensor to differentiate")
            grads = torch.autograd.grad(output.float().sum(), params or [source], allow_unused=True)
        del output, grads
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), saved_buffers):
                buffer.copy_(saved)
    return {
        "peak_bytes": int(peak),
        "start_bytes": int(start),
        "estimate": False,
        "method": "torch.cuda.max_memory_allocated over one forward + backward",
        "device": str(device),
    }


# Study integration: how this probe runs in a profile cell and what it adds to the report.


def _memory_run(context: CellContext) -> ProbeOutput:
    model, x = context.model, context.inputs
    table = saved_tensor_memory(model, x)
    stages = [s for s in getattr(getattr(model, "layout", None), "stages", ()) if s]
    stages = [s for s in stages if s in set(table["module"])]
    per_stage = stage_memory(table, stages)
    peak = training_step_memory(model, x)
    whole = table.iloc[0]
    by_stage = dict(zip(per_stage["stage"], per_stage["saved_bytes"]))
    metrics = {
        "saved_mib": float(whole["saved_bytes_total"]) / MIB,
        "saved_param_mib": float(table["saved_param_bytes"].sum()) / MIB,
        "stem_saved_mib": float(by_stage.get(stages[0], math.nan)) / MIB if stages else None,
        "peak_train_mib": peak["peak_bytes"] / MIB,
        "peak_train_estimate": bool(peak["estimate"]),
        "peak_train_method": peak["method"],
    }
    rows = [
        {**row, "saved_mib": row["saved_bytes"] / MIB, "input_shape": tuple(x.shape)}
        for row in per_stage.to_dict(orient="records")
    ]
    return ProbeOutput(metrics=metrics, tables={"memory": rows})


def _memory_findings(view: StudyView) -> list[str]:
    summary = view.summary
    if "saved_mib" not in summary or summary["saved_mib"].isna().all():
        return []
    rows = summary.dropna(subset=["saved_mib"])
    low, high = rows.loc[rows["saved_mib"].idxmin()], rows.loc[rows["saved_mib"].idxmax()]
    cells = view.cells
    estimate = (
        "peak_train_estimate" in cells
        and cells["peak_train_estimate"].fillna(False).astype(bool).any()
    )
    line = (
        f"Activation memory of one training step ({view.profile_text()}), the bytes autograd "
        f"saves for backward: {low['saved_mib']:.0f} MiB (`{low['stem']}`) to "
        f"{high['saved_mib']:.0f} MiB (`{high['stem']}`)"
    )
    if "stem_saved_mib" in rows and rows["stem_saved_mib"].notna().any():
        shares = (rows["stem_saved_mib"] / rows["saved_mib"]).dropna()
        line += f"; the stem holds {100 * shares.min():.0f}% to {100 * shares.max():.0f}% of it"
    line += (
        ". The peak is measured off CUDA as the saved-tensor total, an estimate."
        if estimate
        else ". The peak is torch.cuda.max_memory_allocated."
    )
    return [line]


PROBE = register_probe(
    StudyProbe(
        name="memory",
        description="bytes saved for backward per module and stage, peak of one training step",
        run=_memory_run,
        runs_on=frozenset({"profile"}),
        tables=("memory",),
        summary=(
            SummaryColumn(
                "saved_mib",
                "activation memory: MiB autograd saves for backward in one training-mode forward "
                "of the profiling model at the profiling input (parameters left out)",
                "profile",
            ),
            SummaryColumn(
                "stem_saved_mib", "of that, MiB saved by the stem (profiling model)", "profile"
            ),
            SummaryColumn(
                "peak_train_mib",
                "peak MiB of one training step: torch.cuda.max_memory_allocated on CUDA, else "
                "the saved-tensor total (an estimate, see peak_train_estimate)",
                "profile",
            ),
        ),
        findings=_memory_findings,
        order=25,
    )
)
