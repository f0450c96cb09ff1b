"""``run_study``: expand the grid, skip finished cells, run the rest, consolidate the tables."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from stemlab.study.cell import package_versions
from stemlab.study.executors import make_executor
from stemlab.study.spec import Study
from stemlab.study.store import CellStore, atomic_write_text
from stemlab.study.tables import build_tables, write_tables

__all__ = ["StudyRun", "load_study", "run_study"]


@dataclass(frozen=True)
class StudyRun:
    """What :func:`run_study` did.

    Attributes:
        out_dir: the study's output folder.
        total: cells in the grid.
        skipped: cells already finished before this run (resume).
        ran: cells run now.
        failed: cells whose record says ``"failed"`` after this run.
        seconds: wall time of this run.
        tables: the consolidated tables.
    """

    out_dir: Path
    total: int
    skipped: int
    ran: int
    failed: int
    seconds: float
    tables: dict[str, pd.DataFrame]


def load_study(path: str | os.PathLike[str]) -> Study:
    """Import a study script and return its module-level ``STUDY``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the script defines no :class:`Study` called ``STUDY``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study script not found: {path}")
    module_name = f"stemlab_study_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import study script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(module_name, None)
    study = getattr(module, "STUDY", None)
    if not isinstance(study, Study):
        raise ValueError(
            f"{path} must define STUDY = stemlab.study.Study(...), found {type(study).__name__}"
        )
    return study


def run_study(
    study: Study,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    quick: bool = False,
    executor: str = "local",
    workers: int = 1,
    resume: bool = True,
    device: str = "auto",
    progress: bool = True,
) -> StudyRun:
    """Run every cell of ``study`` not finished yet and write the consolidated tables.

    Each finished cell is stored atomically as it completes, so an interrupted run loses only the
    cells in flight; a failing cell is recorded with its error and the run goes on.

    Args:
        study: the study.
        out_dir: output folder; default ``reports/<study.name>``.
        quick: apply the study's ``quick`` overrides.
        executor: ``"local"`` or ``"ray"``.
        workers: cells in parallel.
        resume: skip cells already finished in ``out_dir`` (``False`` reruns them all).
        device: device of the cells.
        progress: show a progress bar.

    Returns:
        A :class:`StudyRun`.
    """
    if quick:
        study = study.quick_variant()
    out = Path(out_dir) if out_dir is not None else Path("reports") / study.name
    store = CellStore(out / "cells")
    cells = study.cells()
    todo = [cell for cell in cells if not (resume and store.is_finished(cell.key))]
    runner = make_executor(executor, workers=workers, device=device)
    start = time.perf_counter()
    bar = tqdm(
        total=len(cells),
        initial=len(cells) - len(todo),
        desc=f"study {study.name}",
        unit="cell",
        disable=not progress,
    )

    def on_result(record: dict[str, Any]) -> None:
        store.write(record)
        bar.set_postfix_str(f"{record['kind']} {record['config']['stem']} {record['status']}")
        bar.update()
        if record["status"] != "ok":
            tqdm.write(
                f"cell {record['key']} ({record['config']['stem']}) failed: {record['error']}"
            )

    try:
        runner.run(todo, on_result)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    tables = build_tables(cells, store)
    write_tables(tables, out / "tables")
    failed = int((tables["cells"]["status"] != "ok").sum()) if not tables["cells"].empty else 0
    _write_manifest(
        out, study, quick=quick, executor=executor, workers=workers, seconds=seconds, tables=tables
    )
    return StudyRun(
        out_dir=out,
        total=len(cells),
        skipped=len(cells) - len(todo),
        ran=len(todo),
        failed=failed,
        seconds=seconds,
        tables=tables,
    )


def _write_manifest(
    out: Path,
    study: Study,
    *,
    quick: bool,
    executor: str,
    workers: int,
    seconds: float,
    tables: dict[str, pd.DataFrame],
) -> None:
    cells = tables["cells"]
    previous: dict[str, Any] = {}
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = {}
    runs = [
        *previous.get("runs", []),
        {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "quick": quick,
            "executor": executor,
            "workers": workers,
            "seconds": round(seconds, 2),
        },
    ]
    manifest = {
        "study": study.name,
        "quick": quick,
        "config": study.to_config(),
        "versions": package_versions(),
        "cells": {
            "total": len(cells),
            "ok": int((cells["status"] == "ok").sum()) if not cells.empty else 0,
            "failed": int((cells["status"] != "ok").sum()) if not cells.empty else 0,
            "seconds": cells.set_index("key")["seconds"].round(2).to_dict()
            if not cells.empty
            else {},
        },
        "runs": runs,
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True, default=str))
