"""report.stats: t-tests and intervals vs closed forms and scipy, Holm, error rates by simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

from stemlab.cli import main
from stemlab.report.power import plan_table, seeds_needed, t_power
from stemlab.report.stats import (
    COMPARE_COLUMNS,
    compare,
    describe,
    family_note,
    holm,
    paired_t,
    sign_flip,
    welch_t,
)

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


# -- edges: no spread, too few values -----------------------------------------------------


def test_no_variance_and_too_few_values_have_no_test() -> None:
    r2d = [0.25, 0.30, 0.28]
    cells = _cells(
        {
            "r2d": r2d,
            "shifted": [v - 0.063 for v in r2d],  # equal differences up to rounding
            "same": r2d,
            "varied": [0.40, 0.31, 0.36],
        }
    )
    result = compare(cells, baseline="r2d").set_index("b")
    for name, note in (
        ("shifted", "all 3 paired differences equal (-0.063): no variance, no test"),
        ("same", "all 3 paired differences equal (0): no variance, no test"),
    ):
        row = result.loc[name]
        assert row["note"] == note and row["test"] == "paired t" and not row["significant"]
        for column in ("p_value", "p_adjusted", "ci_low", "ci_high", "seeds_for_80_power"):
            assert math.isnan(row[column]), (name, column)
        assert row["ci_level"] == "" and not row["clipped"]
    # Holm and the interval's level count only the one testable comparison.
    varied = result.loc["varied"]
    d = np.subtract([0.40, 0.31, 0.36], r2d)
    assert varied["note"] == "" and (result["m"] == 1).all()
    assert (
        varied["p_adjusted"]
        == varied["p_value"]
        == pytest.approx(stats.ttest_1samp(d, 0).pvalue, rel=1e-12)
    )
    assert varied["ci_level"] == "95% (one comparison)"
    ci = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert (varied["ci_low"], varied["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert result.attrs["m"] == 1 and result.attrs["untestable"] == 2
    assert family_note(compare(cells, baseline="r2d")) == (
        "Holm over the 1 testable of 3 comparisons; left out as untestable: shifted vs r2d: all "
        "3 paired differences equal (-0.063): no variance, no test; same vs r2d: all 3 paired "
        "differences equal (0): no variance, no test."
    )
    text = describe(result.reset_index().iloc[0])
    assert (
        text == "shifted vs r2d: all 3 paired differences equal (-6.3 points): no variance, no test"
    )
    # Welch: both groups constant; one constant group alone is still a test.
    flat = compare(_cells({"a": [1.0, 1.0], "b": [0.5, 0.5]}, seeds={"b": [5, 6]})).iloc[0]
    assert flat["test"] == "welch t" and math.isnan(flat["p_value"]) and not flat["significant"]
    assert flat["note"] == "both groups constant (1, 0.5): no variance, no test"
    assert describe(flat) == "b vs a: -50.0 points, both groups constant: no variance, no test"
    one_flat = compare(_cells({"a": [1.0, 1.0], "b": [0.5, 0.7]}, seeds={"b": [5, 6]})).iloc[0]
    # se = sqrt(0 + var(b) / 2) = 0.1, df = n_b - 1 = 1, t = -0.4 / 0.1.
    assert one_flat["note"] == "" and one_flat["p_value"] == pytest.approx(2 * stats.t.sf(4, 1))
    # Too few values.
    short = compare(_cells({"a": [0.1, 0.2], "b": [0.9]}, seeds={"b": [0]})).iloc[0]
    assert short["note"] == "n=2 vs 1: no test" and short["test"] == "none"
    assert describe(short) == (
        "b vs a: +75.0 points, n=2 vs 1: no test (a group has fewer than 2 values)"
    )
    single = compare(_cells({"a": [0.1], "b": [0.9]})).iloc[0]
    assert single["note"] == "n=1: no test" and math.isnan(single["ci_low"])
    failed = _cells({"a": [0.1, 0.3], "b": [0.5]}).assign(status=["ok", "ok", "failed"])
    empty = compare(failed).iloc[0]
    assert describe(empty) == "b vs a: n=2 vs 0: no test (a group has fewer than 2 values)"
    assert family_note(compare(_cells({"a": A, "b": B}))) == "Holm over 1 comparison."


def test_describe_sentences() -> None:
    cells = _cells(
        {"r2d": [0.30, 0.35, 0.32], "wide": [0.80, 0.99, 0.93], "basic": [0.31, 0.40, 0.30]}
    )
    result = compare(cells, baseline="r2d").set_index("b", drop=False)
    wide, basic = result.loc["wide"], result.loc["basic"]
    # Simultaneous 95% over m=2: each interval at 97.5%.
    d = np.subtract([0.80, 0.99, 0.93], [0.30, 0.35, 0.32])
    ci = stats.ttest_1samp(d, 0).confidence_interval(0.975)
    assert (wide["ci_low"], wide["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert describe(wide) == (
        f"wide vs r2d: +58.3 points (95% CI {100 * ci.low:+.1f} to {100 * ci.high:+.1f}, "
        "simultaneous over m=2; paired t over 3 seeds, Holm-adjusted p = 0.011)"
    )
    d_basic = np.subtract([0.31, 0.40, 0.30], [0.30, 0.35, 0.32])
    seeds = math.ceil(
        TTestPower().solve_power(
            effect_size=d_basic.mean() / d_basic.std(ddof=1), alpha=0.025, power=0.8
        )
    )
    assert basic["seeds_for_80_power"] == seeds
    assert describe(basic).startswith(
        "basic vs r2d: +1.3 points, not distinguishable at n=3 (95% CI"
    )
    assert describe(basic).endswith(
        f"simultaneous over m=2; paired t over 3 seeds, Holm-adjusted p = 0.58; {seeds} seeds "
        "for 80% power)"
    )
    unadjusted = compare(cells, baseline="r2d", interval="unadjusted").iloc[0]
    assert ", unadjusted; paired t" in describe(unadjusted)
    assert describe(wide, scale=1.0, unit="", digits=2).startswith("wide vs r2d: +0.58 (95% CI")
    welch = compare(cells, baseline="r2d", pair_by=None).iloc[0]
    assert "Welch t, n=3 vs 3" in describe(welch)
    with pytest.raises(ValueError, match="row must be a row of compare"):
        describe({"a": "x"})


# -- one family; intervals matching the correction; bounds -----------------------------------


def _random_cells(rng: np.random.Generator, groups: int, seeds: int) -> pd.DataFrame:
    seed_effect = rng.normal(0, 0.05, seeds)
    values = {
        f"s{g}": list(0.5 + 0.03 * g + seed_effect + rng.normal(0, 0.03, seeds))
        for g in range(groups)
    }
    return _cells(values)


def test_families_and_simultaneous_intervals_match_scipy_and_statsmodels() -> None:
    cells = _random_cells(np.random.default_rng(3), 4, 5)
    value = {s: rows.set_index("seed")["top1"] for s, rows in cells.groupby("stem")}
    every = compare(cells, family="all_pairs")
    assert list(zip(every["a"], every["b"])) == list(itertools.combinations(value, 2))
    m = len(every)
    assert (every["m"] == m).all() and (
        every["ci_level"] == "95% simultaneous (Bonferroni, m=6)"
    ).all()
    p_holm = multipletests(every["p_value"], alpha=0.05, method="holm")[1]
    np.testing.assert_allclose(every["p_adjusted"], p_holm, rtol=1e-12)
    unadjusted = compare(cells, family="all_pairs", interval="unadjusted")
    assert (unadjusted["ci_level"] == "95% unadjusted (m=6)").all()
    np.testing.assert_array_equal(unadjusted["p_adjusted"], every["p_adjusted"])
    for (_, row), (_, plain) in zip(every.iterrows(), unadjusted.iterrows()):
        test = stats.ttest_rel(value[row["b"]], value[row["a"]])
        assert row["p_value"] == pytest.approx(test.pvalue, rel=1e-12)
        joint = test.confidence_interval(1 - 0.05 / m)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((joint.low, joint.high))
        single = test.confidence_interval(0.95)
        assert (plain["ci_low"], plain["ci_high"]) == pytest.approx((single.low, single.high))
        assert row["ci_low"] < plain["ci_low"] and row["ci_high"] > plain["ci_high"]
        # Holm's rejections are implied by the simultaneous interval excluding 0.
        if row["ci_low"] > 0 or row["ci_high"] < 0:
            assert row["significant"]
    # baseline= alone is the baseline family; with family="all_pairs" the baseline comes first.
    versus = compare(cells, baseline="s2")
    assert versus.attrs["family"] == "baseline" and list(versus["b"]) == ["s0", "s1", "s3"]
    assert (versus["ci_level"] == "95% simultaneous (Bonferroni, m=3)").all()
    pairs = compare(cells, baseline="s2", family="all_pairs")
    assert list(zip(pairs["a"], pairs["b"]))[:3] == [("s2", "s0"), ("s2", "s1"), ("s2", "s3")]
    assert len(pairs) == 6
    # Welch intervals too (seeds not shared).
    welch = compare(cells, family="all_pairs", pair_by=None).iloc[0]
    test = stats.ttest_ind(value["s1"], value["s0"], equal_var=False)
    joint = test.confidence_interval(1 - 0.05 / 6)
    assert (welch["ci_low"], welch["ci_high"]) == pytest.approx((joint.low, joint.high))
    # An untestable member leaves the family: m counts the others.
    with_copy = pd.concat(
        [cells, cells[cells["stem"] == "s0"].assign(stem="copy", top1=lambda f: f["top1"] + 0.25)]
    )
    mixed = compare(with_copy, family="all_pairs")
    assert len(mixed) == 10 and (mixed["m"] == 9).all()
    assert (
        mixed.loc[(mixed["a"] == "s0") & (mixed["b"] == "copy"), "note"]
        .iloc[0]
        .startswith("all 5 paired differences equal (0.25)")
    )
    tested = mixed[mixed["note"] == ""]
    np.testing.assert_allclose(
        tested["p_adjusted"], multipletests(tested["p_value"], method="holm")[1], rtol=1e-12
    )


def test_bounded_metric_intervals_are_clipped() -> None:
    # Three seeds, a wide spread and six comparisons: Bonferroni t-intervals pass +-1.
    cells = _cells(
        {
            "r2d": [0.10, 0.30, 0.12],
            "a": [0.95, 0.20, 0.90],
            "b": [0.40, 0.35, 0.50],
            "c": [0.12, 0.31, 0.14],
        }
    )
    raw = compare(cells, family="all_pairs")
    clipped = compare(cells, family="all_pairs", bounds=(0.0, 1.0))
    assert (raw["ci_high"] > 1).any() or (raw["ci_low"] < -1).any()
    np.testing.assert_allclose(clipped["ci_low"], raw["ci_low"].clip(lower=-1.0))
    np.testing.assert_allclose(clipped["ci_high"], raw["ci_high"].clip(upper=1.0))
    expected = (raw["ci_low"] < -1) | (raw["ci_high"] > 1)
    assert clipped["clipped"].tolist() == expected.tolist() and expected.any()
    assert not raw["clipped"].any()
    row = clipped[clipped["clipped"]].iloc[0]
    assert ", clipped to the metric's range;" in describe(row)
    np.testing.assert_array_equal(clipped["p_value"], raw["p_value"])
    with pytest.raises(ValueError, match=r"bounds=\(0.0, 1.0\) but 'top1' has values outside"):
        compare(cells.assign(top1=cells["top1"] * 100), bounds=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"bounds must be None or \(low, high\)"):
        compare(cells, bounds=(1.0, 0.0))


def test_option_errors() -> None:
    cells = _cells({"a": A, "b": B})
    with pytest.raises(ValueError, match=r"family.*'all_pair'.*all_pairs"):
        compare(cells, family="all_pair")
    with pytest.raises(ValueError, match=r"family='baseline' needs baseline="):
        compare(cells, family="baseline")
    with pytest.raises(ValueError, match=r"interval.*'simultanous'.*simultaneous"):
        compare(cells, interval="simultanous")
    with pytest.raises(ValueError, match=r"test.*'signflip'.*sign_flip"):
        compare(cells, test="signflip")


# -- power -------------------------------------------------------------------------------------


def test_power_and_seeds_needed_match_statsmodels() -> None:
    for effect, n, alpha in ((1.0, 10, 0.05), (0.5, 7, 0.01), (2.5, 3, 0.05 / 6), (0.3, 40, 0.05)):
        assert t_power(n, effect, alpha=alpha) == pytest.approx(
            TTestPower().power(effect_size=effect, nobs=n, alpha=alpha), rel=1e-9
        )
        assert t_power(n, -effect, alpha=alpha, paired=False) == pytest.approx(
            TTestIndPower().power(effect_size=effect, nobs1=n, alpha=alpha, ratio=1.0), rel=1e-9
        )
    # d = 1, two-sided 5%: the textbook 10 pairs (power 0.803), 17 per group unpaired.
    assert seeds_needed(1.0, 1.0, alpha=0.05) == 10
    assert t_power(10, 1.0, alpha=0.05) == pytest.approx(0.8031, abs=1e-4)
    assert seeds_needed(1.0, 1.0, alpha=0.05, paired=False) == 17
    for diff, sd, m in ((0.05, 0.03, 6), (0.02, 0.05, 21), (-0.3, 0.1, 1), (0.01, 0.2, 3)):
        n = seeds_needed(diff, sd, alpha=0.05, m=m)
        solved = TTestPower().solve_power(effect_size=abs(diff) / sd, alpha=0.05 / m, power=0.8)
        assert n == math.ceil(solved)
        assert t_power(int(n), diff / sd, alpha=0.05 / m) >= 0.8
        assert t_power(int(n) - 1, diff / sd, alpha=0.05 / m) < 0.8
    assert seeds_needed(0.0, 0.1, alpha=0.05) == math.inf
    assert seeds_needed(1e-4, 1.0, alpha=0.05, max_n=1000) == math.inf
    with pytest.raises(ValueError, match="sd must be > 0"):
        seeds_needed(0.1, 0.0, alpha=0.05)
    with pytest.raises(ValueError, match="m must be an integer >= 1, got 0"):
        seeds_needed(0.1, 0.1, alpha=0.05, m=0)
    with pytest.raises(ValueError, match=r"power must be in \(0, 1\), got 1.5"):
        seeds_needed(0.1, 0.1, alpha=0.05, power=1.5)


PLAN_CELLS = {
    "r2d": [0.30, 0.35, 0.32],
    "s1": [0.90, 0.93, 0.88],  # far above: significant
    "s2": [0.40, 0.25, 0.36],  # within the spread
    "s3": [0.35, 0.40, 0.37],  # r2d + 0.05 in every seed (up to rounding): no test
}


def _study_folder(tmp_path, comparisons: str):
    cells = _cells(PLAN_CELLS).assign(backbone="r2plus1d_18", kind="train")
    extra = pd.DataFrame(
        [
            {"stem": "s2", "seed": 0, "top1": 0.99, "status": "ok", "backbone": "r2plus1d_18", "kind": "sweep"},
            {"stem": "s2", "seed": 3, "top1": 0.99, "status": "failed", "backbone": "r2plus1d_18", "kind": "train"},
        ]
    )  # fmt: skip
    (tmp_path / "tables").mkdir()
    pd.concat([cells, extra]).to_csv(tmp_path / "tables" / "cells.csv", index=False)
    config = {"comparisons": comparisons, "baseline": "r2d"}
    (tmp_path / "manifest.json").write_text(pd.Series({"config": config}).to_json())
    return tmp_path


def _expected_plan(pairs: list[tuple[str, str]]) -> list[str]:
    tested = [(a, b) for a, b in pairs if {a, b} != {"r2d", "s3"}]
    d = {pair: np.subtract(PLAN_CELLS[pair[1]], PLAN_CELLS[pair[0]]) for pair in tested}
    p = [stats.ttest_1samp(d[pair], 0).pvalue for pair in tested]
    adjusted = dict(zip(tested, multipletests(p, method="holm")[1]))
    m, lines = len(tested), []
    for pair in pairs:
        if pair not in adjusted:
            lines.append(
                f"r2plus1d_18: {pair[1]} vs {pair[0]}: all 3 paired differences equal (0.05): no "
                "variance, no test"
            )
            continue
        if adjusted[pair] < 0.05:
            continue
        effect = d[pair].mean() / d[pair].std(ddof=1)
        seeds = math.ceil(
            TTestPower().solve_power(effect_size=abs(effect), alpha=0.05 / m, power=0.8)
        )
        now = TTestPower().power(effect_size=abs(effect), nobs=3, alpha=0.05 / m)
        lines.append(
            f"r2plus1d_18: {pair[1]} vs {pair[0]}: diff {100 * d[pair].mean():+.1f} points, sd "
            f"{100 * d[pair].std(ddof=1):.1f} points at n=3 (m={m}, Holm p {adjusted[pair]:.2g}, "
            f"power now {now:.2f}): {seeds} seeds"
        )
    return lines


@pytest.mark.parametrize("comparisons", ["baseline", "all_pairs"])
def test_study_plan_command(tmp_path, capsys, comparisons: str) -> None:
    folder = _study_folder(tmp_path, comparisons)
    assert main(["study", "plan", str(folder)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == (
        "Seeds for 80% power of the paired t-test at the Bonferroni level alpha/m (alpha 0.05, "
        f"family {comparisons!r}), for the observed difference and sd:"
    )
    stems = list(PLAN_CELLS)
    if comparisons == "baseline":
        pairs = [("r2d", s) for s in stems[1:]]
    else:
        pairs = list(itertools.combinations(stems, 2))
    assert lines[1:] == _expected_plan(pairs)
    table = plan_table(
        pd.read_csv(folder / "tables" / "cells.csv"), family=comparisons, baseline="r2d"
    )
    assert "s1" not in set(table.loc[table["a"] == "r2d", "b"])  # significant: not planned
    compared = compare(
        _cells(PLAN_CELLS),
        baseline="r2d" if comparisons == "baseline" else None,
        family=comparisons,
    )
    merged = table.merge(compared, on=["a", "b"])
    np.testing.assert_array_equal(merged["seeds_needed"], merged["seeds_for_80_power"])
    assert main(["study", "plan", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "plan: " in error[0] and "cells.csv not found" in error[0]


# -- the sign-flip test of paired samples (a sweep's arms) -------------------------------------


def _flip_p_by_enumeration(d: np.ndarray) -> float:
    observed = abs(d.sum())
    hits = [
        abs(np.dot(s, d)) >= observed - 1e-12 for s in itertools.product((-1, 1), repeat=len(d))
    ]
    return float(np.mean(hits))


def test_sign_flip_exact_p_matches_enumeration_and_scipy() -> None:
    rng = np.random.default_rng(11)
    for n in (5, 8, 12):
        a = rng.uniform(0.3, 0.9, n)
        b = np.clip(a + rng.normal(0.05, 0.1, n), 0, 1)
        b[0] = a[0]  # a zero difference
        result = sign_flip(a, b, interval=False)
        assert bool(result["exact"]) and bool(result["testable"])
        assert float(result["p"]) == pytest.approx(_flip_p_by_enumeration(b - a), rel=1e-12)
        scipy_p = stats.permutation_test(
            (b, a),
            lambda x, y, axis: np.mean(x - y, axis=axis),
            permutation_type="samples",
            n_resamples=np.inf,
            vectorized=True,
        ).pvalue
        assert float(result["p"]) == pytest.approx(scipy_p, rel=1e-9)
    # Tied discrete differences (accuracies on 50 clips).
    a = np.array([10, 20, 30, 20, 10, 40, 30, 20, 25, 35]) / 50
    b = a + np.array([1, 1, 0, 2, -1, 1, 0, 1, 1, 2]) / 50
    assert float(sign_flip(a, b)["p"]) == pytest.approx(_flip_p_by_enumeration(b - a), rel=1e-12)
    # Beyond 13 pairs: random sign patterns, within Monte-Carlo error of the exact p.
    a = rng.uniform(0.3, 0.9, 18)
    b = a + rng.normal(0.03, 0.1, 18)
    exact = _flip_p_by_enumeration(b - a)
    random = sign_flip(a, b, interval=False)
    assert not bool(random["exact"])
    assert float(random["p"]) == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 9999))


def test_sign_flip_interval_inverts_the_test() -> None:
    rng = np.random.default_rng(5)
    a = rng.uniform(0.3, 0.9, 10)
    b = a + rng.normal(0.05, 0.08, 10)
    d = b - a
    result = sign_flip(a, b, confidence=0.9)
    low, high = float(result["ci_low"]), float(result["ci_high"])
    assert low < d.mean() < high
    for end, outward in ((low, -1e-7), (high, 1e-7)):
        assert _flip_p_by_enumeration(d - end + outward) > 0.1  # accepted just inside the end
        assert _flip_p_by_enumeration(d - end - outward) <= 0.1  # rejected just beyond
    # Too few pairs for the level (smallest p = 2/32 at n = 5): unbounded, and clipped if bounded.
    small = sign_flip(a[:5], b[:5], confidence=0.99)
    assert float(small["ci_low"]) == -math.inf and float(small["ci_high"]) == math.inf
    cells = pd.DataFrame(
        [
            {"stem": s, "sample": i, "top1": v}
            for s, x in (("a", a[:5]), ("b", b[:5]))
            for i, v in enumerate(x)
        ]
    )
    row = compare(cells, pair_by="sample", test="sign_flip", confidence=0.99).iloc[0]
    assert row["ci_low"] == -math.inf and "CI unbounded: n=5 is too few" in describe(
        row, replicate="sample"
    )
    row = compare(cells, pair_by="sample", test="sign_flip", confidence=0.99, bounds=(0, 1)).iloc[0]
    assert (row["ci_low"], row["ci_high"], row["clipped"]) == (-1.0, 1.0, True)


def test_compare_sign_flip_pairs_by_shared_sample() -> None:
    rng = np.random.default_rng(8)
    quality = rng.uniform(0.2, 0.9, 12)
    rows = [
        {
            "stem": stem,
            "sample": s,
            "seed": 0,
            "top1": float(np.clip(q + shift + rng.normal(0, 0.03), 0, 1)),
        }
        for stem, shift in (("r2d", 0.0), ("r3d", 0.06), ("c3d", 0.0))
        for s, q in enumerate(quality)
    ]
    cells = pd.DataFrame(rows[:-1])  # c3d lacks sample 11
    result = compare(cells, pair_by="sample", test="sign_flip", baseline="r2d", bounds=(0, 1))
    value = {s: g.set_index("sample")["top1"] for s, g in cells.groupby("stem")}
    assert list(result["test"]) == ["sign-flip", "sign-flip"] and list(result["n_pairs"]) == [
        12,
        11,
    ]
    for _, row in result.iterrows():
        shared = value[row["b"]].index.intersection(value[row["a"]].index)
        d = (value[row["b"]][shared] - value[row["a"]][shared]).to_numpy()
        assert row["diff"] == pytest.approx(d.mean())
        assert row["p_value"] == pytest.approx(_flip_p_by_enumeration(d), rel=1e-12)
    assert result.loc[0, "significant"] and result.loc[0, "ci_low"] > 0
    assert "sign-flip test over 12 samples" in describe(result.iloc[0], replicate="sample")
    one = compare(cells[cells["sample"] < 1], pair_by="sample", test="sign_flip").iloc[0]
    assert one["note"] == "1 shared sample value(s): no test"
    unpaired = compare(cells, pair_by=None, test="sign_flip").iloc[0]
    assert unpaired["note"] == "sign-flip test needs pairs (pair_by): no test"


ARMS, SWEEP_STUDIES, CLIPS, CHANCE = 4, 1000, 100, 0.1
SWEEP_MARGIN = 3 * math.sqrt(ALPHA * (1 - ALPHA) / SWEEP_STUDIES)


def _sweep_null(rng: np.random.Generator, studies: int, samples: int) -> np.ndarray:
    """(studies, ARMS, samples) test accuracies of exchangeable arms on shared sweep samples.

    A third of the samples diverge (every arm exactly at chance: tied zero differences); the
    others have a left-skewed quality (Beta(5, 1.5)); each arm adds its own noise, and the
    accuracy is counted on CLIPS test clips (discrete, bounded in [0, 1]).
    """
    quality = CHANCE + (1 - CHANCE) * rng.beta(5.0, 1.5, (studies, 1, samples))
    arm = np.clip(quality + rng.normal(0, 0.05, (studies, ARMS, samples)), 0, 1)
    values = rng.binomial(CLIPS, arm) / CLIPS
    diverged = rng.random((studies, 1, samples)) < 1 / 3
    return np.where(diverged, CHANCE, values)


@pytest.mark.parametrize("samples", [8, 24])
def test_sweep_sign_flip_family_wise_rate_by_simulation(samples: int) -> None:
    rng = np.random.default_rng(samples)
    values = _sweep_null(rng, SWEEP_STUDIES, samples)
    assert (values == CHANCE).mean() > 0.3 and values.min() >= 0 and values.max() <= 1
    for mode, pairs in {
        "all pairs": list(itertools.combinations(range(ARMS), 2)),
        "baseline": [(0, j) for j in range(1, ARMS)],
    }.items():
        a, b = values[:, [i for i, _ in pairs]], values[:, [j for _, j in pairs]]
        p = sign_flip(a, b, interval=False)["p"]
        p = np.where(np.isnan(p), 1.0, p)  # all-equal differences: no test, never significant
        fwer = (holm(p) < ALPHA).any(axis=1).mean()
        assert fwer <= ALPHA + SWEEP_MARGIN, (mode, samples, fwer)
        assert (p < ALPHA).mean() <= ALPHA + SWEEP_MARGIN, (mode, samples)
        # compare() gives the same p on a few of these studies.
        for index in range(2):
            cells = pd.DataFrame(
                [
                    {"stem": f"s{g}", "sample": s, "top1": values[index, g, s]}
                    for g in range(ARMS)
                    for s in range(samples)
                ]
            )
            result = compare(
                cells, pair_by="sample", test="sign_flip", family="baseline" if mode == "baseline" else "all_pairs",
                baseline="s0" if mode == "baseline" else None, bounds=(0, 1),
            )  # fmt: skip
            np.testing.assert_allclose(result["p_value"].fillna(1.0), p[index], rtol=1e-12)
    # The test can reject: one arm 8 points better on every non-diverged sample. (At 8 samples,
    # about 5 of them informative, the smallest exact p is near 2 / 2^5 > alpha / 3.)
    if samples >= 24:
        shifted = values.copy()
        better = np.clip(values[:, -1] + 0.08, 0, 1)
        shifted[:, -1] = np.where(values[:, -1] > CHANCE, better, CHANCE)
        p = sign_flip(shifted[:, [0]], shifted[:, [-1]], interval=False)["p"][:, 0]
        assert (p < ALPHA / 3).mean() > 0.5  # 0.70 at this seed; the null rate is <= 0.017


def test_simultaneous_intervals_cover_jointly_by_simulation() -> None:
    rng = np.random.default_rng(12)
    effects = np.linspace(0, 3, GROUPS)  # coverage must hold whatever the true differences
    values = _studies(rng, shared_seed=True) + effects[:, None] * math.sqrt(2)
    for mode, pairs in MODES.items():
        a, b = values[:, [i for i, _ in pairs]], values[:, [j for _, j in pairs]]
        truth = (effects[[j for _, j in pairs]] - effects[[i for i, _ in pairs]]) * math.sqrt(2)
        m = len(pairs)
        joint = paired_t(a, b, confidence=1 - ALPHA / m)
        covered = ((joint["ci_low"] <= truth) & (truth <= joint["ci_high"])).all(axis=1).mean()
        assert covered >= 1 - ALPHA - MARGIN, (mode, covered)
        single = paired_t(a, b, confidence=1 - ALPHA)
        unadjusted = ((single["ci_low"] <= truth) & (truth <= single["ci_high"])).all(axis=1)
        assert unadjusted.mean() < 0.85, (mode, unadjusted.mean())  # why they must be adjusted
        cells = _as_cells(values[0], shared_seed=True)
        result = compare(cells, baseline="s0" if mode == "baseline" else None)
        np.testing.assert_allclose(result["ci_low"], joint["ci_low"][0], rtol=1e-10)
        np.testing.assert_allclose(result["ci_high"], joint["ci_high"][0], rtol=1e-10)
