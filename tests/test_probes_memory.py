"""memory: bytes saved for backward, in closed form; deduplication; stages; the peak estimate."""

from __future__ import annotations

import pytest
import torch
from small_models import small_kwargs
from torch import nn

import stemlab
from stemlab.probes.contract import CellContext, get_probe
from stemlab.probes.memory import (
    CPU_ESTIMATE,
    MIB,
    saved_tensor_memory,
    stage_memory,
    training_step_memory,
)

N, C_IN, C_OUT, T, H, W = 2, 3, 4, 4, 8, 8
FLOAT = 4  # bytes


def _conv_bn_relu() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(C_IN, C_OUT, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm3d(C_OUT),
        nn.ReLU(inplace=True),
    )


def test_conv_bn_relu_closed_form() -> None:
    # What each operator saves in this torch version (checked with a pack hook):
    #   conv:  its input and its weight;
    #   bn (training): its input (the conv output), weight, running mean and variance, and the
    #          batch mean and inverse std it computed (C floats each);
    #   relu (in place): its result, the batch-norm output it overwrote.
    model = _conv_bn_relu().eval()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    x = torch.randn(N, C_IN, T, H, W)
    table = saved_tensor_memory(model, x).set_index("module")
    volume = N * T * H * W
    input_bytes = volume * C_IN * FLOAT  # 6144
    activation = volume * C_OUT * FLOAT  # 8192: conv output, and the batch-norm output
    assert table.loc["0", "saved_bytes"] == input_bytes == 6144
    assert table.loc["0", "saved_input_bytes"] == input_bytes
    assert table.loc["0", "saved_param_bytes"] == C_OUT * C_IN * 27 * FLOAT == 1296
    assert table.loc["0", "saved_tensors"] == 2
    assert table.loc["1", "saved_bytes"] == activation + 2 * C_OUT * FLOAT == 8224
    assert table.loc["1", "saved_param_bytes"] == 3 * C_OUT * FLOAT == 48
    assert table.loc["1", "saved_tensors"] == 6
    assert table.loc["2", "saved_bytes"] == activation == 8192
    assert table.loc["2", "saved_tensors"] == 1
    total = input_bytes + 2 * activation + 2 * C_OUT * FLOAT
    assert total == 22560
    assert table.loc["", "saved_bytes_total"] == total
    assert table.loc["", "saved_bytes"] == 0  # the Sequential runs no operator of its own
    # Measured in training mode, handed back in eval mode with the running statistics unmoved.
    assert not model.training
    assert all(torch.equal(buffers[k], v) for k, v in model.named_buffers())
    assert all(p.grad is None for p in model.parameters())


class _Square(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x  # mul saves both operands: the same storage twice


class _Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(C_IN, C_OUT, kernel_size=1, bias=False)
        self.a = _Square()
        self.b = _Square()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.a(y) + self.b(y)


def test_shared_storage_counted_once() -> None:
    table = saved_tensor_memory(_Branches(), torch.randn(N, C_IN, T, H, W)).set_index("module")
    activation = N * C_OUT * T * H * W * FLOAT
    assert table.loc["a", "saved_tensors"] == 2 and table.loc["a", "saved_bytes"] == activation
    assert table.loc["b", "saved_tensors"] == 2 and table.loc["b", "saved_bytes"] == 0
    assert table.loc["", "saved_bytes_total"] == N * C_IN * T * H * W * FLOAT + activation


def test_frozen_model_saves_for_the_input() -> None:
    model = _conv_bn_relu().requires_grad_(False)
    table = saved_tensor_memory(model, torch.randn(N, C_IN, T, H, W)).set_index("module")
    assert table.loc["2", "saved_bytes"] == N * C_OUT * T * H * W * FLOAT
    assert not any(p.requires_grad for p in model.parameters())


def test_stages_and_rest_add_up() -> None:
    model = stemlab.create_model("r3d_18", num_classes=5, **small_kwargs("r3d_18"))
    table = saved_tensor_memory(model, torch.randn(1, 3, 4, 32, 32))
    stages = list(model.layout.stages)
    per_stage = stage_memory(table, stages)
    assert per_stage["stage"].tolist() == [*stages, "rest"]
    assert per_stage["saved_bytes"].sum() == table.iloc[0]["saved_bytes_total"]
    assert per_stage["share"].sum() == pytest.approx(1.0)
    # The stem's conv saves the clip itself: 1 x 3 x 4 x 32 x 32 floats.
    in_stem = table["module"].str.startswith("stem")
    assert table.loc[in_stem, "saved_input_bytes"].sum() == 3 * 4 * 32 * 32 * FLOAT
    assert table["saved_input_bytes"].sum() == 3 * 4 * 32 * 32 * FLOAT
    with pytest.raises(ValueError, match="stage"):
        stage_memory(table, ["layer9"])


def test_cpu_peak_is_the_saved_total_marked_estimate() -> None:
    peak = training_step_memory(_conv_bn_relu(), torch.randn(N, C_IN, T, H, W))
    assert peak["peak_bytes"] == 22560
    assert peak["estimate"] is True and peak["method"] == CPU_ESTIMATE
    assert peak["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_covers_the_saved_tensors() -> None:
    model = _conv_bn_relu().cuda()
    x = torch.randn(N, C_IN, T, H, W, device="cuda")
    peak = training_step_memory(model, x)
    assert peak["estimate"] is False
    assert peak["peak_bytes"] - peak["start_bytes"] >= 22560 - 6144


def test_probe_metrics_in_mib() -> None:
    model = stemlab.create_model("r3d_18", num_classes=5, **small_kwargs("r3d_18")).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    context = CellContext(kind="profile", model=model, inputs=x, config={}, device=x.device)
    output = get_probe("memory").run(context)
    table = saved_tensor_memory(model, x)
    total = table.iloc[0]["saved_bytes_total"]
    assert output.metrics["saved_mib"] == pytest.approx(total / MIB)
    assert output.metrics["peak_train_mib"] == pytest.approx(total / MIB)
    assert output.metrics["peak_train_estimate"] is True
    stem = table.set_index("module").loc["stem", "saved_bytes_total"]
    assert output.metrics["stem_saved_mib"] == pytest.approx(stem / MIB)
    assert [r["stage"] for r in output.tables["memory"]] == [*model.layout.stages, "rest"]


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="x must be a tensor"):
        saved_tensor_memory(_conv_bn_relu(), [1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        training_step_memory(torch.relu, torch.randn(1))  # type: ignore[arg-type]


def test_findings_name_the_range_and_the_estimate() -> None:
    import pandas as pd

    from stemlab.probes.contract import StudyView

    summary = pd.DataFrame(
        {"backbone": ["b", "b"], "stem": ["r2d", "wide"], "saved_mib": [478.3, 900.0],
         "stem_saved_mib": [44.0, 180.0], "peak_train_mib": [478.3, 900.0]}
    )  # fmt: skip
    cells = pd.DataFrame({"kind": ["profile"] * 2, "peak_train_estimate": [True, True]})
    view = StudyView(config={}, cells=cells, summary=summary, tables={}, arrays=lambda key: {})
    (line,) = get_probe("memory").findings(view)
    assert "478 MiB (`r2d`) to 900 MiB (`wide`)" in line
    assert "the stem holds 9% to 20% of it" in line
    assert "an estimate" in line
