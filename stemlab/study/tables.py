"""Consolidate cell records into the study's tidy tables (``tables/*.csv``).

The tables are whatever the cells' probes produced: each probe's rows go to the tables it
declares, its metrics to the ``cells`` table and its declared columns to the ``summary``; probes
with a ``combine`` step add cross-cell tables (CKA between cells, for instance).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stemlab.probes.contract import StudyView, get_probe, probe_names
from stemlab.study.spec import Cell
from stemlab.study.store import CellStore, atomic_write_text

__all__ = [
    "CORE_TABLES",
    "build_tables",
    "read_tables",
    "summary_columns",
    "sweep_tables",
    "write_tables",
]

CORE_TABLES = ("summary", "cells", "epochs")

TRAINED_COLUMNS = (
    (
        "top1",
        "test top-1 of the trained CPU-scale model (mean over seeds; validation top-1 when the study has no test split)",
    ),
    ("top5", "test top-5 (hidden when the task has 5 classes or fewer)"),
    ("val_top1", "validation top-1 (the split settings are selected on; mean over seeds)"),
    ("lr", "learning rate the arm trained at (selected on validation when the study sweeps)"),
    ("weight_decay", "weight decay the arm trained at"),
    ("train_loss", "training loss of the last epoch (mean over seeds)"),
    ("val_loss", "validation loss after the last epoch (mean over seeds)"),
    ("test_loss", "test loss after the last epoch (mean over seeds)"),
    ("train_stem_width", "stem output channels of the trained model"),
    ("train_params", "parameters of the trained model"),
    ("train_seconds", "training wall time per seed (s)"),
    ("weights_loaded", "checkpoint tensors loaded as they are"),
    ("weights_transferred", "checkpoint tensors adapted to the new stem"),
    ("weights_initialized", "tensors with no checkpoint counterpart (new)"),
    ("transfer_error", "largest relative error of a transferred stem tensor"),
    ("transfer_feature_rel_error", "pretrained features after the stem change vs before"),
    ("transfer_feature_cosine", "cosine of pretrained features after vs before the stem change"),
)


def summary_columns(probes: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(column, source, description)`` of every summary column the probes declare."""
    columns = []
    for name in probes:
        for column in get_probe(name).summary:
            columns.append((column.name, column.source, column.description))
    return columns


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _cell_rows(cells: Sequence[Cell], store: CellStore) -> tuple[list, dict[str, list], list, list]:
    cell_rows: list[dict[str, Any]] = []
    probe_rows: dict[str, list[dict[str, Any]]] = {}
    epochs: list[dict[str, Any]] = []
    budgets: list[dict[str, Any]] = []
    for cell in cells:
        record = store.read(cell.key)
        if record is None:
            continue
        config = record["config"]
        tags: dict[str, Any] = {
            "key": cell.key,
            "backbone": config["backbone"],
            "stem": config["stem"],
        }
        if cell.kind in ("train", "sweep"):
            tags["seed"] = _int_or_none(config.get("seed"))
        if cell.kind == "sweep":
            tags["sample"] = _int_or_none(config.get("sample"))
        result = record.get("result") or {}
        cell_rows.append(
            {
                **tags,
                "kind": cell.kind,
                "status": record.get("status"),
                "error": record.get("error"),
                "seconds": record.get("seconds"),
                **(result.get("metrics") or {}),
                **{f"seconds_{k}": v for k, v in (result.get("probe_seconds") or {}).items()},
            }
        )
        if record.get("status") != "ok":
            continue
        budgets += [{**tags, "kind": cell.kind, **row} for row in result.get("budgets", [])]
        if cell.kind == "sweep":
            continue
        source = "trained" if cell.kind == "train" else "profile"
        epochs += [{**tags, **row} for row in result.get("epochs", [])]
        for table, rows in (result.get("tables") or {}).items():
            probe_rows.setdefault(table, []).extend(
                {**tags, "source": source, **row} for row in rows
            )
    return cell_rows, probe_rows, epochs, budgets


SWEEP_COLUMNS = (
    "backbone", "stem", "seed", "sample", "lr", "weight_decay", "epoch",
    "val_top1", "val_loss", "test_top1", "test_loss", "train_loss", "status", "selected",
)  # fmt: skip


def sweep_tables(cell_table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``sweep`` (one row per sweep cell, ``selected`` marking each arm's choice) and
    ``selection`` (one row per arm) from the cells table; empty without sweep cells."""
    from stemlab.study.selection import select

    if cell_table.empty or "kind" not in cell_table or not (cell_table["kind"] == "sweep").any():
        return {}
    rows = cell_table[cell_table["kind"] == "sweep"].copy()
    rows["epoch"] = rows.get("epochs_trained")
    if "top1" in rows:  # a sweep cell's top1 is its test top-1 (validation when there is no test)
        on_test = rows.get("top1_split", pd.Series("test", index=rows.index)) == "test"
        rows["test_top1"] = rows["top1"].where(on_test)
    for column in SWEEP_COLUMNS:
        if column not in rows:
            rows[column] = pd.NA
    chosen = select(rows[rows["status"] == "ok"])
    picked = {(r.backbone, r.stem, int(r.sample)) for r in chosen.itertuples()}
    rows["selected"] = [
        (b, s, int(k)) in picked and status == "ok"
        for b, s, k, status in zip(rows["backbone"], rows["stem"], rows["sample"], rows["status"])
    ]
    sweep = rows[list(SWEEP_COLUMNS)].sort_values(
        ["backbone", "stem", "seed", "sample"], kind="stable"
    )
    return {"sweep": sweep.reset_index(drop=True), "selection": chosen}


def build_tables(
    cells: Sequence[Cell],
    store: CellStore,
    *,
    config: dict[str, Any] | None = None,
    baseline: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Tables of the cells in ``cells`` (records of other grids in the store are ignored).

    Args:
        cells: the study's grid.
        store: where the records are.
        config: the study config (handed to the probes' ``combine`` steps).
        baseline: the study's reference stem.

    Returns:
        name -> DataFrame: ``summary``, ``cells``, ``epochs`` and every probe table.
    """
    cell_rows, probe_rows, epochs, budgets = _cell_rows(cells, store)
    cell_table = pd.DataFrame(cell_rows)
    for column in ("seed", "sample"):
        if column in cell_table:
            cell_table[column] = cell_table[column].astype("Int64")
    tables: dict[str, pd.DataFrame] = {"cells": cell_table, "epochs": pd.DataFrame(epochs)}
    if budgets:
        tables["budgets"] = pd.DataFrame(budgets)
    tables.update(sweep_tables(cell_table))
    for table, rows in probe_rows.items():
        tables[table] = pd.DataFrame(rows)
    probes = _study_probes(cells)
    tables["summary"] = _summary(cells, cell_table, probes)
    view = StudyView(
        config=config or {},
        cells=cell_table,
        summary=tables["summary"],
        tables=tables,
        arrays=store.read_arrays,
        baseline=baseline,
    )
    problems = []
    for name in probes:
        probe = get_probe(name)
        if probe.combine is not None and not cell_table.empty:
            try:
                tables.update(probe.combine(view))
            except Exception as exc:  # one probe's failure must not cost the other tables
                problems.append(
                    {
                        "part": f"probe {name}",
                        "stage": "combine",
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                )
    # always written, so a step that failed before and works now leaves no stale record
    tables["problems"] = pd.DataFrame(problems, columns=["part", "stage", "error"])
    return tables


def _study_probes(cells: Sequence[Cell]) -> list[str]:
    """Probes the grid runs, in report order."""
    listed: set[str] = set()
    for cell in cells:
        listed.update(cell.config.get("probes", []))
    return [name for name in probe_names() if name in listed]


def _summary(cells: Sequence[Cell], cell_table: pd.DataFrame, probes: list[str]) -> pd.DataFrame:
    """One row per (training backbone, stem), in the study's order."""
    pairs: list[tuple[str, str]] = []
    for cell in cells:
        pair = (cell.config["backbone"], cell.config["stem"])
        if cell.kind == "train" and pair not in pairs:
            pairs.append(pair)
    declared = summary_columns(probes)
    profile_columns = [c for c, source, _ in declared if source == "profile"]
    trained_columns = [c for c, _ in TRAINED_COLUMNS] + [
        c for c, source, _ in declared if source == "trained"
    ]
    profiles: dict[tuple[str, str], dict[str, Any]] = {}
    profile_by_stem: dict[str, dict[str, Any]] = {}
    if not cell_table.empty:
        done = cell_table[(cell_table["kind"] == "profile") & (cell_table["status"] == "ok")]
        for _, row in done.iterrows():
            profiles[(row["backbone"], row["stem"])] = row.to_dict()
            profile_by_stem.setdefault(row["stem"], row.to_dict())
    rows = []
    for backbone, stem in pairs:
        row: dict[str, Any] = {"backbone": backbone, "stem": stem}
        profile = profiles.get((backbone, stem), profile_by_stem.get(stem, {}))
        row["profile_backbone"] = profile.get("backbone")
        for column in profile_columns:
            row[column] = profile.get(column)
        trained = (
            cell_table[
                (cell_table["kind"] == "train")
                & (cell_table["backbone"] == backbone)
                & (cell_table["stem"] == stem)
            ]
            if not cell_table.empty
            else cell_table
        )
        ok = trained[trained["status"] == "ok"] if not trained.empty else trained
        row["n_seeds"] = len(ok)
        row["n_failed"] = len(trained) - len(ok)
        if len(ok) and "top1" in ok:
            row["top1_mean"] = ok["top1"].mean()
            row["top1_std"] = ok["top1"].std(ddof=1) if len(ok) > 1 else float("nan")
            for column in trained_columns:
                if column == "top1" or column not in ok or ok[column].isna().all():
                    continue
                name = "top5_mean" if column == "top5" else column
                values = pd.to_numeric(ok[column], errors="coerce")
                row[name] = values.mean() if values.notna().any() else ok[column].iloc[0]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "n_seeds" in frame:
        frame["n_seeds"] = frame["n_seeds"].astype(int)
        frame["n_failed"] = frame["n_failed"].astype(int)
    return frame


def write_tables(tables: dict[str, pd.DataFrame], directory: str | Path) -> list[Path]:
    """Write each table to ``directory/<name>.csv`` atomically; return the paths."""
    directory = Path(directory)
    paths = []
    for name, table in tables.items():
        buffer = io.StringIO()
        table.to_csv(buffer, index=False)
        path = directory / f"{name}.csv"
        atomic_write_text(path, buffer.getvalue())
        paths.append(path)
    return paths


def read_tables(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read back every ``*.csv`` :func:`write_tables` wrote (empty files -> empty frames)."""
    directory = Path(directory)
    tables = {name: pd.DataFrame() for name in CORE_TABLES}
    for path in sorted(directory.glob("*.csv")):
        try:
            tables[path.stem] = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            tables[path.stem] = pd.DataFrame()
    for column in ("seed", "sample"):
        if column in tables["cells"]:
            tables["cells"][column] = tables["cells"][column].astype("Int64")
    return tables
