"""One JSON file per finished cell, written atomically; the study's resumable record.

Every record is checked when it is read: a file that is not a well-formed record of its own key
(damaged, truncated, hand-edited, forged) is moved to ``damaged/`` beside the cells, with a
warning, and counts as absent, so the cell is computed again. Nothing is deleted.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import stat as stat_module
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stemlab.errors import StemlabError, StemlabWarning
from stemlab.study.spec import config_hash

__all__ = [
    "FINISHED_STATUSES",
    "MAX_DEPTH",
    "MAX_RECORD_BYTES",
    "RECORD_STATUSES",
    "CellStore",
    "StoreWriteError",
    "atomic_write_bytes",
    "atomic_write_text",
    "json_safe",
    "record_digest",
    "record_problem",
    "set_aside",
]

RECORD_KINDS = ("train", "sweep", "profile")
"""The kinds stemlab writes today (validation accepts any kind's name: new kinds come)."""
RECORD_STATUSES = ("ok", "failed", "diverged")
FINISHED_STATUSES = ("ok", "diverged")
"""A diverged cell is a result (rerunning it diverges again); a failed one is run again."""
MAX_RECORD_BYTES = 256 * 1024 * 1024
"""A cell record larger than this is not one stemlab wrote: it is set aside unread."""
MAX_DEPTH = 64
"""Deepest JSON nesting a record may have (stemlab's own records nest about 6 deep)."""


class StoreWriteError(StemlabError, OSError):
    """A study file could not be written (disk full, read-only folder); names the path."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _write_error(path: Path, exc: OSError) -> StoreWriteError:
    reason = exc.strerror or type(exc).__name__
    hint = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space",
        errno.EROFS: "choose a writable folder",
        errno.EACCES: "choose a writable folder",
        errno.EPERM: "choose a writable folder",
    }.get(exc.errno or 0, "fix the folder")
    error = StoreWriteError(
        f"cannot write {path}: {reason}; {hint} and run the same command again "
        "(finished cells are kept)"
    )
    error.errno = exc.errno
    error.filename = os.fspath(path)
    return error


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the user's group
        with os.fdopen(fd, "wb") as handle:
            _write_all(handle, data, path)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, StoreWriteError):
            raise _write_error(path, exc) from exc
        raise


def _write_all(handle: Any, data: bytes, path: Path) -> None:
    """``handle.write(data)`` (the temporary file of ``path``); the disk-full tests patch it."""
    handle.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomic UTF-8 text write (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf replaced by ``None`` and numpy scalars made Python ones.

    So ``json.dumps(..., allow_nan=False)`` never meets a number JSON cannot hold.
    """
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def record_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 of ``record`` without its ``digest`` field, in canonical JSON (sorted keys)."""
    body = {k: v for k, v in record.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _depth_problem(value: Any) -> str | None:
    """Whether ``value`` nests deeper than :data:`MAX_DEPTH` (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


def _nonfinite(value: Any, where: str) -> str | None:
    """Where in ``value`` a non-finite number sits (JSON ``NaN``/``Infinity``/``1e999``)."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"{at} is {item} (not a finite number)"
        if isinstance(item, dict):
            stack.extend((v, f"{at}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
    return None


_SCALAR = (type(None), bool, int, float, str)
_FRACTION = re.compile(r"(^|_)top\d+($|_init$)|^chance$")
_NONNEGATIVE = re.compile(r"(^|_)(loss|seconds|lr|weight_decay|params|flops|macs)($|_init$)")
_COUNT = re.compile(r"^(num_classes|epoch|train_params|train_stem_width|weights_\w+)$")


def _value_problem(name: str, value: Any, where: str) -> str | None:
    """Range of a named number: accuracies in [0, 1], losses/seconds/counts >= 0."""
    if not isinstance(value, _SCALAR):
        return f"{where}.{name} is a {type(value).__name__}, not a number, string or null"
    if not _is_number(value):
        return None
    if _FRACTION.search(name) and not 0.0 <= value <= 1.0:
        return f"{where}.{name} = {value!r} is not a fraction in [0, 1]"
    if _NONNEGATIVE.search(name) and value < 0:
        return f"{where}.{name} = {value!r} is negative"
    if _COUNT.match(name) and (not isinstance(value, int) or value < 0):
        return f"{where}.{name} = {value!r} is not a count (an integer >= 0)"
    return None


def _rows_problem(rows: Any, where: str) -> str | None:
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return f"{where} is not a list of rows (objects)"
    for index, row in enumerate(rows):
        for name, value in row.items():
            problem = _value_problem(name, value, f"{where}[{index}]")
            if problem is not None:
                return problem
    return None


def _config_problem(config: dict[str, Any]) -> str | None:
    """The fields the tables read from a cell config, by type."""
    for name in ("study", "backbone", "stem"):
        if name in config and not isinstance(config[name], str):
            return f"config.{name} is a {type(config[name]).__name__}, not a string"
    if "seed" in config and not (isinstance(config["seed"], int) and config["seed"] >= 0):
        return f"config.seed = {config['seed']!r} is not an integer >= 0"
    for name in ("backbone_kwargs", "data", "training"):
        if name in config and not isinstance(config[name], dict):
            return f"config.{name} is not an object"
    if "probes" in config and not (
        isinstance(config["probes"], list) and all(isinstance(p, str) for p in config["probes"])
    ):
        return "config.probes is not a list of names"
    return None


def _result_problem(result: dict[str, Any], status: str) -> str | None:
    metrics = result.get("metrics", {})
    if status == "ok" and not isinstance(result.get("metrics"), dict):
        return "status is ok but result has no metrics dict"
    if not isinstance(metrics, dict):
        return "result.metrics is not an object"
    for name, value in metrics.items():
        problem = _value_problem(name, value, "result.metrics")
        if problem is not None:
            return problem
    if "epochs" in result:
        problem = _rows_problem(result["epochs"], "result.epochs")
        if problem is not None:
            return problem
    tables = result.get("tables", {})
    if not isinstance(tables, dict):
        return "result.tables is not an object"
    for name, rows in tables.items():
        problem = _rows_problem(rows, f"result.tables.{name}")
        if problem is not None:
            return problem
    seconds = result.get("probe_seconds", {})
    if not isinstance(seconds, dict) or not all(_is_number(v) and v >= 0 for v in seconds.values()):
        return "result.probe_seconds is not an object of seconds >= 0"
    for name in ("train_status",):
        if name in result and not isinstance(result[name], (str, type(None))):
            return f"result.{name} is not a string"
    return None


def record_problem(record: Any, *, key: str) -> str | None:
    """What is wrong with ``record`` as the stored record of cell ``key``, or ``None`` if nothing.

    A record is a dict with ``key`` (equal to ``key``), ``kind`` (a name), ``config`` (a dict of
    that kind whose :func:`config_hash` is ``key``), ``status`` (one of :data:`RECORD_STATUSES`),
    ``result`` (a dict; with a ``metrics`` dict when ok), ``error`` / ``traceback`` (``None`` or
    str), ``seconds`` (a number >= 0, if present), ``array_names`` (a list of str) and
    ``digest`` (:func:`record_digest`; absent in records of older versions). Every
    number is finite; accuracies are fractions in [0, 1]; losses, seconds and counts are >= 0;
    metric values and table cells are scalars.
    """
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    problem = _depth_problem(record) or _nonfinite(record, "record")
    if problem is not None:
        return problem
    missing = [f for f in ("key", "kind", "config", "status", "result") if f not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if record["key"] != key:
        return f"its key {record['key']!r} is not its file name {key!r}"
    if not isinstance(record["kind"], str) or not record["kind"].isidentifier():
        return f"kind {record['kind']!r} is not a cell kind's name"
    config = record["config"]
    if not isinstance(config, dict) or config.get("kind") != record["kind"]:
        return "config is not a dict of the record's kind"
    try:
        actual = config_hash(config)
    except TypeError:
        return "config holds values that are not JSON literals"
    if actual != key:
        return f"config hashes to {actual}, not to its key (edited or forged)"
    problem = _config_problem(config)
    if problem is not None:
        return problem
    if not isinstance(record["status"], str) or record["status"] not in RECORD_STATUSES:
        return f"status {record['status']!r} is not one of {RECORD_STATUSES}"
    result = record["result"]
    if not isinstance(result, dict):
        return "result is not a dict"
    problem = _result_problem(result, record["status"])
    if problem is not None:
        return problem
    for name in ("error", "traceback"):
        if record.get(name) is not None and not isinstance(record[name], str):
            return f"{name} is neither null nor a string"
    seconds = record.get("seconds")
    if seconds is not None and not (_is_number(seconds) and seconds >= 0):
        return f"seconds {seconds!r} is not a number >= 0"
    threads = record.get("threads")
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        return f"threads {threads!r} is not an integer >= 1"
    versions = record.get("versions", {})
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        return "versions is not an object of version strings"
    names = record.get("array_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "array_names is not a list of names"
    digest = record.get("digest")  # records written before digests have none
    if digest is not None and digest != record_digest(record):
        return "its contents changed after it was written (digest mismatch: hand-edited?)"
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
        if path.exists() or path.is_symlink():
            os.replace(path, _unique_path(folder / path.name))
            moved.append(path)
    return moved


class CellStore:
    """Cell results under ``root/<key>.json`` (+ ``root/<key>.npz`` for arrays).

    A cell counts as finished when its file holds a valid record (:func:`record_problem`) that
    says ``"status": "ok"`` (or ``"diverged"``: a result too) and its arrays read back; failed
    cells are recorded too (with their error) and are run again on the next resume. Invalid
    records are moved to ``root/damaged/``.
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
        path = self.path(key)
        try:
            info = path.stat()
        except FileNotFoundError:
            if path.is_symlink():
                self._set_aside(key, "it is a symbolic link to nothing")
            return None
        if not stat_module.S_ISREG(info.st_mode):
            kind = "a directory" if stat_module.S_ISDIR(info.st_mode) else "a device or pipe"
            self._set_aside(key, f"it is {kind}, not a regular file")
            return None
        if info.st_size > MAX_RECORD_BYTES:
            self._set_aside(
                key, f"{info.st_size} bytes, above the {MAX_RECORD_BYTES}-byte cap of a record"
            )
            return None
        with path.open("rb") as handle:  # a file growing meanwhile is still read up to the cap
            data = handle.read(MAX_RECORD_BYTES + 1)
        if len(data) > MAX_RECORD_BYTES:
            self._set_aside(key, f"above the {MAX_RECORD_BYTES}-byte cap of a record")
            return None
        try:
            record = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._set_aside(key, f"not valid JSON ({exc})")
            return None
        except RecursionError:
            self._set_aside(key, "JSON nested deeper than Python can read")
            return None
        problem = record_problem(record, key=key)
        if problem is None:
            problem = self._arrays_problem(key, record.get("array_names", []))
        if problem is not None:
            self._set_aside(key, problem)
            return None
        return record

    def is_finished(self, key: str) -> bool:
        """Whether ``key`` has a valid record of a finished cell (ok or diverged)."""
        record = self.read(key)
        return record is not None and record["status"] in FINISHED_STATUSES

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
        record = json.loads(json.dumps(json_safe(record), default=str, allow_nan=False))
        record.pop("digest", None)
        record["digest"] = record_digest(record)
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, allow_nan=False))
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
