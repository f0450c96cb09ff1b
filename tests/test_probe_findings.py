"""What the probes' findings may claim, on hand-made tables (no training)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

import stemlab
from stemlab.probes._baselines import training_change_findings
from stemlab.probes.channel_ablation import _ablation_findings
from stemlab.probes.cka import _cka_findings, arm_learned, cka_reference
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


def _cka_table(
    versus: dict[str, list[float]], floors: dict[str, list[float]], reference: str = "r2d"
) -> pd.DataFrame:
    rows = []
    for stem, means in versus.items():
        for layer, mean in zip(LAYERS, means):
            for seed, noise in enumerate((-0.01, 0.0, 0.012)):
                for state, shift in (("trained", 0.0), ("init", -0.2)):
                    rows.append(
                        {
                            "backbone": "m",
                            "stem": stem,
                            "reference": reference,
                            "comparison": "stem_pair",
                            "state": state,
                            "seed": seed,
                            "seed_b": seed,
                            "layer": layer,
                            "cka": mean + noise + shift,
                        }
                    )
    for stem, means in floors.items():
        for layer, mean in zip(LAYERS, means):
            for pair, noise in enumerate((-0.011, 0.001, 0.01)):
                rows.append(
                    {
                        "backbone": "m",
                        "stem": stem,
                        "reference": stem,
                        "comparison": "same_stem_other_seed",
                        "state": "trained",
                        "seed": pair,
                        "seed_b": pair + 1,
                        "layer": layer,
                        "cka": mean + noise,
                    }
                )
    return pd.DataFrame(rows)


def _top1_cells(top1: dict[str, list[float]], chance: float = 0.25) -> pd.DataFrame:
    rows = []
    for stem, values in top1.items():
        for seed, value in enumerate(values):
            rows.append(
                {
                    "kind": "train",
                    "status": "ok",
                    "backbone": "m",
                    "stem": stem,
                    "seed": seed,
                    "key": f"{stem}{seed}",
                    "top1": value,
                    "chance": chance,
                }
            )
    return pd.DataFrame(rows)


def test_cka_reach_stops_at_the_first_layer_not_below_both_floors():
    table = _cka_table(
        versus={"c3d": [0.40, 0.05, 0.02], "wide": [0.79, 0.40, 0.30]},
        floors={"r2d": [0.80, 0.45, 0.05], "c3d": [0.85, 0.35, 0.40], "wide": [0.85, 0.70, 0.80]},
    )
    cells = _top1_cells({"r2d": [0.90, 0.92, 0.91], "c3d": [0.8] * 3, "wide": [0.7] * 3})
    lines = _cka_findings(_view(cells, {"cka": table}))
    text = "\n".join(lines)
    # r2d learned: one-sided one-sample t of top1 - chance over the 3 seeds
    margin = np.array([0.90, 0.92, 0.91]) - 0.25
    t = margin.mean() / (margin.std(ddof=1) / np.sqrt(3))
    p = stats.t.sf(t, df=2)
    assert lines[0] == (
        "CKA reference `r2d` learned (mean test top-1 91.0% vs chance 25.0%; one-sided "
        f"one-sample t over 3 seeds of top-1 - chance, p {p:.2g})."
    )
    # c3d: below both floors at the stem output and layer1; at layer2 r2d's own floor is ~0.05,
    # so 0.02 there is not below it and the sequence stops; the untrained pair sits 0.2 lower
    assert (
        "`c3d` down to layer1 (stem output, layer1; at layer1 CKA 0.05, before training -0.15"
        in (text)
    )
    assert "for `wide` not even the stem output is below both floors at n=3" in text
    assert "Bonferroni over 2 stems" in text
    # the matrix line: mean over the 2 stem pairs and 3 seeds, trained / init / floor
    floor_stem = np.mean([0.80, 0.85, 0.85])
    assert (
        f"stem output {np.mean([0.40, 0.79]) + 0.002 / 3:.2f} / "
        f"{np.mean([0.40, 0.79]) + 0.002 / 3 - 0.2:.2f} / {floor_stem:.2f};" in text
    )


def _binomial_tail(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_cka_reference_switches_to_the_best_learning_arm_when_the_baseline_is_at_chance():
    versus = {"r2d": [0.30, 0.10, 0.05], "wide": [0.50, 0.20, 0.10]}
    floors = {"c3d": [0.90, 0.80, 0.70], "r2d": [0.85, 0.75, 0.65], "wide": [0.90, 0.80, 0.70]}
    table = pd.concat(
        [
            _cka_table(versus, floors, reference="c3d"),
            # CKA against r2d (at chance) is present too and must not be used
            _cka_table({"c3d": [0.99, 0.99, 0.99]}, {}, reference="r2d"),
        ]
    )
    cells = _top1_cells(
        {"r2d": [0.24, 0.25, 0.26], "c3d": [0.95, 0.96, 0.97], "wide": [0.60, 0.62, 0.61]}
    )
    view = _view(cells, {"cka": table})
    view.config = {"data": {"test_samples": 200}}
    lines = _cka_findings(view)
    # r2d: 48, 50 and 52 of 200 correct at chance 1/4; the largest one-sided p is seed 0's
    worst = _binomial_tail(48, 200, 0.25)
    assert lines[0].startswith(
        "CKA against `r2d` is uninformative: its top-1 is not above chance by a tested "
        "margin (mean test top-1 25.0% vs chance 25.0%; one-sided exact binomial test per seed "
        f"on 200 test clips, largest p {worst:.2g} over 3 seeds). The CKA findings use the "
        "best-learning arm `c3d` as the reference instead (mean test top-1 96.0%"
    )
    best = max(_binomial_tail(round(v * 200), 200, 0.25) for v in (0.95, 0.96, 0.97))
    assert f"largest p {best:.2g} over 3 seeds)." in lines[0]
    text = "\n".join(lines)
    assert "CKA to the `c3d` model of the same seed" in text
    assert "`r2d` down to layer2" in text  # 0.05 against floors 0.65 and 0.70
    assert "0.99" not in text
    reference = cka_reference(view, "m")
    assert (reference.stem, reference.requested) == ("c3d", "r2d")
    assert reference.learned == {"r2d": False, "c3d": True}


def test_cka_with_no_arm_above_chance_makes_no_reach_claim():
    table = _cka_table({"c3d": [0.3, 0.1, 0.0]}, {"c3d": [0.9] * 3, "r2d": [0.9] * 3})
    cells = _top1_cells({"r2d": [0.25, 0.26, 0.245], "c3d": [0.26, 0.25, 0.255]})
    lines = _cka_findings(_view(cells, {"cka": table}))
    assert lines[0].startswith("CKA against `r2d` is uninformative")
    assert "nor is the best-learning arm `c3d` (mean test top-1 25.5%" in lines[0]
    assert lines[0].endswith(
        "No arm is shown to have learned, so no CKA comparison here says how far a stem change "
        "reaches."
    )
    assert not any("below both" in line for line in lines)
    assert cka_reference(_view(cells, {}), "m").stem is None


def test_arm_learned_closed_forms():
    learned, text = arm_learned([0.30, 0.31], 0.25, 100)
    worst = _binomial_tail(30, 100, 0.25)
    assert learned is (worst < 0.05)
    assert (
        text
        == f"one-sided exact binomial test per seed on 100 test clips, largest p {worst:.2g} over 2 seeds"
    )
    assert arm_learned([0.9, 0.9, 0.9], 0.25, None)[0] is None  # no spread and no clip count
    assert arm_learned([0.9], 0.25, None)[0] is None
    assert arm_learned([0.9], 0.25, 50)[0] is True
    margin = np.array([0.27, 0.25, 0.30]) - 0.25
    p = stats.t.sf(margin.mean() / (margin.std(ddof=1) / np.sqrt(3)), df=2)
    assert arm_learned([0.27, 0.25, 0.30], 0.25, None) == (
        p < 0.05,
        f"one-sided one-sample t over 3 seeds of top-1 - chance, p {p:.2g}",
    )


def _rank_cells(init: dict[str, list[float]], trained: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for stem in init:
        for seed, (before, after) in enumerate(zip(init[stem], trained[stem])):
            rows.append(
                {
                    "kind": "train",
                    "status": "ok",
                    "backbone": "m",
                    "stem": stem,
                    "seed": seed,
                    "key": f"{stem}{seed}",
                    "effective_rank_fraction": after,
                    "effective_rank_fraction_init": before,
                }
            )
    return pd.DataFrame(rows)


def test_training_change_findings_say_what_is_already_there_at_init():
    base_init = np.array([0.60, 0.61, 0.59, 0.605])
    base = base_init + 0.02 + np.array([0.001, -0.001, 0.002, -0.002])
    init = {
        "r2d": base_init,
        "r2plus1d": base_init - 0.27 + np.array([0.003, -0.003, 0.002, -0.002]),
        "wide": base_init + np.array([0.005, -0.004, -0.003, 0.002]),
    }
    trained = {
        "r2d": base,
        "r2plus1d": base - 0.18 + np.array([0.002, -0.002, 0.001, -0.001]),
        "wide": base + 0.18 + np.array([0.004, -0.001, 0.0, -0.003]),
    }
    lines = training_change_findings(
        _view(_rank_cells(init, trained), {}), "effective_rank_fraction", "Rank"
    )
    assert len(lines) == 2
    change, between = lines
    assert change.startswith(
        "Rank, trained minus init (the same arm and seed before training; paired over 4 seeds, "
        "Holm over 3 stems): training changed it for `r2d` +0.02 (95% CI"
    )
    delta = trained["r2plus1d"] - init["r2plus1d"]
    assert f"`r2plus1d` {delta.mean():+.2f} (95% CI" in change
    gap = delta - (trained["r2d"] - init["r2d"])
    assert between.startswith(
        "Rank against `r2d` (0.62 trained, 0.60 at init; paired over seeds, Holm over 2 stems in "
        "each state): the difference is already there at init for `r2plus1d` (-0.27 at init vs "
        f"-0.18 trained; training moved the gap by {gap.mean():+.2f} (95% CI"
    )
    assert (
        "Training made the difference for `wide` (+0.18 trained vs +0.00 at init (not "
        "distinguishable there);"
    ) in between


def test_training_change_findings_without_init_values_fall_back_to_the_trained_comparison():
    cells = _rank_cells(
        {"r2d": [0.5, 0.6, 0.7], "wide": [0.5, 0.6, 0.7]},
        {"r2d": [0.6, 0.61, 0.62], "wide": [0.3, 0.32, 0.31]},
    )
    cells = cells.drop(columns="effective_rank_fraction_init")
    view = _view(cells, {})
    assert training_change_findings(view, "effective_rank_fraction", "Rank") == (
        view.against_baseline("effective_rank_fraction", "Rank")
    )


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


def test_cka_reference_reads_each_cells_clip_count_and_split():
    cells = _top1_cells({"r2d": [0.30, 0.33, 0.31], "c3d": [0.9, 0.9, 0.9]})
    cells["test_clips"] = [100, 120, 100, 100, 100, 100]
    reference = cka_reference(_view(cells, {}), "m")
    worst = max(
        _binomial_tail(k, n, 0.25) for k, n in ((30, 100), (round(0.33 * 120), 120), (31, 100))
    )
    assert reference.text["r2d"] == (
        "mean test top-1 31.3% vs chance 25.0%; one-sided exact binomial test per seed on 100-120 "
        f"test clips, largest p {worst:.2g} over 3 seeds"
    )
    assert reference.stem == ("r2d" if worst < 0.05 else "c3d")
    # a study without a test split scores top1 on validation: the config's val_samples count
    cells = _top1_cells({"r2d": [0.9, 0.9, 0.9]}).assign(top1_split="validation")
    view = _view(cells, {})
    view.config = {"data": {"val_samples": 40, "test_samples": 999}}
    reference = cka_reference(view, "m")
    assert reference.text["r2d"].startswith("mean validation top-1 90.0% vs chance 25.0%; ")
    assert "on 40 validation clips, largest p" in reference.text["r2d"]
    with pytest.raises(ValueError, match=r"clips must hold one count per top1 value \(2\), got 3"):
        arm_learned([0.5, 0.6], 0.25, [10, 10, 10])
