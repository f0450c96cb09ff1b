"""latency: table layout, ordering of the summary statistics, no side effects on the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stemlab.probes import latency


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
        "pass", "runs", "warmup", "median_ms", "min_ms", "max_ms", "mean_ms", "threads",
        "device", "input_shape", "training",
    ]  # fmt: skip
    assert (table["runs"] == 3).all() and (table["warmup"] == 1).all()
    assert (table["threads"] == torch.get_num_threads()).all()
    assert (table["min_ms"] <= table["median_ms"]).all()
    assert (table["median_ms"] <= table["max_ms"]).all()
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
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        latency(_model(), torch.randn(1, 3, 2, 8, 8), progress=False, **kwargs)
