"""``run_study``: expand the grid, skip finished cells, run the rest, consolidate the tables."""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from stemlab._validation import check_choice
from stemlab.device import resolve_device
from stemlab.errors import StemlabWarning, StudyFileError
from stemlab.study.cell import package_versions
from stemlab.study.executors import EXECUTORS, make_executor
from stemlab.study.lock import StudyLock
from stemlab.study.manifest import cell_counts, read_manifest
from stemlab.study.spec import Cell, Study, config_hash
from stemlab.study.store import CellStore, atomic_write_text, json_safe
from stemlab.study.tables import build_tables, write_tables

__all__ = [
    "CELL_OPTIONS",
    "StudyRun",
    "check_device_name",
    "check_output_folder",
    "check_study",
    "default_out_dir",
    "load_study",
    "run_study",
    "study_file_of",
    "tables_from_cells",
]

CELL_OPTIONS = ("probe_samples",)
"""``probe_options`` keys the cell itself reads (the probe clips); probes declare their own."""

_LOADED_FROM: dict[str, tuple[str, str]] = {}
"""Study config hash -> (path, source) of the study file :func:`load_study` read it from."""


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
        diverged: cells whose training diverged (a result, not rerun).
    """

    out_dir: Path
    total: int
    skipped: int
    ran: int
    failed: int
    seconds: float
    tables: dict[str, pd.DataFrame]
    diverged: int = 0


def load_study(path: str | os.PathLike[str]) -> Study:
    """Import a study script and return its module-level ``STUDY``.

    Raises:
        FileNotFoundError: no such file.
        StudyFileError: the script has a syntax error, raises, or calls ``sys.exit``; the message
            names the file and line.
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
    except SyntaxError as exc:
        raise StudyFileError(
            f"study file {path} line {exc.lineno}: SyntaxError: {exc.msg}"
        ) from exc
    except SystemExit as exc:
        raise StudyFileError(
            f"study file {path} stopped: {exc.code}"
            if isinstance(exc.code, str)
            else f"study file {path} called sys.exit({exc.code!r})"
        ) from exc
    except StudyFileError:
        raise  # the script explains itself (e.g. a missing dataset): its message as it is
    except Exception as exc:
        raise StudyFileError(
            f"study file {path} line {_line_in(exc, path)}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        sys.modules.pop(module_name, None)
    study = getattr(module, "STUDY", None)
    if not isinstance(study, Study):
        raise ValueError(
            f"{path} must define STUDY = stemlab.study.Study(...), found {type(study).__name__}"
        )
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        source = ""
    _LOADED_FROM[config_hash(study.to_config())] = (os.fspath(path.resolve()), source)
    return study


def study_file_of(study: Study) -> tuple[str, str] | None:
    """``(path, source)`` of the study file :func:`load_study` read ``study`` from, if any.

    Workers run this file before their first cell, so what it registers exists there too.
    """
    return _LOADED_FROM.get(config_hash(study.to_config()))


def _line_in(exc: BaseException, path: Path) -> int | str:
    """The line of ``path`` in ``exc``'s traceback (the innermost one), or ``"?"``."""
    line: int | str = "?"
    target = path.resolve()
    tb = exc.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == target:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def resolve_cells(study: Study, store: CellStore) -> list[Cell]:
    """The study's grid as far as it is known: with a sweep, the training cells of every arm
    whose sweep cells have finished, at the setting selected from them (validation only)."""
    if study.sweep is None:
        return study.cells()
    from stemlab.study.selection import select, selection_table

    rows = []
    for cell in study.sweep_cells():
        record = store.read(cell.key)
        if record is None or record.get("status") != "ok":
            continue
        metrics = (record.get("result") or {}).get("metrics") or {}
        rows.append(
            {
                "backbone": cell.config["backbone"],
                "stem": cell.config["stem"],
                "seed": cell.config["seed"],
                "sample": cell.config["sample"],
                **{k: metrics.get(k) for k in ("lr", "weight_decay", "val_top1", "val_loss")},
            }
        )
    return study.cells(selection_table(select(pd.DataFrame(rows))))


def tables_from_cells(study: Study, out_dir: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Build the study's tables from its cell records in ``out_dir`` and write ``tables/*.csv``.

    The cells are the source of truth: ``stemlab report`` calls this too, never trusting CSVs.
    """
    out = Path(out_dir)
    tables = build_tables(
        resolve_cells(study, CellStore(out / "cells")),
        CellStore(out / "cells"),
        config=study.to_config(),
        baseline=study.reference_stem,
    )
    write_tables(tables, out / "tables")
    return tables


def check_output_folder(out: Path, *, hint: str = "choose another with --out") -> None:
    """Create ``out`` and check that a file can be written in it (a few KiB, synced).

    Raises:
        ValueError: ``out`` cannot be created or written, or its disk is full (the message
            says why).
    """
    probe = out / f".write-test-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"output folder {out} is not writable ({reason}); {hint}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


_DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def check_device_name(device: str) -> str:
    """``device`` as the cells spell it (``"CPU"`` -> ``"cpu"``), checked to exist here.

    Raises:
        ValueError: not a device name, or not available on this machine.
    """
    if not isinstance(device, str):
        raise ValueError(f"device={device!r} is not allowed; allowed: {', '.join(_DEVICE_NAMES)}")
    resolve_device(device)
    name = device.strip().lower()
    return "auto" if name == "auto" else str(resolve_device(name))


def check_study(study: Study) -> None:
    """Checks of a study before its first cell: each probe's own ``check`` hook, and
    ``probe_options`` keys that no probe of the study reads (a warning).

    Raises:
        ValueError: a probe's requirement the study does not meet (the probe's message).
    """
    from stemlab.probes.contract import get_probe

    config = study.to_config()
    probes = [get_probe(name) for name in dict.fromkeys([*study.probes, *study.profile_probes])]
    for probe in probes:
        check = getattr(probe, "check", None)
        if check is not None:
            check(config)
    read = set(CELL_OPTIONS)
    for probe in probes:
        read |= set(getattr(probe, "options", ()))
    for key in dict(study.probe_options):
        if key in read:
            continue
        from stemlab.probes.contract import probe_names

        readers = [name for name in probe_names() if key in getattr(get_probe(name), "options", ())]
        close = difflib.get_close_matches(str(key), sorted(read), n=1)
        why = (
            f"only probe {readers[0]!r} reads it, and this study does not run it"
            if readers
            else "no probe reads it"
            + (f" (did you mean {close[0]!r}?)" if close else f"; keys read: {sorted(read)}")
        )
        warnings.warn(f"Study probe_options key {key!r} is ignored: {why}", StemlabWarning, 2)


def default_out_dir(study: Study, *, quick: bool = False) -> Path:
    """``reports/<name>``, or ``reports/<name>-quick`` for a quick run (never the full one's)."""
    return Path("reports") / (f"{study.name}-quick" if quick else study.name)


def _check_not_poorer(out: Path, *, quick: bool, force: bool) -> None:
    """Refuse a quick run into the folder of a full run (its report would be replaced)."""
    if not quick or force:
        return
    manifest = read_manifest(out)
    if manifest is None or manifest.get("quick"):
        return
    done = manifest.get("cells", {}).get("ok", 0)
    raise ValueError(
        f"{out} holds a full (not --quick) run with {done} finished cell(s); a quick run would "
        "replace its report with a poorer one: choose another --out (the default for --quick "
        f"is reports/<name>-quick) or pass --force"
    )


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
    wait: bool = False,
    command: str | None = None,
    threads: int | None = None,
    study_file: str | os.PathLike[str] | None = None,
    force: bool = False,
    after: Callable[[StudyRun], Any] | None = None,
) -> StudyRun:
    """Run every cell of ``study`` not finished yet and write the consolidated tables.

    Before any cell runs, the device, the output folder and the probes' requirements are
    checked and the folder's lock (:class:`~stemlab.study.lock.StudyLock`) is taken, so one
    driver at a time works on it; the lock is held until ``after`` (the report) has run.

    Args:
        study, out_dir, quick, executor, workers, resume, device, progress, threads: see
            :func:`_run_unlocked`.
        wait: if another driver holds the folder, wait for it instead of raising.
        command: the command shown to a second driver (default ``sys.argv``).
        study_file: the study file every worker runs before its first cell (default: the
            file :func:`load_study` read ``study`` from, if any).
        force: allow a quick run into the folder of a full run.
        after: called with the :class:`StudyRun` under the lock, after the tables and the
            manifest are written (the CLI draws the report there).

    Returns:
        A :class:`StudyRun`.

    Raises:
        ValueError: unknown executor, unavailable device, an output folder that cannot be
            written, a quick run into a full run's folder, or a probe requirement not met.
        StudyLockedError: another live driver holds the folder and ``wait`` is false.
    """
    check_choice("executor", executor, EXECUTORS)
    device = check_device_name(device)
    if study_file is not None:
        path = Path(study_file)
        source = study_file_of(study) or (os.fspath(path.resolve()), path.read_text("utf-8"))
    else:
        source = study_file_of(study)
    check_study(study.quick_variant() if quick else study)
    out = Path(out_dir) if out_dir is not None else default_out_dir(study, quick=quick)
    check_output_folder(out)
    with StudyLock(out, command=command, wait=wait):
        _check_not_poorer(out, quick=quick, force=force)
        run = _run_unlocked(
            study,
            out_dir=out,
            quick=quick,
            executor=executor,
            workers=workers,
            resume=resume,
            device=device,
            progress=progress,
            threads=threads,
            study_file=source,
        )
        if after is not None:
            after(run)
        return run


def _run_unlocked(
    study: Study,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    quick: bool = False,
    executor: str = "local",
    workers: int = 1,
    resume: bool = True,
    device: str = "auto",
    progress: bool = True,
    threads: int | None = None,
    study_file: tuple[str, str] | None = None,
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
        threads: torch threads per training cell (default: the cores divided among the
            workers); profiling cells, which time the model, run alone with every core.
        study_file: ``(path, source)`` of the study file each worker runs first.

    Returns:
        A :class:`StudyRun`.
    """
    if quick:
        study = study.quick_variant()
    out = Path(out_dir) if out_dir is not None else default_out_dir(study, quick=quick)
    store = CellStore(out / "cells")
    cells = study.cells()
    todo = [cell for cell in cells if not (resume and store.is_finished(cell.key))]
    runner = make_executor(
        executor, workers=workers, device=device, threads=threads, study_file=study_file
    )
    start = time.perf_counter()
    total = study.grid_size()
    bar = tqdm(
        total=total,
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
                f"cell {record['key']} ({record['config']['stem']}) {record['status']}: "
                f"{record['error']}"
            )

    try:
        runner.run(todo, on_result)
        if study.sweep is not None:
            # phase 2: every arm's reported seeds at the setting its sweep selected
            done = {cell.key for cell in cells}
            cells = resolve_cells(study, store)
            later = [c for c in cells if c.key not in done]
            ready = [c for c in later if not (resume and store.is_finished(c.key))]
            bar.update(len(later) - len(ready))
            todo = todo + ready
            runner.run(ready, on_result)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    tables = tables_from_cells(study, out)
    counts = cell_counts(tables["cells"], total=total)
    _write_manifest(
        out,
        study,
        quick=quick,
        executor=executor,
        workers=workers,
        seconds=seconds,
        tables=tables,
        ran=len(todo),
        skipped=len(cells) - len(todo),
        threads=runner.threads,
    )
    return StudyRun(
        out_dir=out,
        total=total,
        skipped=len(cells) - len(todo),
        ran=len(todo),
        failed=counts["failed"],
        seconds=seconds,
        tables=tables,
        diverged=counts["diverged"],
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
    ran: int | None = None,
    skipped: int | None = None,
    threads: int | None = None,
) -> None:
    cells = tables["cells"]
    previous: dict[str, Any] = {}
    manifest_path = out / "manifest.json"
    previous = read_manifest(out) or {}  # a damaged one is set aside and rebuilt first
    runs = [
        *previous.get("runs", []),
        {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "quick": quick,
            "executor": executor,
            "workers": workers,
            "threads": threads,
            "seconds": round(seconds, 2),
            "ran": ran,
            "skipped": skipped,
        },
    ]
    manifest = {
        "study": study.name,
        "quick": quick,
        "config": study.to_config(),
        "versions": package_versions(),
        "cells": cell_counts(cells, total=study.grid_size()),
        "runs": runs,
    }
    text = json.dumps(json_safe(manifest), indent=2, default=str, allow_nan=False)
    atomic_write_text(manifest_path, text)
