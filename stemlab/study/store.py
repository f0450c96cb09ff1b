"""One JSON file per finished cell, written atomically; the study's resumable record."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CellStore", "atomic_write_bytes", "atomic_write_text"]


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


class CellStore:
    """Cell results under ``root/<key>.json``.

    A cell counts as finished when its file exists and says ``"status": "ok"``; failed cells are
    recorded too (with their error) and are run again on the next resume.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """File of the cell with content hash ``key``."""
        return self.root / f"{key}.json"

    def read(self, key: str) -> dict[str, Any] | None:
        """The stored record of ``key``, or ``None`` if absent or unreadable."""
        try:
            return json.loads(self.path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def is_finished(self, key: str) -> bool:
        """Whether ``key`` has a successful record."""
        record = self.read(key)
        return record is not None and record.get("status") == "ok"

    def arrays_path(self, key: str) -> Path:
        """File of the arrays (filters, Grad-CAM maps) of the cell ``key``."""
        return self.root / f"{key}.npz"

    def read_arrays(self, key: str) -> dict[str, np.ndarray]:
        """The stored arrays of ``key`` (empty when it has none)."""
        try:
            with np.load(self.arrays_path(key)) as data:
                return {name: data[name] for name in data.files}
        except (FileNotFoundError, OSError, ValueError):
            return {}

    def write(self, record: dict[str, Any]) -> Path:
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
        path = self.path(record["key"])
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=str))
        return path
