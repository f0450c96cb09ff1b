"""A study folder's ``manifest.json``: read it checked, and rebuild it from the cells if damaged.

The manifest holds the study's config, the package versions, cell counts and the run history. The
cells are the source of truth: a manifest that is not a well-formed JSON object of that shape is
set aside (``manifest.json.damaged-<time>``, never deleted) and rebuilt from the cell records;
the run history of the damaged file is kept wherever it can still be read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from stemlab.errors import StemlabWarning
from stemlab.study.spec import Study
from stemlab.study.store import CellStore, _depth_problem, atomic_write_text, json_safe

__all__ = [
    "MANIFEST_NAME",
    "cell_counts",
    "manifest_problem",
    "read_manifest",
    "rebuild_manifest",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""A manifest above this size is not one stemlab wrote: set aside unread."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _run_ok(run: Any) -> bool:
    seconds = run.get("seconds") if isinstance(run, dict) else None
    return (
        isinstance(run, dict)
        and isinstance(run.get("finished"), str)
        and isinstance(seconds, (int, float))
        and not isinstance(seconds, bool)
        and math.isfinite(seconds)
        and isinstance(run.get("executor"), str)
        and _is_int(run.get("workers"))
    )


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with ``manifest`` (a parsed ``manifest.json``), or ``None`` if nothing."""
    if not isinstance(manifest, dict):
        return f"not a JSON object but {type(manifest).__name__}"
    nested = _depth_problem(manifest)
    if nested is not None:
        return nested
    expected = {
        "study": str,
        "quick": bool,
        "config": dict,
        "versions": dict,
        "cells": dict,
        "runs": list,
    }
    for field, kind in expected.items():
        if not isinstance(manifest.get(field), kind):
            return f"field {field!r} is missing or not a {kind.__name__}"
    counts = manifest["cells"]
    if not all(_is_int(counts.get(f)) and counts[f] >= 0 for f in ("total", "ok", "failed")):
        return "cells.total/ok/failed are not integers >= 0"
    if not isinstance(counts.get("seconds", {}), dict):
        return "cells.seconds is not a dict"
    if not all(_run_ok(run) for run in manifest["runs"]):
        return "runs holds an entry that is not a run record"
    if manifest["config"]:  # {} when rebuilt from cells that are no single study's grid
        try:
            Study(**manifest["config"])
        except (TypeError, ValueError) as exc:
            return f"config is not a study ({exc})"
    return None


def cell_counts(cells: pd.DataFrame, *, total: int | None = None) -> dict[str, Any]:
    """The manifest's ``cells`` section from the ``cells`` table of :func:`build_tables`.

    Args:
        cells: the stored cells (one row each, with ``key``, ``status``, ``seconds``).
        total: cells in the study's grid (the count "N of M cells finished" uses); default:
            the rows of ``cells`` (when no grid is known).

    Returns:
        ``{"total", "ok", "failed", "diverged", "missing", "seconds"}``: ``missing`` are the
        grid's cells with no record; ``failed`` counts failed cells only.
    """
    status = cells["status"] if not cells.empty else pd.Series(dtype=object)
    stored = len(cells)
    total = stored if total is None else int(total)
    seconds = (
        cells.set_index("key")["seconds"].astype(float).round(2).to_dict()
        if not cells.empty
        else {}
    )
    return {
        "total": total,
        "ok": int((status == "ok").sum()),
        "failed": int((status == "failed").sum()),
        "diverged": int((status == "diverged").sum()),
        "missing": max(0, total - stored),
        "seconds": json_safe(seconds),
    }


def _salvage(text: str, field: str, kind: type) -> Any:
    """The value of top-level ``field`` in a damaged manifest's text, if it can still be read.

    A truncated file still holds every field written before the cut, complete.
    """
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        value = parsed.get(field)
        return value if isinstance(value, kind) else None
    marker = text.find(f'"{field}":')
    if marker < 0:
        return None
    start = marker + len(field) + 3
    while start < len(text) and text[start].isspace():
        start += 1
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    return value if isinstance(value, kind) else None


def _salvage_runs(text: str) -> list[dict[str, Any]]:
    """The run history of a damaged manifest's text, as far as it can still be read."""
    runs = _salvage(text, "runs", list) or []
    return [run for run in runs if _run_ok(run)]


def _covers(config: Any, records: list[dict[str, Any]]) -> bool:
    """Whether ``config`` is a valid study whose grid holds every record."""
    if not isinstance(config, dict) or not config:
        return False
    try:
        keys = {cell.key for cell in Study(**config).cells()}
    except (TypeError, ValueError):
        return False
    return all(r["key"] in keys for r in records)


def _study_config(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The config of the study whose grid the records are, or ``None`` if they are no one grid.

    Cell configs repeat the study's fields (``data``, ``training``, ...) under the same names;
    the grid axes (backbones, stems, seeds) are collected over the cells. The result is checked
    by hashing: every record must be a cell of the rebuilt study.
    """
    train = [r["config"] for r in records if r["kind"] == "train"]
    profile = [r["config"] for r in records if r["kind"] == "profile"]
    if not train:
        return None
    names = {f.name for f in dataclasses.fields(Study)}
    axes = {"kind", "study", "backbone", "backbone_kwargs", "stem", "seed"}
    first = train[0]
    config: dict[str, Any] = {k: v for k, v in first.items() if k in names and k not in axes}
    backbones: dict[str, Any] = {}
    for cell in train:
        backbones.setdefault(cell["backbone"], cell["backbone_kwargs"])
    config.update(
        name=first["study"],
        backbones=backbones,
        stems=list(dict.fromkeys(c["stem"] for c in train + profile)),
        seeds=sorted({c["seed"] for c in train}),
    )
    if profile:
        one = profile[0]
        profiled = sorted({c["backbone"] for c in profile})
        config["profile"] = {
            "backbone": profiled[0] if len(profiled) == 1 else "*",
            "input": one["input"],
            "kwargs": one["backbone_kwargs"],
            "num_classes": one.get("num_classes", 400),
        }
        if "latency_runs" in one:
            config["latency_runs"] = one["latency_runs"]
        if "probes" in one and "profile_probes" in names:
            config["profile_probes"] = one["probes"]
    return Study(**config).to_config() if _covers(config, records) else None


def rebuild_manifest(out_dir: str | os.PathLike[str], *, text: str = "") -> dict[str, Any]:
    """A manifest rebuilt from the valid cell records of ``out_dir`` (not written).

    Args:
        out_dir: the study folder.
        text: the damaged manifest's text: its run history and study config are kept where
            they can still be read (the config only if every cell belongs to it).

    Returns:
        The manifest. The study config comes from ``text`` or else from the cells' configs (then
        its description and findings are lost); ``{}`` when the cells are no one study's grid.
    """
    from stemlab.study.cell import package_versions

    store = CellStore(Path(out_dir) / "cells")
    records = [r for r in (store.read(key) for key in store.stored_keys()) if r is not None]
    old_config = _salvage(text, "config", dict)
    config = old_config if _covers(old_config, records) else (_study_config(records) or {})
    rows = [
        {"key": r["key"], "status": r["status"], "seconds": r.get("seconds") or 0.0}
        for r in records
    ]
    study = config.get("name") or (records[0]["config"].get("study", "") if records else "")
    return {
        "study": study,
        "quick": bool(_salvage(text, "quick", bool)),
        "config": config,
        "versions": package_versions(),
        "cells": cell_counts(pd.DataFrame(rows)),
        "runs": _salvage_runs(text),
        "rebuilt": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checked manifest of ``out_dir``; a damaged one is set aside, rebuilt and rewritten.

    Returns:
        The manifest, or ``None`` if ``out_dir`` has none.
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not (path.exists() or path.is_symlink()):
        return None
    regular = path.is_file()
    data = b""
    if regular:
        with path.open("rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    text = data.decode("utf-8", errors="replace")
    problem: str | None
    if not regular:
        problem, text = "not a regular file", ""
    elif len(data) > MAX_MANIFEST_BYTES:
        problem, text = f"above the {MAX_MANIFEST_BYTES}-byte cap of a manifest", ""
    else:
        try:
            manifest = json.loads(text)
        except ValueError as exc:
            problem = f"not valid JSON ({exc})"
        except RecursionError:
            problem = "JSON nested deeper than Python can read"
        else:
            problem = manifest_problem(manifest)
    if problem is None:
        return manifest
    aside = path.with_name(f"{MANIFEST_NAME}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    while aside.exists():
        aside = aside.with_name(aside.name + "x")
    os.replace(path, aside)
    rebuilt = rebuild_manifest(out_dir, text=text)
    write_manifest(out_dir, rebuilt)
    warnings.warn(
        f"damaged {path}: {problem}; set aside as {aside.name} and rebuilt from the cells "
        f"({len(rebuilt['runs'])} run(s) of history kept)",
        StemlabWarning,
        stacklevel=2,
    )
    return rebuilt


def write_manifest(out_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` to ``out_dir/manifest.json`` atomically and return the path."""
    path = Path(out_dir) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(json_safe(manifest), indent=2, default=str, allow_nan=False))
    return path
