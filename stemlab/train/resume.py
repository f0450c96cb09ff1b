"""Resuming a run: choose the checkpoint (``last.pt``, else ``previous.pt``), check it fits."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from stemlab.train.checkpoints import (
    CHECKPOINT_NAME,
    PREVIOUS_CHECKPOINT_NAME,
    read_training_checkpoint,
    restore_rng_state,
)
from stemlab.train.config import EXECUTION_FIELDS, TrainConfig
from stemlab.train.epoch import TrainingParts

__all__ = ["DAMAGED_SUFFIX", "ResumePoint", "apply_resume_point", "find_resume_point"]

DAMAGED_SUFFIX = ".damaged"
"""A damaged ``last.pt`` passed over for ``previous.pt`` is kept under this suffix."""


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to resume from.

    Attributes:
        path: the file it was read from.
        state: its content (keys :data:`stemlab.train.checkpoints.CHECKPOINT_KEYS`).
    """

    path: Path
    state: dict[str, Any]

    @property
    def epoch(self) -> int:
        """The last finished epoch it holds."""
        return int(self.state["epoch"])


def _saved_config(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The saved config in today's spelling (older checkpoints have ``freeze_backbone``)."""
    config = dict(saved)
    if "freeze" not in config:
        config["freeze"] = "backbone" if config.get("freeze_backbone") else "none"
    config["freeze_backbone"] = None
    return config


def check_resumable(saved: Mapping[str, Any], config: TrainConfig, *, path: Path) -> None:
    """Raise ValueError if ``saved`` differs from ``config`` in a field that changes results."""
    saved = _saved_config(saved)
    current = config.to_dict()
    different = sorted(
        key for key in current if key not in EXECUTION_FIELDS and saved.get(key) != current[key]
    )
    if different:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in different)
        raise ValueError(
            f"cannot resume from {path}: it was written with a different config ({details}); "
            "use another checkpoint_dir or resume=False"
        )


def _check_model_fits(state: Mapping[str, Any], model: nn.Module, *, path: Path) -> None:
    """Raise ValueError (before anything is loaded) if the saved weights do not fit ``model``."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        k
        for k in expected
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k].shape)
    ]
    if missing or unexpected or reshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        raise ValueError(
            f"cannot resume from {path}: its weights do not fit this model ({'; '.join(parts)})"
        )


def find_resume_point(directory: Path, config: TrainConfig, model: nn.Module) -> ResumePoint | None:
    """The checkpoint a resumed run continues from, or ``None`` when the folder has none.

    ``last.pt`` is used when it reads back intact. When it is damaged (empty, truncated, CRC
    mismatch...) or missing while ``previous.pt`` exists, the run falls back to ``previous.pt``
    with a warning, and the damaged file is renamed ``last.pt.damaged`` so that the next
    checkpoint does not rotate it over the good one.

    Raises:
        ValueError: both files unusable (naming both and what is wrong with each); a checkpoint
            written with another config; weights that do not fit ``model``.
    """
    last = directory / CHECKPOINT_NAME
    previous = directory / PREVIOUS_CHECKPOINT_NAME
    if not last.exists() and not previous.exists():
        return None
    problems: dict[Path, str] = {}
    for path in (last, previous):
        if not path.exists():
            problems[path] = "the file does not exist"
            continue
        try:
            state = read_training_checkpoint(path)
        except (ValueError, OSError) as err:
            problems[path] = str(err)
            continue
        check_resumable(state["config"], config, path=path)
        _check_model_fits(state["model"], model, path=path)
        point = ResumePoint(path, state)
        if path == previous:
            note = ""
            if last.exists():
                kept = last.with_name(last.name + DAMAGED_SUFFIX)
                os.replace(last, kept)
                note = f"; the damaged file is kept as {kept}"
            warnings.warn(
                f"resuming from {previous} (epoch {point.epoch}), not {last}: "
                f"{problems[last]}{note}",
                RuntimeWarning,
                stacklevel=3,
            )
        return point
    raise ValueError(
        f"cannot resume from {directory}: neither checkpoint can be read. {last}: "
        f"{problems[last]}. {previous}: {problems[previous]}. Delete both or set resume=False "
        "to start over"
    )


def apply_resume_point(point: ResumePoint, parts: TrainingParts) -> list[dict[str, float]]:
    """Load the checkpoint into the model, optimizer, scheduler, scaler and RNGs.

    Returns:
        The history rows of the epochs it holds.
    """
    state = point.state
    # the optimizer checks its groups against the model's parameters: if that fails, the
    # weights are still the caller's (the model's keys and shapes were checked already)
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    parts.model.load_state_dict(state["model"])
    restore_rng_state(state["rng"])
    return list(state["history"])
