"""Studies: grid expansion, resumable atomic store, failures, kill -9, Ray vs local, report."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from stemlab.study import CellStore, Study, config_hash, load_study, run_study

TINY_BACKBONE = {"widths": [4, 4, 8, 8], "layers": [1, 1, 1, 1]}


def tiny_study(
    name: str = "tiny", stems=("basic:width=4", "r2d:width=4"), seeds=(0, 1), **kw
) -> Study:
    options = {
        "name": name,
        "backbones": {"r2plus1d_18": TINY_BACKBONE},
        "stems": list(stems),
        "seeds": list(seeds),
        "data": {
            "dataset": "synthetic_motion",
            "train_samples": 16,
            "val_samples": 8,
            "clip_len": 4,
            "size": 16,
        },
        "training": {"epochs": 1, "batch_size": 8, "lr": 0.01},
        "profile": {"backbone": "r2plus1d_18", "input": [1, 3, 4, 32, 32], "kwargs": TINY_BACKBONE},
        "latency_runs": 1,
        "quick": {"seeds": [0], "training": {"epochs": 1}},
        "probes": ["flops", "activations", "confusion", "grad_cam", "filters"],
    }
    options.update(kw)
    return Study(**options)


def test_grid_and_content_hashes():
    study = tiny_study(stems=("basic", "r2d", "wide"), seeds=(0, 1, 2))
    cells = study.cells()
    assert [c.kind for c in cells].count("train") == 9 and [c.kind for c in cells].count(
        "profile"
    ) == 3
    assert len({c.key for c in cells}) == 12
    assert (
        cells[0].key == tiny_study(stems=("basic", "r2d", "wide"), seeds=(0, 1, 2)).cells()[0].key
    )
    assert config_hash({"a": (1, 2), "b": 1}) == config_hash({"b": 1, "a": [1, 2]})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    quick = study.quick_variant()
    assert quick.seeds == [0] and quick.training == {"epochs": 1, "batch_size": 8, "lr": 0.01}
    assert len(quick.cells()) == 3 + 3


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"name": "my study"}, ValueError, "must be a Python identifier"),
        ({"seeds": [0, 0]}, ValueError, "seeds repeat"),
        ({"stems": "basic"}, ValueError, "non-empty list of stem specs"),
        (
            {"data": {"dataset": "kinetics"}},
            ValueError,
            r"data\['dataset'\]='kinetics' is not allowed",
        ),
        ({"probes": ["flops", "gradcam"]}, ValueError, "Did you mean 'grad_cam'"),
        ({"quick": {"epochs": 1}}, ValueError, r"quick overrides unknown fields \['epochs'\]"),
        ({"training": {"lr": {1, 2}}}, TypeError, "JSON-like literals only"),
    ],
)
def test_invalid_studies(change, error, message):
    with pytest.raises(error, match=message):
        dataclasses.replace(tiny_study(), **change)


def test_run_resume_failure_and_report(tmp_path):
    from stemlab.report.study_report import render_report

    study = tiny_study(stems=("basic:width=4", "r2d:width=4", "wide:width=0"), seeds=(0, 1))
    first = run_study(study, out_dir=tmp_path, progress=False)
    assert (first.total, first.skipped, first.ran) == (9, 0, 9)
    cells = first.tables["cells"]
    failed = cells[cells["status"] != "ok"]
    # the bad stem fails in its 2 training cells and its profile cell, the rest goes on
    assert sorted(failed["stem"]) == ["wide:width=0"] * 3
    assert all("width must be > 0, got 0" in e for e in failed["error"])
    summary = first.tables["summary"].set_index("stem")
    assert summary.loc["basic:width=4", "n_seeds"] == 2
    assert summary.loc["wide:width=0", "n_failed"] == 2
    for stem in ("basic:width=4", "r2d:width=4"):
        row = summary.loc[stem]
        assert 0.0 <= row["top1_mean"] <= 1.0 and row["params"] > 0 and row["gflops"] > 0
    # one file per cell, JSON written last, arrays beside it
    store = CellStore(tmp_path / "cells")
    ok_train = cells[(cells["status"] == "ok") & (cells["kind"] == "train")]
    for key in ok_train["key"]:
        assert store.is_finished(key) and "filters.weight" in store.read_arrays(key)
    assert not list((tmp_path / "cells").glob(".*.tmp"))
    # resume: finished cells are skipped, failed ones are retried
    second = run_study(study, out_dir=tmp_path, progress=False)
    assert (second.skipped, second.ran) == (6, 3)
    pd.testing.assert_frame_equal(
        second.tables["summary"].drop(columns=["n_failed"]),
        first.tables["summary"].drop(columns=["n_failed"]),
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["runs"]) == 2 and manifest["config"]["name"] == "tiny"
    assert {"torch", "fvcore", "captum"} <= set(manifest["versions"])
    for name in ("summary", "cells", "epochs", "activations", "flops", "latency", "filters"):
        assert (tmp_path / "tables" / f"{name}.csv").is_file()
    paths = render_report(tmp_path)
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "<img" in page and 'src="figures/' not in page
    markdown = paths["markdown"].read_text()
    assert "## Findings" in markdown and "## Failed cells" in markdown
    assert "(figures/accuracy_vs_gflops.png)" in markdown
    assert (tmp_path / "figures" / "accuracy_vs_gflops.png").stat().st_size > 1000


def test_no_resume_reruns_everything(tmp_path):
    study = tiny_study(stems=("r2d:width=4",), seeds=(0,), probes=("flops",))
    run_study(study, out_dir=tmp_path, progress=False)
    again = run_study(study, out_dir=tmp_path, progress=False, resume=False)
    assert again.ran == again.total == 2


def test_load_study_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="study script not found"):
        load_study(tmp_path / "missing.py")
    script = tmp_path / "empty.py"
    script.write_text("x = 1\n")
    with pytest.raises(ValueError, match="must define STUDY"):
        load_study(script)


def test_kill_minus_nine_loses_only_cells_in_flight(tmp_path):
    script = tmp_path / "study_script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_study import tiny_study
            STUDY = tiny_study(name="killed", stems=("basic:width=4", "r2d:width=4", "dilated:width=4"))
            """
        )
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stemlab.cli",
            "study",
            "run",
            str(script),
            "--out",
            str(out),
            "--quiet",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "cells").glob("*.json"))) < 2:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = len(list((out / "cells").glob("*.json")))
    assert 2 <= done_before < 9, process.stderr.read().decode()[-2000:]
    study = load_study(script)
    resumed = run_study(study, out_dir=out, progress=False)
    assert resumed.skipped == done_before and resumed.ran == 9 - done_before
    cells = resumed.tables["cells"]
    assert len(cells) == 9 and cells["key"].is_unique and (cells["status"] == "ok").all()
    epochs = resumed.tables["epochs"]
    assert not epochs.duplicated(["key", "epoch"]).any()


def test_ray_and_local_give_the_same_summary(tmp_path):
    pytest.importorskip("ray")
    study = tiny_study(
        stems=("basic:width=4", "r2d:width=4"), seeds=(0, 1), probes=("flops", "activations")
    )
    local = run_study(study, out_dir=tmp_path / "local", progress=False, workers=2)
    remote = run_study(study, out_dir=tmp_path / "ray", progress=False, executor="ray", workers=2)
    columns = [
        "stem",
        "params",
        "gflops",
        "top1_mean",
        "top1_std",
        "n_seeds",
        "dead_channel_fraction",
    ]
    pd.testing.assert_frame_equal(
        local.tables["summary"][columns], remote.tables["summary"][columns], rtol=1e-5, atol=1e-6
    )
    assert (remote.tables["cells"]["status"] == "ok").all()
