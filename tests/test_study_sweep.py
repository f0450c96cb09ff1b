"""Per-arm tuning: sweep samples, selection on validation only, test-split reports, budgets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stemlab.study import Study, run_study
from stemlab.study.datasets import build_splits
from stemlab.study.selection import select, sweep_samples

TINY_BACKBONE = {"widths": [4, 4, 8, 8], "layers": [1, 1, 1, 1]}
DATA = {
    "dataset": "synthetic_motion",
    "train_samples": 16,
    "val_samples": 8,
    "test_samples": 12,
    "clip_len": 4,
    "size": 16,
}


def sweep_study(**kw) -> Study:
    options = {
        "name": "tiny_sweep",
        "backbones": {"r2plus1d_18": TINY_BACKBONE},
        "stems": ["basic:width=4", "r2d:width=4"],
        "seeds": [0, 1],
        "data": DATA,
        "training": {"epochs": 2, "batch_size": 8, "lr": 0.01, "warmup_epochs": 0},
        "sweep": {"lr": [0.003, 0.03], "seeds": [5]},
        "budgets": [1, 2],
        "probes": ["filters"],
    }
    options.update(kw)
    return Study(**options)


def test_grid_samples_are_the_full_grid_in_order():
    samples = sweep_samples({"lr": [0.1, 0.01], "weight_decay": [0.0, 0.05]})
    assert samples == [
        {"lr": 0.1, "weight_decay": 0.0},
        {"lr": 0.1, "weight_decay": 0.05},
        {"lr": 0.01, "weight_decay": 0.0},
        {"lr": 0.01, "weight_decay": 0.05},
    ]
    assert sweep_samples({"weight_decay": [0.0, 0.1]}) == [
        {"lr": None, "weight_decay": 0.0},
        {"lr": None, "weight_decay": 0.1},
    ]


def test_log_range_draws_are_seeded_and_inside_the_range():
    sweep = {"lr": ["log", 1e-4, 1e-1], "weight_decay": [0.0, 0.05], "samples": 64}
    a, b = sweep_samples(sweep), sweep_samples(sweep)
    assert a == b and len(a) == 64
    lrs = np.array([s["lr"] for s in a])
    assert lrs.min() >= 1e-4 * 0.9999 and lrs.max() <= 1e-1 * 1.0001
    # log-uniform: about half the draws fall below the geometric midpoint 10^-2.5
    assert 20 <= int((lrs < 10**-2.5).sum()) <= 44
    assert {s["weight_decay"] for s in a} == {0.0, 0.05}
    assert sweep_samples({**sweep, "sample_seed": 1}) != a


@pytest.mark.parametrize(
    ("sweep", "data", "message"),
    [
        ({"lr": [0.1]}, {k: v for k, v in DATA.items() if k != "test_samples"}, "test split"),
        ({"lr": [0.1], "momentum": [0.9]}, DATA, "unknown keys ['momentum']"),
        ({"lr": ["log", 0.1, 0.01], "samples": 4}, DATA, "0 < low < high"),
        ({"lr": ["log", 1e-3, 1e-1]}, DATA, "needs 'samples'"),
        ({"lr": [0.0]}, DATA, "lr must be > 0"),
        ({"lr": []}, DATA, "non-empty list"),
        ({"weight_decay": [-1.0]}, DATA, "weight_decay must be >= 0"),
        ({"samples": 3}, DATA, "names no hyperparameter"),
    ],
)
def test_bad_sweeps_are_refused_with_the_reason(sweep, data, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sweep_study(sweep=sweep, data=data)


def test_bad_budgets_and_family_are_refused():
    with pytest.raises(ValueError, match="increasing"):
        sweep_study(budgets=[2, 1])
    with pytest.raises(ValueError, match="comparisons"):
        sweep_study(comparisons="pairs")


def test_splits_are_disjoint_streams():
    splits = build_splits(DATA)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16, 8, 12)
    clips = {
        name: {s[0].numpy().tobytes() for s in dataset}
        for name, dataset in (("train", splits.train), ("val", splits.val), ("test", splits.test))
    }
    assert not clips["train"] & clips["val"]
    assert not clips["train"] & clips["test"]
    assert not clips["val"] & clips["test"]


def test_selection_reads_validation_only():
    rows = pd.DataFrame(
        {
            "backbone": "m",
            "stem": "a",
            "seed": [0, 0, 1, 1],
            "sample": [0, 1, 0, 1],
            "lr": [0.1, 0.01, 0.1, 0.01],
            "weight_decay": 0.0,
            "val_top1": [0.5, 0.75, 0.5, 0.5],
            "val_loss": [1.0, 0.9, 1.0, 1.0],
        }
    )
    chosen = select(rows.assign(test_top1=[1.0, 0.0, 1.0, 0.0]))
    assert chosen.iloc[0][["sample", "lr", "val_top1_mean", "n_seeds"]].tolist() == [
        1,
        0.01,
        0.625,
        2,
    ]
    # the test columns cannot move the choice: any values give the same selection
    for test in ([0.0, 1.0, 0.0, 1.0], [np.nan] * 4):
        assert select(rows.assign(test_top1=test, test_loss=test)).equals(chosen)
    # a tie on validation top-1 goes to the lower validation loss, then the earlier sample
    tie = rows.assign(val_top1=0.5, val_loss=[1.0, 0.8, 1.0, 0.8])
    assert int(select(tie).iloc[0]["sample"]) == 1
    assert int(select(tie.assign(val_loss=1.0)).iloc[0]["sample"]) == 0


def test_sweep_study_end_to_end(tmp_path):
    study = sweep_study()
    assert study.grid_size() == 2 * 1 * 2 + 2 * 2
    assert [c.kind for c in study.cells()] == ["sweep"] * 4  # training cells wait for selection
    run = run_study(study, out_dir=tmp_path / "out", workers=1, progress=False)
    assert run.failed == 0 and run.total == 8
    tables = run.tables
    sweep, selection, cells = tables["sweep"], tables["selection"], tables["cells"]
    assert len(sweep) == 4 and set(sweep["lr"]) == {0.003, 0.03}
    assert sweep["selected"].sum() == 2
    sweep_cells = cells[cells["kind"] == "sweep"].set_index(["stem", "sample"])
    for row in sweep.itertuples():
        assert row.test_top1 == sweep_cells.loc[(row.stem, row.sample), "top1"]
        assert math.isclose(row.test_top1 * 12, round(row.test_top1 * 12))
    for row in selection.itertuples():
        arm = sweep[sweep["stem"] == row.stem]
        best = arm.sort_values(["val_top1", "val_loss"], ascending=[False, True]).iloc[0]
        assert row.lr == best["lr"]
        trained = cells[(cells["kind"] == "train") & (cells["stem"] == row.stem)]
        assert sorted(trained["seed"].tolist()) == [0, 1]
        assert (trained["lr"] == row.lr).all()
    train = cells[cells["kind"] == "train"]
    assert (train["top1_split"] == "test").all()
    budgets = tables["budgets"]
    assert sorted(set(budgets["epoch"])) == [1, 2]
    final = budgets[(budgets["kind"] == "train") & (budgets["epoch"] == 2)].set_index(
        ["stem", "seed"]
    )
    for row in train.itertuples():
        assert row.top1 == final.loc[(row.stem, row.seed), "test_top1"]
        # accuracies are counts over 12 test clips
        assert math.isclose(row.top1 * 12, round(row.top1 * 12))
    # a rerun resumes: nothing runs again
    again = run_study(study, out_dir=tmp_path / "out", workers=1, progress=False)
    assert again.ran == 0 and again.skipped == 8


def test_diverged_training_is_its_own_status(tmp_path):
    study = sweep_study(
        sweep=None,
        budgets=None,
        seeds=[0],
        stems=["basic:width=4"],
        training={"epochs": 1, "batch_size": 8, "lr": 1e6, "optimizer": "sgd"},
    )
    run = run_study(study, out_dir=tmp_path / "out", workers=1, progress=False)
    cells = run.tables["cells"]
    assert cells["status"].tolist() == ["diverged"]
    assert "diverged" in cells["error"].iloc[0]
