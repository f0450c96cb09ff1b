"""Power of the t-tests :func:`stemlab.report.compare` uses, and the seeds a comparison needs.

:func:`t_power` is the exact power of a two-sided t-test (noncentral t); :func:`seeds_needed`
inverts it for the smallest number of replicates; :func:`plan_table` applies it to a study's
non-significant accuracy comparisons (what ``stemlab study plan DIR`` prints).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from stemlab._validation import check_choice

__all__ = ["PLAN_COLUMNS", "plan_table", "plan_text", "seeds_needed", "t_power"]

PLAN_COLUMNS: tuple[str, ...] = (
    "scope",
    "by",
    "a",
    "b",
    "n",
    "diff",
    "sd",
    "m",
    "p_adjusted",
    "power_now",
    "seeds_needed",
    "note",
)


def _check_real(argument: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{argument} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be finite, got {value!r}")
    return float(value)


def _check_unit(argument: str, value: Any) -> float:
    value = _check_real(argument, value)
    if not 0 < value < 1:
        raise ValueError(f"{argument} must be in (0, 1), got {value!r}")
    return value


def t_power(n: int, effect: float, *, alpha: float, paired: bool = True) -> float:
    """Exact power of the two-sided t-test at level ``alpha`` (noncentral t).

    Paired: one-sample t on ``n`` differences, ``df = n - 1``, noncentrality ``effect * sqrt(n)``
    with ``effect = diff / sd`` of the differences. Unpaired: two groups of ``n``, pooled t,
    ``df = 2n - 2``, noncentrality ``effect * sqrt(n / 2)`` with ``sd`` the per-group sd.

    Args:
        n: pairs (paired) or values per group (unpaired), at least 2.
        effect: standardised difference ``diff / sd`` (sign ignored).
        alpha: the test's two-sided level (already divided by m for a corrected family).
        paired: which design.

    Returns:
        The probability that the test rejects.

    Raises:
        ValueError: for ``n < 2`` or ``alpha`` outside (0, 1).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    alpha = _check_unit("alpha", alpha)
    effect = abs(_check_real("effect", effect))
    df = n - 1 if paired else 2 * n - 2
    ncp = effect * math.sqrt(n if paired else n / 2)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp))


def seeds_needed(
    diff: float,
    sd: float,
    *,
    alpha: float,
    m: int = 1,
    power: float = 0.8,
    paired: bool = True,
    max_n: int = 1_000_000,
) -> float:
    """The smallest n whose t-test at the Bonferroni level ``alpha / m`` has ``power``.

    The power is that of :func:`t_power` for the difference ``diff`` and the sd ``sd`` (of the
    paired differences, or per group when unpaired), two-sided.

    Args:
        diff: the difference to detect (e.g. the observed one).
        sd: sd of the paired differences (paired) or of one group's values (unpaired), > 0.
        alpha: family-wise level.
        m: comparisons in the family (the test runs at ``alpha / m``).
        power: the power wanted, in (0, 1).
        paired: paired (n pairs) or two groups of n each.
        max_n: search limit.

    Returns:
        n (an int-valued number, at least 2), or ``math.inf`` when ``diff`` is 0 or no
        ``n <= max_n`` reaches the power.

    Raises:
        ValueError: for ``sd <= 0``, ``m < 1`` or a level outside (0, 1).
    """
    diff = _check_real("diff", diff)
    sd = _check_real("sd", sd)
    if sd <= 0:
        raise ValueError(f"sd must be > 0 (no spread: no power calculation), got {sd!r}")
    alpha, power = _check_unit("alpha", alpha), _check_unit("power", power)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be an integer >= 1, got {m!r}")
    if diff == 0:
        return math.inf
    effect, level = diff / sd, alpha / m

    def enough(n: int) -> bool:
        return t_power(n, effect, alpha=level, paired=paired) >= power

    high = 2
    while not enough(high):
        if high >= max_n:
            return math.inf
        high = min(2 * high, max_n)
    low = max(2, high // 2)
    if enough(low):
        return float(low)
    while high - low > 1:  # enough(high), not enough(low); power grows with n
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return float(high)


def plan_table(
    cells: pd.DataFrame,
    *,
    family: str = "baseline",
    baseline: Any = None,
    alpha: float = 0.05,
    power: float = 0.8,
    metric: str = "top1",
) -> pd.DataFrame:
    """Seeds needed for each non-significant accuracy comparison of a study.

    Trained cells (``kind == "train"`` where the column exists, ``status == "ok"``) are compared
    as the findings do: stems within each backbone, or the backbones when every backbone has
    one stem, paired over seeds, with the family's Holm correction and intervals clipped to
    [0, 1]. For each comparison that is not significant: the observed difference, the sd of
    the paired differences, the power the test has now and the seeds that give it ``power`` at
    the Bonferroni level ``alpha / m``.

    Args:
        cells: the study's ``cells`` table (backbone, stem, seed, the metric).
        family: ``"baseline"`` (every stem vs ``baseline``) or ``"all_pairs"``.
        baseline: the reference stem (or backbone); None: the first one.
        alpha: family-wise level.
        power: power wanted.
        metric: the compared column, a fraction in [0, 1].

    Returns:
        DataFrame with columns :data:`PLAN_COLUMNS` (``scope``: the backbone the stems were
        compared on, or ``"all backbones"``; ``note``: why a row has no test, else "").

    Raises:
        ValueError: for an unknown family or column, or a level outside (0, 1).
    """
    from stemlab.report.stats import compare

    family = check_choice("family", family, ("baseline", "all_pairs"))
    power = _check_unit("power", power)
    if not isinstance(cells, pd.DataFrame):
        raise TypeError(f"cells must be a pandas DataFrame, got {type(cells).__name__}")
    frame = cells
    if "kind" in frame.columns:
        frame = frame[frame["kind"] == "train"]
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    missing = [c for c in ("backbone", "stem", "seed", metric) if c not in frame.columns]
    if missing:
        raise ValueError(f"cells lacks the columns {missing}; it has {list(cells.columns)}")
    if frame["backbone"].nunique() > 1 and frame.groupby("backbone")["stem"].nunique().max() == 1:
        scopes = [("all backbones", "backbone", frame)]
    else:
        scopes = [(b, "stem", rows) for b, rows in frame.groupby("backbone", sort=False)]
    out = []
    for scope, by, rows in scopes:
        groups = list(dict.fromkeys(rows[by]))
        if len(groups) < 2:
            continue
        reference = baseline if baseline in groups else groups[0]
        table = compare(
            rows,
            metric=metric,
            by=by,
            baseline=reference if family == "baseline" else None,
            family=family,
            alpha=alpha,
            bounds=(0.0, 1.0),
        )
        for _, row in table[~table["significant"]].iterrows():
            a = rows.loc[rows[by] == row["a"]].set_index("seed")[metric]
            b = rows.loc[rows[by] == row["b"]].set_index("seed")[metric]
            paired = row["test"] == "paired t"
            if paired:
                spread = float((b - a.reindex(b.index)).std(ddof=1))
            elif min(len(a), len(b)) >= 2:
                spread = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
            else:
                spread = math.nan
            testable = not row["note"]
            n = int(row["n_pairs"]) if paired else int(min(row["n_a"], row["n_b"]))
            m = int(row["m"])
            now = needed = math.nan
            if testable:
                effect = row["diff"] / spread
                now = t_power(n, effect, alpha=alpha / m, paired=paired)
                needed = seeds_needed(
                    row["diff"], spread, alpha=alpha, m=m, power=power, paired=paired
                )
            out.append(
                {
                    "scope": scope,
                    "by": by,
                    "a": row["a"],
                    "b": row["b"],
                    "n": n,
                    "diff": float(row["diff"]),
                    "sd": spread,
                    "m": m,
                    "p_adjusted": float(row["p_adjusted"]),
                    "power_now": now,
                    "seeds_needed": needed,
                    "note": row["note"],
                }
            )
    result = pd.DataFrame(out, columns=list(PLAN_COLUMNS))
    result.attrs.update(family=family, alpha=alpha, power=power, metric=metric)
    return result


def plan_text(table: pd.DataFrame, *, scale: float = 100.0, unit: str = "points") -> str:
    """:func:`plan_table`'s result as lines of text, one per comparison.

    Args:
        table: a :func:`plan_table` result.
        scale: factor applied to the difference and sd (100: fractions to points).
        unit: word after them.

    Returns:
        The text (a heading line, then one line per comparison).

    Raises:
        ValueError: if ``table`` lacks a column of :data:`PLAN_COLUMNS`.
    """
    missing = [c for c in PLAN_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"table must be a plan_table() result; it lacks {missing}")
    alpha, power = table.attrs.get("alpha", 0.05), table.attrs.get("power", 0.8)
    family = table.attrs.get("family", "baseline")
    if table.empty:
        return f"Every testable comparison (family {family!r}, alpha {alpha:g}) is significant."
    lines = [
        f"Seeds for {100 * power:g}% power of the paired t-test at the Bonferroni level "
        f"alpha/m (alpha {alpha:g}, family {family!r}), for the observed difference and sd:"
    ]
    for row in table.itertuples():
        head = f"{row.scope}: {row.b} vs {row.a}"
        if row.note:
            lines.append(f"{head}: {row.note}")
            continue
        seeds = "no finite number of" if math.isinf(row.seeds_needed) else int(row.seeds_needed)
        lines.append(
            f"{head}: diff {row.diff * scale:+.1f} {unit}, sd {row.sd * scale:.1f} {unit} at "
            f"n={row.n} (m={row.m}, Holm p {row.p_adjusted:.2g}, power now {row.power_now:.2f})"
            f": {seeds} seeds"
        )
    return "\n".join(lines)
