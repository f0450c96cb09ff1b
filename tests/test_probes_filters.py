"""first_layer_filters: which conv, the composed (2+1)D kernel, closed-form filter statistics."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from small_models import randomized, small_kwargs
from torch import nn

import stemlab
from stemlab.probes import compose_2plus1d, filter_stats, first_layer_filters
from stemlab.probes.contract import CellContext, StudyView, get_probe
from stemlab.probes.filters import (
    FILTER_ORDERS,
    colour_split,
    order_filters,
    temporal_energy_fraction,
    weight_change,
)
from stemlab.report.stats import compare, holm

STAT_COLUMNS = [
    "filter", "l2_norm", "temporal_energy_fraction", "dominant_frequency", "nearest_filter",
    "max_cosine", "near_duplicate", "luminance_share",
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


def test_compose_with_scale_scales_the_middle_channels() -> None:
    g = torch.Generator().manual_seed(1)
    spatial, temporal = (
        torch.randn(5, 3, 1, 3, 3, generator=g),
        torch.randn(4, 5, 3, 1, 1, generator=g),
    )
    scale = torch.rand(5, generator=g) + 0.5
    x = torch.randn(1, 3, 5, 8, 8, generator=g)
    expected = F.conv3d(F.conv3d(x, spatial) * scale[None, :, None, None, None], temporal)
    composed = compose_2plus1d(spatial, temporal, scale=scale)
    torch.testing.assert_close(F.conv3d(x, composed), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"scale must be \(5,\)"):
        compose_2plus1d(spatial, temporal, scale=torch.ones(4))


def _r2plus1d_model() -> nn.Module:
    model = stemlab.create_model("r2plus1d_18", num_classes=5, **small_kwargs("r2plus1d_18"))
    return randomized(model, seed=3)  # BN running stats and affine parameters random


def test_effective_kernel_folds_the_eval_mode_bn_scale() -> None:
    model = _r2plus1d_model().train()
    stem = model.stem
    result = first_layer_filters(model)
    assert model.training  # the mode is left alone; eval-mode statistics are used regardless
    assert result.module == "stem.0" and result.effective_module == "stem.3"
    assert "stem.1 (BatchNorm3d)" in result.note and "left out: stem.2 (ReLU)" in result.note
    x = torch.randn(2, 3, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    effective = F.conv3d(x, result.effective, stride=(1, 2, 2), padding=(1, 3, 3))
    stem.eval()
    with torch.no_grad():
        middle = stem[0](x)
        bn_without_shift = stem[1](middle) - stem[1](torch.zeros_like(middle))
        linear = stem[3](bn_without_shift)
        affine = stem[3](stem[1](middle))  # the whole pair without the ReLU
    torch.testing.assert_close(effective, linear, rtol=1e-5, atol=1e-5)
    # Away from the temporal borders (zero padding there) the BN shift adds a constant.
    interior = effective + result.effective_bias[None, :, None, None, None]
    torch.testing.assert_close(interior[:, :, 1:-1], affine[:, :, 1:-1], rtol=1e-5, atol=1e-5)
    # Without the BN scale the composition is different: the folding matters here.
    unscaled = compose_2plus1d(stem[0].weight.detach(), stem[3].weight.detach())
    assert (unscaled - result.effective).abs().max() > 1e-2


def test_r2plus1d_stem_gives_conv_and_effective_kernels() -> None:
    model = stemlab.create_model("r2plus1d_18", num_classes=5, **small_kwargs("r2plus1d_18"))
    result = first_layer_filters(model)
    assert result.weight.shape == (45, 3, 1, 7, 7)
    assert result.effective.shape == (64, 3, 3, 7, 7)
    assert result.kernel is result.effective and result.kernel_name == "effective"
    bn = model.stem[1]
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()  # fresh BN: 1 / sqrt(1 + eps)
    torch.testing.assert_close(
        result.effective,
        compose_2plus1d(model.stem[0].weight, model.stem[3].weight, scale=scale).detach(),
    )
    table = result.table
    assert table["kernel"].value_counts().to_dict() == {"conv": 45, "effective": 64}
    assert list(table.columns) == ["kernel", "module", "rank", *STAT_COLUMNS]
    assert table.loc[table["kernel"] == "effective", "module"].iloc[0] == "stem.3 o stem.0"
    # The spatial conv is (1, 7, 7): nothing varies over time; the effective kernel does.
    assert (table.loc[table["kernel"] == "conv", "temporal_energy_fraction"] == 0).all()
    effective_rows = table[table["kernel"] == "effective"]
    assert (effective_rows["temporal_energy_fraction"] > 0).all()
    assert result.temporal_energy == pytest.approx(
        effective_rows["temporal_energy_fraction"].mean()
    )
    assert result.temporal_energy > 0
    # The weights are a copy: changing them leaves the model alone.
    result.weight.zero_()
    assert model.stem[0].weight.abs().sum() > 0


def test_r2d_kernels_have_no_temporal_energy() -> None:
    model = stemlab.create_model("r3d_18", stem="r2d", num_classes=5, **small_kwargs("r3d_18"))
    result = first_layer_filters(model)
    assert result.effective is None and result.note == "" and result.effective_bias is None
    assert result.weight.shape[2:] == (1, 7, 7)
    assert result.temporal_energy == 0.0
    assert (temporal_energy_fraction(result.weight) == 0).all()


def test_filters_are_ranked_by_the_stated_criterion() -> None:
    model = _r2plus1d_model()
    result = first_layer_filters(model)
    assert result.order_by == "l2_norm"
    effective_rows = result.table[result.table["kernel"] == "effective"].set_index("filter")
    norms = result.effective.flatten(1).norm(dim=1)
    assert list(result.order) == norms.argsort(descending=True, stable=True).tolist()
    assert [int(effective_rows.loc[f, "rank"]) for f in result.order] == list(range(1, 65))
    conv_rows = result.table[result.table["kernel"] == "conv"]
    assert sorted(conv_rows["rank"]) == list(range(1, 46))
    by_index = first_layer_filters(model, order_by="index")
    assert by_index.order == tuple(range(64)) and by_index.order_by == "index"
    by_time = first_layer_filters(model, order_by="temporal_energy_fraction")
    energy = temporal_energy_fraction(by_time.effective)
    assert list(by_time.order) == energy.argsort(descending=True, stable=True).tolist()
    assert set(FILTER_ORDERS) == {"l2_norm", "temporal_energy_fraction", "index"}
    with pytest.raises(
        ValueError, match=r"order_by='l2norm' is not allowed\. Did you mean 'l2_norm'"
    ):
        first_layer_filters(model, order_by="l2norm")
    # 2-D kernels have no temporal energy: NaN sorts last, the channel order is kept.
    flat = filter_stats(torch.randn(4, 3, 5, 5))
    assert order_filters(flat, order_by="temporal_energy_fraction") == [0, 1, 2, 3]


def test_other_layers_between_the_convs_are_named_as_left_out() -> None:
    model = nn.Module()
    model.stem = nn.Sequential(
        nn.Conv3d(3, 6, (1, 3, 3), padding=(0, 1, 1), bias=False),
        nn.GELU(),
        nn.Conv3d(6, 4, (3, 1, 1), padding=(1, 0, 0), bias=False),
    )
    result = first_layer_filters(model)
    assert (
        result.note
        == "effective kernel = stem.2 o stem.0: the linear part; left out: stem.1 (GELU), not linear"
    )
    torch.testing.assert_close(
        result.effective, compose_2plus1d(model.stem[0].weight, model.stem[2].weight).detach()
    )
    torch.testing.assert_close(result.effective_bias, torch.zeros(4))


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
    assert result.kernel is result.weight and len(result.order) == shape[0]


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
    assert temporal_energy_fraction(weight).isnan().all()
    with pytest.raises(ValueError, match="weight must be"):
        filter_stats(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="no Conv2d/Conv3d"):
        first_layer_filters(nn.Sequential(nn.Linear(2, 2)))


def test_colour_split_closed_form() -> None:
    weight = torch.zeros(4, 3, 2, 3, 3)
    weight[0] = 1.0  # grey: all luminance
    weight[1, 0], weight[1, 1] = 1.0, -1.0  # red minus green: no luminance
    weight[2, 0] = 1.0  # red alone: mean 1/3 per channel, energy 3 * 1/9 of 1
    luminance, opponent, share = colour_split(weight)
    torch.testing.assert_close(luminance + opponent, weight)
    assert float((luminance * opponent).sum()) == pytest.approx(0.0, abs=1e-6)  # orthogonal
    torch.testing.assert_close(opponent.sum(dim=1), torch.zeros(4, 2, 3, 3))  # in the plane
    assert share[:3].tolist() == pytest.approx([1.0, 0.0, 1 / 3])
    assert math.isnan(share[3])  # all-zero filter
    assert filter_stats(weight)["luminance_share"].tolist()[:3] == pytest.approx([1, 0, 1 / 3])
    assert filter_stats(torch.ones(2, 1, 3, 3))["luminance_share"].isna().all()
    with pytest.raises(ValueError, match="3 input channels"):
        colour_split(torch.ones(2, 4, 3, 3))


def test_weight_change_closed_form() -> None:
    init = torch.ones(2, 3, 3, 3)
    trained = init.clone()
    trained[0] *= 2.0  # filter 0 moves by its own norm, filter 1 stays
    relative, per_filter = weight_change(trained, init)
    assert relative == pytest.approx(1 / math.sqrt(2))
    assert per_filter.tolist() == pytest.approx([1.0, 0.0])
    assert weight_change(init, init)[0] == 0.0
    with pytest.raises(ValueError, match="must have one shape"):
        weight_change(trained, torch.ones(3, 3, 3, 3))


def _context(model: nn.Module, init: nn.Module | None) -> CellContext:
    return CellContext(
        kind="trained" if init is not None else "profile",
        model=model,
        inputs=torch.zeros(1, 3, 4, 16, 16),
        config={},
        device=torch.device("cpu"),
        init_model=init,
    )


def test_probe_reports_the_init_baseline_and_the_change() -> None:
    init = _r2plus1d_model().eval()
    model = copy.deepcopy(init)
    with torch.no_grad():
        model.stem[0].weight[:5] += 0.5  # a luminance step on five spatial filters
    output = get_probe("filters").run(_context(model, init))
    trained, before = first_layer_filters(model), first_layer_filters(init)
    e, e0 = trained.effective, before.effective
    assert output.metrics["filter_rel_change"] == pytest.approx(
        float((e - e0).norm() / e0.norm()), rel=1e-5
    )
    assert output.metrics["filter_rel_change"] > 0
    assert output.metrics["filter_temporal_energy_init"] == pytest.approx(
        float(temporal_energy_fraction(e0).mean()), rel=1e-5
    )
    assert output.metrics["filter_luminance_share_init"] == pytest.approx(
        float(colour_split(e0)[2].mean()), rel=1e-5
    )
    # a uniform step on every colour channel raises the luminance share
    assert output.metrics["filter_luminance_share"] > output.metrics["filter_luminance_share_init"]
    np.testing.assert_array_equal(output.arrays["effective_init"], e0.numpy())
    np.testing.assert_array_equal(output.arrays["weight_init"], before.weight.numpy())
    table = pd.DataFrame(output.tables["filters"])
    assert table["state"].value_counts().to_dict() == {"trained": 109, "init": 109}
    spatial = table[(table["state"] == "trained") & (table["kernel"] == "conv")]
    per_filter = (model.stem[0].weight - init.stem[0].weight).flatten(1).norm(dim=1) / (
        init.stem[0].weight.flatten(1).norm(dim=1)
    )
    assert spatial.sort_values("filter")["rel_change"].tolist() == pytest.approx(
        per_filter.tolist(), rel=1e-5
    )
    assert (spatial.sort_values("filter")["rel_change"].to_numpy()[5:] == 0).all()
    # without an init model (profile cells): no baseline, nothing invented
    alone = get_probe("filters").run(_context(model, None))
    assert not any(k.endswith("_init") for k in alone.metrics)
    assert "filter_rel_change" not in alone.metrics
    assert set(pd.DataFrame(alone.tables["filters"])["state"]) == {"trained"}


def _view(cells: pd.DataFrame) -> StudyView:
    return StudyView(
        config={},
        cells=cells,
        summary=pd.DataFrame(),
        tables={},
        arrays=lambda key: {},
        compare=compare,
        holm=holm,
    )


def test_findings_state_the_change_and_trained_minus_init() -> None:
    rows = []
    for stem, change, lum0, lum in (
        ("basic", [1.1, 1.2, 1.3], [0.33, 0.34, 0.32], [0.52, 0.58, 0.55]),
        ("r2plus1d", [0.4, 0.5, 0.6], [0.33, 0.33, 0.34], [0.331, 0.34, 0.332]),
    ):
        for seed in range(3):
            rows.append(
                {
                    "kind": "train", "status": "ok", "backbone": "r3d_18", "stem": stem,
                    "seed": seed, "key": f"{stem}{seed}", "filter_rel_change": change[seed],
                    "filter_luminance_share": lum[seed],
                    "filter_luminance_share_init": lum0[seed],
                }
            )  # fmt: skip
    lines = get_probe("filters").findings(_view(pd.DataFrame(rows)))
    assert lines[0].startswith("Training moved the stem's first convolution")
    assert "basic 1.20 (1.10-1.30); r2plus1d 0.50 (0.40-0.60) (mean over 3 seed(s)" in lines[0]
    luminance = next(line for line in lines if "luminance share" in line)
    # basic: paired differences 0.19, 0.24, 0.23 (mean 0.22); Holm over the two arms
    diffs = np.array([0.52, 0.58, 0.55]) - np.array([0.33, 0.34, 0.32])
    assert f"basic {diffs.mean():+.3f} (95% CI" in luminance
    assert "Holm over 2 arms" in luminance and "At init it is already: basic 0.33" in luminance
    assert "r2plus1d +0.001" in luminance and "not distinguishable from init" in luminance
    assert not any("temporal energy" in line for line in lines)  # no _init column: no test
