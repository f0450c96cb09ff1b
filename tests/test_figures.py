"""Figures: mosaic layout in closed form, labels and structure of every plot, PNGs written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from small_models import randomized, small_kwargs

import stemlab
from stemlab import probes
from stemlab.report.figures import (
    filter_mosaic,
    plot_activation_stats,
    plot_confusion_matrix,
    plot_filter_grid,
    plot_flops_breakdown,
    plot_grad_cam_strip,
    time_slice_labels,
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


def _texts(figure: Figure) -> str:
    return " ".join(t.get_text() for t in figure.texts)


def _ticks(axis_labels: list) -> list[str]:
    return [t.get_text() for t in axis_labels]


def test_time_slice_labels() -> None:
    assert time_slice_labels(3) == ["t=-1", "t=0", "t=+1"]
    assert time_slice_labels(5) == ["t=-2", "t=-1", "t=0", "t=+1", "t=+2"]
    assert time_slice_labels(2) == ["t=0", "t=1"]
    assert time_slice_labels(1) == ["t=0"]


def test_filter_grid_shows_the_labelled_effective_kernel(tmp_path: Path) -> None:
    model = randomized(
        stemlab.create_model("r2plus1d_18", num_classes=5, **small_kwargs("r2plus1d_18"))
    )
    result = probes.first_layer_filters(model)
    figure = plot_filter_grid(result, title="r2plus1d", out=tmp_path / "f.png")
    _assert_png(tmp_path / "f.png")
    assert isinstance(figure, Figure) and len(figure.axes) == 4  # 64 filters, 16 per column
    for ax in figure.axes:
        assert _ticks(ax.get_xticklabels()) == ["t=-1", "t=0", "t=+1"]
        assert len(ax.images) == 16 * 3
    rows = _ticks(figure.axes[0].get_yticklabels())
    assert rows[:2] == [f"#1 ch {result.order[0]}", f"#2 ch {result.order[1]}"]
    assert _ticks(figure.axes[3].get_yticklabels())[-1] == f"#64 ch {result.order[63]}"
    caption = _texts(figure)
    for phrase in (
        "effective kernel stem.3 o BN scale o stem.0 (3x7x7)",
        "64 of 64 filters, ranked by descending L2 norm",
        "scaled by its own max |w|: 0 = mid grey",
        "ReLU between (2+1)D convs omitted",
    ):
        assert phrase in caption
    # The first tile is the top filter's t=-1 slice, divided by that filter's max |w|.
    top = result.effective[result.order[0]]
    expected = (0.5 + 0.5 * top / top.abs().max())[:, 0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), expected, rtol=1e-5)


def test_filter_grid_options_and_errors() -> None:
    model = stemlab.create_model("r2plus1d_18", num_classes=5, **small_kwargs("r2plus1d_18"))
    result = probes.first_layer_filters(model)
    few = plot_filter_grid(result, max_filters=10)
    assert len(few.axes) == 1 and "10 of 64 filters" in _texts(few)
    conv = plot_filter_grid(result, kernel="conv", order="index", max_filters=8)
    assert _ticks(conv.axes[0].get_xticklabels()) == ["t=0"]
    assert _ticks(conv.axes[0].get_yticklabels())[:2] == ["#1 ch 0", "#2 ch 1"]
    assert "ReLU" not in _texts(conv) and "stem.0 weights (1x7x7), 8 of 45" in _texts(conv)
    given = plot_filter_grid(torch.randn(8, 3, 7, 7), order=[3, 1], time_labels=False)
    assert _ticks(given.axes[0].get_yticklabels()) == ["#1 ch 3", "#2 ch 1"]
    assert given.axes[0].get_xticks().size == 0 and "the given order" in _texts(given)
    flat = plot_filter_grid(torch.randn(8, 2, 5, 5))
    assert _ticks(flat.axes[0].get_xticklabels()) == ["2-D"]
    assert "grey = mean over input channels" in _texts(flat)
    with pytest.raises(TypeError, match="FirstLayerFilters or a tensor"):
        plot_filter_grid("weights")  # type: ignore[arg-type]
    basic = probes.first_layer_filters(
        stemlab.create_model("r3d_18", num_classes=5, **small_kwargs("r3d_18"))
    )
    with pytest.raises(ValueError, match="has no composed"):
        plot_filter_grid(basic, kernel="effective")
    with pytest.raises(ValueError, match="order="):
        plot_filter_grid(basic, order="norm")
    with pytest.raises(ValueError, match="distinct filter indices"):
        plot_filter_grid(basic, order=[0, 0])


def test_activation_stats_plot(stem_tables: dict, tmp_path: Path) -> None:
    tables = stem_tables["activations"]
    figure = plot_activation_stats(tables, out=tmp_path / "a.png")
    _assert_png(tmp_path / "a.png")
    assert len(figure.axes) == 4
    # Only modules every stem has go on the x axis: the stem children differ between stems.
    # Aligned by role: the stem children (BN in one stem, ReLU in another) are left out.
    labels = [t.get_text() for t in figure.axes[-1].get_xticklabels()]
    assert labels == ["stem output", "layer1", "layer2", "layer3", "layer4"]
    assert len(figure.axes[0].get_lines()) == 3
    assert len(figure.legends) == 1 and not figure.axes[0].get_legend()
    one = plot_activation_stats({"basic": tables["basic"]}, stats=["mean"])
    assert _ticks(one.axes[0].get_xticklabels())[:3] == ["stem.0", "stem.1", "stem.2"]
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
        assert gflops_axis.texts[index].get_text() == f"{expected:.3g}"
    assert gflops_axis.get_ylim()[1] == pytest.approx(1.12 * max(tops.values()))


def test_grad_cam_strip(tmp_path: Path) -> None:
    model = stemlab.create_model("r3d_18", num_classes=5, **small_kwargs("r3d_18"))
    clip = torch.rand(1, 3, 6, 32, 32, generator=torch.Generator().manual_seed(0))
    cam = probes.grad_cam(model, clip, 1, "layer2")
    mask = torch.zeros(6, 32, 32)
    mask[:5, 8:20, 10:24] = 1  # no object in frame 5
    figure = plot_grad_cam_strip(
        clip[0], cam[0], mask=mask, true_label=1, predicted_label=3,
        class_names=["left", "right", "up", "down", "still"], frames=[0, 2, 5],
        title="basic, seed 0", out=tmp_path / "c.png",
    )  # fmt: skip
    _assert_png(tmp_path / "c.png")
    assert len(figure.axes) == 2 * 3 + 1  # frames, overlays, colour bar
    assert figure.get_suptitle() == "basic, seed 0 | true: right, predicted: down (wrong)"
    frame_axes = np.array(figure.axes[:6]).reshape(2, 3)
    for row in range(2):
        for column, has_object in enumerate([True, True, False]):
            contours = [c for c in frame_axes[row, column].collections if isinstance(c, ContourSet)]
            assert len(contours) == int(has_object)
            if has_object:
                assert list(contours[0].levels) == [0.5]
                # The outline runs along the mask's border (rows 8..19, columns 10..23).
                vertices = np.concatenate([p.vertices for p in contours[0].get_paths()])
                assert vertices[:, 0].min() == pytest.approx(9.5, abs=0.51)
                assert vertices[:, 1].max() == pytest.approx(19.5, abs=0.51)
    assert "object mask" in _texts(figure)
    right = plot_grad_cam_strip(clip[0], cam[0], true_label="up", predicted_label="up")
    assert right.get_suptitle() == "true: up, predicted: up (correct)"
    image = torch.rand(3, 16, 16)
    assert len(plot_grad_cam_strip(image, torch.rand(16, 16)).axes) == 3
    with pytest.raises(ValueError, match="must match"):
        plot_grad_cam_strip(clip[0], cam[0, :, :8])
    with pytest.raises(ValueError, match="out of range"):
        plot_grad_cam_strip(clip[0], cam[0], frames=[6])
    with pytest.raises(ValueError, match="mask must have cam's shape"):
        plot_grad_cam_strip(clip[0], cam[0], mask=mask[:, :16])
    with pytest.raises(ValueError, match="label 7 out of range for 2 class_names"):
        plot_grad_cam_strip(clip[0], cam[0], true_label=7, class_names=["a", "b"])


def test_confusion_matrix(tmp_path: Path) -> None:
    counts = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])
    names = ["left", "right", "still"]
    figure = plot_confusion_matrix(counts, class_names=names, title="basic", out=tmp_path / "m.png")
    _assert_png(tmp_path / "m.png")
    ax = figure.axes[0]
    assert len(figure.axes) == 2  # the matrix and its colour bar
    assert _ticks(ax.get_xticklabels()) == names and _ticks(ax.get_yticklabels()) == names
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert [t.get_text() for t in ax.texts] == [str(v) for v in counts.flatten()]
    shares = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 0.0]])  # empty row: 0
    np.testing.assert_allclose(ax.images[0].get_array(), shares)
    assert ax.get_title() == "basic\naccuracy 85.0% (n=20)"
    assert not any(math.isnan(v) for v in np.asarray(ax.images[0].get_array()).flatten())
    assert _ticks(plot_confusion_matrix(torch.eye(2)).axes[0].get_xticklabels()) == ["0", "1"]
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="class_names must have 2 names"):
        plot_confusion_matrix(np.eye(2), class_names=["a"])
    with pytest.raises(ValueError, match="non-negative"):
        plot_confusion_matrix(-np.eye(2))
