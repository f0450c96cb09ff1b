"""Findings: a difference is called real only when it exceeds the summed seed spread."""

from __future__ import annotations

import pandas as pd

from stemlab.report.findings import findings


def _summary(rows):
    columns = ["backbone", "stem", "top1_mean", "top1_std", "n_seeds", "gflops", "params"]
    return pd.DataFrame(rows, columns=columns)


def test_clear_unclear_and_worse_against_a_baseline():
    summary = _summary(
        [
            ("m", "r2d", 0.30, 0.02, 2, 40.0, 31e6),
            ("m", "basic", 0.90, 0.08, 2, 41.0, 31.5e6),  # +60 > 0.10: clear
            ("m", "r2plus1d", 0.35, 0.05, 2, 40.5, 31.5e6),  # +5 < 0.07: within spread
            ("m", "bad", 0.10, 0.01, 2, 40.0, 31e6),  # -20 > 0.03: clearly worse
        ]
    )
    text = "\n".join(
        findings(summary, {"baseline": "r2d", "temporal": ["basic", "r2plus1d", "bad"]})
    )
    assert "1 of 3 compared stems beat the `r2d` stem (30.0%)" in text
    assert "basic (+60.0 points)" in text
    assert (
        "Within the seed spread of `r2d` (no difference can be claimed): r2plus1d (+5.0 points)"
        in text
    )
    assert "Stems below `r2d` by more than the seed spread: bad (-20.0 points)" in text
    assert "most accurate stem is **basic** (90.0% top-1" in text
    assert "40.00 GFLOPs (`r2d`) to 41.00 GFLOPs (`basic`), 1.00x the `basic` model's" in text


def test_one_seed_claims_nothing():
    summary = _summary(
        [
            ("m", "r2d", 0.3, float("nan"), 1, 1.0, 1.0),
            ("m", "basic", 0.9, float("nan"), 1, 1.0, 1.0),
        ]
    )
    text = "\n".join(findings(summary, {"baseline": "r2d"}))
    assert "fewer than two seeds" in text and "beat the" not in text


def test_backbone_comparison_with_one_stem_each():
    summary = _summary(
        [
            ("r2d_18", "native", 0.30, 0.01, 2, 1.0, 1.0),
            ("r3d_18", "native", 0.80, 0.02, 2, 2.0, 2.0),
            ("mc3_18", "native", 0.79, 0.02, 2, 2.0, 2.0),
        ]
    )
    text = "\n".join(findings(summary))
    assert "Backbones ranked by top-1" in text and text.index("`r3d_18`") < text.index("`r2d_18`")
    assert "`r3d_18` beats, by more than the seed spread: `r2d_18` (-50.0 points)" in text
    assert "`mc3_18` (-" not in text


def test_no_training_results():
    assert findings(_summary([("m", "basic", float("nan"), float("nan"), 0, 1.0, 1.0)])) == [
        "No cell finished training, so there is no accuracy to compare."
    ]
