"""Per-arm tuning: the hyperparameter samples a sweep trains, and each arm's selected setting.

Every arm (backbone x stem) trains at the same samples, so arms pair per sample; an arm's setting
is chosen from its validation scores only (mean over the sweep seeds), never from the test split::

    sweep {"lr": ["log", 1e-3, 1e-1], "weight_decay": [0.0, 0.05], "samples": 8}
      -> samples 0..7 (shared by every arm)
      -> sweep cells: arm x sweep seed x sample  (val and test scored at every budget)
      -> select(): per arm, argmax of mean val_top1 (ties: lower val_loss, then lower sample)
      -> training cells: arm x study seed at the selected sample (these are reported)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["check_sweep", "select", "selection_table", "sweep_samples", "sweep_seeds"]

_PARAMETERS = ("lr", "weight_decay")
_KEYS = (*_PARAMETERS, "samples", "seeds", "sample_seed")


def _is_range(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3 and value[0] == "log"


def _check_values(name: str, value: Any) -> None:
    if _is_range(value):
        low, high = value[1], value[2]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)):
            raise ValueError(f"sweep[{name!r}] range bounds must be finite numbers, got {value!r}")
        if not 0 < low < high:
            raise ValueError(f"sweep[{name!r}] = {list(value)!r}: a log range needs 0 < low < high")
        return
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"sweep[{name!r}] must be a non-empty list of values or ['log', low, high], "
            f"got {value!r}"
        )
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"sweep[{name!r}] values must be finite numbers, got {v!r}")
        if v < 0 or (name == "lr" and v == 0):
            raise ValueError(
                f"sweep[{name!r}] value {v!r} is not allowed: "
                f"{'lr must be > 0' if name == 'lr' else 'weight_decay must be >= 0'}"
            )


def check_sweep(sweep: Any, data: Mapping[str, Any]) -> None:
    """Validate a study's ``sweep`` (and that its data has a test split to report on).

    Raises:
        TypeError: ``sweep`` is not a mapping.
        ValueError: unknown keys, bad values or ranges, or no test split.
    """
    if not isinstance(sweep, Mapping):
        raise TypeError(f"Study sweep must be a dict or None, got {type(sweep).__name__}")
    unknown = sorted(set(sweep) - set(_KEYS))
    if unknown:
        raise ValueError(f"Study sweep has unknown keys {unknown}; allowed: {list(_KEYS)}")
    if not any(name in sweep for name in _PARAMETERS):
        raise ValueError(f"Study sweep names no hyperparameter; give one of {list(_PARAMETERS)}")
    for name in _PARAMETERS:
        if name in sweep:
            _check_values(name, sweep[name])
    ranged = any(_is_range(sweep.get(name)) for name in _PARAMETERS)
    samples = sweep.get("samples")
    if ranged and samples is None:
        raise ValueError("Study sweep with a ['log', low, high] range needs 'samples': N")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)):
        raise ValueError(f"sweep['samples'] must be a positive int, got {samples!r}")
    if samples is not None and not 1 <= samples <= 4096:
        raise ValueError(f"sweep['samples'] must be in [1, 4096], got {samples}")
    seeds = sweep.get("seeds")
    if seeds is not None:
        if isinstance(seeds, (str, int)) or not seeds:
            raise ValueError(f"sweep['seeds'] must be a non-empty list of ints, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"sweep['seeds'] repeat: {list(seeds)}")
    has_test = "test_samples" in data or "test_split" in data
    if not has_test:
        raise ValueError(
            "Study sweep needs a test split to report on: add data['test_samples'] (synthetic "
            "data) or data['test_split'] (video folders); selection reads validation only"
        )


def sweep_seeds(sweep: Mapping[str, Any], seeds: Sequence[int]) -> list[int]:
    """The seeds the sweep trains on (default: the study's seeds)."""
    return [int(s) for s in sweep.get("seeds", seeds)]


def sweep_samples(sweep: Mapping[str, Any]) -> list[dict[str, float]]:
    """The hyperparameter samples of a sweep, in a fixed order shared by every arm.

    Lists alone give their full grid (``samples``, if given, must not exceed it and takes the
    first ``samples`` points of a seeded shuffle). A ``["log", lo, hi]`` range gives ``samples``
    draws, log-uniform, from a generator seeded by ``sample_seed`` (lists are then drawn from
    uniformly). A missing hyperparameter is left to the training config (``None``).

    Returns:
        ``[{"lr": float | None, "weight_decay": float | None}, ...]``.
    """
    rng = np.random.default_rng(int(sweep.get("sample_seed", 0)))
    samples = sweep.get("samples")
    names = [name for name in _PARAMETERS if name in sweep]
    if not any(_is_range(sweep[name]) for name in names):
        grid = list(itertools.product(*(list(sweep[name]) for name in names)))
        if samples is not None and samples < len(grid):
            order = rng.permutation(len(grid))[:samples]
            grid = [grid[i] for i in sorted(order)]
        points = [dict(zip(names, (float(v) for v in point), strict=True)) for point in grid]
    else:
        points = [{} for _ in range(int(samples))]
        for name in names:
            value = sweep[name]
            if _is_range(value):
                low, high = math.log(value[1]), math.log(value[2])
                draws = np.exp(rng.uniform(low, high, size=len(points)))
            else:
                draws = np.asarray(value, dtype=float)[rng.integers(0, len(value), len(points))]
            for point, draw in zip(points, draws, strict=True):
                point[name] = float(f"{draw:.4g}")
    return [{name: point.get(name) for name in _PARAMETERS} for point in points]


def select(rows: pd.DataFrame) -> pd.DataFrame:
    """Each arm's selected sample from its sweep cells' validation scores.

    Args:
        rows: finished sweep cells: backbone, stem, seed, sample, lr, weight_decay, val_top1,
            val_loss (test columns may be present; they are never read).

    Returns:
        One row per arm: backbone, stem, sample, lr, weight_decay, val_top1_mean, val_loss_mean,
        n_seeds (seeds behind the mean), n_samples (samples the arm finished).
    """
    columns = [
        "backbone", "stem", "sample", "lr", "weight_decay",
        "val_top1_mean", "val_loss_mean", "n_seeds", "n_samples",
    ]  # fmt: skip
    if rows.empty:
        return pd.DataFrame(columns=columns)
    used = rows[
        ["backbone", "stem", "seed", "sample", "lr", "weight_decay", "val_top1", "val_loss"]
    ]
    out = []
    for (backbone, stem), arm in used.groupby(["backbone", "stem"], sort=False):
        per_sample = (
            arm.groupby("sample")
            .agg(
                lr=("lr", "first"),
                weight_decay=("weight_decay", "first"),
                val_top1_mean=("val_top1", "mean"),
                val_loss_mean=("val_loss", lambda v: v.astype(float).mean()),
                n_seeds=("seed", "nunique"),
            )
            .reset_index()
        )
        most = per_sample["n_seeds"].max()
        complete = per_sample[per_sample["n_seeds"] == most].copy()
        complete["loss_key"] = complete["val_loss_mean"].fillna(np.inf)
        best = complete.sort_values(
            ["val_top1_mean", "loss_key", "sample"], ascending=[False, True, True]
        ).iloc[0]
        out.append(
            {
                "backbone": backbone,
                "stem": stem,
                "sample": int(best["sample"]),
                "lr": best["lr"],
                "weight_decay": best["weight_decay"],
                "val_top1_mean": float(best["val_top1_mean"]),
                "val_loss_mean": float(best["val_loss_mean"]),
                "n_seeds": int(best["n_seeds"]),
                "n_samples": len(per_sample),
            }
        )
    return pd.DataFrame(out, columns=columns)


def selection_table(selected: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """``(backbone, stem) -> {"lr", "weight_decay", "sample"}`` for :meth:`Study.cells`."""
    return {
        (row.backbone, row.stem): {
            "lr": row.lr,
            "weight_decay": row.weight_decay,
            "sample": int(row.sample),
        }
        for row in selected.itertuples()
    }
