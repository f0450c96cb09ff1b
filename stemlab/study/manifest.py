"""A study folder's ``manifest.json``: read it checked, and rebuild it from the cells if damaged.

The manifest holds the study's config, the package versions, cell counts and the run history. The
cells are the source of truth: a manifest that is not a well-formed JSON object of that shape is
set aside (``manifest.json.damaged-<time>``, never deleted) and rebuilt from the cell records;
the run history of the damaged file is kept wherever it can still be read.
"""

from __future__ import annotations

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
from stemlab.study.store import CellStore, atomic_write_text

__all__ = [
    "MANIFEST_NAME",
    "cell_counts",
    "manifest_problem",
    "read_manifest",
    "rebuild_manifest",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"


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
    if not all(_is_int(counts.get(f)) for f in ("total", "ok", "failed")):
        return "cells.total/ok/failed are not integers"
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


def cell_counts(cells: pd.DataFrame) -> dict[str, Any]:
    """The manifest's ``cells`` section from the ``cells`` table of :func:`build_tables`."""
    if cells.empty:
        return {"total": 0, "ok": 0, "failed": 0, "seconds": {}}
    return {
        "total": len(cells),
        "ok": int((cells["status"] == "ok").sum()),
        "failed": int((cells["status"] != "ok").sum()),
        "seconds": cells.set_index("key")["seconds"].astype(float).round(2).to_dict(),
    }


def _salvage_runs(text: str) -> list[dict[str, Any]]:
    """The run history of a damaged manifest's text, as far as it can still be read."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("runs"), list):
        return [run for run in parsed["runs"] if _run_ok(run)]
    # truncated: the runs list is complete if the cut came after it
    marker = text.find('"runs":')
    if marker < 0:
        return []
    start = text.find("[", marker)
    try:
        runs, _ = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return []
    return [run for run in runs if _run_ok(run)] if isinstance(runs, list) else []


def _study_config(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The config of the study whose grid the records are, or ``None`` if they are no one grid."""
    train = [r["config"] for r in records if r["kind"] == "train"]
    profile = [r["config"] for r in records if r["kind"] == "profile"]
    if not train:
        return None
    first = train[0]
    backbones: dict[str, Any] = {}
    for config in train:
        backbones.setdefault(config["backbone"], config["backbone_kwargs"])
    stems = list(dict.fromkeys(c["stem"] for c in train + profile))
    config: dict[str, Any] = {
        "name": first["study"],
        "backbones": backbones,
        "stems": stems,
        "seeds": sorted({c["seed"] for c in train}),
        "data": first["data"],
        "training": first["training"],
        "probes": first["probes"],
        "stem_width_multiplier": first.get("stem_width_multiplier", 1.0),
        "profile": None,
        "quick": {},
        "description": "",
        "findings": None,
    }
    if profile:
        names = sorted({c["backbone"] for c in profile})
        one = profile[0]
        config["profile"] = {
            "backbone": names[0] if len(names) == 1 else "*",
            "input": one["input"],
            "kwargs": one["backbone_kwargs"],
            "num_classes": one.get("num_classes", 400),
        }
        config["latency_runs"] = one.get("latency_runs", 5)
    try:
        study = Study(**config)
    except (TypeError, ValueError):
        return None
    keys = {cell.key for cell in study.cells()}
    return study.to_config() if all(r["key"] in keys for r in records) else None


def rebuild_manifest(
    out_dir: str | os.PathLike[str], *, runs: list[Any] | None = None
) -> dict[str, Any]:
    """A manifest rebuilt from the valid cell records of ``out_dir`` (not written).

    The study config is recovered from the cells' configs (its description and findings are
    lost); when the records are not one study's grid, ``config`` is ``{}``.
    """
    from stemlab.study.cell import package_versions

    store = CellStore(Path(out_dir) / "cells")
    records = [r for r in (store.read(key) for key in store.stored_keys()) if r is not None]
    config = _study_config(records) or {}
    rows = [
        {"key": r["key"], "status": r["status"], "seconds": r.get("seconds") or 0.0}
        for r in records
    ]
    return {
        "study": config.get("name") or (records[0]["config"].get("study", "") if records else ""),
        "quick": False,
        "config": config,
        "versions": package_versions(),
        "cells": cell_counts(pd.DataFrame(rows)),
        "runs": [run for run in (runs or []) if _run_ok(run)],
        "rebuilt": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checked manifest of ``out_dir``; a damaged one is set aside, rebuilt and rewritten.

    Returns:
        The manifest, or ``None`` if ``out_dir`` has none.
    """
    path = Path(out_dir) / MANIFEST_NAME
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        problem: str | None = f"not valid JSON ({exc})"
    else:
        problem = manifest_problem(manifest)
    if problem is None:
        return manifest
    aside = path.with_name(f"{MANIFEST_NAME}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
    while aside.exists():
        aside = aside.with_name(aside.name + "x")
    os.replace(path, aside)
    rebuilt = rebuild_manifest(out_dir, runs=_salvage_runs(text))
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
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return path
