"""Hand-made study tables with the columns of the study layer's tables (for report tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

STEMS = ("r2d", "r2plus1d", "basic")
# test top-1 of each stem at its selected setting, per seed
TOP1 = {
    "r2d": [0.40, 0.42, 0.38, 0.41, 0.39],
    "r2plus1d": [0.80, 0.84, 0.79, 0.83, 0.82],
    "basic": [0.41, 0.45, 0.37, 0.40, 0.43],
}
LRS = [0.001, 0.003, 0.01, 0.03]


def study_tables(
    *, stems=STEMS, seeds=(0, 1, 2, 3, 4), status=None, budgets=(1, 2, 4), flip=False
) -> tuple[dict, dict[str, pd.DataFrame]]:
    """``(config, tables)`` of a small study: one backbone, ``stems``, a 4-sample lr sweep on 2
    seeds, budgets 1/2/4 epochs. ``status`` maps (stem, seed) to a cell status other than ok;
    ``flip`` makes r2d lead r2plus1d at the first budget."""
    status = status or {}
    rng = np.random.default_rng(0)
    config = {
        "name": "fixture",
        "backbones": {"r2plus1d_18": {}},
        "stems": list(stems),
        "seeds": list(seeds),
        "baseline": "r2d",
        "training": {"epochs": max(budgets), "lr": 0.01},
        "sweep": {"lr": LRS, "samples": len(LRS), "seeds": [0, 1]},
        "budgets": list(budgets),
        "comparisons": "baseline",
        "data": {"dataset": "synthetic_motion", "test_samples": 64},
    }
    cells, sweep, budget_rows, selection = [], [], [], []
    for stem in stems:
        best = int(np.argmax([-abs(np.log10(lr) + 1.5) for lr in LRS]))
        selection.append(
            {"backbone": "r2plus1d_18", "stem": stem, "lr": LRS[best], "weight_decay": 1e-4,
             "sample": best, "val_top1_mean": float(np.mean(TOP1[stem])), "n_seeds": 2}
        )  # fmt: skip
        for seed in seeds:
            top1 = TOP1[stem][seed % len(TOP1[stem])]
            state = status.get((stem, seed), "ok")
            ok = state == "ok"
            cells.append(
                {
                    "key": f"train-{stem}-{seed}", "kind": "train", "status": state,
                    "error": None if ok else "val_loss non-finite at epoch 3",
                    "backbone": "r2plus1d_18", "stem": stem, "seed": seed,
                    "top1": top1 if ok else np.nan, "top5": 1.0 if ok else np.nan,
                    "test_loss": 1.5 - top1 if ok else np.nan,
                    "val_top1": top1 + 0.01 if ok else np.nan,
                    "val_loss": 1.4 - top1 if ok else np.nan,
                    "train_loss": 0.5 if ok else np.nan,
                    "lr": LRS[best], "weight_decay": 1e-4, "chance": 0.25, "num_classes": 4,
                    "seconds": 1.0,
                }
            )  # fmt: skip
            for epoch in budgets:
                share = epoch / max(budgets)
                value = 0.25 + (top1 - 0.25) * share
                if flip and epoch == budgets[0]:
                    value = {"r2d": 0.35, "r2plus1d": 0.28}.get(stem, value)
                if ok:
                    budget_rows.append(
                        {"backbone": "r2plus1d_18", "stem": stem, "seed": seed, "sample": np.nan,
                         "kind": "train", "epoch": epoch, "train_loss": 1.4 - share,
                         "val_top1": value + 0.01, "val_loss": 1.45 - share * top1,
                         "test_top1": value, "test_loss": 1.5 - share * top1}
                    )  # fmt: skip
        for sample, lr in enumerate(LRS):
            for seed in (0, 1):
                quality = 1 - abs(np.log10(lr) + 1.5) / 2
                base = np.mean(TOP1[stem])
                value = float(np.clip(0.25 + (base - 0.25) * quality + rng.normal(0, 0.01), 0, 1))
                sweep.append(
                    {"backbone": "r2plus1d_18", "stem": stem, "seed": seed, "sample": sample,
                     "lr": lr, "weight_decay": 1e-4, "epoch": max(budgets),
                     "val_top1": value + 0.01, "val_loss": 1.0, "test_top1": value,
                     "test_loss": 1.1, "train_loss": 0.5, "selected": sample == best}
                )  # fmt: skip
    cell_frame = pd.DataFrame(cells)
    cell_frame["seed"] = cell_frame["seed"].astype("Int64")
    summary = pd.DataFrame(
        [{"backbone": "r2plus1d_18", "stem": s, "train_gflops": 0.1 * (i + 1),
          "params": 1000 * (i + 1)} for i, s in enumerate(stems)]
    )  # fmt: skip
    tables = {
        "cells": cell_frame,
        "summary": summary,
        "sweep": pd.DataFrame(sweep),
        "budgets": pd.DataFrame(budget_rows),
        "selection": pd.DataFrame(selection),
        "epochs": pd.DataFrame(),
    }
    return config, tables


def manifest(config: dict) -> dict:
    """A manifest around ``config`` (counts not checked by the report)."""
    return {"study": config["name"], "quick": False, "config": config, "versions": {},
            "cells": {"total": 15, "ok": 15, "failed": 0}, "runs": []}  # fmt: skip
