"""What the report's sections share: arms, the declared comparison family, its wording, cell counts.

Every accuracy finding (at the selected settings, over the sweep, at each budget) is a row of
:func:`family_table`: the pairs the study's ``comparisons`` declares, tested by the view's
``compare`` (the one statistics module), Holm-adjusted over that family, with simultaneous
(Bonferroni) intervals clipped to the metric's range.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from stemlab.report.sections import ReportView
from stemlab.report.stats import holm

__all__ = [
    "arm_counts",
    "arms",
    "diverged_sentence",
    "family_pairs",
    "family_table",
    "family_text",
    "finished",
    "pct",
    "reference_arms",
    "row_sentence",
    "short_sentences",
]

# Differences narrower than this (in the metric's unit) are rounding, not spread.
_FLAT = 1e-12


def pct(value: float, digits: int = 1) -> str:
    """A fraction as a percentage (``0.903 -> "90.3%"``)."""
    return f"{100 * value:.{digits}f}%"


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with status ``ok`` (all rows when the table has no status column)."""
    if frame.empty or "status" not in frame:
        return frame
    return frame[frame["status"] == "ok"]


def arms(view: ReportView) -> list[tuple[str, str]]:
    """Every (backbone, stem) trained in the study, in the study's order (finished or not)."""
    cells = view.cells
    if cells.empty:
        return []
    train = cells[cells["kind"] == "train"]
    return list(dict.fromkeys(zip(train["backbone"], train["stem"])))


def with_arm(view: ReportView, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with an ``arm`` column (the view's label of backbone and stem)."""
    if frame.empty:
        return frame.assign(arm=pd.Series(dtype=object))
    return frame.assign(arm=view.labels(frame))


def _stems_vary(view: ReportView) -> bool:
    by_backbone: dict[str, set[str]] = {}
    for backbone, stem in arms(view):
        by_backbone.setdefault(backbone, set()).add(stem)
    return any(len(stems) > 1 for stems in by_backbone.values())


def family_pairs(view: ReportView, present: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (a, b) arm labels the declared family compares, among the arms in ``present``.

    ``"baseline"``: on each backbone, its reference stem against every other stem (with one
    stem per backbone: the first backbone against the others). ``"all_pairs"``: every pair.
    """
    labels = [view.label(b, s) for b, s in present]
    if view.comparisons == "all_pairs":
        return [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
    if not _stems_vary(view):
        return [(labels[0], b) for b in labels[1:]] if labels else []
    pairs = []
    for backbone in dict.fromkeys(b for b, _ in present):
        reference = view.references.get(backbone)
        if reference is None or (backbone, reference) not in present:
            continue
        ref_label = view.label(backbone, reference)
        pairs += [
            (ref_label, view.label(b, s)) for b, s in present if b == backbone and s != reference
        ]
    return pairs


def family_text(view: ReportView, m: int) -> str:
    """How the report names the declared family (``"each stem vs `r2d`, Holm over 3"``)."""
    if view.comparisons == "all_pairs":
        return f"all {m} pairs, Holm over {m}"
    if not _stems_vary(view):
        first = arms(view)[0] if arms(view) else ("", "")
        return f"each arm vs `{view.label(*first)}`, Holm over {m}"
    refs = sorted(set(view.references.values()))
    named = ", ".join(f"`{r}`" for r in refs)
    return f"each stem vs {named}, Holm over {m}"


def _note(row: pd.Series, replicate: str) -> str:
    """Why no test is possible for a compare() row ('' when it can be tested)."""
    given = row.get("note")
    if isinstance(given, str) and given.strip():
        return given.strip()
    if row["test"] == "none" or pd.isna(row["p_value"]):
        return (
            f"no test possible: a group has fewer than 2 values "
            f"(n={int(row['n_a'])} vs {int(row['n_b'])})"
        )
    if abs(float(row["ci_high"]) - float(row["ci_low"])) <= _FLAT:
        return (
            f"no test possible: every paired difference is the same number "
            f"({float(row['diff']):+.3g}), no spread over {replicate}s to test against"
        )
    return ""


def family_table(
    view: ReportView,
    rows: pd.DataFrame,
    metric: str,
    *,
    pair_by: str = "seed",
    bounds: tuple[float, float] | None = (0.0, 1.0),
    alpha: float = 0.05,
    replicate: str = "seed",
    test: str | None = None,
) -> pd.DataFrame:
    """The declared family's comparisons of ``metric`` over ``rows``.

    Args:
        view: the report view (family, labels, ``compare``).
        rows: finished replicates: backbone, stem, ``pair_by`` and ``metric``.
        metric: the compared column.
        pair_by: the column pairing replicates of two arms (``"seed"``, ``"sample"``).
        bounds: range of the metric (the interval of a difference is clipped to
            ``[lo - hi, hi - lo]``); None for an unbounded metric.
        alpha: family-wise error rate.
        replicate: what one pair is, for the notes (``"seed"``, ``"sample"``).
        test: the test to ask ``compare`` for (e.g. ``"sign_flip"`` over sweep samples) when
            it offers a choice; its default test otherwise.

    Returns:
        One row per pair: a, b, n_a, n_b, n_pairs, mean_a, mean_b, diff, ci_low, ci_high
        (simultaneous: Bonferroni over the testable pairs), clipped, p_value, p_adjusted (Holm over
        the testable pairs), significant, test, note (why no test is possible, else "").
        ``attrs``: m (testable pairs), confidence (of each interval), family (its wording).
    """
    columns = [
        "a", "b", "n_a", "n_b", "n_pairs", "mean_a", "mean_b", "diff", "ci_low", "ci_high",
        "clipped", "p_value", "p_adjusted", "significant", "test", "note",
    ]  # fmt: skip
    rows = with_arm(view, rows.dropna(subset=[metric])) if not rows.empty else rows
    present = [
        arm
        for arm in arms(view)
        if not rows.empty and ((rows["backbone"] == arm[0]) & (rows["stem"] == arm[1])).any()
    ]
    pairs = family_pairs(view, present)
    if not pairs or view.compare is None:
        empty = pd.DataFrame(columns=columns)
        empty.attrs.update(m=0, confidence=1 - alpha, family=family_text(view, 0))
        return empty

    options = {}
    if test is not None and "test" in inspect.signature(view.compare).parameters:
        options["test"] = test  # the statistics module's test for this pairing, where it has one

    def one(a: str, b: str, confidence: float) -> pd.Series:
        two = rows[rows["arm"].isin([a, b])]
        table = view.compare(
            two, metric=metric, by="arm", baseline=a, pair_by=pair_by, confidence=confidence,
            **options,
        )  # fmt: skip
        return table.iloc[0]

    first = [one(a, b, 1 - alpha) for a, b in pairs]
    notes = [_note(r, replicate) for r in first]
    p = np.array([np.nan if n else float(r["p_value"]) for r, n in zip(first, notes)])
    m = int(np.isfinite(p).sum())
    confidence = 1 - alpha / max(m, 1)
    out = []
    low, high = (bounds[0] - bounds[1], bounds[1] - bounds[0]) if bounds else (-math.inf, math.inf)
    adjusted = holm(p)
    for (a, b), row, note, p_adj in zip(pairs, first, notes, adjusted):
        wide = one(a, b, confidence) if not note else row
        lo, hi = float(wide["ci_low"]), float(wide["ci_high"])
        clipped = bool(not note and (lo < low or hi > high))
        out.append(
            {
                "a": a,
                "b": b,
                "n_a": int(row["n_a"]),
                "n_b": int(row["n_b"]),
                "n_pairs": int(row["n_pairs"]),
                "mean_a": float(row["mean_a"]),
                "mean_b": float(row["mean_b"]),
                "diff": float(row["diff"]),
                "ci_low": math.nan if note else max(lo, low),
                "ci_high": math.nan if note else min(hi, high),
                "clipped": clipped,
                "p_value": math.nan if note else float(row["p_value"]),
                "p_adjusted": float(p_adj),
                "significant": bool(not note and p_adj < alpha),
                "test": str(row["test"]),
                "note": note,
            }
        )
    table = pd.DataFrame(out, columns=columns)
    table.attrs.update(m=m, confidence=confidence, family=family_text(view, m), alpha=alpha)
    return table


def _p_text(p: float) -> str:
    if p < 0.001:
        return "< 0.001"
    return f"= {p:.2g}" if p < 0.1 else f"= {p:.2f}"


def _n_text(row: pd.Series) -> str:
    if row["test"] in ("paired t", "sign-flip"):
        return f"n={int(row['n_pairs'])}"
    return (
        f"n={int(row['n_a'])} vs {int(row['n_b'])}"
        if row["n_a"] != row["n_b"]
        else (f"n={int(row['n_a'])}")
    )


def _crosses(row: pd.Series) -> str:
    """Said when Holm rejects but the (more conservative) Bonferroni interval holds 0."""
    if row["significant"] and row["ci_low"] <= 0 <= row["ci_high"]:
        return ", which holds 0: Bonferroni is more conservative than Holm"
    return ""


def row_sentence(
    row: pd.Series,
    *,
    scale: float = 100.0,
    unit: str = "points",
    digits: int = 1,
    replicate: str = "seed",
) -> str:
    """One :func:`family_table` row as a sentence with its numbers (or its note instead)."""
    head = f"`{row['b']}` vs `{row['a']}`"
    if row["note"]:
        return f"{head}: {row['note']}"
    unit_text = f" {unit}" if unit else ""
    diff = f"{row['diff'] * scale:+.{digits}f}{unit_text}"
    clipped = ", clipped to the metric's range" if row["clipped"] else ""
    interval = (
        f"simultaneous 95% CI {row['ci_low'] * scale:+.{digits}f} to "
        f"{row['ci_high'] * scale:+.{digits}f}{clipped}{_crosses(row)}"
    )
    if row["test"] == "paired t":
        how = f"paired t over {int(row['n_pairs'])} {replicate}s"
    elif row["test"] == "sign-flip":
        how = f"sign-flip test over {int(row['n_pairs'])} {replicate}s"
    else:
        how = f"Welch t, n={int(row['n_a'])} vs {int(row['n_b'])}"
    p = f"Holm-adjusted p {_p_text(float(row['p_adjusted']))}"
    if row["significant"]:
        return f"{head}: {diff} ({interval}; {how}, {p})"
    return f"{head}: {diff}, not distinguishable at {_n_text(row)} ({interval}; {how}, {p})"


def short_sentences(
    table: pd.DataFrame, *, what: str = "", scale: float = 100.0, unit: str = "points"
) -> list[str]:
    """One short sentence per finding of a :func:`family_table`: each significant pair, the
    untestable pairs (their notes), and one sentence for the pairs not distinguishable."""
    lines = []
    where = f" {what}" if what else ""
    for _, row in table[table["significant"]].iterrows():
        side = "above" if row["diff"] > 0 else "below"
        lines.append(
            f"`{row['b']}` is {abs(row['diff']) * scale:.1f} {unit} {side} `{row['a']}`{where} "
            f"(Holm-adjusted p {_p_text(float(row['p_adjusted']))}; simultaneous 95% CI "
            f"{row['ci_low'] * scale:+.1f} to {row['ci_high'] * scale:+.1f}{_crosses(row)})."
        )
    for _, row in table[table["note"] != ""].iterrows():
        lines.append(f"`{row['b']}` vs `{row['a']}`{where}: {row['note']}.")
    unclear = table[~table["significant"] & (table["note"] == "")]
    if len(unclear):
        ns = sorted({_n_text(r) for _, r in unclear.iterrows()})
        lines.append(
            "Not distinguishable"
            + where
            + f" at {' / '.join(ns)}: "
            + ", ".join(f"`{r['b']}` vs `{r['a']}`" for _, r in unclear.iterrows())
            + "."
        )
    return lines


def arm_counts(view: ReportView, kind: str = "train") -> pd.DataFrame:
    """Per arm: cells of ``kind`` in the grid, finished, failed and diverged.

    The grid count is the study's seeds (train) or seeds x samples (sweep) where the config
    says, else the cells present.
    """
    cells = view.cells
    columns = ["backbone", "stem", "arm", "grid", "ok", "failed", "diverged", "first_error"]
    if cells.empty or "kind" not in cells:
        return pd.DataFrame(columns=columns)
    rows = cells[cells["kind"] == kind]
    seeds = view.config.get("seeds") or []
    sweep = view.config.get("sweep") or {}
    expected: int | None = None
    if kind == "train" and seeds:
        expected = len(seeds)
    elif kind == "sweep" and sweep.get("samples"):
        expected = int(sweep["samples"]) * len(sweep.get("seeds") or seeds or [0])
    out = []
    for (backbone, stem), group in rows.groupby(["backbone", "stem"], sort=False):
        status = group["status"]
        diverged = group[status == "diverged"]
        error = ""
        if len(diverged) and "error" in diverged and diverged["error"].notna().any():
            error = str(diverged["error"].dropna().iloc[0])
        out.append(
            {
                "backbone": backbone,
                "stem": stem,
                "arm": view.label(backbone, stem),
                "grid": max(expected or 0, len(group)),
                "ok": int((status == "ok").sum()),
                "failed": int(((status != "ok") & (status != "diverged")).sum()),
                "diverged": len(diverged),
                "first_error": error,
            }
        )
    return pd.DataFrame(out, columns=columns)


def diverged_sentence(view: ReportView) -> list[str]:
    """One sentence per cell kind counting diverged cells per arm (none: no sentence)."""
    lines = []
    for kind, what in (("train", "training cells"), ("sweep", "sweep cells")):
        counts = arm_counts(view, kind)
        hit = counts[counts["diverged"] > 0] if len(counts) else counts
        if hit.empty:
            continue
        parts = [f"`{r.arm}` {r.diverged} of {r.grid}" for r in hit.itertuples()]
        text = f"Diverged {what}, excluded from every finding: " + ", ".join(parts)
        first = next((r.first_error for r in hit.itertuples() if r.first_error), "")
        if first:
            text += f" (first: {first})"
        lines.append(text + ".")
    return lines


def values_of(frame: pd.DataFrame, column: str) -> Any:
    """Numeric values of ``column`` (NaN where missing)."""
    return (
        pd.to_numeric(frame[column], errors="coerce")
        if column in frame
        else pd.Series(np.nan, index=frame.index)
    )


def reference_arms(
    config: Mapping[str, Any], cells: pd.DataFrame, declared: str | None
) -> tuple[dict[str, str], list[str]]:
    """Per backbone, the reference stem the comparisons use, and sentences where it is not the
    ``declared`` one (the declared reference has no finished training cell).

    Args:
        config: the study config (``seeds``, ``stems``).
        cells: the ``cells`` table.
        declared: the study's reference stem.

    Returns:
        ``({backbone: stem}, [sentence])``.
    """
    if cells.empty or "kind" not in cells or declared is None:
        return {}, []
    train = cells[cells["kind"] == "train"]
    seeds = len(config.get("seeds") or []) or None
    references: dict[str, str] = {}
    notes = []
    several = train["backbone"].nunique() > 1
    for backbone, rows in train.groupby("backbone", sort=False):
        stems = list(dict.fromkeys(rows["stem"]))
        ok = rows[rows["status"] == "ok"]
        if "top1" in ok:
            ok = ok.dropna(subset=["top1"])
        done = list(dict.fromkeys(ok["stem"]))
        if declared in done:
            references[backbone] = declared
            continue
        if declared not in stems and declared not in (config.get("stems") or []):
            references[backbone] = done[0] if done else stems[0]
            continue
        grid = max(seeds or 0, int((rows["stem"] == declared).sum()))
        count = int((ok["stem"] == declared).sum())
        where = f" on `{backbone}`" if several else ""
        text = f"Reference stem `{declared}`{where}: {count} of {grid} cells finished; "
        if done and len(stems) > 1:
            references[backbone] = done[0]
            text += (
                f"comparisons use `{done[0]}` (the first arm that finished) as the reference "
                "instead."
            )
        else:
            text += "comparisons with it are not possible."
        notes.append(text)
    return references, notes
