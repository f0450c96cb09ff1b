"""Initialisation baselines: a probe's metrics on the untrained model beside the trained ones.

A weight or activation statistic of a trained model says little until it is set against the
same statistic of the same arm and seed before training (``CellContext.init_model``): a stem
difference that is already there at initialisation is the architecture, not what was learned.
Probes report ``<metric>_init`` beside ``<metric>``, mark table rows with ``state`` ("trained" /
"init"), and state findings as trained minus init (:func:`training_change_findings`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from stemlab.probes.contract import CellContext, ProbeOutput, StudyView, SummaryColumn

__all__ = [
    "INIT_SUFFIX",
    "init_columns",
    "on_trained_and_init",
    "training_change_findings",
]

INIT_SUFFIX = "_init"
"""Suffix of a metric measured on the untrained model (``effective_rank_init``)."""

Measure = Callable[[nn.Module], tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]]


def init_columns(columns: Sequence[SummaryColumn]) -> tuple[SummaryColumn, ...]:
    """Each summary column followed by its ``<name>_init`` twin (the untrained model's value)."""
    out: list[SummaryColumn] = []
    for column in columns:
        out.append(column)
        out.append(
            SummaryColumn(
                f"{column.name}{INIT_SUFFIX}",
                f"{column.name} of the same arm and seed's model before training",
                column.source,
            )
        )
    return tuple(out)


def on_trained_and_init(context: CellContext, measure: Measure) -> ProbeOutput:
    """Run ``measure`` on the cell's model and, when there is one, on its untrained copy.

    Args:
        context: the cell.
        measure: ``model -> (metrics, {table: rows})``.

    Returns:
        The trained model's metrics plus ``<metric>_init`` for each metric of the untrained
        model; every table row carries ``state`` (``"trained"``, or ``"init"`` for the untrained
        model and for profile cells, whose weights are random).
    """
    metrics, tables = measure(context.model)
    state = "trained" if context.kind == "trained" else "init"
    rows = {name: [{"state": state, **row} for row in part] for name, part in tables.items()}
    output = ProbeOutput(metrics=dict(metrics), tables=rows)
    if context.init_model is not None:
        init_metrics, init_tables = measure(context.init_model)
        output.metrics.update({f"{k}{INIT_SUFFIX}": v for k, v in init_metrics.items()})
        for name, part in init_tables.items():
            output.tables.setdefault(name, []).extend({"state": "init", **row} for row in part)
    return output


def _number(value: float, digits: int) -> str:
    text = f"{value:+.{digits}f}"
    return text.replace("-", "+") if float(text) == 0 else text  # no "-0.00"


def _interval(row: pd.Series, digits: int) -> str:
    """``diff (95% CI low to high, p_adj p)`` of a :func:`compare` row."""
    if not np.isfinite(row["ci_low"]):
        return f"{_number(row['diff'], digits)} (no test possible at n={row['n_b']})"
    return (
        f"{_number(row['diff'], digits)} (95% CI {_number(row['ci_low'], digits)} to "
        f"{_number(row['ci_high'], digits)}, p_adj {row['p_adjusted']:.2g})"
    )


def _change_line(
    view: StudyView, rows: pd.DataFrame, delta: str, what: str, where: str, digits: int
) -> str | None:
    """Trained minus init of every stem: a one-sample t over seeds (paired with a zero arm)."""
    stems = list(dict.fromkeys(rows["stem"]))
    seeds = sorted(set(rows["seed"]))
    zero = pd.DataFrame({"stem": "\0zero", "seed": seeds, delta: 0.0})
    table = view.compare(
        pd.concat([zero, rows[["stem", "seed", delta]]], ignore_index=True),
        metric=delta,
        by="stem",
        baseline="\0zero",
    )
    if table.empty:
        return None
    changed, unchanged = [], []
    for _, row in table.iterrows():
        values = rows.loc[rows["stem"] == row["b"], delta].to_numpy(float)
        if row["significant"]:
            changed.append(f"`{row['b']}` {_interval(row, digits)}")
        elif len(values) and np.all(values == 0):
            unchanged.append(f"`{row['b']}` (exactly 0 on every seed)")
        else:
            unchanged.append(f"`{row['b']}` ({_number(row['diff'], digits)})")
    n = len(seeds)
    text = (
        f"{what}{where}, trained minus init (the same arm and seed before training; paired over "
        f"{n} seed{'s' if n != 1 else ''}, Holm over {len(stems)} stem{'s' if len(stems) != 1 else ''}): "
    )
    parts = []
    if changed:
        parts.append("training changed it for " + "; ".join(changed))
    if unchanged:
        parts.append("no change distinguishable for " + ", ".join(unchanged))
    return text + ". ".join(p[0].upper() + p[1:] if i else p for i, p in enumerate(parts)) + "."


def _between_line(
    view: StudyView,
    rows: pd.DataFrame,
    metric: str,
    init: str,
    delta: str,
    what: str,
    where: str,
    digits: int,
) -> str | None:
    """Each stem against the baseline, trained and at init, and whether training moved the gap."""
    baseline = view.baseline
    if baseline not in set(rows["stem"]) or rows["stem"].nunique() < 2:
        return None
    trained, initial, moved = (
        view.compare(rows, metric=column, by="stem", baseline=baseline).set_index("b")
        for column in (metric, init, delta)
    )
    already, made, gone, same = [], [], [], []
    for stem in trained.index:
        t, i, d = trained.loc[stem], initial.loc[stem], moved.loc[stem]
        gap = (
            f"training moved the gap by {_interval(d, digits)}"
            if d["significant"]
            else f"training did not move the gap distinguishably ({_number(d['diff'], digits)})"
        )
        if i["significant"] and t["significant"] and np.sign(i["diff"]) == np.sign(t["diff"]):
            already.append(
                f"`{stem}` ({_number(i['diff'], digits)} at init vs {_number(t['diff'], digits)} "
                f"trained; {gap})"
            )
        elif t["significant"]:
            made.append(
                f"`{stem}` ({_number(t['diff'], digits)} trained vs {_number(i['diff'], digits)} "
                f"at init{' (not distinguishable there)' if not i['significant'] else ', reversed'}; "
                f"{gap})"
            )
        elif i["significant"]:
            gone.append(
                f"`{stem}` ({_number(i['diff'], digits)} at init, {_number(t['diff'], digits)} "
                "trained)"
            )
        else:
            same.append(f"`{stem}`")
    first = trained.iloc[0]
    text = (
        f"{what}{where} against `{baseline}` ({first['mean_a']:.{digits}f} trained, "
        f"{initial.iloc[0]['mean_a']:.{digits}f} at init; paired over seeds, Holm over "
        f"{len(trained)} stem{'s' if len(trained) != 1 else ''} in each state)"
    )
    parts = []
    if already:
        parts.append("the difference is already there at init for " + "; ".join(already))
    if made:
        parts.append("training made the difference for " + "; ".join(made))
    if gone:
        parts.append("a difference at init is gone after training for " + "; ".join(gone))
    if same:
        parts.append("not distinguishable at init or trained for " + ", ".join(same))
    return (
        text + ": " + ". ".join(p[0].upper() + p[1:] if i else p for i, p in enumerate(parts)) + "."
    )


def training_change_findings(
    view: StudyView, metric: str, what: str, *, digits: int = 2
) -> list[str]:
    """Findings of a metric measured trained and at init (``<metric>_init``).

    Per backbone: (1) the change training made to each stem (``<metric> - <metric>_init``,
    one-sample t over seeds, Holm over stems); (2) each stem against the baseline stem, trained
    and at init, saying when a difference is already there at init, and whether training moved
    the gap (paired t of the changes). Without init values, the plain trained comparison.

    Args:
        view: the study.
        metric: a cell metric with an ``_init`` twin.
        what: how the sentences name the metric.
        digits: decimals of the numbers.

    Returns:
        The sentences.
    """
    cells = view.trained()
    init = f"{metric}{INIT_SUFFIX}"
    if cells.empty or metric not in cells or view.compare is None:
        return []
    if init not in cells or cells[init].isna().all():
        return view.against_baseline(metric, what, digits=digits)
    delta = f"{metric}_delta"
    rows = cells.dropna(subset=[metric, init])
    rows = rows.assign(
        **{
            metric: rows[metric].astype(float),
            init: rows[init].astype(float),
            delta: rows[metric].astype(float) - rows[init].astype(float),
            "seed": rows["seed"].astype(int),
        }
    )
    lines: list[str] = []
    for backbone, group in rows.groupby("backbone", sort=False):
        where = "" if view.single_backbone() else f" on `{backbone}`"
        for line in (
            _change_line(view, group, delta, what, where, digits),
            _between_line(view, group, metric, init, delta, what, where, digits),
        ):
            if line:
                lines.append(line)
    return lines
