"""flops_table: torchvision parity at full size, closed-form counts, nothing dropped silently."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from small_models import TORCHVISION_VIDEO, small_kwargs
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.video import MC3_18_Weights, R2Plus1D_18_Weights, R3D_18_Weights

import stemlab
from stemlab.backbones import BACKBONES
from stemlab.probes import FLOP_FAMILIES, flops_table

PUBLISHED = {
    "r3d_18": R3D_18_Weights.KINETICS400_V1.meta,
    "mc3_18": MC3_18_Weights.KINETICS400_V1.meta,
    "r2plus1d_18": R2Plus1D_18_Weights.KINETICS400_V1.meta,
}
FAMILY_COLUMNS = [f"flops_{f}" for f in FLOP_FAMILIES]


@pytest.fixture(scope="module")
def full_size_counts() -> dict[str, tuple[object, int]]:
    """flops_table and FlopCounterMode's total for the three torchvision video ResNets."""
    x = torch.randn(1, 3, 16, 112, 112, generator=torch.Generator().manual_seed(0))
    counts = {}
    for name in PUBLISHED:
        model = stemlab.create_model(name).eval()
        table = flops_table(model, x)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        counts[name] = (table, counter.get_total_flops())
    return counts


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_native_stems_match_torchvision_metadata(
    name: str, full_size_counts: dict[str, tuple[object, int]]
) -> None:
    table, counter_total = full_size_counts[name]
    whole = table.iloc[0]
    assert whole["module"] == ""
    assert whole["params"] == PUBLISHED[name]["num_params"]
    matmul_flops = int(whole["flops_conv"] + whole["flops_linear"])
    assert round(matmul_flops / 1e9, 2) == round(PUBLISHED[name]["_ops"], 2)
    assert round(matmul_flops / 1e9, 3) == PUBLISHED[name]["_ops"]
    # torch.utils.flop_counter counts 2 flops per FMA, on the same conv and linear ops.
    assert counter_total == 2 * matmul_flops
    # Pooling, residual adds and activations are counted too, never dropped.
    assert whole["flops_pool"] > 0 and whole["flops_elementwise"] > 0
    assert (table["unsupported_ops"] == "").all()
    # The FLOP columns, in FlopCounterMode's convention, halve to the same published figure.
    assert whole["counter_flops_fwd"] == counter_total
    assert round(whole["counter_flops_fwd"] / 2 / 1e9, 3) == PUBLISHED[name]["_ops"]
    # Training: every conv and linear layer computes its input and weight gradients (one forward
    # each), except the first convolution, whose input needs no gradient.
    first_conv = table[table["type"] == "Conv3d"].iloc[0]
    assert whole["counter_flops_fwd_bwd"] == 3 * counter_total - first_conv["counter_flops_fwd"]
    assert table.attrs["conventions"]["flops"].startswith("multiply-adds")


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, kernel_size=(1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn = nn.BatchNorm3d(4)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.avg = nn.AvgPool3d(kernel_size=2)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.relu(self.bn(self.conv(x))))
        merged = pooled + self.up(self.avg(pooled))
        return self.fc(self.gap(merged).flatten(1))


def test_closed_form_counts_per_family_and_module() -> None:
    table = flops_table(_Tiny(), torch.randn(1, 3, 2, 8, 8)).set_index("module")
    conv_out = 4 * 2 * 8 * 8  # (1, 4, 2, 8, 8)
    pooled = 4 * 2 * 4 * 4  # (1, 4, 2, 4, 4)
    averaged = 4 * 1 * 2 * 2  # kernel 2 -> (2, 2, 2)
    expected = {
        "conv": conv_out * 3 * 1 * 3 * 3,
        "norm": 2 * conv_out,  # eval-mode affine batch norm
        "activation": conv_out,
        "pool": pooled * 4 + averaged * 8 + pooled,  # max (1,2,2), avg (2,2,2), adaptive: inputs
        "upsample": pooled * 8,  # trilinear: 8 weights per output
        "elementwise": pooled,  # the residual add
        "linear": 4 * 5,
    }
    whole = table.loc[""]
    for family in FLOP_FAMILIES:
        assert whole[f"flops_{family}"] == expected.get(family, 0), family
    assert whole["flops"] == sum(expected.values())
    assert table.loc["conv", "flops"] == expected["conv"]
    assert table.loc["pool", "flops"] == pooled * 4
    assert table.loc["avg", "flops"] == averaged * 8
    assert table.loc["up", "flops_upsample"] == pooled * 8
    assert table.loc["gap", "flops"] == pooled
    assert table.loc["fc", "params"] == 4 * 5 + 5
    assert whole["params"] == 3 * 4 * 9 + 2 * 4 + 25
    assert table.loc["fc", "depth"] == 1 and whole["depth"] == 0
    assert list(table.columns) == [
        "type", "depth", "params", "flops", *FAMILY_COLUMNS, "unsupported_ops",
        "counter_flops_fwd", "counter_flops_fwd_bwd", "counter_uncounted_ops",
    ]  # fmt: skip
    # FlopCounterMode: 2 flops per multiply-add of the conv and linear layers only; backward:
    # the conv's weight gradient (its input needs none), the linear layer's weight and input.
    conv, linear = expected["conv"], expected["linear"]
    assert whole["counter_flops_fwd"] == 2 * (conv + linear)
    assert whole["counter_flops_fwd_bwd"] == 2 * (2 * conv + 3 * linear)
    assert table.loc["fc", "counter_flops_fwd_bwd"] == 6 * linear
    assert table.loc["bn", "counter_flops_fwd"] == 0
    # What FlopCounterMode ran without counting is listed, per module and for the model.
    assert table.loc["bn", "counter_uncounted_ops"] == (
        "aten::native_batch_norm x1, aten::native_batch_norm_backward x1"
    )
    assert (
        table.loc["relu", "counter_uncounted_ops"] == "aten::relu_ x1, aten::threshold_backward x1"
    )
    assert table.loc["conv", "counter_uncounted_ops"] == ""
    assert "aten::upsample_trilinear3d x1" in whole["counter_uncounted_ops"]


def test_counter_off_keeps_the_fvcore_columns() -> None:
    table = flops_table(_Tiny(), torch.randn(1, 3, 2, 8, 8), counter=False)
    assert "counter_flops_fwd" not in table and table.iloc[0]["flops"] == 17300


class _Cumulative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


class _WithUnsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.cum = _Cumulative()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cum(self.fc(x))


def test_uncounted_ops_are_listed_per_module() -> None:
    table = flops_table(_WithUnsupported(), torch.randn(2, 6)).set_index("module")
    assert table.loc["", "unsupported_ops"] == "aten::cumsum x1"
    assert table.loc["cum", "unsupported_ops"] == "aten::cumsum x1"
    assert table.loc["fc", "unsupported_ops"] == ""
    assert table.loc["", "flops"] == 2 * 6 * 6


def test_extra_handles_count_and_name_their_column() -> None:
    def cumsum(inputs: list, outputs: list) -> int:
        return 7

    table = flops_table(_WithUnsupported(), torch.randn(2, 6), handles={"aten::cumsum": cumsum})
    whole = table.iloc[0]
    assert whole["flops_cumsum"] == 7 and whole["unsupported_ops"] == ""
    assert whole["flops"] == 2 * 6 * 6 + 7


@pytest.mark.parametrize(
    "backbone", [b for b in stemlab.list_backbones() if b not in TORCHVISION_VIDEO]
)
def test_every_backbone_fully_counted(backbone: str) -> None:
    model = stemlab.create_model(backbone, num_classes=5, **small_kwargs(backbone))
    x = torch.randn(2, 3, 4, 32, 32) if BACKBONES.entry(backbone).kind == "video" else None
    x = torch.randn(2, 3, 32, 32) if x is None else x
    table = flops_table(model, x)
    assert (table["unsupported_ops"] == "").all(), table["unsupported_ops"].iloc[0]
    assert (table["flops"] == table[FAMILY_COLUMNS].sum(axis=1)).all()
    assert table.iloc[0]["params"] == sum(p.numel() for p in model.parameters())
    assert table["module"].tolist() == [n for n, _ in model.named_modules()]


@pytest.mark.parametrize(("backbone", "gates"), [("cnn_lstm", 4), ("cnn_gru", 3)])
def test_recurrent_layer_closed_form(backbone: str, gates: int) -> None:
    model = stemlab.create_model(backbone, num_classes=5, **small_kwargs(backbone))
    n, t = 2, 4
    table = flops_table(model, torch.randn(n, 3, t, 32, 32)).set_index("module")
    features, hidden = model.rnn.input_size, model.rnn.hidden_size
    assert table.loc["rnn", "flops_rnn"] == n * t * gates * hidden * (features + hidden)


def test_model_mode_and_buffers_restored() -> None:
    model = stemlab.create_model("r3d_18", num_classes=5, **small_kwargs("r3d_18")).train()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    table = flops_table(model, torch.randn(1, 3, 4, 32, 32))
    assert model.training
    assert all(torch.equal(buffers[k], v) for k, v in model.named_buffers())
    # Traced in eval mode: batch norm counted as inference (2 flops per element with affine).
    assert table.set_index("module").loc["stem.1", "flops_norm"] == 2 * 64 * 4 * 16 * 16


def test_bad_input_type() -> None:
    with pytest.raises(TypeError, match="tensor or a tuple"):
        flops_table(_Tiny(), [torch.randn(1, 3, 2, 8, 8)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"nn\.Module"):
        flops_table(F.relu, torch.randn(1))  # type: ignore[arg-type]
