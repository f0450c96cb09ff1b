"""Training checkpoints: what one holds, writing it atomically, and reading it back verified.

After every epoch the trainer writes ``last.pt``; the one it replaces becomes ``previous.pt``, so
a damaged ``last.pt`` (a write cut short, a flipped byte) still leaves the epoch before to resume
from. Files are verified (zip CRCs) before anything in them is unpickled.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemlab.weights.checkpoint import load_checkpoint_file

__all__ = [
    "CHECKPOINT_KEYS",
    "CHECKPOINT_NAME",
    "PREVIOUS_CHECKPOINT_NAME",
    "capture_rng_state",
    "read_training_checkpoint",
    "restore_rng_state",
    "write_training_checkpoint",
]

CHECKPOINT_NAME = "last.pt"
PREVIOUS_CHECKPOINT_NAME = "previous.pt"
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "scaler", "rng", "history", "config")
"""What a training checkpoint holds."""


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states as tensors, lists and ints (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [version, list(internal), gauss],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global RNGs to a state from :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def write_training_checkpoint(
    directory: Path, state: Mapping[str, Any], *, keep_previous: bool
) -> Path:
    """Write ``state`` as ``directory/last.pt``, atomically, keeping the one it replaces.

    The new file is written and flushed to disk under a temporary name first. Then the current
    ``last.pt`` becomes ``previous.pt`` and the new file becomes ``last.pt``, each by an atomic
    rename; at every moment one complete checkpoint exists.

    Args:
        directory: the checkpoint folder (created if needed).
        state: the checkpoint (keys :data:`CHECKPOINT_KEYS`).
        keep_previous: rotate the current ``last.pt`` to ``previous.pt``. ``False`` for the first
            checkpoint of a fresh run: files of an earlier run in the folder are not this run's
            history, so ``previous.pt`` is removed instead and ``last.pt`` overwritten.

    Returns:
        The path of ``last.pt``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    last = directory / CHECKPOINT_NAME
    previous = directory / PREVIOUS_CHECKPOINT_NAME
    temporary = directory / f".{CHECKPOINT_NAME}.{os.getpid()}.tmp"
    try:
        with temporary.open("wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        if not keep_previous:
            previous.unlink(missing_ok=True)
        elif last.exists():
            os.replace(last, previous)
        os.replace(temporary, last)
    finally:
        temporary.unlink(missing_ok=True)
    return last


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`write_training_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming ``path`` and what is wrong: empty, truncated, CRC mismatch, not a
            checkpoint, or not a stemlab training checkpoint (missing entries).
    """
    saved = load_checkpoint_file(path)
    if not isinstance(saved, dict):
        raise ValueError(
            f"{path} is not a stemlab training checkpoint: it holds a {type(saved).__name__}, "
            "not a dict"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in saved]
    if missing:
        raise ValueError(
            f"{path} is not a stemlab training checkpoint: it lacks {', '.join(missing)}"
        )
    if not isinstance(saved["model"], Mapping) or not isinstance(saved["config"], Mapping):
        raise ValueError(
            f"{path} is not a stemlab training checkpoint: 'model' and 'config' must be dicts"
        )
    return saved
