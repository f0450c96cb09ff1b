"""Consolidate cell records into the study's tidy tables (``tables/*.csv``)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stemlab.study.spec import Cell
from stemlab.study.store import CellStore, atomic_write_text

__all__ = ["TABLES", "build_tables", "read_tables", "write_tables"]

TABLES = ("summary", "cells", "epochs", "activations", "flops", "latency", "filters")

PROFILE_COLUMNS = (
    "params",
    "gflops",
    "gflops_conv_linear",
    "latency_ms",
    "latency_fwd_bwd_ms",
    "stem_params",
    "stem_gflops",
)
"""Summary columns taken from the (backbone, stem)'s profiling cell."""

SUMMARY_COLUMNS = [
    "backbone",
    "stem",
    *PROFILE_COLUMNS,
    "top1_mean",
    "top1_std",
    "top5_mean",
    "n_seeds",
    "n_failed",
    "train_stem_width",
    "train_params",
    "train_gflops",
    "dead_channel_fraction",
    "gradcam_on_object",
    "object_area",
    "filter_temporal_energy",
    "train_seconds",
]


def _tag(rows: list[dict[str, Any]], **tags: Any) -> list[dict[str, Any]]:
    return [{**tags, **row} for row in rows]


def build_tables(cells: Sequence[Cell], store: CellStore) -> dict[str, pd.DataFrame]:
    """Tables of the cells in ``cells`` (records of other grids in the store are ignored).

    Returns:
        name -> DataFrame for every name in :data:`TABLES`; cells not yet run are absent.
    """
    cell_rows, epochs, activations, flops, latency, filters = [], [], [], [], [], []
    for cell in cells:
        record = store.read(cell.key)
        if record is None:
            continue
        config = record["config"]
        tags = {"key": cell.key, "backbone": config["backbone"], "stem": config["stem"]}
        if cell.kind == "train":
            tags["seed"] = config["seed"]
        result = record.get("result", {})
        cell_rows.append(
            {
                **tags,
                "kind": cell.kind,
                "status": record["status"],
                "error": record.get("error"),
                "seconds": record.get("seconds"),
                **result.get("metrics", {}),
            }
        )
        if record["status"] != "ok":
            continue
        source = "trained" if cell.kind == "train" else "profile"
        epochs += _tag(result.get("epochs", []), **tags)
        activations += _tag(result.get("activations", []), source=source, **tags)
        flops += _tag(result.get("flops", []), **tags)
        latency += _tag(result.get("latency", []), **tags)
        filters += _tag(result.get("filters", []), **tags)
    tables = {
        "cells": pd.DataFrame(cell_rows),
        "epochs": pd.DataFrame(epochs),
        "activations": pd.DataFrame(activations),
        "flops": pd.DataFrame(flops),
        "latency": pd.DataFrame(latency),
        "filters": pd.DataFrame(filters),
    }
    tables["summary"] = _summary(cells, tables["cells"])
    return tables


def _summary(cells: Sequence[Cell], cell_table: pd.DataFrame) -> pd.DataFrame:
    """One row per (training backbone, stem), in the study's order."""
    pairs: list[tuple[str, str]] = []
    for cell in cells:
        pair = (cell.config["backbone"], cell.config["stem"])
        if cell.kind == "train" and pair not in pairs:
            pairs.append(pair)
    profiles: dict[tuple[str, str], dict[str, Any]] = {}
    profile_by_stem: dict[str, dict[str, Any]] = {}
    if not cell_table.empty:
        done = cell_table[(cell_table["kind"] == "profile") & (cell_table["status"] == "ok")]
        for _, row in done.iterrows():
            profiles[(row["backbone"], row["stem"])] = row.to_dict()
            profile_by_stem[row["stem"]] = row.to_dict()
    rows = []
    for backbone, stem in pairs:
        row: dict[str, Any] = {"backbone": backbone, "stem": stem}
        # the same backbone profiled at full size, else the study's single profiling backbone
        profile = profiles.get((backbone, stem), profile_by_stem.get(stem, {}))
        for column in PROFILE_COLUMNS:
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
        if len(ok):
            row["top1_mean"] = ok["top1"].mean()
            row["top1_std"] = ok["top1"].std(ddof=1) if len(ok) > 1 else float("nan")
            for column, source in (
                ("top5_mean", "top5"),
                ("train_stem_width", "train_stem_width"),
                ("train_params", "train_params"),
                ("train_gflops", "train_gflops"),
                ("dead_channel_fraction", "dead_channel_fraction"),
                ("gradcam_on_object", "gradcam_on_object"),
                ("object_area", "object_area"),
                ("filter_temporal_energy", "filter_temporal_energy"),
                ("train_seconds", "train_seconds"),
            ):
                if source in ok:
                    row[column] = ok[source].mean()
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


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
    """Read back the tables :func:`write_tables` wrote (missing or empty files -> empty frames)."""
    directory = Path(directory)
    tables = {}
    for name in TABLES:
        path = directory / f"{name}.csv"
        try:
            tables[name] = pd.read_csv(path)
        except (FileNotFoundError, pd.errors.EmptyDataError):
            tables[name] = pd.DataFrame()
    return tables
