"""latency: table layout, ordering of the summary statistics, no side effects on the model."""

from __future__ import annotations

import statistics
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from stemlab.probes import latency
from stemlab.probes.contract import CellContext, get_probe
from stemlab.probes.latency import resolve_latency_options, setup_text


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(3, 4, kernel_size=3, padding=1),
        nn.BatchNorm3d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_table_layout_and_ordering() -> None:
    model = _model().eval()
    x = torch.randn(2, 3, 2, 8, 8)
    table = latency(model, x, runs=3, warmup=1, progress=False)
    assert table["pass"].tolist() == ["forward", "forward_backward"]
    assert list(table.columns) == [
        "pass", "runs", "warmup", "median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms", "mean_ms",
        "dtype", "channels_last", "compiled", "threads", "device", "input_shape", "training",
    ]  # fmt: skip
    assert (table["runs"] == 3).all() and (table["warmup"] == 1).all()
    assert (table["threads"] == torch.get_num_threads()).all()
    assert (table["min_ms"] <= table["p10_ms"]).all()
    assert (table["p10_ms"] <= table["median_ms"]).all()
    assert (table["median_ms"] <= table["p90_ms"]).all()
    assert (table["p90_ms"] <= table["max_ms"]).all()
    assert table["dtype"].tolist() == ["fp32", "fp32"]
    assert not table["channels_last"].any() and not table["compiled"].any()
    assert (table["min_ms"] > 0).all()
    assert table["input_shape"].tolist() == [(2, 3, 2, 8, 8)] * 2
    assert table["device"].tolist() == ["cpu", "cpu"]
    assert not table["training"].any()


def test_forward_only() -> None:
    table = latency(_model(), torch.randn(1, 3, 2, 8, 8), runs=2, backward=False, progress=False)
    assert table["pass"].tolist() == ["forward"]


def test_no_side_effects_in_train_mode() -> None:
    model = _model().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    latency(model, torch.randn(2, 3, 2, 8, 8), runs=2, warmup=1, progress=False)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    # BatchNorm running statistics moved during the timed runs and were put back.
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_frozen_model_differentiates_the_input() -> None:
    model = _model().eval().requires_grad_(False)
    table = latency(model, torch.randn(1, 3, 2, 8, 8), runs=1, warmup=0, progress=False)
    assert table["pass"].tolist() == ["forward", "forward_backward"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"runs": 0}, ValueError, "runs must be > 0"),
        ({"runs": 1.5}, TypeError, "runs must be an int"),
        ({"warmup": -1}, ValueError, "warmup must be >= 0"),
        ({"dtype": "fp64"}, ValueError, "dtype"),
        ({"channels_last": "yes"}, ValueError, "channels_last must be True, False or 'auto'"),
        ({"compile": 1}, TypeError, "compile must be a bool"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        latency(_model(), torch.randn(1, 3, 2, 8, 8), progress=False, **kwargs)


def test_percentiles_of_the_timed_runs_only() -> None:
    # Scripted clock: 2 warm-up runs of 1000 ms, then 10 timed runs of 1..10 ms.
    durations = [1000.0, 1000.0, *range(1, 11)]
    ticks = []
    for d in durations:
        ticks += [0.0, d / 1e3]
    with mock.patch("stemlab.probes.latency.time.perf_counter", side_effect=ticks):
        table = latency(_model(), torch.randn(1, 3, 2, 8, 8), runs=10, warmup=2, backward=False,
                        progress=False)  # fmt: skip
    row = table.iloc[0]
    times = np.arange(1, 11, dtype=float)
    assert row["median_ms"] == pytest.approx(statistics.median(times))
    assert row["p10_ms"] == pytest.approx(1.9)  # linear interpolation: 1 + 0.9 x (2 - 1)
    assert row["p90_ms"] == pytest.approx(9.1)
    assert row["max_ms"] == pytest.approx(10.0) and row["min_ms"] == pytest.approx(1.0)


def test_bf16_and_channels_last_leave_the_model_alone() -> None:
    model = _model().eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 2, 8, 8)
    table = latency(model, x, runs=2, warmup=1, dtype="bf16", channels_last=True, progress=False)
    assert table["dtype"].tolist() == ["bf16", "bf16"]
    assert table["channels_last"].all()
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert setup_text(table.iloc[0]) == (
        f"bf16, channels-last, eager, 2 runs after 1 warm-up, {torch.get_num_threads()} threads, "
        "cpu"
    )


def test_fp16_needs_cuda_and_auto_resolves_per_device() -> None:
    with pytest.raises(ValueError, match="dtype='fp16' needs a CUDA device"):
        latency(_model(), torch.randn(1, 3, 2, 8, 8), dtype="fp16", progress=False)
    assert resolve_latency_options(torch.device("cpu")) == ("fp32", False)
    with mock.patch("torch.cuda.is_bf16_supported", return_value=True):
        assert resolve_latency_options(torch.device("cuda")) == ("bf16", True)
    with mock.patch("torch.cuda.is_bf16_supported", return_value=False):
        assert resolve_latency_options(torch.device("cuda")) == ("fp16", True)
    assert resolve_latency_options(torch.device("cuda"), "fp32", False) == ("fp32", False)


def test_compiled_timing_or_a_clear_error() -> None:
    model = _model().eval()
    try:
        table = latency(model, torch.randn(1, 3, 2, 8, 8), runs=1, warmup=0, compile=True,
                        progress=False)  # fmt: skip
    except RuntimeError as exc:
        assert "torch.compile failed" in str(exc)
        pytest.skip(f"torch.compile is unavailable here: {exc}")
    assert table["compiled"].all()
    assert not hasattr(model, "_orig_mod")


def test_study_probe_states_the_spread_and_setup() -> None:
    model = _model().eval()
    x = torch.randn(1, 3, 2, 8, 8)
    context = CellContext(kind="profile", model=model, inputs=x, config={}, device=x.device,
                          options={"latency_runs": 4})  # fmt: skip
    output = get_probe("latency").run(context)
    metrics = output.metrics
    assert metrics["latency_p10_ms"] <= metrics["latency_ms"] <= metrics["latency_p90_ms"]
    assert metrics["latency_fwd_bwd_p10_ms"] <= metrics["latency_fwd_bwd_p90_ms"]
    assert metrics["latency_setup"].startswith("fp32, contiguous, eager, 4 runs after 2 warm-up")
    assert [row["runs"] for row in output.tables["latency"]] == [4, 4]


def test_findings_state_the_spread_and_setup() -> None:
    import pandas as pd

    from stemlab.probes.contract import StudyView

    summary = pd.DataFrame(
        {
            "backbone": ["r2plus1d_18"] * 2,
            "stem": ["r2d", "basic"],
            "latency_ms": [5310.1, 4200.0],
            "latency_p10_ms": [3240.9, 4100.0],
            "latency_p90_ms": [11561.2, 4400.0],
            "latency_setup": ["fp32, contiguous, eager, 10 runs after 2 warm-up, 1 threads, cpu"]
            * 2,
        }
    )
    profile = {"backbone": "r2plus1d_18", "input": [1, 3, 16, 112, 112]}
    view = StudyView(config={"profile": profile}, cells=pd.DataFrame(), summary=summary,
                     tables={}, arrays=lambda key: {})  # fmt: skip
    (line,) = get_probe("latency").findings(view)
    assert "`r2d` 5310 ms (p10-p90 3241-11561)" in line
    assert "`basic` 4200 ms (p10-p90 4100-4400)" in line
    assert "(fp32, contiguous, eager, 10 runs after 2 warm-up, 1 threads, cpu)" in line
    assert "r2plus1d_18 at 1x3x16x112x112" in line
