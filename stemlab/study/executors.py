"""Executors run cells and hand each finished record back to the driver, which stores it.

The driver alone writes files, so a cluster needs no shared file system, and a killed run loses only
the cells in flight.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import connection, get_context
from pathlib import Path
from typing import Any

from stemlab._validation import check_choice, check_positive_int
from stemlab.errors import MissingDependencyError
from stemlab.study.cell import package_versions, run_cell
from stemlab.study.spec import Cell, config_hash

__all__ = [
    "EXECUTORS",
    "LocalExecutor",
    "RayExecutor",
    "default_workers",
    "failed_record",
    "import_study_file",
    "make_executor",
]

EXECUTORS = ("local", "ray")
OnResult = Callable[[dict[str, Any]], None]


_PR_SET_PDEATHSIG = 1
WATCHDOG_SECONDS = 0.5
"""How often a worker checks that its driver is still its parent."""


def _threads(workers: int, threads: int | None = None) -> int:
    cores = os.cpu_count() or 1
    if threads is not None:
        check_positive_int("threads", threads)
        if threads > cores:
            raise ValueError(
                f"threads={threads} is more than the {cores} CPU core(s) of this machine; "
                f"allowed: 1 to {cores}"
            )
        return threads
    return max(1, cores // workers)


_IMPORTED: dict[str, str] = {}
"""Study files run in this process (path -> module name), so each runs once per worker."""


def import_study_file(path: str | os.PathLike[str], source: str | None = None) -> None:
    """Run the study file ``path`` in this process once, so that what it registers exists here.

    Workers call this before their first cell: a stem, backbone or probe the study file
    registers is then known to every cell, in whatever process it runs.

    Args:
        path: the study file.
        source: its text, for a worker on a machine without the file (a Ray cluster node).

    Raises:
        Whatever the study file raises (the caller records it).
    """
    key = os.fspath(path)
    if key in _IMPORTED:
        return
    name = f"stemlab_study_{Path(key).stem}"
    if source is None or Path(key).is_file():
        spec = importlib.util.spec_from_file_location(name, key)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot import study script {key}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
    else:
        module = type(sys)(name)
        module.__file__ = key
        sys.modules[name] = module
        try:
            exec(compile(source, key, "exec"), module.__dict__)  # the user's own study file
        finally:
            sys.modules.pop(name, None)
    _IMPORTED[key] = name


def failed_record(
    config: dict[str, Any], error: str, *, threads: int, seconds: float = 0.0, **extra: Any
) -> dict[str, Any]:
    """The record of a cell that could not report itself (its worker died): status failed."""
    return {
        "key": config_hash(config),
        "kind": config["kind"],
        "config": dict(config),
        "status": "failed",
        "error": error,
        "traceback": None,
        "versions": package_versions(),
        "threads": threads,
        "result": {"metrics": {}, "tables": {}, "probe_seconds": {}},
        "arrays": {},
        "seconds": seconds,
        **extra,
    }


def _death(exitcode: int | None) -> str:
    """How a worker process ended, from its exit code (negative: the signal)."""
    if exitcode is None:
        return "ended without an exit code"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown signal"
        hint = " (the out-of-memory killer sends SIGKILL)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by signal {-exitcode} ({name}){hint}"
    return f"exited with code {exitcode}"


def default_workers(device: str = "auto") -> int:
    """Cells in parallel when none is asked for: one per CPU core on CPU, one on a GPU.

    Measured in ``benchmarks/bench_executor.py``: the study's small training models use a
    second core poorly (small convolutions), so two one-thread workers beat one two-thread
    worker on a 2-core machine.
    """
    if str(device).startswith("cuda"):
        return 1
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return 1
    return max(1, os.cpu_count() or 1)


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit soon after ``parent_pid`` (its driver) dies, by any signal.

    On Linux the kernel sends SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``); on every
    platform a daemon thread also polls the parent pid and exits when the worker was orphaned.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCHDOG_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="stemlab-parent-watchdog", daemon=True).start()


class LocalExecutor:
    """Cells in this process (``workers=1``) or in a pool of ``workers`` spawned processes.

    Profiling cells time the model (latency), so they never share the machine: with several
    workers they run after the pool, one at a time, in this process, with every core.

    Args:
        workers: parallel cells.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for the cells.
        threads: torch threads per cell; default: the cores divided among the workers.
        study_file: ``(path, source)`` of the study file each worker runs before its first cell.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        device: str = "auto",
        threads: int | None = None,
        study_file: tuple[str, str] | None = None,
    ) -> None:
        self.workers = check_positive_int("workers", workers)
        self.device = device
        self.threads = _threads(self.workers, threads)
        self.study_file = study_file

    def run(self, cells: Sequence[Cell], on_result: OnResult) -> None:
        """Run ``cells``; call ``on_result(record)`` as each one finishes."""
        if self.workers == 1:
            for cell in cells:
                on_result(run_cell(cell.config, threads=self.threads, device=self.device))
            return
        timed = [cell for cell in cells if cell.kind == "profile"]
        self._run_pool([cell for cell in cells if cell.kind != "profile"], on_result)
        alone = max(self.threads, os.cpu_count() or 1)
        for cell in timed:
            on_result(run_cell(cell.config, threads=alone, device=self.device))

    def _run_pool(self, cells: Sequence[Cell], on_result: OnResult) -> None:
        """Cells in ``workers`` spawned processes, each fed one cell at a time over a pipe.

        A worker that dies (a signal, ``os._exit``, the OOM killer) costs only its cell, which
        is recorded as failed with the exit code or signal; a fresh worker takes its place.
        """
        if not cells:
            return
        context = get_context("spawn")
        queue = list(cells)
        workers: list[_Worker] = []
        busy: dict[_Worker, tuple[Cell, float]] = {}
        try:
            while queue or busy:
                workers = [w for w in workers if w in busy or w.process.is_alive()]
                while queue and len(workers) < self.workers:
                    workers.append(_Worker.start(context, self.study_file))
                for worker in workers:
                    if worker not in busy and queue:
                        cell = queue.pop(0)
                        worker.send((cell.config, self.threads, self.device))
                        busy[worker] = (cell, time.perf_counter())
                waitables = [w.conn for w in busy] + [w.process.sentinel for w in busy]
                connection.wait(waitables)
                for worker in list(busy):
                    record = worker.result()
                    if record is not None:
                        busy.pop(worker)
                        on_result(record)
                    elif not worker.process.is_alive():
                        cell, started = busy.pop(worker)
                        worker.process.join()
                        code = worker.process.exitcode
                        on_result(
                            failed_record(
                                cell.config,
                                f"the worker process running this cell {_death(code)}",
                                threads=self.threads,
                                seconds=time.perf_counter() - started,
                                exit_code=code,
                            )
                        )
                        worker.close()
        finally:
            for worker in workers:
                worker.stop()


class _Worker:
    """One spawned cell process and the driver's end of its pipe."""

    def __init__(self, process: Any, conn: Any) -> None:
        self.process, self.conn = process, conn

    @classmethod
    def start(cls, context: Any, study_file: tuple[str, str] | None) -> _Worker:
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_worker_main, args=(theirs, os.getpid(), study_file), daemon=True
        )
        process.start()
        theirs.close()
        return cls(process, ours)

    def send(self, task: Any) -> None:
        with contextlib.suppress(OSError):  # it died meanwhile: its sentinel says so
            self.conn.send(task)

    def result(self) -> dict[str, Any] | None:
        """The record the worker sent, if one is ready (``None`` if none, or it died)."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            return None
        except Exception:  # a record cut short by the worker's death does not unpickle
            return None
        return None

    def close(self) -> None:
        self.conn.close()

    def stop(self) -> None:
        """Ask the worker to end; kill it if it does not within a few seconds."""
        if self.process.is_alive():
            self.send(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _worker_main(conn: Any, parent_pid: int, study_file: tuple[str, str] | None) -> None:
    """A pool worker: import the study file, then run each cell the driver sends."""
    _die_with_parent(parent_pid)
    problem = None
    if study_file is not None:
        try:
            import_study_file(*study_file)
        except BaseException as exc:
            problem = f"the worker could not run the study file {study_file[0]}: {exc!r}"
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        config, threads, device = task
        if problem is not None:
            record = failed_record(config, problem, threads=threads)
        else:
            record = run_cell(config, threads=threads, device=device)
        conn.send(record)


class RayExecutor:
    """Cells as Ray tasks on ``RAY_ADDRESS`` (a running cluster) or a local Ray started here.

    Args:
        workers: cells in flight at once (each task asks Ray for ``cpus / workers`` CPUs).
        device: device for the cells.
        address: Ray address; default ``$RAY_ADDRESS``, else a local Ray.
        study_file: ``(path, source)`` of the study file each task runs before its cell.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        device: str = "auto",
        address: str | None = None,
        study_file: tuple[str, str] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise MissingDependencyError(
                "--executor ray needs Ray: pip install 'stemlab[ray]' (or pip install 'ray[default]')"
            ) from None
        self.ray = ray
        self.workers = check_positive_int("workers", workers)
        self.device = device
        self.address = address if address is not None else os.environ.get("RAY_ADDRESS")
        self.threads = _threads(self.workers)
        self.study_file = study_file

    def _init(self) -> None:
        try:
            self.ray.init(
                address=self.address,
                include_dashboard=False,
                logging_level="ERROR",
                log_to_driver=False,
                num_cpus=None if self.address else os.cpu_count(),
            )
        except Exception as exc:  # Ray raises ConnectionError, TimeoutError, RuntimeError...
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            if self.address:
                raise ValueError(
                    f"cannot reach the Ray cluster at RAY_ADDRESS={self.address!r} "
                    f"({type(exc).__name__}: {reason}); start it (ray start --head) or unset "
                    "RAY_ADDRESS to run on a local Ray"
                ) from None
            raise ValueError(f"cannot start a local Ray ({type(exc).__name__}: {reason})") from None

    def run(self, cells: Sequence[Cell], on_result: OnResult) -> None:
        """Run ``cells`` as Ray tasks; call ``on_result(record)`` as each one finishes."""
        ray = self.ray
        started_here = not ray.is_initialized()
        if started_here:
            self._init()
        try:
            remote = ray.remote(num_cpus=self.threads, max_retries=0)(_ray_cell)
            queue = list(cells)
            in_flight: dict[Any, tuple[Cell, float]] = {}
            while queue or in_flight:
                while queue and len(in_flight) < self.workers:
                    cell = queue.pop(0)
                    ref = remote.remote(
                        cell.config,
                        threads=self.threads,
                        device=self.device,
                        study_file=self.study_file,
                    )
                    in_flight[ref] = (cell, time.perf_counter())
                done, _ = ray.wait(list(in_flight), num_returns=1)
                cell, started = in_flight.pop(done[0])
                try:
                    record = ray.get(done[0])
                except ray.exceptions.RayError as exc:  # WorkerCrashedError, OutOfMemoryError...
                    reason = " ".join(str(exc).split())[:300]
                    record = failed_record(
                        cell.config,
                        f"the Ray worker running this cell died ({type(exc).__name__}: {reason})",
                        threads=self.threads,
                        seconds=time.perf_counter() - started,
                    )
                on_result(record)
        finally:
            if started_here:
                ray.shutdown()


def _ray_cell(
    config: dict[str, Any],
    *,
    threads: int,
    device: str,
    study_file: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A Ray task: the study file first (once per worker process), then the cell."""
    if study_file is not None:
        try:
            import_study_file(*study_file)
        except BaseException as exc:
            return failed_record(
                config,
                f"the worker could not run the study file {study_file[0]}: {exc!r}",
                threads=threads,
            )
    return run_cell(config, threads=threads, device=device)


def make_executor(
    name: str,
    *,
    workers: int = 1,
    device: str = "auto",
    threads: int | None = None,
    study_file: tuple[str, str] | None = None,
) -> LocalExecutor | RayExecutor:
    """Build the executor called ``name`` (``"local"`` or ``"ray"``).

    Args:
        name: ``"local"`` or ``"ray"``.
        workers, device, threads: see :class:`LocalExecutor`.
        study_file: ``(path, source)`` of the study file every worker runs first.
    """
    check_choice("executor", name, EXECUTORS)
    if name == "ray":
        return RayExecutor(workers=workers, device=device, study_file=study_file)
    return LocalExecutor(workers=workers, device=device, threads=threads, study_file=study_file)
