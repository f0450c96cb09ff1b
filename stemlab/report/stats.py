"""Comparisons between groups of replicates (stems over seeds): t-tests, intervals, Holm.

:func:`compare` is what findings use to call a difference real: a paired t-test when both groups
were run on the same seeds (common random numbers), Welch's t-test otherwise, a t-interval of the
difference, and Holm's step-down adjustment over every comparison made.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from stemlab._validation import unknown_name_error

__all__ = ["COMPARE_COLUMNS", "compare", "describe", "holm"]

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
)


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


def _flat(
    a: np.ndarray, b: np.ndarray, diff: np.ndarray, se: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    magnitude = np.maximum(np.abs(a).max(axis=-1), np.abs(b).max(axis=-1))
    tolerance = _RELATIVE_TOLERANCE * np.maximum(magnitude, 1e-300)
    return se <= tolerance, np.abs(diff) <= tolerance


def _quantile(confidence: float, df: np.ndarray) -> np.ndarray:
    return stats.t.ppf(0.5 + confidence / 2, df)


def paired_t(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Paired t-test of ``b - a`` and the t-interval of its mean, along the last axis.

    ``a[..., i]`` and ``b[..., i]`` are the same replicate (seed) of the two groups. When every
    difference is the same number (up to floating-point rounding: a spread below 1e-12 of the
    values' magnitude) the t statistic is degenerate; this function takes the limit of the test
    as the spread goes to 0: p = 1 if that number is 0, p = 0 otherwise, and the interval
    shrinks to that number.

    Args:
        a: ``(..., n)`` values of the first group.
        b: ``(..., n)`` values of the second group, paired with ``a``.
        confidence: level of the interval.

    Returns:
        Arrays ``diff`` (mean of b - a), ``se``, ``df``, ``t``, ``p``, ``ci_low``, ``ci_high``.
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
    t, p = np.asarray(result.statistic, dtype=float), np.asarray(result.pvalue, dtype=float)
    flat, zero = _flat(a, b, diff, se)
    p = np.where(flat, np.where(zero, 1.0, 0.0), p)
    half = np.where(flat, 0.0, _quantile(confidence, df) * se)
    return {
        "diff": diff,
        "se": se,
        "df": df,
        "t": t,
        "p": p,
        "ci_low": diff - half,
        "ci_high": diff + half,
    }


def welch_t(a: np.ndarray, b: np.ndarray, *, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Welch's t-test of ``mean(b) - mean(a)`` and its interval, along the last axis.

    Degrees of freedom by Welch-Satterthwaite. When both groups have zero spread the test is
    degenerate; as in :func:`paired_t` its limit is used (p = 1 for equal means, else 0, and an
    interval of zero width).

    Args:
        a: ``(..., n_a)`` values of the first group (``n_a >= 2``).
        b: ``(..., n_b)`` values of the second group (``n_b >= 2``).
        confidence: level of the interval.

    Returns:
        Arrays ``diff``, ``se``, ``df``, ``t``, ``p``, ``ci_low``, ``ci_high``.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n_a, n_b = a.shape[-1], b.shape[-1]
    diff = b.mean(axis=-1) - a.mean(axis=-1)
    va, vb = a.var(axis=-1, ddof=1) / n_a, b.var(axis=-1, ddof=1) / n_b
    se = np.sqrt(va + vb)
    flat, zero = _flat(a, b, diff, se)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(
            flat, n_a + n_b - 2.0, (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
        )
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind(b, a, equal_var=False, axis=-1)
    t, p = np.asarray(result.statistic, dtype=float), np.asarray(result.pvalue, dtype=float)
    p = np.where(flat, np.where(zero, 1.0, 0.0), p)
    half = np.where(flat, 0.0, _quantile(confidence, df) * se)
    return {
        "diff": diff,
        "se": se,
        "df": df,
        "t": t,
        "p": p,
        "ci_low": diff - half,
        "ci_high": diff + half,
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


def _compare_pair(a: pd.Series, b: pd.Series, paired: bool, confidence: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "n_a": len(a),
        "n_b": len(b),
        "mean_a": float(a.mean()) if len(a) else math.nan,
        "mean_b": float(b.mean()) if len(b) else math.nan,
        "p_value": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "test": "none",
        "n_pairs": 0,
    }
    row["diff"] = row["mean_b"] - row["mean_a"]
    same_keys = paired and not a.index.hasnans and set(a.index) == set(b.index)
    if same_keys and len(a) >= 2:
        keys = sorted(a.index)
        result = paired_t(
            a.loc[keys].to_numpy(float), b.loc[keys].to_numpy(float), confidence=confidence
        )
        row.update(test="paired t", n_pairs=len(keys))
    elif len(a) >= 2 and len(b) >= 2:
        result = welch_t(a.to_numpy(float), b.to_numpy(float), confidence=confidence)
        row["test"] = "welch t"
    else:
        return row
    row.update(
        p_value=float(result["p"]),
        ci_low=float(result["ci_low"]),
        ci_high=float(result["ci_high"]),
    )
    return row


def compare(
    cells: pd.DataFrame,
    *,
    metric: str = "top1",
    by: str = "stem",
    baseline: Any = None,
    pair_by: str | None = "seed",
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Compare the groups of ``cells`` on ``metric``, one row per compared pair.

    Rows whose ``status`` column (if any) is not ``"ok"`` and rows with a missing metric are left
    out. Groups are taken in order of first appearance (failed ones included, with n = 0). With
    ``baseline``, the baseline is compared with every other group; without, every pair ``i < j``.

    A pair is tested with a paired t-test over ``pair_by`` (seed) when both groups have the same
    set of ``pair_by`` values, else with Welch's t-test. A group with fewer than 2 values gives
    no test (p and interval NaN, never significant). If every paired difference is the same
    number the test takes its limit: p = 0 for a nonzero number, 1 for zero (see
    :func:`paired_t`); with discrete metrics on small test sets, check the spread before
    trusting such a p. P-values are Holm-adjusted over the rows that have one.

    Args:
        cells: one row per replicate, with columns ``by``, ``metric`` and (unless ``pair_by`` is
            None) ``pair_by``.
        metric: the column compared.
        by: the column naming the groups.
        baseline: a group to compare every other group with; None for all pairs.
        pair_by: the column pairing replicates across groups; None to always use Welch.
        alpha: family-wise significance level for ``significant``.
        confidence: level of the interval of ``diff``.

    Returns:
        DataFrame with columns :data:`COMPARE_COLUMNS`: a, b, n_a, n_b, mean_a, mean_b, diff
        (``mean_b - mean_a``), ci_low, ci_high, p_value, p_adjusted (Holm), significant
        (``p_adjusted < alpha``), test (``"paired t"``, ``"welch t"`` or ``"none"``), n_pairs.

    Raises:
        TypeError: if ``cells`` is not a DataFrame or the metric is not numeric.
        ValueError: for an unknown column or baseline, a level outside (0, 1), or a group
            holding two rows for one ``pair_by`` value.
    """
    if not isinstance(cells, pd.DataFrame):
        raise TypeError(f"cells must be a pandas DataFrame, got {type(cells).__name__}")
    alpha = _check_level("alpha", alpha)
    confidence = _check_level("confidence", confidence)
    _check_column("metric", metric, cells)
    _check_column("by", by, cells)
    if pair_by is not None:
        _check_column("pair_by", pair_by, cells)
    groups = list(dict.fromkeys(cells[by].tolist()))
    if baseline is not None and baseline not in groups:
        raise unknown_name_error(f"baseline (a value of {by!r})", baseline, map(str, groups))
    frame = cells
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    try:
        values = pd.to_numeric(frame[metric])
    except (TypeError, ValueError) as error:
        raise TypeError(f"metric column {metric!r} must be numeric: {error}") from None
    frame = frame.assign(**{metric: values})
    frame = frame[frame[metric].notna()]
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
    if baseline is not None:
        pairs = [(baseline, g) for g in groups if g != baseline]
    else:
        pairs = [(g, h) for i, g in enumerate(groups) for h in groups[i + 1 :]]
    rows = [
        {"a": a, "b": b, **_compare_pair(samples[a], samples[b], pair_by is not None, confidence)}
        for a, b in pairs
    ]
    result = pd.DataFrame(rows, columns=[c for c in COMPARE_COLUMNS if c != "p_adjusted"])
    result["p_value"] = result["p_value"].astype(float)
    result.insert(10, "p_adjusted", holm(result["p_value"].to_numpy()))
    result["significant"] = (result["p_adjusted"] < alpha).astype(bool)
    result["n_pairs"] = result["n_pairs"].astype(int)
    result.attrs.update(
        metric=metric, by=by, baseline=baseline, pair_by=pair_by, alpha=alpha,
        confidence=confidence,
    )  # fmt: skip
    return result[list(COMPARE_COLUMNS)]


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
    confidence: float = 0.95,
    replicate: str = "seed",
) -> str:
    """One :func:`compare` row as a sentence.

    ``"wide vs r2d: +66.6 points (95% CI +40.1 to +93.0; paired t over 3 seeds, Holm-adjusted
    p = 0.012)"`` when significant, else ``"... +3.1 points, not distinguishable at n=3 (95% CI
    ...)"``. The difference is ``b - a``.

    Args:
        row: a row of :func:`compare`'s result.
        scale: factor applied to the difference and interval (100: fractions to points).
        unit: word after the numbers (``""`` for none).
        digits: decimals of the difference and interval.
        confidence: the level the interval was computed at.
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
        return f"{value * scale:+.{digits}f}"

    head = f"{row['b']} vs {row['a']}: {number(row['diff'])}{unit_text}"
    n_a, n_b = int(row["n_a"]), int(row["n_b"])
    if row["test"] == "paired t":
        n_text = f"n={int(row['n_pairs'])}"
        how = f"paired t over {int(row['n_pairs'])} {replicate}s"
    else:
        n_text = f"n={n_a} vs {n_b}" if n_a != n_b else f"n={n_a}"
        how = f"Welch t, n={n_a} vs {n_b}"
    if row["test"] == "none" or pd.isna(row["p_adjusted"]):
        return f"{head}, not testable at {n_text} (a group has fewer than 2 values)"
    p_text = f"Holm-adjusted p {_p_text(float(row['p_adjusted']))}"
    if row["ci_low"] == row["ci_high"]:
        interval = f"the same difference in every {replicate}, no spread"
    else:
        level = f"{confidence * 100:g}%"
        interval = f"{level} CI {number(row['ci_low'])} to {number(row['ci_high'])}"
    if row["significant"]:
        return f"{head} ({interval}; {how}, {p_text})"
    return f"{head}, not distinguishable at {n_text} ({interval}; {how}, {p_text})"
