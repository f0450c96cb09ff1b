"""Wall-clock latency of forward and forward+backward passes, as a distribution over runs.

Each pass is repeated after a stated warm-up; the table gives the median and the 10th and 90th
percentiles, with the precision (autocast dtype), memory layout and compilation the runs used.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from stemlab._validation import check_choice, check_positive_int
from stemlab.probes._modules import check_model, first_tensor, model_device
from stemlab.probes.contract import (
    CellContext,
    ProbeOutput,
    StudyProbe,
    StudyView,
    SummaryColumn,
    register_probe,
)

__all__ = ["LATENCY_DTYPES", "latency", "resolve_latency_options", "setup_text"]

LATENCY_DTYPES = ("auto", "fp32", "bf16", "fp16")
"""``dtype`` values of :func:`latency`: ``"auto"`` is bf16 on CUDA where supported (else fp16)
and fp32 elsewhere; bf16 and fp16 run under ``torch.autocast``; fp16 needs CUDA."""

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def resolve_latency_options(
    device: torch.device, dtype: str = "auto", channels_last: bool | str = "auto"
) -> tuple[str, bool]:
    """The dtype and layout :func:`latency` uses on ``device`` (``"auto"``: the CUDA path there).

    Args:
        device: where the model runs.
        dtype: one of :data:`LATENCY_DTYPES`.
        channels_last: ``True``, ``False`` or ``"auto"`` (on CUDA only).

    Returns:
        ``(dtype, channels_last)`` with ``"auto"`` resolved.

    Raises:
        ValueError: an unknown dtype, fp16 off CUDA, or a bad ``channels_last``.
    """
    check_choice("dtype", dtype, LATENCY_DTYPES)
    cuda = device.type == "cuda"
    if dtype == "auto":
        dtype = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if dtype == "fp16" and not cuda:
        raise ValueError(
            f"dtype='fp16' needs a CUDA device (the model is on {device}); use 'fp32' or 'bf16'"
        )
    if channels_last == "auto":
        channels_last = cuda
    elif not isinstance(channels_last, bool):
        raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
    return dtype, channels_last


def _percentile(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times), q))


def latency(
    model: nn.Module,
    x: torch.Tensor,
    *,
    runs: int = 20,
    warmup: int = 3,
    backward: bool = True,
    dtype: str = "fp32",
    channels_last: bool | str = False,
    compile: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Time ``model(x)`` (under ``no_grad``) and, optionally, forward + backward.

    The model runs where it lives and in its current train/eval mode; ``x`` is moved to its
    device. The backward pass takes gradients with ``torch.autograd.grad`` (of the output's sum,
    with respect to the trainable parameters, or the input if there are none), so no ``.grad`` is
    touched; buffers such as BatchNorm running statistics are restored afterwards. A channels-last
    or compiled run times a copy of the model, so the model itself is never changed.

    Args:
        model: the model to time.
        x: one input batch.
        runs: timed repetitions per pass.
        warmup: untimed repetitions before timing each pass (allocator, kernel selection).
        backward: also time forward + backward.
        dtype: one of :data:`LATENCY_DTYPES`: ``"fp32"``, or autocast to bf16 / fp16 (CUDA).
        channels_last: channels-last (``channels_last_3d`` for clips) weights and input;
            ``"auto"`` on CUDA only.
        compile: time ``torch.compile`` of the model (compiled before the warm-up, untimed).
        progress: show a tqdm progress bar (hidden anyway when stderr is not a terminal).

    Returns:
        DataFrame with one row per pass (``"forward"``, ``"forward_backward"``): pass, runs,
        warmup, median_ms, p10_ms, p90_ms (10th and 90th percentiles, linear interpolation),
        min_ms, max_ms, mean_ms, dtype, channels_last, compiled, threads
        (``torch.get_num_threads()``), device, input_shape, training.

    Raises:
        TypeError: if ``model`` is not a module, ``x`` not a tensor or ``runs`` not an int.
        ValueError: if ``runs`` < 1, ``warmup`` < 0, or a dtype or layout this device lacks.
        RuntimeError: ``torch.compile`` failed on this model or machine (the message says why).
    """
    check_model(model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    check_positive_int("runs", runs)
    check_positive_int("warmup", warmup, allow_zero=True)
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be a bool, got {compile!r}")
    device = model_device(model)
    dtype, channels_last = resolve_latency_options(device, dtype, channels_last)
    x = x.to(device)
    saved_buffers = [b.detach().clone() for b in model.buffers()]
    timed: Any = model
    if channels_last and x.dim() in (4, 5):
        layout = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        timed = copy.deepcopy(model)
        for tensor in (*timed.parameters(), *timed.buffers()):
            if tensor.dim() == x.dim():
                tensor.data = tensor.data.contiguous(memory_format=layout)
        x = x.contiguous(memory_format=layout)
    params = [p for p in timed.parameters() if p.requires_grad]

    def precision() -> contextlib.AbstractContextManager[Any]:
        if dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=_AUTOCAST[dtype])

    def forward() -> None:
        with torch.no_grad(), precision():
            runner(x)

    def forward_backward() -> None:
        source = x if params else x.detach().requires_grad_(True)
        with precision():
            output = first_tensor(runner(source))
        if output is None:
            raise TypeError("the model output holds no tensor to differentiate")
        torch.autograd.grad(output.float().sum(), params or [source], allow_unused=True)

    runner = timed
    passes = [("forward", forward)] + ([("forward_backward", forward_backward)] if backward else [])
    rows = []
    bar = tqdm(
        total=len(passes) * (runs + warmup), desc="latency", disable=None if progress else True
    )
    try:
        if compile:
            runner = torch.compile(timed)
            try:
                for _, fn in passes:
                    fn()
            except Exception as exc:
                raise RuntimeError(
                    f"torch.compile failed on this model and machine "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    "time it with compile=False"
                ) from exc
        for name, fn in passes:
            times = []
            for i in range(warmup + runs):
                elapsed = _timed(fn, device)
                if i >= warmup:
                    times.append(elapsed)
                bar.update()
            rows.append(
                {
                    "pass": name,
                    "runs": runs,
                    "warmup": warmup,
                    "median_ms": statistics.median(times),
                    "p10_ms": _percentile(times, 10),
                    "p90_ms": _percentile(times, 90),
                    "min_ms": min(times),
                    "max_ms": max(times),
                    "mean_ms": statistics.fmean(times),
                    "dtype": dtype,
                    "channels_last": channels_last,
                    "compiled": compile,
                    "threads": torch.get_num_threads(),
                    "device": str(device),
                    "input_shape": tuple(x.shape),
                    "training": model.training,
                }
            )
    finally:
        bar.close()
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), saved_buffers):
                buffer.copy_(saved)
    return pd.DataFrame(rows)


def setup_text(row: Any) -> str:
    """``"fp32, contiguous, eager, 10 runs after 2 warm-up, 2 threads, cpu"`` of a table row."""
    layout = "channels-last" if row["channels_last"] else "contiguous"
    mode = "compiled" if row["compiled"] else "eager"
    return (
        f"{row['dtype']}, {layout}, {mode}, {int(row['runs'])} runs after {int(row['warmup'])} "
        f"warm-up, {int(row['threads'])} threads, {row['device']}"
    )


STUDY_RUNS = 10
"""Timed runs per pass in a profile cell when the study does not say (``latency_runs``)."""
STUDY_WARMUP = 2
"""Untimed runs before them (``latency_warmup``)."""


def _run_in_study(context: CellContext) -> ProbeOutput:
    options = context.options
    timing = latency(
        context.model,
        context.inputs,
        runs=int(options.get("latency_runs", STUDY_RUNS)),
        warmup=int(options.get("latency_warmup", STUDY_WARMUP)),
        dtype=str(options.get("latency_dtype", "auto")),
        channels_last=options.get("latency_channels_last", "auto"),
        compile=bool(options.get("latency_compile", False)),
        progress=False,
    )
    by_pass = timing.set_index("pass")
    forward, both = by_pass.loc["forward"], by_pass.loc["forward_backward"]
    return ProbeOutput(
        metrics={
            "latency_ms": float(forward["median_ms"]),
            "latency_p10_ms": float(forward["p10_ms"]),
            "latency_p90_ms": float(forward["p90_ms"]),
            "latency_fwd_bwd_ms": float(both["median_ms"]),
            "latency_fwd_bwd_p10_ms": float(both["p10_ms"]),
            "latency_fwd_bwd_p90_ms": float(both["p90_ms"]),
            "latency_setup": setup_text(forward),
        },
        tables={"latency": timing.to_dict(orient="records")},
    )


def _latency_findings(view: StudyView) -> list[str]:
    summary = view.summary
    if "latency_ms" not in summary or summary["latency_ms"].isna().all():
        return []
    rows = summary.dropna(subset=["latency_ms"])
    parts = []
    for _, row in rows.iterrows():
        text = f"`{row['stem']}` {row['latency_ms']:.0f} ms"
        if pd.notna(row.get("latency_p10_ms")) and pd.notna(row.get("latency_p90_ms")):
            text += f" (p10-p90 {row['latency_p10_ms']:.0f}-{row['latency_p90_ms']:.0f})"
        parts.append(text)
    setups = sorted({str(s) for s in rows.get("latency_setup", pd.Series(dtype=str)).dropna()})
    setup = f" ({'; '.join(setups)})" if setups else ""
    return [
        f"Forward latency of the profiling model ({view.profile_text()}){setup}, median and "
        f"10th-90th percentile over the runs: {'; '.join(parts)}. Wall time on this machine, "
        "shared with whatever else ran: compare stems within one study only, and read a "
        "difference smaller than the p10-p90 spread as no difference."
    ]


PROBE = register_probe(
    StudyProbe(
        name="latency",
        description=(
            "forward and forward+backward wall time (median, p10, p90 over repeated runs)"
        ),
        run=_run_in_study,
        runs_on=frozenset({"profile"}),
        tables=("latency",),
        summary=(
            SummaryColumn(
                "latency_ms",
                "median forward time of the profiling model at the profiling input (ms)",
                "profile",
            ),
            SummaryColumn("latency_p10_ms", "10th percentile of that forward time (ms)", "profile"),
            SummaryColumn("latency_p90_ms", "90th percentile of that forward time (ms)", "profile"),
            SummaryColumn(
                "latency_fwd_bwd_ms",
                "median forward+backward time of the profiling model (ms)",
                "profile",
            ),
            SummaryColumn(
                "latency_setup",
                "how the latency was timed: autocast dtype, memory layout, eager or compiled, "
                "runs, warm-up, threads, device",
                "profile",
            ),
        ),
        findings=_latency_findings,
        order=20,
    )
)
