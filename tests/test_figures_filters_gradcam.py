"""The study figures of the filters and Grad-CAM probes: W / W - W0 / colour split, ranked and
labelled; Grad-CAM over classes and seeds with the at-chance notice; the at-chance rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.contour import ContourSet
from scipy.stats import binom
from small_models import small_kwargs

import stemlab
from stemlab.probes.contract import CellContext, StudyView, get_probe
from stemlab.probes.figures import plot_filter_change, plot_grad_cam_grid
from stemlab.probes.grad_cam import at_chance, pick_per_class

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _texts(figure) -> str:
    found = [t.get_text() for t in figure.findobj(match=lambda a: hasattr(a, "get_text"))]
    return " ".join(found)


def test_filter_change_figure_ranks_by_change_and_labels_it(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    init = torch.randn(6, 3, 3, 5, 5, generator=g)
    trained = init.clone()
    steps = [0.0, 3.0, 1.0, 0.5, 2.0, 0.0]  # luminance steps: the change of each filter
    for index, step in enumerate(steps):
        trained[index] += step
    figure = plot_filter_change(trained, init, title="basic", max_filters=4, out=tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == PNG_MAGIC
    groups = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in groups] == [
        "W (trained)", "W - W0 (change)", "luminance part of W", "opponent part of W",
    ]  # fmt: skip
    # ranked by ||w - w0|| descending: filters 1 (step 3), 4 (2), 2 (1), 3 (0.5)
    rows = [t.get_text() for t in groups[0].get_yticklabels()]
    assert rows == ["#1 ch 1", "#2 ch 4", "#3 ch 2", "#4 ch 3"]
    relative = float((trained - init).norm() / init.norm())
    assert figure.get_suptitle() == f"basic: ||W - W0|| / ||W0|| = {relative:.2f}"
    per_filter = (trained - init).flatten(1).norm(dim=1) / init.flatten(1).norm(dim=1)
    share = trained.mean(1, keepdim=True).expand_as(trained).flatten(1).square().sum(1) / (
        trained.flatten(1).square().sum(1)
    )
    labels = [t.get_text() for t in groups[-1].get_yticklabels()]
    assert labels == [f"{per_filter[c]:.2f} | {100 * share[c]:.0f}%" for c in (1, 4, 2, 3)]
    assert len(groups[0].images) == 4 * 3  # 4 filters x 3 time slices
    assert "ranked by ||w - w0|| (largest change first)" in _texts(figure)
    # grey (non-RGB) kernels: no colour split
    grey = plot_filter_change(torch.ones(2, 1, 3, 3) * 2, torch.ones(2, 1, 3, 3))
    assert [ax.get_title() for ax in grey.axes if ax.get_title()] == [
        "W (trained)",
        "W - W0 (change)",
    ]
    assert grey.get_suptitle() == "||W - W0|| / ||W0|| = 1.00"
    with pytest.raises(ValueError, match="must have one shape"):
        plot_filter_change(trained, init[:3])


def _panel(seed: int, flat: bool, frames: int = 3) -> dict:
    g = torch.Generator().manual_seed(seed)
    masks = np.zeros((4, frames, 16, 16), dtype=np.uint8)
    masks[:, :, 4:10, 5:12] = 1
    return {
        "clips": torch.rand(4, 3, frames, 16, 16, generator=g).numpy(),
        "cams": torch.rand(4, frames, 16, 16, generator=g).numpy(),
        "masks": masks,
        "labels": np.array([0, 0, 1, 1]),
        "predicted": np.array([0, 1, 1, 1]),
        "frames": [0, 3, 7][:frames],
        "heading": f"seed {seed}",
        "at_chance": flat,
    }


def test_grad_cam_grid_over_seeds_with_the_chance_notice(tmp_path: Path) -> None:
    panels = [_panel(0, False), _panel(1, True)]
    figure = plot_grad_cam_grid(
        panels, class_names=["right", "left"], title="basic", out=tmp_path / "g.png"
    )
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC
    assert figure.get_suptitle() == "basic"
    headings = [sub.get_suptitle() for sub in figure.subfigs]
    assert headings == ["seed 0", "seed 1\nat chance: map uninformative"]
    tiles = [ax for ax in figure.axes if ax.images]
    assert len(tiles) == 2 * 4 * 3  # seeds x clips x frames
    labels = [ax.get_ylabel() for ax in tiles if ax.get_ylabel()]
    assert labels[:4] == [
        "true right\npred right (correct)",
        "true right\npred left (wrong)",
        "true left\npred left (correct)",
        "true left\npred left (correct)",
    ]
    assert [ax.get_title() for ax in tiles[:3]] == ["frame 0", "frame 3", "frame 7"]
    contours = [c for ax in tiles for c in ax.collections if isinstance(c, ContourSet)]
    assert len(contours) == len(tiles)  # every tile shows the mask outline
    with pytest.raises(ValueError, match="at least one"):
        plot_grad_cam_grid([])
    bad = _panel(0, False)
    bad["cams"] = bad["cams"][:, :2]
    with pytest.raises(ValueError, match="must match"):
        plot_grad_cam_grid([bad])


@pytest.mark.parametrize(("n", "chance"), [(100, 0.25), (64, 0.25), (400, 0.125), (30, 0.5)])
def test_at_chance_is_the_clopper_pearson_interval(n: int, chance: float) -> None:
    for correct in range(n + 1):
        # The exact 95% interval covers p iff neither exact one-sided 2.5% test rejects p.
        covers = binom.sf(correct - 1, n, chance) > 0.025 and binom.cdf(correct, n, chance) > 0.025
        assert at_chance(correct / n, chance, n) == covers, correct


def test_at_chance_without_a_clip_count_and_errors() -> None:
    assert at_chance(0.29, 0.25) and not at_chance(0.31, 0.25)
    assert not at_chance(0.40, 0.25, 100) and at_chance(0.33, 0.25, 100)  # 33/100: [0.24, 0.43]
    with pytest.raises(ValueError, match="top1 must be a fraction"):
        at_chance(1.5, 0.25)
    with pytest.raises(ValueError, match="n must be a positive int"):
        at_chance(0.5, 0.25, 0)


def test_pick_per_class() -> None:
    assert pick_per_class([2, 0, 1, 0, 2, 1, 0], 2) == [1, 3, 2, 5, 0, 4]
    assert pick_per_class(torch.tensor([1, 1, 1]), 2) == [0, 1]
    with pytest.raises(ValueError, match="per_class"):
        pick_per_class([0, 1], 0)


def test_gradcam_probe_stores_clips_of_every_class_and_the_figure_marks_chance() -> None:
    torch.manual_seed(0)
    model = stemlab.create_model("r3d_18", num_classes=3, **small_kwargs("r3d_18")).eval()
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2])
    masks = torch.zeros(9, 6, 32, 32)
    masks[:, :, 8:20, 8:20] = 1
    context = CellContext(
        kind="trained",
        model=model,
        inputs=torch.randn(9, 3, 6, 32, 32, generator=g),
        config={},
        device=torch.device("cpu"),
        labels=labels,
        masks=masks,
    )
    output = get_probe("grad_cam").run(context)
    arrays = output.arrays
    assert arrays["labels"].tolist() == [0, 0, 1, 1, 2, 2]  # 2 clips of each class
    assert arrays["frames"].tolist() == [0, 2, 3, 5]  # 4 evenly spaced of 6
    assert arrays["input"].shape == (6, 3, 4, 32, 32) and arrays["cam"].shape == (6, 4, 32, 32)
    chosen = [1, 3, 2, 5, 0, 4]
    np.testing.assert_array_equal(
        arrays["input"], context.inputs[chosen][:, :, [0, 2, 3, 5]].numpy().astype(np.float16)
    )
    np.testing.assert_array_equal(arrays["mask"], masks[chosen][:, [0, 2, 3, 5]].numpy())
    with torch.no_grad():
        predicted = model(context.inputs).argmax(1)
    assert arrays["predicted"].tolist() == predicted[chosen].tolist()

    # the study figure: one per arm, up to 3 seeds, at-chance seeds marked
    cells = pd.DataFrame(
        [
            {"key": f"k{seed}", "kind": "train", "status": "ok", "backbone": "r3d_18",
             "stem": "basic", "seed": seed, "top1": top1, "chance": 1 / 3,
             "gradcam_layer": "layer2"}
            for seed, top1 in [(0, 0.95), (1, 0.36), (2, 0.70), (3, 0.99)]
        ]
    )  # fmt: skip
    view = StudyView(
        config={"data": {"test_samples": 100}, "class_names": ["right", "left", "down"]},
        cells=cells,
        summary=pd.DataFrame(),
        tables={},
        arrays=lambda key: {f"grad_cam.{k}": v for k, v in arrays.items()},
    )
    (spec,) = get_probe("grad_cam").figures(view)
    assert spec.name == "gradcam_basic"
    assert "for 3 seed(s)" in spec.caption and "Clopper-Pearson" in spec.caption
    assert "on the 100 test clips" in spec.caption
    figure = spec.make()
    headings = [sub.get_suptitle() for sub in figure.subfigs]
    assert headings == [
        "seed 0: test top-1 95.0% (chance 33.3%)",
        "seed 1: test top-1 36.0% (chance 33.3%)\nat chance: map uninformative",
        "seed 2: test top-1 70.0% (chance 33.3%)",
    ]
    tiles = [ax for ax in figure.axes if ax.images]
    assert len(tiles) == 3 * 6 * 4
    assert tiles[0].get_ylabel().startswith("true right\npred ")
    assert not math.isnan(float(arrays["cam"].astype(float).sum()))
