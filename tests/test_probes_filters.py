"""first_layer_filters: which conv, the composed (2+1)D kernel, closed-form filter statistics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from small_models import small_kwargs
from torch import nn

import stemlab
from stemlab.probes import compose_2plus1d, filter_stats, first_layer_filters

STAT_COLUMNS = [
    "filter", "l2_norm", "temporal_energy_fraction", "dominant_frequency", "nearest_filter",
    "max_cosine", "near_duplicate",
]  # fmt: skip


def test_composed_kernel_equals_the_two_convs_in_sequence() -> None:
    g = torch.Generator().manual_seed(0)
    spatial = torch.randn(5, 3, 1, 3, 3, generator=g)
    temporal = torch.randn(4, 5, 3, 1, 1, generator=g)
    x = torch.randn(2, 3, 6, 9, 9, generator=g)
    two_step = F.conv3d(F.conv3d(x, spatial), temporal)
    composed = compose_2plus1d(spatial, temporal)
    assert composed.shape == (4, 3, 3, 3, 3)
    torch.testing.assert_close(F.conv3d(x, composed), two_step, rtol=1e-4, atol=1e-4)


def test_compose_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"spatial must be \(M, C, 1, k, k\)"):
        compose_2plus1d(torch.zeros(5, 3, 2, 3, 3), torch.zeros(4, 5, 3, 1, 1))
    with pytest.raises(ValueError, match=r"temporal must be \(O, 5, t, 1, 1\)"):
        compose_2plus1d(torch.zeros(5, 3, 1, 3, 3), torch.zeros(4, 6, 3, 1, 1))


def test_r2plus1d_stem_gives_conv_and_effective_kernels() -> None:
    model = stemlab.create_model("r2plus1d_18", num_classes=5, **small_kwargs("r2plus1d_18"))
    result = first_layer_filters(model)
    assert result.module == "stem.0" and result.effective_module == "stem.3"
    assert result.weight.shape == (45, 3, 1, 7, 7)
    assert result.effective.shape == (64, 3, 3, 7, 7)
    torch.testing.assert_close(
        result.effective, compose_2plus1d(model.stem[0].weight, model.stem[3].weight).detach()
    )
    table = result.table
    assert table["kernel"].value_counts().to_dict() == {"conv": 45, "effective": 64}
    assert list(table.columns) == ["kernel", "module", *STAT_COLUMNS]
    assert "BN/ReLU between ignored" in table.loc[table["kernel"] == "effective", "module"].iloc[0]
    # The spatial conv is (1, 7, 7): nothing varies over time.
    assert (table.loc[table["kernel"] == "conv", "temporal_energy_fraction"] == 0).all()
    # The weights are a copy: changing them leaves the model alone.
    result.weight.zero_()
    assert model.stem[0].weight.abs().sum() > 0


@pytest.mark.parametrize(
    ("backbone", "stem", "module", "shape"),
    [
        ("r3d_18", None, "stem.0", (64, 3, 3, 7, 7)),
        ("resnet18", None, "stem.0", (64, 3, 7, 7)),
        ("cnn_lstm", None, "stem.image_stem.0", (64, 3, 7, 7)),  # FrameWise image stem
        ("r3d_18", "c3d", "stem.0", (64, 3, 3, 3, 3)),
    ],
)
def test_first_conv_of_other_stems(
    backbone: str, stem: str | None, module: str, shape: tuple[int, ...]
) -> None:
    model = stemlab.create_model(backbone, stem=stem, num_classes=5, **small_kwargs(backbone))
    result = first_layer_filters(model)
    assert result.module == module
    assert result.weight.shape == shape
    assert result.effective is None and result.effective_module is None
    assert (result.table["kernel"] == "conv").all() and len(result.table) == shape[0]


def test_filter_stats_closed_form() -> None:
    k = 8
    xs = torch.arange(k, dtype=torch.float32)
    grating = torch.cos(2 * math.pi * 0.25 * xs)[None, :].expand(k, k)  # 0.25 cycles/px along x
    weight = torch.zeros(4, 3, 2, k, k)
    weight[0] = 1.0  # constant: DC, no temporal variation
    weight[1, :, 0], weight[1, :, 1] = grating, -grating  # zero mean over time
    weight[2] = 2.0 * weight[0]  # a scaled copy of filter 0
    weight[3, 0, 0, 0, 0] = 1.0  # a single tap
    table = filter_stats(weight)
    assert list(table.columns) == STAT_COLUMNS
    torch.testing.assert_close(
        torch.tensor(table["l2_norm"].tolist()),
        weight.flatten(1).norm(dim=1),
    )
    assert table["temporal_energy_fraction"].tolist()[:3] == pytest.approx([0.0, 1.0, 0.0])
    assert table["temporal_energy_fraction"][3] == pytest.approx(0.5)
    assert table["dominant_frequency"][0] == 0.0
    assert table["dominant_frequency"][1] == pytest.approx(0.25, abs=1 / 32)
    assert table["max_cosine"][0] == pytest.approx(1.0) and table["nearest_filter"][0] == 2
    assert table["near_duplicate"].tolist() == [True, False, True, False]


def test_filter_stats_2d_and_errors() -> None:
    weight = torch.randn(3, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    table = filter_stats(weight)
    assert table["temporal_energy_fraction"].isna().all()
    with pytest.raises(ValueError, match="weight must be"):
        filter_stats(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="no Conv2d/Conv3d"):
        first_layer_filters(nn.Sequential(nn.Linear(2, 2)))
