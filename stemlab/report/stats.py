"""Comparisons between groups of replicates (stems over seeds): tests, intervals, Holm.

:func:`compare` is what findings use to call a difference real: a paired t-test when both groups
were run on the same seeds (common random numbers), Welch's t-test otherwise, or a sign-flip
permutation test over paired samples (a sweep's hyperparameter samples). One declared family
(baseline vs every group, or all pairs) is Holm-adjusted; its intervals are simultaneous
(Bonferroni over the family) unless asked unadjusted, and are clipped to a bounded metric's
range. A comparison without spread or with too few values has no test, and says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from stemlab._validation import check_choice, unknown_name_error
from stemlab.report.power import seeds_needed

__all__ = [
    "COMPARE_COLUMNS",
    "compare",
    "describe",
    "family_note",
    "holm",
    "paired_t",
    "sign_flip",
    "welch_t",
]

COMPARE_COLUMNS: tuple[str, ...] = (
    "a",
    "b",
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "diff",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "significant",
    "test",
    "n_pairs",
    "note",
    "m",
    "ci_level",
    "clipped",
    "seeds_for_80_power",
)
"""The columns of :func:`compare`'s result, in order."""

FAMILIES = ("baseline", "all_pairs")
INTERVALS = ("simultaneous", "unadjusted")
TESTS = ("t", "sign_flip")


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of p-values (along the last axis).

    With the ``m`` finite p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value
    of ``p_(i)`` is ``min(1, max_{j <= i} (m - j + 1) * p_(j))``. Rejecting where the adjusted
    value is below alpha keeps the family-wise error rate at alpha under any dependence.
    NaN entries (comparisons that could not be tested) stay NaN and do not count in ``m``.

    Args:
        p_values: p-values in [0, 1] (NaN allowed), 1-D or stacked along leading axes.

    Returns:
        The adjusted p-values, same shape and order as the input.

    Raises:
        ValueError: if a p-value is outside [0, 1].
    """
    p = np.asarray(p_values, dtype=float)
    finite = ~np.isnan(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError(f"p_values must lie in [0, 1] (or be NaN), got {p_values!r}")
    if p.ndim == 0 or p.shape[-1] == 0:
        return p.copy()
    order = np.argsort(np.where(finite, p, np.inf), axis=-1, kind="stable")
    ordered = np.take_along_axis(p, order, axis=-1)
    m = finite.sum(axis=-1, keepdims=True)
    rank = np.arange(p.shape[-1])
    # NaNs sort last, so the first m sorted entries are the finite ones.
    scaled = np.where(rank < m, ordered * (m - rank), np.nan)
    adjusted_sorted = np.minimum(np.fmax.accumulate(scaled, axis=-1), 1.0)
    adjusted_sorted = np.where(rank < m, adjusted_sorted, np.nan)
    adjusted = np.empty_like(adjusted_sorted)
    np.put_along_axis(adjusted, order, adjusted_sorted, axis=-1)
    return adjusted


# Spreads below this fraction of the data's magnitude are floating-point rounding, not spread.
_RELATIVE_TOLERANCE = 1e-12


def _no_spread(a: np.ndarray, b: np.ndarray, se: np.ndarray) -> np.ndarray:
    magnitude = np.maximum(np.abs(a).max(axis=-1), np.abs(b).max(axis=-1))
    return se <= _RELATIVE_TOLERANCE * np.maximum(magnitude, 1e-300)


def _quantile(confidence: float, df: np.ndarray) -> np.ndarray:
    return stats.t.ppf(0.5 + confidence / 2, df)


def _result(
    diff: np.ndarray,
    se: np.ndarray,
    df: np.ndarray,
    t: Any,
    p: Any,
    half: np.ndarray,
    testable: np.ndarray,
) -> dict[str, np.ndarray]:
    nan = np.nan
    return {
        "diff": diff,
        "se": se,
        "df": df,
        "t": np.where(testable, t, nan),
        "p": np.where(testable, p, nan),
        "ci_low": np.where(testable, diff - half, nan),
        "ci_high": np.where(testable, diff + half, nan),
        "testable": testable,
    }


def paired_t(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Paired t-test of ``b - a`` and the t-interval of its mean, along the last axis.

    ``a[..., i]`` and ``b[..., i]`` are the same replicate (seed) of the two groups. When every
    difference is the same number (a spread below 1e-12 of the values' magnitude) there is no
    test: ``t``, ``p`` and the interval are NaN and ``testable`` is False.

    Args:
        a: ``(..., n)`` values of the first group (``n >= 2``).
        b: ``(..., n)`` values of the second group, paired with ``a``.
        confidence: level of the interval.

    Returns:
        Arrays ``diff`` (mean of b - a), ``se``, ``df``, ``t``, ``p``, ``ci_low``, ``ci_high``,
        ``testable``.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = a.shape[-1]
    d = b - a
    diff = b.mean(axis=-1) - a.mean(axis=-1)  # = mean(d), and the same number as compare()'s diff
    se = d.std(axis=-1, ddof=1) / math.sqrt(n)
    df = np.full_like(diff, n - 1)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(b, a, axis=-1)
    testable = ~_no_spread(a, b, se)
    half = _quantile(confidence, df) * se
    return _result(diff, se, df, result.statistic, result.pvalue, half, testable)


def welch_t(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Welch's t-test of ``mean(b) - mean(a)`` and its interval, along the last axis.

    Degrees of freedom by Welch-Satterthwaite. When neither group has spread there is no test
    (``t``, ``p`` and the interval NaN, ``testable`` False).

    Args:
        a: ``(..., n_a)`` values of the first group (``n_a >= 2``).
        b: ``(..., n_b)`` values of the second group (``n_b >= 2``).
        confidence: level of the interval.

    Returns:
        Arrays ``diff``, ``se``, ``df``, ``t``, ``p``, ``ci_low``, ``ci_high``, ``testable``.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n_a, n_b = a.shape[-1], b.shape[-1]
    diff = b.mean(axis=-1) - a.mean(axis=-1)
    va, vb = a.var(axis=-1, ddof=1) / n_a, b.var(axis=-1, ddof=1) / n_b
    se = np.sqrt(va + vb)
    testable = ~_no_spread(a, b, se)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(
            testable, (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1)), n_a + n_b - 2.0
        )
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(b, a, equal_var=False, axis=-1)
    half = _quantile(confidence, df) * se
    return _result(diff, se, df, result.statistic, result.pvalue, half, testable)


# Up to this many pairs the sign-flip test enumerates all 2^n sign patterns (exact; 2^13 = 8192
# is fewer than the 9999 random patterns used beyond).
EXACT_SIGN_FLIP_MAX_N = 13
# Entries of the (rows x sign patterns) product computed at once.
_CHUNK = 4_000_000


def _sign_patterns(n: int, flips: int, seed: int) -> tuple[np.ndarray, bool]:
    if n <= EXACT_SIGN_FLIP_MAX_N:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        return 1.0 - 2.0 * bits, True  # row 0 is the identity
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([-1.0, 1.0]), size=(flips, n)), False


def _flip_p(d: np.ndarray, signs: np.ndarray, exact: bool) -> np.ndarray:
    # d: (rows, n). Two-sided: share of sign patterns whose |sum| reaches the observed |sum|.
    observed = np.abs(d.sum(axis=-1))
    tolerance = 1e-9 * np.abs(d).sum(axis=-1)  # ties of equal sums up to rounding
    counts = np.empty(len(d))
    step = max(1, _CHUNK // len(signs))
    for start in range(0, len(d), step):
        part = slice(start, start + step)
        null = np.abs(d[part] @ signs.T)
        counts[part] = (null >= (observed[part] - tolerance[part])[:, None]).sum(axis=-1)
    return counts / len(signs) if exact else (1 + counts) / (1 + len(signs))


def _flip_bound(
    d: np.ndarray, signs: np.ndarray, exact: bool, level: float, side: int
) -> np.ndarray:
    # The end of {delta : p(d - delta) > level} on `side` (-1 lower, +1 upper), by bisection
    # between the mean (p = 1) and a shift where only the two constant sign patterns tie.
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    reach = n * np.abs(d - mean[:, None]).max(axis=-1) + 1e-12 * (1 + np.abs(mean))
    far = mean + side * reach
    bound = np.full(len(d), side * np.inf)
    finite = _flip_p(d - far[:, None], signs, exact) <= level
    inner, outer = mean[finite], far[finite]  # inner accepted, outer rejected
    rows = d[finite]
    for _ in range(60):
        middle = (inner + outer) / 2
        rejected = _flip_p(rows - middle[:, None], signs, exact) <= level
        outer = np.where(rejected, middle, outer)
        inner = np.where(rejected, inner, middle)
    bound[finite] = inner
    return bound


def sign_flip(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float = 0.95,
    flips: int = 9999,
    seed: int = 0,
    interval: bool = True,
) -> dict[str, np.ndarray]:
    """Sign-flip permutation test of the mean of ``b - a``, and its inverted interval.

    Under the null the paired differences are symmetric about 0 (the two groups are
    exchangeable within a pair, e.g. two arms on one hyperparameter sample), so every pattern
    of signs is equally likely. Up to :data:`EXACT_SIGN_FLIP_MAX_N` pairs all ``2^n`` patterns
    are enumerated (exact p); beyond, ``flips`` random patterns give ``p = (1 + hits) / (1 +
    flips)``, which keeps the level. Zero differences need no handling (their sign does not
    matter), ties count as reaching the observed value. The interval is every shift
    ``delta`` that the test of ``d - delta`` does not reject at ``1 - confidence``; it is
    unbounded (``-inf``/``inf``) when n is too small for the test to reach that level (the
    smallest exact p is ``2 / 2^n``). All differences equal: no test (NaN, ``testable``
    False).

    Args:
        a: ``(..., n)`` values of the first group.
        b: ``(..., n)`` values of the second group, paired with ``a``.
        confidence: level of the interval.
        flips: random sign patterns when ``n`` exceeds the exact limit.
        seed: seed of those patterns (the same data give the same p).
        interval: False to skip the interval (NaN), which costs 120 tests per row.

    Returns:
        Arrays ``diff``, ``p``, ``ci_low``, ``ci_high``, ``testable``, and ``exact`` (bool).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    shape, n = a.shape[:-1], a.shape[-1]
    d = (b - a).reshape(-1, n)
    diff = (b.mean(axis=-1) - a.mean(axis=-1)).reshape(-1)
    testable = ~_no_spread(
        a.reshape(-1, n), b.reshape(-1, n), d.std(axis=-1, ddof=1) if n > 1 else np.zeros(len(d))
    )
    signs, exact = _sign_patterns(n, flips, seed)
    p = np.full(len(d), np.nan)
    low, high = np.full(len(d), np.nan), np.full(len(d), np.nan)
    if testable.any():
        p[testable] = _flip_p(d[testable], signs, exact)
        if interval:
            level = 1 - confidence
            low[testable] = _flip_bound(d[testable], signs, exact, level, -1)
            high[testable] = _flip_bound(d[testable], signs, exact, level, +1)
    return {
        "diff": diff.reshape(shape),
        "p": p.reshape(shape),
        "ci_low": low.reshape(shape),
        "ci_high": high.reshape(shape),
        "testable": testable.reshape(shape),
        "exact": np.full(shape, exact),
    }


def _check_level(argument: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a number in (0, 1), got {type(value).__name__}")
    if not 0 < value < 1:
        raise ValueError(f"{argument} must be in (0, 1), got {value!r}")
    return float(value)


def _check_column(argument: str, name: Any, frame: pd.DataFrame) -> None:
    if name not in frame.columns:
        raise unknown_name_error(f"{argument} column", name, [str(c) for c in frame.columns])


def _check_bounds(bounds: Any) -> tuple[float, float] | None:
    if bounds is None:
        return None
    if (
        not isinstance(bounds, (tuple, list))
        or len(bounds) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in bounds)
        or not all(math.isfinite(v) for v in bounds)
        or not bounds[0] < bounds[1]
    ):
        raise ValueError(
            f"bounds must be None or (low, high) with finite low < high, e.g. (0.0, 1.0) for "
            f"accuracies as fractions; got {bounds!r}"
        )
    return float(bounds[0]), float(bounds[1])


def _n_text(n_a: int, n_b: int) -> str:
    return f"n={n_a}" if n_a == n_b else f"n={n_a} vs {n_b}"


class _Pair:
    """One comparison: which test, whether it is possible, its p; the interval comes later."""

    def __init__(self, a: pd.Series, b: pd.Series, paired: bool, test: str, pair_by: Any):
        self.a, self.b = a, b
        self.row: dict[str, Any] = {
            "n_a": len(a),
            "n_b": len(b),
            "mean_a": float(a.mean()) if len(a) else math.nan,
            "mean_b": float(b.mean()) if len(b) else math.nan,
            "p_value": math.nan,
            "test": "none",
            "n_pairs": 0,
            "note": "",
        }
        self.row["diff"] = self.row["mean_b"] - self.row["mean_a"]
        self.kind, self.sd, self.values = "none", math.nan, (np.empty(0), np.empty(0))
        keyed = paired and not a.index.hasnans and not b.index.hasnans
        if test == "sign_flip":
            if not keyed:
                self.row["note"] = "sign-flip test needs pairs (pair_by): no test"
                return
            keys = sorted(set(a.index) & set(b.index))
            if len(keys) < 2:
                self.row["note"] = f"{len(keys)} shared {pair_by} value(s): no test"
                return
            self.kind, self.row["test"] = "sign_flip", "sign-flip"
        elif keyed and set(a.index) == set(b.index) and len(a) >= 2:
            keys = sorted(a.index)
            self.kind, self.row["test"] = "paired", "paired t"
        elif len(a) >= 2 and len(b) >= 2:
            self.kind, self.row["test"] = "welch", "welch t"
        else:
            self.row["note"] = f"{_n_text(len(a), len(b))}: no test"
            return
        if self.kind == "welch":
            self.values = (a.to_numpy(float), b.to_numpy(float))
            self.sd = math.sqrt((self.values[0].var(ddof=1) + self.values[1].var(ddof=1)) / 2)
        else:
            self.values = (a.loc[keys].to_numpy(float), b.loc[keys].to_numpy(float))
            self.row["n_pairs"] = len(keys)
            if self.kind == "sign_flip":  # the mean of the pairs it tests, not of all values
                self.row["diff"] = float(np.mean(self.values[1] - self.values[0]))
            self.sd = float(np.std(self.values[1] - self.values[0], ddof=1))
        result = self._run(0.95, interval=False)
        if not bool(result["testable"]):
            self.kind = "none"
            if self.row["test"] == "welch t":
                self.row["note"] = (
                    f"both groups constant ({self.row['mean_a']:.4g}, {self.row['mean_b']:.4g}):"
                    " no variance, no test"
                )
            else:
                self.row["note"] = (
                    f"all {self.row['n_pairs']} paired differences equal "
                    f"({self.row['diff']:.4g}): no variance, no test"
                )
            return
        self.row["p_value"] = float(result["p"])

    def _run(self, confidence: float, *, interval: bool = True) -> dict[str, np.ndarray]:
        a, b = self.values
        if self.kind == "sign_flip":
            return sign_flip(a, b, confidence=confidence, interval=interval)
        return (paired_t if self.kind == "paired" else welch_t)(a, b, confidence=confidence)

    def interval(self, confidence: float) -> tuple[float, float]:
        if self.kind == "none":
            return math.nan, math.nan
        result = self._run(confidence)
        return float(result["ci_low"]), float(result["ci_high"])


def compare(
    cells: pd.DataFrame,
    *,
    metric: str = "top1",
    by: str = "stem",
    baseline: Any = None,
    family: str | None = None,
    pair_by: str | None = "seed",
    test: str = "t",
    alpha: float = 0.05,
    confidence: float = 0.95,
    interval: str = "simultaneous",
    bounds: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Compare the groups of ``cells`` on ``metric``, one row per comparison of one family.

    Rows whose ``status`` column (if any) is not ``"ok"`` and rows with a missing metric are left
    out. Groups are taken in order of first appearance (failed ones included, with n = 0). The
    family: ``"baseline"`` compares ``baseline`` with every other group, ``"all_pairs"`` every
    pair ``i < j`` (the baseline, if given, first). Default: ``"baseline"`` when a baseline is
    given, else ``"all_pairs"``.

    ``test="t"``: a paired t-test over ``pair_by`` (seed) when both groups have the same set of
    ``pair_by`` values, else Welch's t-test. ``test="sign_flip"``: the sign-flip permutation
    test (:func:`sign_flip`) over the ``pair_by`` values both groups share (for arms paired by
    sweep sample: skewed, bounded, tied differences keep its level). A comparison with fewer
    than 2 values (pairs) in a group, or no spread (every paired difference equal; both groups
    constant for Welch), has no test: p and interval NaN, never significant, and ``note`` says
    why. P-values are Holm-adjusted over the family's ``m`` testable comparisons.

    Intervals of ``diff``: ``"simultaneous"`` (default) at level ``1 - (1 - confidence) / m``
    each (Bonferroni: all m cover together with probability >= confidence, and an interval
    excluding 0 implies Holm rejects), ``"unadjusted"`` at ``confidence`` each; ``ci_level``
    labels the level. With ``bounds=(low, high)`` (the metric's range, e.g. (0, 1) for
    accuracies) the intervals are clipped to the range a difference can take,
    ``[low - high, high - low]``, and ``clipped`` marks the clipped ones.

    For each testable comparison that is not significant, ``seeds_for_80_power`` is the
    number of replicates (pairs, or values per group for Welch) at which the t-test at the
    Bonferroni level ``alpha / m`` has 80% power for the observed difference and sd
    (:func:`stemlab.report.power.seeds_needed`; the t approximation for sign-flip rows).

    Args:
        cells: one row per replicate, with columns ``by``, ``metric`` and (unless ``pair_by`` is
            None) ``pair_by``.
        metric: the column compared.
        by: the column naming the groups.
        baseline: the group every other group is compared with (family "baseline").
        family: ``"baseline"`` or ``"all_pairs"``; None: from ``baseline``.
        pair_by: the column pairing replicates across groups; None to always use Welch.
        test: ``"t"`` or ``"sign_flip"``.
        alpha: family-wise significance level for ``significant``.
        confidence: family-wise (simultaneous) or per-comparison (unadjusted) level.
        interval: ``"simultaneous"`` or ``"unadjusted"``.
        bounds: the metric's (low, high) range, or None.

    Returns:
        DataFrame with columns :data:`COMPARE_COLUMNS`: a, b, n_a, n_b, mean_a, mean_b, diff
        (``mean_b - mean_a``; the mean paired difference for sign-flip), ci_low, ci_high,
        p_value, p_adjusted (Holm), significant (``p_adjusted < alpha``), test (``"paired
        t"``, ``"welch t"``, ``"sign-flip"`` or ``"none"``), n_pairs, note ("" or why there is
        no test), m (testable comparisons in the family), ci_level, clipped,
        seeds_for_80_power (NaN where significant or untestable, inf for a zero difference).
        ``attrs`` hold the options, ``m`` and ``untestable``.

    Raises:
        TypeError: if ``cells`` is not a DataFrame or the metric is not numeric.
        ValueError: for an unknown column, baseline, family, interval or test, a level outside
            (0, 1), bad bounds or values outside them, family "baseline" without a baseline,
            or a group holding two rows for one ``pair_by`` value.
    """
    if not isinstance(cells, pd.DataFrame):
        raise TypeError(f"cells must be a pandas DataFrame, got {type(cells).__name__}")
    alpha = _check_level("alpha", alpha)
    confidence = _check_level("confidence", confidence)
    interval = check_choice("interval", interval, INTERVALS)
    test = check_choice("test", test, TESTS)
    bounds = _check_bounds(bounds)
    _check_column("metric", metric, cells)
    _check_column("by", by, cells)
    if pair_by is not None:
        _check_column("pair_by", pair_by, cells)
    groups = list(dict.fromkeys(cells[by].tolist()))
    if baseline is not None and baseline not in groups:
        raise unknown_name_error(f"baseline (a value of {by!r})", baseline, map(str, groups))
    if family is None:
        family = "all_pairs" if baseline is None else "baseline"
    family = check_choice("family", family, FAMILIES)
    if family == "baseline" and baseline is None:
        raise ValueError(
            f"family='baseline' needs baseline= (a value of {by!r}: one of "
            f"{[str(g) for g in groups]}); or use family='all_pairs'"
        )
    frame = cells
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    try:
        values = pd.to_numeric(frame[metric])
    except (TypeError, ValueError) as error:
        raise TypeError(f"metric column {metric!r} must be numeric: {error}") from None
    frame = frame.assign(**{metric: values})
    frame = frame[frame[metric].notna()]
    if bounds is not None:
        outside = frame[(frame[metric] < bounds[0]) | (frame[metric] > bounds[1])][metric]
        if len(outside):
            raise ValueError(
                f"bounds={bounds} but {metric!r} has values outside them "
                f"({outside.iloc[0]!r}); give the metric's true range (fractions vs percent?)"
            )
    samples: dict[Any, pd.Series] = {}
    for group in groups:
        rows = frame[frame[by] == group]
        if pair_by is None:
            samples[group] = rows[metric].reset_index(drop=True)
            continue
        keys = rows[pair_by]
        repeated = keys[keys.duplicated()].unique().tolist()
        if repeated:
            raise ValueError(
                f"group {group!r} has several rows for {pair_by}={repeated}: filter the cells "
                f"to one row per ({by}, {pair_by}) (e.g. one backbone) or pass pair_by=None"
            )
        samples[group] = pd.Series(rows[metric].to_numpy(float), index=keys.to_numpy())
    if family == "baseline":
        pairs = [(baseline, g) for g in groups if g != baseline]
    else:
        if baseline is not None:
            groups = [baseline] + [g for g in groups if g != baseline]
        pairs = [(g, h) for i, g in enumerate(groups) for h in groups[i + 1 :]]
    compared = [_Pair(samples[a], samples[b], pair_by is not None, test, pair_by) for a, b in pairs]
    m = sum(pair.kind != "none" for pair in compared)
    level = 1 - (1 - confidence) / m if interval == "simultaneous" and m > 1 else confidence
    percent = f"{100 * confidence:g}%"
    if m <= 1:
        label = f"{percent} (one comparison)"
    elif interval == "simultaneous":
        label = f"{percent} simultaneous (Bonferroni, m={m})"
    else:
        label = f"{percent} unadjusted (m={m})"
    rows = []
    for (a, b), pair in zip(pairs, compared):
        low, high = pair.interval(level)
        clipped = False
        if bounds is not None and pair.kind != "none":
            reach = bounds[1] - bounds[0]
            clipped = low < -reach or high > reach
            low, high = max(low, -reach), min(high, reach)
        rows.append(
            {
                "a": a,
                "b": b,
                **pair.row,
                "ci_low": low,
                "ci_high": high,
                "m": m,
                "ci_level": label if pair.kind != "none" else "",
                "clipped": bool(clipped),
            }
        )
    columns = [c for c in COMPARE_COLUMNS if c not in ("p_adjusted", "significant")]
    result = pd.DataFrame(rows, columns=columns)
    result["p_value"] = result["p_value"].astype(float)
    result.insert(10, "p_adjusted", holm(result["p_value"].to_numpy()))
    result.insert(11, "significant", (result["p_adjusted"] < alpha).astype(bool))
    result["n_pairs"] = result["n_pairs"].astype(int)
    result["m"] = result["m"].astype(int)
    result["clipped"] = result["clipped"].astype(bool)
    needed = []
    for pair, significant in zip(compared, result["significant"]):
        if pair.kind == "none" or significant:
            needed.append(math.nan)
            continue
        needed.append(
            seeds_needed(pair.row["diff"], pair.sd, alpha=alpha, m=m, paired=pair.kind != "welch")
        )
    result["seeds_for_80_power"] = np.asarray(needed, dtype=float)
    result.attrs.update(
        metric=metric, by=by, baseline=baseline, pair_by=pair_by, alpha=alpha,
        confidence=confidence, family=family, interval=interval, bounds=bounds, test=test,
        m=m, untestable=len(compared) - m,
    )  # fmt: skip
    return result[list(COMPARE_COLUMNS)]


def family_note(table: pd.DataFrame) -> str:
    """What the correction of a :func:`compare` result ran over, as a sentence.

    ``"Holm over the 5 testable of 6 comparisons (b vs a: n=1: no test)."``; with every row
    testable ``"Holm over 6 comparisons."``.

    Args:
        table: a :func:`compare` result.

    Returns:
        The sentence ("" for an empty table).

    Raises:
        ValueError: if ``table`` lacks a column of :func:`compare`'s result.
    """
    missing = [c for c in COMPARE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"table must be a compare() result; it lacks {missing}")
    if table.empty:
        return ""
    untestable = table[table["note"] != ""]
    m = len(table) - len(untestable)
    noun = "comparison" if len(table) == 1 else "comparisons"
    if untestable.empty:
        return f"Holm over {m} {noun}."
    reasons = "; ".join(f"{r.b} vs {r.a}: {r.note}" for r in untestable.itertuples())
    return f"Holm over the {m} testable of {len(table)} {noun}; left out as untestable: {reasons}."


def _p_text(p: float) -> str:
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.2g}" if p < 0.1 else f"= {p:.2f}"


def describe(
    row: Mapping[str, Any] | pd.Series,
    *,
    scale: float = 100.0,
    unit: str = "points",
    digits: int = 1,
    confidence: float | None = None,
    replicate: str = "seed",
) -> str:
    """One :func:`compare` row as a sentence.

    ``"wide vs r2d: +66.6 points (95% CI +40.1 to +93.0, simultaneous over m=6; paired t over
    3 seeds, Holm-adjusted p = 0.012)"`` when significant, else ``"... +3.1 points, not
    distinguishable at n=3 (...; 18 seeds for 80% power)"``; a row without a test says why
    (``"b vs a: all 3 paired differences equal (-6.3 points): no variance, no test"``) and
    shows no p or interval. The difference is ``b - a``.

    Args:
        row: a row of :func:`compare`'s result.
        scale: factor applied to the difference and interval (100: fractions to points).
        unit: word after the numbers (``""`` for none).
        digits: decimals of the difference and interval.
        confidence: the level to print; None: the row's own (from ``ci_level``).
        replicate: what one pair of values is (for "over 3 seeds").

    Returns:
        The sentence.

    Raises:
        ValueError: if ``row`` lacks a column of :func:`compare`'s result.
    """
    missing = [c for c in COMPARE_COLUMNS if c not in row]
    if missing:
        raise ValueError(f"row must be a row of compare(); it lacks {missing}")
    unit_text = f" {unit}" if unit else ""

    def number(value: float) -> str:
        if math.isinf(value):
            return "-inf" if value < 0 else "+inf"
        return f"{value * scale:+.{digits}f}"

    pair = f"{row['b']} vs {row['a']}"
    n_a, n_b, n_pairs = int(row["n_a"]), int(row["n_b"]), int(row["n_pairs"])
    if row["note"]:
        if row["test"] == "none" or pd.isna(row["diff"]):
            shown = "" if pd.isna(row["diff"]) else f" {number(row['diff'])}{unit_text},"
            if row["test"] == "sign-flip" or n_pairs or (n_a >= 2 and n_b >= 2):
                why = row["note"]  # e.g. too few shared samples
            else:
                why = f"{_n_text(n_a, n_b)}: no test (a group has fewer than 2 values)"
            return f"{pair}:{shown} {why}"
        if row["test"] == "welch t":
            return (
                f"{pair}: {number(row['diff'])}{unit_text}, both groups constant: no variance, "
                "no test"
            )
        return (
            f"{pair}: all {n_pairs} paired differences equal ({number(row['diff'])}"
            f"{unit_text}): no variance, no test"
        )
    head = f"{pair}: {number(row['diff'])}{unit_text}"
    if row["test"] == "paired t":
        n_text, how = f"n={n_pairs}", f"paired t over {n_pairs} {replicate}s"
    elif row["test"] == "sign-flip":
        n_text, how = f"n={n_pairs}", f"sign-flip test over {n_pairs} {replicate}s"
    else:
        n_text, how = _n_text(n_a, n_b), f"Welch t, n={n_a} vs {n_b}"
    m = int(row["m"])
    level_text = str(row["ci_level"]).split(" ")[0] if row["ci_level"] else "95%"
    if confidence is not None:
        level_text = f"{confidence * 100:g}%"
    if math.isinf(row["ci_low"]) and math.isinf(row["ci_high"]):
        interval = f"{level_text} CI unbounded: n={n_pairs} is too few for this level"
    else:
        interval = f"{level_text} CI {number(row['ci_low'])} to {number(row['ci_high'])}"
    if m > 1:
        simultaneous = "simultaneous" in str(row["ci_level"])
        interval += f", simultaneous over m={m}" if simultaneous else ", unadjusted"
    if row["clipped"]:
        interval += ", clipped to the metric's range"
    p_text = f"Holm-adjusted p {_p_text(float(row['p_adjusted']))}"
    if row["significant"]:
        return f"{head} ({interval}; {how}, {p_text})"
    seeds = row["seeds_for_80_power"]
    power_text = ""
    if not pd.isna(seeds):
        count = "no finite number of" if math.isinf(seeds) else f"{int(seeds)}"
        power_text = f"; {count} {replicate}s for 80% power"
    return f"{head}, not distinguishable at {n_text} ({interval}; {how}, {p_text}{power_text})"
