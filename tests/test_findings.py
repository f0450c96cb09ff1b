"""Findings claim only what the paired comparisons support, with intervals and Holm-adjusted p."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stemlab.report.findings import accuracy_findings, findings


def _cells(values: dict[str, list[float]], backbone: str = "m") -> pd.DataFrame:
    rows = []
    for stem, accuracies in values.items():
        for seed, top1 in enumerate(accuracies):
            rows.append(
                {
                    "kind": "train",
                    "status": "ok",
                    "backbone": backbone,
                    "stem": stem,
                    "seed": seed,
                    "top1": top1,
                }
            )
    return pd.DataFrame(rows)


def test_clear_difference_stated_with_interval_and_adjusted_p():
    cells = _cells(
        {
            "r2d": [0.30, 0.32, 0.28],
            "basic": [0.90, 0.93, 0.88],  # +60 points, tiny paired spread: significant
            "r2plus1d": [0.40, 0.25, 0.36],  # +3.7 points, spread larger than the effect
        }
    )
    text = "\n".join(accuracy_findings(cells, baseline="r2d"))
    assert "Better than `r2d` (1 of 2, Holm over 2 comparisons)" in text
    assert "basic vs r2d: +60.3 points (95% CI" in text
    assert "Not distinguishable from `r2d` at n=3" in text
    assert "r2plus1d vs r2d" in text
    assert "Highest mean top-1: `basic` (90.3%)" in text


def test_best_stem_not_named_when_tied():
    cells = _cells(
        {
            "r2d": [0.30, 0.31, 0.29],
            "wide": [0.97, 0.99, 0.96],
            "c3d": [0.99, 0.96, 0.98],
        }
    )
    text = "\n".join(accuracy_findings(cells, baseline="r2d"))
    assert "not distinguishable at n=3 from `wide`" in text or "from `c3d`" in text
    assert "no single best stem can be named" in text


def test_single_seed_is_never_significant():
    cells = _cells({"r2d": [0.3], "basic": [0.9]})
    text = "\n".join(accuracy_findings(cells, baseline="r2d"))
    assert "Better than" not in text and "Not distinguishable from `r2d` at n=1" in text


def test_backbone_ordering_names_significant_pairs_only():
    frames = [
        _cells({"native": [0.25, 0.26, 0.24]}, backbone="r2d_18"),
        _cells({"native": [0.80, 0.82, 0.79]}, backbone="r3d_18"),
        _cells({"native": [0.81, 0.78, 0.83]}, backbone="r2plus1d_18"),
    ]
    text = "\n".join(accuracy_findings(pd.concat(frames, ignore_index=True)))
    assert text.startswith("Backbones ordered by mean top-1 over 3 seed(s): `r2d_18` 25.0% <")
    assert "Significant pairs (Holm over 3)" in text
    assert "Not distinguishable at n=3: `r3d_18` vs `r2plus1d_18`" in text


def test_no_cells_no_claims():
    assert findings(pd.DataFrame({"top1_mean": [np.nan]})) == [
        "Per-seed results are needed to compare stems; only a summary was given, so no "
        "difference is claimed."
    ]
    assert accuracy_findings(pd.DataFrame()) == [
        "No cell finished training, so there is no accuracy to compare."
    ]
