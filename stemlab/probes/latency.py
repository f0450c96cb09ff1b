"""Wall-clock latency of forward and forward+backward passes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from stemlab._validation import check_positive_int
from stemlab.probes._modules import check_model, first_tensor, model_device
from stemlab.probes.contract import (
    CellContext,
    ProbeOutput,
    StudyProbe,
    SummaryColumn,
    register_probe,
)

__all__ = ["latency"]


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3


def latency(
    model: nn.Module,
    x: torch.Tensor,
    *,
    runs: int = 20,
    warmup: int = 3,
    backward: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Time ``model(x)`` (under ``no_grad``) and, optionally, forward + backward.

    The model runs where it lives and in its current train/eval mode; ``x`` is moved to its
    device. The backward pass takes gradients with ``torch.autograd.grad`` (of the output's sum,
    with respect to the trainable parameters, or the input if there are none), so no ``.grad`` is
    touched; buffers such as BatchNorm running statistics are restored afterwards.

    Args:
        model: the model to time.
        x: one input batch.
        runs: timed repetitions per pass.
        warmup: untimed repetitions before timing each pass (allocator, kernel selection).
        backward: also time forward + backward.
        progress: show a tqdm progress bar (hidden anyway when stderr is not a terminal).

    Returns:
        DataFrame with one row per pass (``"forward"``, ``"forward_backward"``): pass, runs,
        warmup, median_ms, min_ms, max_ms, mean_ms, threads (``torch.get_num_threads()``),
        device, input_shape, training.

    Raises:
        TypeError: if ``model`` is not a module, ``x`` not a tensor or ``runs`` not an int.
        ValueError: if ``runs`` < 1 or ``warmup`` < 0.
    """
    check_model(model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    check_positive_int("runs", runs)
    check_positive_int("warmup", warmup, allow_zero=True)
    device = model_device(model)
    x = x.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    saved_buffers = [b.detach().clone() for b in model.buffers()]

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        source = x if params else x.detach().requires_grad_(True)
        output = first_tensor(model(source))
        if output is None:
            raise TypeError("the model output holds no tensor to differentiate")
        torch.autograd.grad(output.float().sum(), params or [source], allow_unused=True)

    passes = [("forward", forward)] + ([("forward_backward", forward_backward)] if backward else [])
    rows = []
    bar = tqdm(
        total=len(passes) * (runs + warmup), desc="latency", disable=None if progress else True
    )
    try:
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
                    "min_ms": min(times),
                    "max_ms": max(times),
                    "mean_ms": statistics.fmean(times),
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


def _run_in_study(context: CellContext) -> ProbeOutput:
    runs = int(context.options.get("latency_runs", 5))
    timing = latency(context.model, context.inputs, runs=runs, warmup=1, progress=False)
    median = timing.set_index("pass")["median_ms"]
    return ProbeOutput(
        metrics={
            "latency_ms": float(median["forward"]),
            "latency_fwd_bwd_ms": float(median["forward_backward"]),
        },
        tables={"latency": timing.to_dict(orient="records")},
    )


PROBE = register_probe(
    StudyProbe(
        name="latency",
        description="forward and forward+backward wall time (median of the runs)",
        run=_run_in_study,
        runs_on=frozenset({"profile"}),
        tables=("latency",),
        summary=(
            SummaryColumn(
                "latency_ms",
                "median forward time of the profiling model at the profiling input (ms)",
                "profile",
            ),
            SummaryColumn(
                "latency_fwd_bwd_ms",
                "median forward+backward time of the profiling model (ms)",
                "profile",
            ),
        ),
        order=20,
    )
)
