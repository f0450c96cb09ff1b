"""Executors run cells and hand each finished record back to the driver, which stores it.

The driver alone writes files, so a cluster needs no shared file system, and a killed run loses only
the cells in flight.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from stemlab._validation import check_choice, check_positive_int
from stemlab.errors import MissingDependencyError
from stemlab.study.cell import run_cell
from stemlab.study.spec import Cell

__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor", "default_workers", "make_executor"]

EXECUTORS = ("local", "ray")
OnResult = Callable[[dict[str, Any]], None]


_PR_SET_PDEATHSIG = 1
WATCHDOG_SECONDS = 0.5
"""How often a worker checks that its driver is still its parent."""


def _threads(workers: int, threads: int | None = None) -> int:
    if threads is not None:
        return check_positive_int("threads", threads)
    return max(1, (os.cpu_count() or 1) // workers)


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
    """

    def __init__(
        self, *, workers: int = 1, device: str = "auto", threads: int | None = None
    ) -> None:
        self.workers = check_positive_int("workers", workers)
        self.device = device
        self.threads = _threads(self.workers, threads)

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
        if not cells:
            return
        with ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=get_context("spawn"),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            pending: set[Future[dict[str, Any]]] = {
                pool.submit(run_cell, cell.config, threads=self.threads, device=self.device)
                for cell in cells
            }
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        on_result(future.result())
            except BaseException:
                for future in pending:
                    future.cancel()
                raise


class RayExecutor:
    """Cells as Ray tasks on ``RAY_ADDRESS`` (a running cluster) or a local Ray started here.

    Args:
        workers: cells in flight at once (each task asks Ray for ``cpus / workers`` CPUs).
        device: device for the cells.
        address: Ray address; default ``$RAY_ADDRESS``, else a local Ray.
    """

    def __init__(
        self, *, workers: int = 1, device: str = "auto", address: str | None = None
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

    def run(self, cells: Sequence[Cell], on_result: OnResult) -> None:
        """Run ``cells`` as Ray tasks; call ``on_result(record)`` as each one finishes."""
        ray = self.ray
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(
                address=self.address,
                include_dashboard=False,
                logging_level="ERROR",
                log_to_driver=False,
                num_cpus=None if self.address else os.cpu_count(),
            )
        try:
            remote = ray.remote(num_cpus=self.threads, max_retries=0)(run_cell)
            queue = list(cells)
            in_flight: list[Any] = []
            while queue or in_flight:
                while queue and len(in_flight) < self.workers:
                    cell = queue.pop(0)
                    in_flight.append(
                        remote.remote(cell.config, threads=self.threads, device=self.device)
                    )
                done, in_flight = ray.wait(in_flight, num_returns=1)
                on_result(ray.get(done[0]))
        finally:
            if started_here:
                ray.shutdown()


def make_executor(
    name: str, *, workers: int = 1, device: str = "auto", threads: int | None = None
) -> LocalExecutor | RayExecutor:
    """Build the executor called ``name`` (``"local"`` or ``"ray"``)."""
    check_choice("executor", name, EXECUTORS)
    if name == "ray":
        return RayExecutor(workers=workers, device=device)
    return LocalExecutor(workers=workers, device=device, threads=threads)
