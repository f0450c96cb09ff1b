"""What the probes' findings may claim, on hand-made tables (no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import stemlab
from stemlab.probes.channel_ablation import _ablation_findings
from stemlab.probes.cka import _cka_findings
from stemlab.probes.contract import StudyView
from stemlab.probes.grad_cam import default_gradcam_layer
from stemlab.report.stats import compare, holm

LAYERS = ["stem output", "layer1", "layer2"]


def _view(cells: pd.DataFrame, tables: dict[str, pd.DataFrame], baseline: str = "r2d") -> StudyView:
    return StudyView(
        config={},
        cells=cells,
        summary=pd.DataFrame(),
        tables=tables,
        arrays=lambda key: {},
        compare=compare,
        baseline=baseline,
        holm=holm,
    )


def _cka_table(versus: dict[str, list[float]], floors: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for stem, means in versus.items():
        for layer, mean in zip(LAYERS, means):
            for seed, noise in enumerate((-0.01, 0.0, 0.012)):
                rows.append(
                    {
                        "stem": stem,
                        "comparison": "vs_baseline",
                        "seed": seed,
                        "layer": layer,
                        "cka": mean + noise,
                    }
                )
    for stem, means in floors.items():
        for layer, mean in zip(LAYERS, means):
            for pair, noise in enumerate((-0.011, 0.001, 0.01)):
                rows.append(
                    {
                        "stem": stem,
                        "comparison": "same_stem_other_seed",
                        "seed": pair,
                        "layer": layer,
                        "cka": mean + noise,
                    }
                )
    return pd.DataFrame(rows)


def test_cka_reach_stops_at_the_first_layer_not_below_both_floors():
    table = _cka_table(
        versus={"c3d": [0.40, 0.05, 0.02], "wide": [0.79, 0.40, 0.30]},
        floors={"r2d": [0.80, 0.45, 0.05], "c3d": [0.85, 0.35, 0.40], "wide": [0.85, 0.70, 0.80]},
    )
    lines = _cka_findings(_view(pd.DataFrame(), {"cka": table}))
    text = "\n".join(lines)
    # c3d: below both floors at the stem output and layer1; at layer2 r2d's own floor is ~0.05,
    # so 0.02 there is not below it and the sequence stops
    assert "`c3d` down to layer1 (stem output, layer1;" in text
    # wide at the stem output (0.79) is not below r2d's floor (0.80 +- 0.01)
    assert "for `wide` not even the stem output is below both floors at n=3" in text
    assert "Bonferroni over 2 stems" in text


def test_ablation_findings_adjust_over_stems():
    rows = []
    for stem, drop, spread in (("a", -0.30, 0.01), ("b", 0.0, 0.01), ("c", -0.02, 0.06)):
        for seed, noise in enumerate((0.0, spread, -spread)):
            rows.append(
                {
                    "kind": "train",
                    "status": "ok",
                    "backbone": "m",
                    "stem": stem,
                    "seed": seed,
                    "key": f"{stem}{seed}",
                    "ablation_quarter_random": 0.8 + noise / 2,
                    "ablation_quarter_importance": 0.8 + drop + noise,
                }
            )
    text = "\n".join(_ablation_findings(_view(pd.DataFrame(rows), {})))
    assert "Holm over 3 stems: a -30.0 points" in text
    assert "For `b`, `c` the important quarter is not distinguishable" in text


def test_against_baseline_states_intervals_and_ties():
    rows = []
    for stem, value in (("r2d", 0.70), ("wide", 0.55), ("basic", 0.70)):
        for seed, noise in enumerate((0.0, 0.004, -0.003)):
            rows.append(
                {
                    "kind": "train",
                    "status": "ok",
                    "backbone": "m",
                    "stem": stem,
                    "seed": seed,
                    "key": f"{stem}{seed}",
                    "rank": value + (noise if stem != "r2d" else 0.0),
                }
            )
    lines = _view(pd.DataFrame(rows), {}).against_baseline("rank", "Rank")
    assert len(lines) == 1
    assert lines[0].startswith("Rank: `r2d` 0.70; differs (Holm over 2) for wide -0.15 (95% CI")
    assert "not distinguishable at n=3 for `basic`" in lines[0]


@pytest.mark.parametrize(("size", "layer", "maps"), [(32, "layer2", 8), (16, "layer1", 8)])
def test_default_gradcam_layer_is_the_deepest_with_8x8_maps(size, layer, maps):
    model = stemlab.create_model(
        "r2plus1d_18", stem="basic:width=4", num_classes=4, widths=(4, 4, 8, 8), layers=(1, 1, 1, 1)
    ).eval()
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    assert default_gradcam_layer(model, torch.zeros(2, 3, 4, size, size)) == (layer, maps)
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before


def test_default_gradcam_layer_falls_back_to_the_largest_map():
    model = stemlab.create_model(
        "r2plus1d_18", stem="basic:width=4", num_classes=4, widths=(4, 4, 8, 8), layers=(1, 1, 1, 1)
    ).eval()
    assert default_gradcam_layer(model, torch.zeros(1, 3, 4, 8, 8)) == ("stem", 4)
    np.testing.assert_equal(model.training, False)


def test_per_model_gradcam_uses_clips_as_replicates_and_holm():
    from stemlab.probes.grad_cam import _per_model_findings

    rng = np.random.default_rng(0)
    area = np.full(32, 0.2)
    arrays = {
        "good0": {"grad_cam.clip_on_object": 0.4 + 0.05 * rng.standard_normal(32)},
        "good1": {"grad_cam.clip_on_object": 0.35 + 0.05 * rng.standard_normal(32)},
        "flat0": {"grad_cam.clip_on_object": 0.2 + 0.05 * rng.standard_normal(32)},
    }
    for value in arrays.values():
        value["grad_cam.clip_area"] = area
    arrays["flat0"]["grad_cam.clip_on_object"][:3] = np.nan  # all-zero maps are not scored
    cells = pd.DataFrame(
        [
            {"key": "good0", "backbone": "m", "stem": "c3d", "seed": 0},
            {"key": "good1", "backbone": "m", "stem": "c3d", "seed": 1},
            {"key": "flat0", "backbone": "m", "stem": "r2d", "seed": 0},
        ]
    ).assign(kind="train", status="ok")
    view = StudyView(
        config={},
        cells=cells,
        summary=pd.DataFrame(),
        tables={},
        arrays=arrays.__getitem__,
        compare=compare,
        holm=holm,
    )
    (text,) = _per_model_findings(view, cells)
    assert "with its 32 probe clips as the replicates" in text
    assert "Holm over 3 models" in text
    assert "2 of 2 `c3d` models beat the uniform map (+19.2 points (95% CI +17.8" in text
    assert "none of the `r2d` models does" in text
