"""One JSON file per finished cell, written atomically; the study's resumable record.

Every record is checked when it is read: a file that is not a well-formed record of its own key
(damaged, truncated, hand-edited, forged) is moved to ``damaged/`` beside the cells, with a
warning, and counts as absent, so the cell is computed again. Nothing is deleted.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stemlab.errors import StemlabWarning
from stemlab.study.spec import config_hash

__all__ = [
    "RECORD_KINDS",
    "RECORD_STATUSES",
    "CellStore",
    "atomic_write_bytes",
    "atomic_write_text",
    "record_problem",
    "set_aside",
]

RECORD_KINDS = ("train", "sweep", "profile")
RECORD_STATUSES = ("ok", "failed", "diverged")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the user's group
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomic UTF-8 text write (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def record_problem(record: Any, *, key: str) -> str | None:
    """What is wrong with ``record`` as the stored record of cell ``key``, or ``None`` if nothing.

    A record is a dict with ``key`` (equal to ``key``), ``kind`` (``"train"``/``"profile"``),
    ``config`` (a dict of that kind whose :func:`config_hash` is ``key``), ``status``
    (``"ok"``/``"failed"``), ``result`` (a dict; with a ``metrics`` dict when ok), ``error``
    (``None`` or str), ``seconds`` (a number, if present) and ``array_names`` (a list of str).
    """
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    missing = [f for f in ("key", "kind", "config", "status", "result") if f not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if record["key"] != key:
        return f"its key {record['key']!r} is not its file name {key!r}"
    if record["kind"] not in RECORD_KINDS:
        return f"kind {record['kind']!r} is not one of {RECORD_KINDS}"
    config = record["config"]
    if not isinstance(config, dict) or config.get("kind") != record["kind"]:
        return "config is not a dict of the record's kind"
    try:
        actual = config_hash(config)
    except TypeError:
        return "config holds values that are not JSON literals"
    if actual != key:
        return f"config hashes to {actual}, not to its key (edited or forged)"
    if record["status"] not in RECORD_STATUSES:
        return f"status {record['status']!r} is not one of {RECORD_STATUSES}"
    result = record["result"]
    if not isinstance(result, dict):
        return "result is not a dict"
    if record["status"] == "ok" and not isinstance(result.get("metrics"), dict):
        return "status is ok but result has no metrics dict"
    if record.get("error") is not None and not isinstance(record["error"], str):
        return "error is neither null nor a string"
    seconds = record.get("seconds")
    if seconds is not None and not (_is_number(seconds) and math.isfinite(seconds)):
        return f"seconds {seconds!r} is not a finite number"
    names = record.get("array_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "array_names is not a list of names"
    return None


def _unique_path(path: Path) -> Path:
    if not path.exists():
        return path
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for index in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}.{stamp}-{index}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(f"no free name for {path} in {path.parent}")


def set_aside(paths: list[Path], folder: Path) -> list[Path]:
    """Move the existing ``paths`` into ``folder`` (created), never overwriting.

    Returns:
        The paths that were moved (their old names).
    """
    folder.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in paths:
        if path.exists():
            os.replace(path, _unique_path(folder / path.name))
            moved.append(path)
    return moved


class CellStore:
    """Cell results under ``root/<key>.json`` (+ ``root/<key>.npz`` for arrays).

    A cell counts as finished when its file holds a valid record (:func:`record_problem`) that
    says ``"status": "ok"`` and its arrays read back; failed cells are recorded too (with their
    error) and are run again on the next resume. Invalid records are moved to ``root/damaged/``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        # npz files verified already: key -> (size, mtime_ns) of the file that passed
        self._arrays_ok: dict[str, tuple[int, int]] = {}

    @property
    def damaged_dir(self) -> Path:
        """Where damaged records are moved."""
        return self.root / "damaged"

    def path(self, key: str) -> Path:
        """File of the cell with content hash ``key``."""
        return self.root / f"{key}.json"

    def arrays_path(self, key: str) -> Path:
        """File of the arrays (filters, Grad-CAM maps) of the cell ``key``."""
        return self.root / f"{key}.npz"

    def stored_keys(self) -> list[str]:
        """Keys of the records in the store (unchecked), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if not p.name.startswith("."))

    def read(self, key: str) -> dict[str, Any] | None:
        """The stored record of ``key``, or ``None`` if absent or damaged (then set aside).

        Raises:
            PermissionError: the file exists but cannot be read (nothing is moved).
        """
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            self._set_aside(key, "it is a directory, not a file")
            return None
        try:
            record = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._set_aside(key, f"not valid JSON ({exc})")
            return None
        problem = record_problem(record, key=key)
        if problem is None:
            problem = self._arrays_problem(key, record.get("array_names", []))
        if problem is not None:
            self._set_aside(key, problem)
            return None
        return record

    def is_finished(self, key: str) -> bool:
        """Whether ``key`` has a valid record that a rerun would not change: finished, or diverged
        (training is deterministic: it would diverge again); failed cells are retried."""
        record = self.read(key)
        return record is not None and record["status"] in ("ok", "diverged")

    def read_arrays(self, key: str) -> dict[str, np.ndarray]:
        """The stored arrays of ``key`` (empty when it has none or its record is damaged)."""
        record = self.read(key)
        if record is None or not record.get("array_names"):
            return {}
        with np.load(self.arrays_path(key), allow_pickle=False) as data:
            return {name: data[name] for name in record["array_names"]}

    def write(self, record: Mapping[str, Any]) -> Path:
        """Store ``record`` (must hold ``key``) atomically and return its JSON path.

        ``record["arrays"]`` (name -> array) go to ``<key>.npz`` first; the JSON, written last, is
        what marks the cell as stored.
        """
        record = dict(record)
        arrays = record.pop("arrays", None) or {}
        if arrays:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            atomic_write_bytes(self.arrays_path(record["key"]), buffer.getvalue())
        record["array_names"] = sorted(arrays)
        self._arrays_ok.pop(record["key"], None)
        path = self.path(record["key"])
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=str))
        return path

    def _arrays_problem(self, key: str, names: list[str]) -> str | None:
        if not names:
            return None
        path = self.arrays_path(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return f"{path.name} with arrays {names} is missing"
        signature = (stat.st_size, stat.st_mtime_ns)
        if self._arrays_ok.get(key) == signature:
            return None
        try:
            with path.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
                missing = sorted(set(names) - set(data.files))
                if missing:
                    return f"{path.name} lacks the arrays {missing}"
                for name in names:
                    data[name]  # decompresses the member, which checks its CRC
        except Exception as exc:  # untrusted bytes: zipfile, zlib and numpy raise many types
            return f"{path.name} cannot be read ({type(exc).__name__}: {exc})"
        self._arrays_ok[key] = signature
        return None

    def _set_aside(self, key: str, reason: str) -> None:
        self._arrays_ok.pop(key, None)
        moved = set_aside([self.path(key), self.arrays_path(key)], self.damaged_dir)
        names = ", ".join(p.name for p in moved) or "nothing"
        warnings.warn(
            f"damaged cell {key} in {self.root}: {reason}; moved {names} to "
            f"{self.damaged_dir}, the cell will be computed again",
            StemlabWarning,
            stacklevel=3,
        )
