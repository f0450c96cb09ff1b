"""Findings claim only what the paired comparisons support, with intervals and Holm-adjusted p."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

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
    assert (
        "Higher (1 of 2; each stem vs `r2d`, Holm over 2): `basic` vs `r2d`: +60.3 points" in text
    )
    # the interval is simultaneous over the family of 2: t quantile at 1 - 0.05 / 2
    d = np.array([0.60, 0.61, 0.60])
    half = stats.t.ppf(1 - 0.025 / 2, 2) * d.std(ddof=1) / np.sqrt(3)
    assert f"(simultaneous 95% CI {100 * (d.mean() - half):+.1f} to" in text
    assert "`r2plus1d` vs `r2d`: +3.7 points, not distinguishable at n=3" in text
    # baseline family: the best arm is described, not ranked with a second family
    assert "Highest mean validation top-1: `basic` (90.3%); the declared family compares" in text


def test_best_stem_not_named_when_tied():
    cells = _cells(
        {
            "r2d": [0.30, 0.31, 0.29],
            "wide": [0.97, 0.99, 0.96],
            "c3d": [0.99, 0.96, 0.98],
        }
    )
    text = "\n".join(accuracy_findings(cells, baseline="r2d", config={"comparisons": "all_pairs"}))
    assert "not distinguishable from `wide` (all 3 pairs, Holm over 3)" in text
    assert "so no single best arm can be named" in text


def test_single_seed_is_never_significant():
    cells = _cells({"r2d": [0.3], "basic": [0.9]})
    text = "\n".join(accuracy_findings(cells, baseline="r2d"))
    assert "Higher" not in text
    assert "`basic` vs `r2d`: n=1: no test." in text
    assert "(the best arm is the reference)" not in text


def test_backbone_ordering_names_significant_pairs_only():
    frames = [
        _cells({"native": [0.25, 0.26, 0.24]}, backbone="r2d_18"),
        _cells({"native": [0.80, 0.82, 0.79]}, backbone="r3d_18"),
        _cells({"native": [0.81, 0.78, 0.83]}, backbone="r2plus1d_18"),
    ]
    text = "\n".join(
        accuracy_findings(pd.concat(frames, ignore_index=True), config={"comparisons": "all_pairs"})
    )
    assert "(all 3 pairs, Holm over 3)" in text
    assert "`r3d_18/native` vs `r2d_18/native`: +55.3 points (simultaneous" in text
    assert (
        "`r2plus1d_18/native` vs `r3d_18/native`: +0.3 points, not distinguishable at n=3" in text
    )
    assert "optimis" not in text  # training loss is never read as optimisation


def test_no_cells_no_claims():
    assert findings(pd.DataFrame({"top1_mean": [np.nan]})) == [
        "Per-seed results are needed to compare stems; only a summary was given, so no "
        "difference is claimed."
    ]
    assert accuracy_findings(pd.DataFrame()) == [
        "No training cell finished, so there is no accuracy to compare."
    ]
