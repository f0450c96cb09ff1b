"""report.stats: t-tests and intervals vs closed forms and scipy, Holm, error rates by simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stemlab.report.stats import COMPARE_COLUMNS, compare, describe, holm, paired_t, welch_t

A = [0.61, 0.55, 0.70, 0.66]
B = [0.72, 0.69, 0.74, 0.80]


def _cells(
    groups: dict[str, list[float]], seeds: dict[str, list[int]] | None = None
) -> pd.DataFrame:
    rows = []
    for name, values in groups.items():
        for seed, value in zip((seeds or {}).get(name, range(len(values))), values):
            rows.append({"stem": name, "seed": seed, "top1": value, "status": "ok"})
    return pd.DataFrame(rows)


def test_paired_closed_form_and_scipy() -> None:
    row = compare(_cells({"a": A, "b": B})).iloc[0]
    d = np.subtract(B, A)
    n = len(d)
    se = d.std(ddof=1) / math.sqrt(n)
    t = d.mean() / se
    assert row["test"] == "paired t" and row["n_pairs"] == n
    assert row["diff"] == pytest.approx(d.mean())
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), n - 1), rel=1e-10)
    assert row["p_value"] == pytest.approx(stats.ttest_rel(B, A).pvalue, rel=1e-10)
    half = stats.t.ppf(0.975, n - 1) * se
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    scipy_ci = stats.ttest_rel(B, A).confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((scipy_ci.low, scipy_ci.high))
    # One comparison: Holm changes nothing.
    assert row["p_adjusted"] == row["p_value"]
    ninety = compare(_cells({"a": A, "b": B}), confidence=0.9).iloc[0]
    assert ninety["ci_high"] - ninety["diff"] == pytest.approx(stats.t.ppf(0.95, n - 1) * se)


def test_welch_closed_form_and_scipy() -> None:
    a, b = A, [0.72, 0.69, 0.95]
    row = compare(_cells({"a": a, "b": b})).iloc[0]
    assert row["test"] == "welch t" and row["n_pairs"] == 0  # seeds {0,1,2,3} vs {0,1,2}
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    diff = np.mean(b) - np.mean(a)
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(diff / se), df), rel=1e-10)
    assert row["p_value"] == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    half = stats.t.ppf(0.975, df) * se
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((diff - half, diff + half))
    scipy_ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((scipy_ci.low, scipy_ci.high))
    # Same seeds but pair_by=None: Welch even so.
    forced = compare(_cells({"a": A, "b": B}), pair_by=None).iloc[0]
    assert forced["test"] == "welch t"
    assert forced["p_value"] == pytest.approx(stats.ttest_ind(B, A, equal_var=False).pvalue)
    # Different seed sets of equal size do not pair either.
    other = compare(_cells({"a": A, "b": B}, seeds={"b": [0, 1, 2, 9]})).iloc[0]
    assert other["test"] == "welch t"


def test_holm_hand_computed() -> None:
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.01, math.nan, 0.04]), [0.02, math.nan, 0.04])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError, match=r"p_values must lie in \[0, 1\]"):
        holm([0.2, 1.5])


def _holm_by_definition(p: list[float]) -> list[float]:
    # statsmodels' multipletests(method="holm"), written out: p_(i) * (m - i + 1), running max, <= 1.
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for position, index in enumerate(order, start=1):
        running = max(running, p[index] * (m - position + 1))
        adjusted[index] = min(1.0, running)
    return adjusted


def test_holm_matches_definition_on_random_and_stacked_input() -> None:
    rng = np.random.default_rng(1)
    batch = rng.uniform(0, 0.2, size=(50, 9))
    batch[:, 3] = batch[:, 5]  # ties
    stacked = holm(batch)
    for row, adjusted in zip(batch, stacked):
        np.testing.assert_allclose(adjusted, _holm_by_definition(row.tolist()), rtol=1e-12)


def test_compare_rows_order_and_columns() -> None:
    cells = _cells({"r2d": [0.3, 0.35, 0.32], "wide": [0.9, 0.97, 0.95], "basic": [0.5, 0.6, 0.55]})
    result = compare(cells, baseline="r2d")
    assert list(result.columns) == list(COMPARE_COLUMNS)
    assert list(zip(result["a"], result["b"])) == [("r2d", "wide"), ("r2d", "basic")]
    every = compare(cells)
    assert list(zip(every["a"], every["b"])) == [
        ("r2d", "wide"), ("r2d", "basic"), ("wide", "basic"),
    ]  # fmt: skip
    np.testing.assert_allclose(every["p_adjusted"], holm(every["p_value"]))
    assert (every["significant"] == (every["p_adjusted"] < 0.05)).all()
    assert every.loc[0, "diff"] == pytest.approx(
        np.mean([0.9, 0.97, 0.95]) - np.mean([0.3, 0.35, 0.32])
    )
    assert result.attrs["metric"] == "top1" and result.attrs["pair_by"] == "seed"
    assert compare(cells.iloc[:3]).empty  # one group: nothing to compare


def test_compare_failed_rows_small_groups_and_nan() -> None:
    cells = _cells({"a": [0.5, 0.6, 0.7], "b": [0.8, 0.9, 0.85], "c": [0.4, 0.1]})
    cells.loc[len(cells)] = {"stem": "b", "seed": 3, "top1": 0.0, "status": "failed"}
    cells.loc[len(cells)] = {"stem": "c", "seed": 2, "top1": math.nan, "status": "ok"}
    cells.loc[len(cells)] = {"stem": "d", "seed": 0, "top1": 0.9, "status": "failed"}
    result = compare(cells, baseline="a").set_index("b")
    assert result.loc["b", "n_b"] == 3 and result.loc["b", "test"] == "paired t"
    assert result.loc["c", "n_b"] == 2 and result.loc["c", "test"] == "welch t"
    failed = result.loc["d"]
    assert failed["n_b"] == 0 and failed["test"] == "none" and not failed["significant"]
    assert math.isnan(failed["p_value"]) and math.isnan(failed["p_adjusted"])
    assert math.isnan(failed["ci_low"]) and math.isnan(failed["mean_b"])
    single = compare(_cells({"a": [0.1, 0.2], "b": [0.9]}, seeds={"b": [0]})).iloc[0]
    assert single["test"] == "none" and not single["significant"]
    # Holm counts only the testable rows: two p-values, so the smaller is doubled.
    tested = result["p_value"].dropna()
    assert result["p_adjusted"].min() == pytest.approx(min(1.0, 2 * tested.min()))


def test_compare_zero_spread() -> None:
    # Every paired difference the same: the limit of the t-test (p = 0, interval of width 0).
    cells = _cells({"a": [0.25, 0.30, 0.28], "b": [0.90, 0.95, 0.93], "c": [0.25, 0.30, 0.28]})
    result = compare(cells, baseline="a").set_index("b")
    assert result.loc["b", "p_value"] == 0.0 and result.loc["b", "significant"]
    assert result.loc["b", "ci_low"] == result.loc["b", "ci_high"] == result.loc["b", "diff"]
    assert result.loc["c", "p_value"] == 1.0 and not result.loc["c", "significant"]
    assert result.loc["c", "ci_low"] == result.loc["c", "ci_high"] == 0.0
    welch = compare(cells, baseline="a", pair_by=None).set_index("b")
    assert welch.loc["c", "p_value"] == 1.0
    flat = compare(_cells({"a": [1.0, 1.0], "b": [0.5, 0.5]}, seeds={"b": [5, 6]})).iloc[0]
    assert flat["test"] == "welch t" and flat["p_value"] == 0.0 and flat["diff"] == -0.5


def test_compare_errors() -> None:
    cells = _cells({"a": A, "b": B})
    with pytest.raises(ValueError, match=r"unknown metric column 'top2'\. Did you mean 'top1'"):
        compare(cells, metric="top2")
    with pytest.raises(ValueError, match=r"unknown by column 'stems'\. Did you mean 'stem'"):
        compare(cells, by="stems")
    with pytest.raises(ValueError, match=r"unknown pair_by column 'sed'"):
        compare(cells, pair_by="sed")
    with pytest.raises(ValueError, match=r"unknown baseline .*'bb'.*Did you mean 'b'"):
        compare(cells, baseline="bb")
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 1.5"):
        compare(cells, alpha=1.5)
    with pytest.raises(TypeError, match="cells must be a pandas DataFrame"):
        compare(cells.to_dict())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metric column 'stem' must be numeric"):
        compare(cells, metric="stem")
    doubled = pd.concat([cells, cells.iloc[:1]])
    with pytest.raises(ValueError, match=r"group 'a' has several rows for seed=\[0\]"):
        compare(doubled)
    assert compare(doubled, pair_by=None).loc[0, "n_a"] == 5


def test_describe_sentences() -> None:
    cells = _cells(
        {"r2d": [0.30, 0.35, 0.32], "wide": [0.80, 0.99, 0.93], "basic": [0.31, 0.40, 0.30]}
    )
    result = compare(cells, baseline="r2d").set_index("b", drop=False)
    wide = result.loc["wide"]
    assert describe(wide) == (
        "wide vs r2d: +58.3 points (95% CI +40.0 to +76.6; paired t over 3 seeds, "
        "Holm-adjusted p = 0.011)"
    )
    assert describe(result.loc["basic"]) == (
        "basic vs r2d: +1.3 points, not distinguishable at n=3 (95% CI -7.4 to +10.1; "
        "paired t over 3 seeds, Holm-adjusted p = 0.58)"
    )
    assert describe(wide, scale=1.0, unit="", digits=2).startswith(
        "wide vs r2d: +0.58 (95% CI +0.40"
    )
    welch = compare(cells, baseline="r2d", pair_by=None).iloc[0]
    assert "not distinguishable" not in describe(welch) and "Welch t, n=3 vs 3" in describe(welch)
    single = compare(_cells({"a": [0.1, 0.2], "b": [0.9]}, seeds={"b": [0]})).iloc[0]
    assert (
        describe(single)
        == "b vs a: +75.0 points, not testable at n=2 vs 1 (a group has fewer than 2 values)"
    )
    flat = compare(_cells({"a": [0.25, 0.25], "b": [1.0, 1.0]})).iloc[0]
    assert "the same difference in every seed, no spread" in describe(flat)
    with pytest.raises(ValueError, match="row must be a row of compare"):
        describe({"a": "x"})


# -- error rates by simulation ---------------------------------------------------------------

GROUPS, SEEDS, STUDIES, ALPHA = 7, 3, 2000, 0.05
# 3 binomial standard errors of a rate alpha estimated from STUDIES studies.
MARGIN = 3 * math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)
MODES = {
    "all pairs": list(itertools.combinations(range(GROUPS), 2)),
    "baseline": [(0, j) for j in range(1, GROUPS)],
}


def _studies(rng: np.random.Generator, *, shared_seed: bool, shift: float = 0.0) -> np.ndarray:
    # value = seed effect + noise (both sd 1); the last group is shifted by `shift` value-sds.
    seed_shape = (STUDIES, 1, SEEDS) if shared_seed else (STUDIES, GROUPS, SEEDS)
    values = rng.standard_normal(seed_shape) + rng.standard_normal((STUDIES, GROUPS, SEEDS))
    values[:, -1] += shift * math.sqrt(2)
    return values


def _p(values: np.ndarray, pairs: list[tuple[int, int]], paired: bool) -> np.ndarray:
    a, b = values[:, [i for i, _ in pairs]], values[:, [j for _, j in pairs]]
    return (paired_t if paired else welch_t)(a, b)["p"]


def _as_cells(study: np.ndarray, *, shared_seed: bool) -> pd.DataFrame:
    rows = [
        {"stem": f"s{g}", "seed": s if shared_seed else 10 * g + s, "top1": study[g, s]}
        for g in range(GROUPS)
        for s in range(SEEDS)
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shared_seed", [True, False], ids=["paired", "welch"])
def test_null_error_rates_by_simulation(shared_seed: bool) -> None:
    rng = np.random.default_rng(2026)
    values = _studies(rng, shared_seed=shared_seed)
    for mode, pairs in MODES.items():
        p = _p(values, pairs, shared_seed)
        adjusted = holm(p)
        fwer = (adjusted < ALPHA).any(axis=1).mean()
        per_comparison = (p < ALPHA).mean()
        assert fwer <= ALPHA + MARGIN, (mode, fwer)
        assert per_comparison <= ALPHA + MARGIN, (mode, per_comparison)
        assert (adjusted < ALPHA).mean() <= ALPHA, mode
        if shared_seed:  # the paired t-test is exact: its raw rate is alpha, not just below
            assert per_comparison >= ALPHA - MARGIN, (mode, per_comparison)
        # The public compare() gives the same numbers on a few of these studies.
        for index in range(3):
            cells = _as_cells(values[index], shared_seed=shared_seed)
            baseline = "s0" if mode == "baseline" else None
            result = compare(cells, baseline=baseline)
            assert (result["test"] == ("paired t" if shared_seed else "welch t")).all()
            np.testing.assert_allclose(result["p_value"], p[index], rtol=1e-10)
            np.testing.assert_allclose(result["p_adjusted"], adjusted[index], rtol=1e-10)


def test_power_by_simulation() -> None:
    rng = np.random.default_rng(7)
    pairs = MODES["baseline"]
    # 3 sd at 3 paired seeds: the raw test's power is the noncentral t's (0.745); no level-alpha
    # test does better at df = 2, and Holm over 6 comparisons leaves about a fifth of it.
    p = _p(_studies(rng, shared_seed=True, shift=3.0), pairs, True)[:, -1]
    critical = stats.t.ppf(1 - ALPHA / 2, SEEDS - 1)
    ncp = 3.0 * math.sqrt(SEEDS)
    theory = stats.nct.sf(critical, SEEDS - 1, ncp) + stats.nct.cdf(-critical, SEEDS - 1, ncp)
    assert theory == pytest.approx(0.745, abs=0.005)
    assert (p < ALPHA).mean() == pytest.approx(theory, abs=3 * math.sqrt(0.25 / STUDIES))
    # A large effect (10 sd, e.g. 30 points at a 3-point seed spread) survives Holm.
    large = _p(_studies(rng, shared_seed=True, shift=10.0), pairs, True)
    assert (holm(large)[:, -1] < ALPHA).mean() >= 0.8
