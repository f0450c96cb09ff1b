"""One driver per study output folder: the lock file ``<out>/.lock``.

The lock is a JSON file ``{"pid", "host", "started", "started_epoch", "command"}`` created with
``O_CREAT | O_EXCL``, so of two drivers exactly one creates it. It is removed when its driver ends
(``finally``). A lock whose process no longer runs on this host (killed driver, reused PID), or
whose file cannot be read, is stale: the next driver takes it over with a warning. Taking over is
serialised with an advisory ``flock`` on the folder where the platform has one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stemlab.errors import StemlabError, StemlabWarning, StudyLockedError

__all__ = ["LOCK_NAME", "StudyLock", "lock_owner", "pid_alive"]

LOCK_NAME = ".lock"
_WRITE_GRACE_SECONDS = 2.0
"""An unreadable lock younger than this may be one its driver is still writing."""


def _process_start_epoch(pid: int) -> float | None:
    """Start time of ``pid`` in seconds since the epoch (Linux ``/proc``), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        with open("/proc/stat") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime"))
    except (OSError, StopIteration, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent has not reaped it yet
        return -1.0
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int, *, started_epoch: float | None = None) -> bool:
    """Whether process ``pid`` runs on this host (and, if known, is the one started then).

    Args:
        pid: the process id.
        started_epoch: when the lock's owner started; a process with this pid that started
            later is another process that reused the id.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except OSError:
        return False
    start = _process_start_epoch(pid)
    if start is None:
        return True
    if start < 0:
        return False
    return started_epoch is None or start <= started_epoch + 2.0


def lock_owner(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The owner record of the lock file ``path``, or ``None`` if unreadable or malformed.

    Raises:
        FileNotFoundError: no lock file.
    """
    try:
        owner = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    if not isinstance(owner.get("host"), str):
        return None
    return owner


def _lock_error(path: Path, exc: OSError) -> StemlabError:
    reason = exc.strerror or type(exc).__name__
    return StemlabError(
        f"cannot create the lock {path}: {reason}; free some space or choose a writable folder"
    )


@contextlib.contextmanager
def _folder_guard(folder: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``folder`` (released by the OS if this process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock: O_EXCL alone decides
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise _lock_error(folder / LOCK_NAME, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class StudyLock:
    """The lock of one study output folder, as a context manager.

    Args:
        out_dir: the study's output folder (created if missing).
        command: what the driver runs, shown to a second driver.
        wait: poll until the folder is free instead of raising.
        poll_seconds: polling interval when waiting.
        on_wait: called once with the message when a wait starts (default: print to stderr).

    Raises:
        StudyLockedError: (on enter) another live driver holds the lock and ``wait`` is false.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        command: str | None = None,
        wait: bool = False,
        poll_seconds: float = 1.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.command = command if command is not None else " ".join(sys.argv)
        self.wait = wait
        self.poll_seconds = poll_seconds
        self.on_wait = on_wait or (lambda message: print(message, file=sys.stderr, flush=True))
        self.owner: dict[str, Any] | None = None

    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
            "started_epoch": now,
            "command": self.command,
        }

    def _create(self) -> bool:
        record = self._record()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _lock_error(self.path, exc) from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(record).encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:  # disk full: never leave a 0-byte lock behind
            self.path.unlink(missing_ok=True)
            raise _lock_error(self.path, exc) from None
        self.owner = record
        return True

    def _stale(self, owner: dict[str, Any] | None) -> bool:
        if owner is None:
            return True
        if owner["host"] != socket.gethostname():
            return False  # cannot look at another host's processes
        epoch = owner.get("started_epoch")
        return not pid_alive(
            owner["pid"], started_epoch=epoch if isinstance(epoch, (int, float)) else None
        )

    def _busy_message(self, owner: dict[str, Any]) -> str:
        return (
            f"another stemlab driver (pid {owner['pid']} on {owner['host']}, started "
            f"{owner.get('started', '?')}) is running on {self.out_dir}; wait for it or pass --wait"
            + self._other_host(owner)
        )

    def _other_host(self, owner: dict[str, Any]) -> str:
        """How to clear a lock this host cannot check (its driver runs elsewhere)."""
        if owner["host"] == socket.gethostname():
            return ""
        return (
            f" (a driver on another host is never taken over: if it has ended, check on "
            f"{owner['host']} and delete {self.path})"
        )

    def acquire(self) -> None:
        """Take the lock (see the class); a stale lock is taken over with a warning."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        announced = False
        while True:
            if self._create():
                return
            with _folder_guard(self.out_dir):
                try:
                    owner = lock_owner(self.path)
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if owner is None and age < _WRITE_GRACE_SECONDS:
                    time.sleep(0.05)  # its driver may be writing it right now
                    continue
                if self._stale(owner):
                    who = (
                        f"pid {owner['pid']} on {owner['host']}, started {owner.get('started')}"
                        if owner
                        else "unreadable lock file"
                    )
                    self.path.unlink(missing_ok=True)
                    if self._create():
                        warnings.warn(
                            f"took over the stale lock of {self.out_dir} ({who}: that driver "
                            "is gone)",
                            StemlabWarning,
                            stacklevel=2,
                        )
                        return
                    continue
            if owner is None:  # unreachable: an unreadable lock is stale or being written
                continue
            if not self.wait:
                raise StudyLockedError(self._busy_message(owner))
            if not announced:
                self.on_wait(
                    f"stemlab: waiting for the driver (pid {owner['pid']} on {owner['host']}) "
                    f"that is running on {self.out_dir}" + self._other_host(owner)
                )
                announced = True
            time.sleep(self.poll_seconds)

    def release(self) -> None:
        """Remove the lock file if it is still this driver's."""
        if self.owner is None:
            return
        try:
            current = lock_owner(self.path)
        except FileNotFoundError:
            current = None
        if current is not None and all(
            current.get(k) == self.owner[k] for k in ("pid", "host", "started_epoch")
        ):
            self.path.unlink(missing_ok=True)
        self.owner = None

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
