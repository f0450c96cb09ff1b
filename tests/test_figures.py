"""Figures: mosaic layout in closed form, every plot renders and saves a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from small_models import small_kwargs

import stemlab
from stemlab import probes
from stemlab.report import (
    filter_mosaic,
    plot_activation_stats,
    plot_filter_grid,
    plot_flops_breakdown,
    plot_grad_cam_strip,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_mosaic_layout_3d_filters() -> None:
    # 5 filters, 3 time steps, 3x4 kernels, 4 per band: 2 bands of 3 rows, 1 px gaps, 2 px band gap.
    weight = torch.randn(5, 3, 3, 3, 4, generator=torch.Generator().manual_seed(0))
    mosaic = filter_mosaic(weight, columns=4)
    assert mosaic.shape == (2 * (3 * (3 + 1) + 2) + 1, 4 * (4 + 1) + 1, 3)
    assert mosaic.min() == 0.0 and mosaic.max() == 1.0
    # Filter 0 at time step 1 is the second tile of the first column, scaled over its own range.
    tile = mosaic[1 + 4 : 1 + 4 + 3, 1 : 1 + 4]
    expected = weight[0].permute(1, 2, 3, 0).numpy()
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(tile, expected[1], rtol=1e-5, atol=1e-6)
    assert (mosaic[0] == 1.0).all()  # white border


def test_mosaic_grey_for_non_rgb_and_2d() -> None:
    weight = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    mosaic = filter_mosaic(weight, columns=8)
    assert mosaic.shape == (5 + 2, 3 * 6 + 1, 3)
    tile = mosaic[1:6, 1:6]
    assert np.array_equal(tile[..., 0], tile[..., 1]) and np.array_equal(tile[..., 1], tile[..., 2])
    with pytest.raises(ValueError, match="weight must be"):
        filter_mosaic(torch.zeros(3, 3))


@pytest.fixture(scope="module")
def stem_tables() -> dict[str, dict[str, pd.DataFrame]]:
    x = torch.rand(1, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    activations, flops = {}, {}
    for stem in ("basic", "r2plus1d", "wide:width=16"):
        model = stemlab.create_model("r3d_18", stem=stem, num_classes=5, **small_kwargs("r3d_18"))
        with torch.no_grad(), probes.record_activations(model.eval()) as rec:
            model(x)
        activations[stem], flops[stem] = rec.table(), probes.flops_table(model, x)
    return {"activations": activations, "flops": flops}


def test_filter_grid_panels(tmp_path: Path) -> None:
    model = stemlab.create_model("r2plus1d_18", num_classes=5, **small_kwargs("r2plus1d_18"))
    figure = plot_filter_grid(probes.first_layer_filters(model), title="t", out=tmp_path / "f.png")
    assert isinstance(figure, Figure) and len(figure.axes) == 2  # conv + composed kernel
    _assert_png(tmp_path / "f.png")
    assert len(plot_filter_grid(torch.randn(8, 3, 7, 7)).axes) == 1
    with pytest.raises(TypeError, match="FirstLayerFilters or a tensor"):
        plot_filter_grid("weights")  # type: ignore[arg-type]


def test_activation_stats_plot(stem_tables: dict, tmp_path: Path) -> None:
    tables = stem_tables["activations"]
    figure = plot_activation_stats(tables, out=tmp_path / "a.png")
    _assert_png(tmp_path / "a.png")
    assert len(figure.axes) == 4
    # Only modules every stem has go on the x axis: the stem children differ between stems.
    labels = [t.get_text() for t in figure.axes[-1].get_xticklabels()]
    assert labels == ["stem.0", "stem.1", "stem.2", "stem", "layer1", "layer2", "layer3", "layer4"]
    assert len(figure.axes[0].get_lines()) == 3
    combined = pd.concat([t.assign(stem=s) for s, t in tables.items()])
    assert len(plot_activation_stats(combined, stats=["temporal_std"]).axes) == 1
    with pytest.raises(ValueError, match="not columns"):
        plot_activation_stats(tables, stats=["nope"])


def test_flops_breakdown_plot(stem_tables: dict, tmp_path: Path) -> None:
    flops = stem_tables["flops"]
    figure = plot_flops_breakdown(flops, title="GFLOPs", out=tmp_path / "b.png")
    _assert_png(tmp_path / "b.png")
    gflops_axis = figure.axes[0]
    # Bar stacks sum to each model's total at depth 1.
    tops = {}
    for patch in gflops_axis.patches:
        x = round(patch.get_x() + patch.get_width() / 2)
        tops[x] = max(tops.get(x, 0.0), patch.get_y() + patch.get_height())
    for index, table in enumerate(flops.values()):
        expected = table.loc[table["depth"] == 1, "flops"].sum() / 1e9
        assert tops[index] == pytest.approx(expected, rel=1e-6)


def test_grad_cam_strip(tmp_path: Path) -> None:
    model = stemlab.create_model("r3d_18", num_classes=5, **small_kwargs("r3d_18"))
    clip = torch.rand(1, 3, 6, 32, 32, generator=torch.Generator().manual_seed(0))
    cam = probes.grad_cam(model, clip, 1, "layer2")
    figure = plot_grad_cam_strip(clip[0], cam[0], frames=[0, 2, 5], out=tmp_path / "c.png")
    _assert_png(tmp_path / "c.png")
    assert len(figure.axes) == 2 * 3 + 1  # frames, overlays, colour bar
    image = torch.rand(3, 16, 16)
    assert len(plot_grad_cam_strip(image, torch.rand(16, 16)).axes) == 3
    with pytest.raises(ValueError, match="must match"):
        plot_grad_cam_strip(clip[0], cam[0, :, :8])
    with pytest.raises(ValueError, match="out of range"):
        plot_grad_cam_strip(clip[0], cam[0], frames=[6])
