"""A study from pretrained weights, end to end: a generated torchvision-shaped checkpoint, a
generated class-per-folder mp4 dataset with UCF101-style split files, three stems; and the UCF101
and HMDB51 transfer studies' refusal when their data or checkpoint are missing."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch

from stemlab import create_model
from stemlab.report import render_report
from stemlab.study import Study, load_study, run_study
from stemlab.weights import resolve_torchvision_weights, torchvision_weights_path

REPO = Path(__file__).resolve().parents[1]
TINY = {"widths": [4, 8, 8, 8], "layers": [1, 1, 1, 1]}
CLASSES = ("Clap", "Jump", "Wave")
STEMS = ("native", "wide", "large_kernel", "r2plus1d")


def _write_mp4(path: Path, *, level: int, seed: int, frames: int = 6) -> None:
    """A short 24x32 clip: noise around a class-specific grey level, moving one pixel a frame."""
    rng = np.random.default_rng(seed)
    base = np.clip(rng.normal(level, 40, size=(24, 40, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = 24, 32, "yuv420p"
        for k in range(frames):
            image = np.ascontiguousarray(base[:, k : k + 32])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def ucf_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/<Class>/v_<Class>_gXX_c01.mp4`` with ``trainlist01.txt`` / ``testlist01.txt``."""
    root = tmp_path_factory.mktemp("ucf_like")
    train, test = [], []
    for label, name in enumerate(CLASSES):
        for group in range(1, 5):
            entry = f"{name}/v_{name}_g{group:02d}_c01.mp4"
            _write_mp4(root / entry, level=60 + 70 * label, seed=10 * label + group)
            (test if group == 4 else train).append(entry)
            if group < 4:
                train[-1] += f" {label + 1}"
    (root / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (root / "testlist01.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision-shaped r3d_18 state dict (tiny stages, 5-class head), every tensor random."""
    torch.manual_seed(0)
    model = create_model("r3d_18", num_classes=5, **TINY)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if key.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif key.endswith("running_mean") or key.endswith(".bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif key.endswith(".weight") and tensor.dim() == 1:  # BN scales
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    path = tmp_path_factory.mktemp("hub") / "r3d_18_tiny.pth"
    torch.save(model.state_dict(), path)
    return path


def _report_counts(stem: str | None, weights: Path) -> dict[str, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = create_model("r3d_18", stem=stem, num_classes=len(CLASSES), weights=weights, **TINY)
    counts = model.weights_report["action"].value_counts()
    return {a: int(counts.get(a, 0)) for a in ("loaded", "transferred", "initialized")}


def test_study_from_pretrained_checkpoint_end_to_end(
    ucf_like: Path, checkpoint: Path, tmp_path: Path
) -> None:
    study = Study(
        name="pretrained_e2e",
        backbones={"r3d_18": TINY},
        stems=list(STEMS),
        seeds=[0],
        weights=str(checkpoint),
        head_lr_multiplier=10.0,
        data={
            "dataset": "video_folder",
            "root": str(ucf_like),
            "train_split": str(ucf_like / "trainlist01.txt"),
            "val_split": str(ucf_like / "testlist01.txt"),
            "clip_len": 4,
            "size": 32,
            "sampling": "random",
            "progress": False,
        },
        training={"epochs": 1, "batch_size": 3, "lr": 0.01, "optimizer": "sgd"},
        probes=["flops"],
    )
    start = time.perf_counter()
    run = run_study(study, out_dir=tmp_path, device="cpu", progress=False)
    seconds = time.perf_counter() - start
    cells = run.tables["cells"]
    assert run.failed == 0, cells.get("error")
    summary = run.tables["summary"].set_index("stem")
    assert list(summary.index) == list(STEMS)

    for stem in STEMS:
        expected = _report_counts(None if stem == "native" else stem, checkpoint)
        got = {a: int(summary.loc[stem, f"weights_{a}"]) for a in expected}
        assert got == expected, stem
    state = torch.load(checkpoint, weights_only=True)
    native = summary.loc["native"]
    # Only the 5-class head does not fit the 3-class model.
    assert int(native["weights_loaded"]) == len(state) - 2
    assert int(native["weights_transferred"]) == 0 and int(native["weights_initialized"]) == 2
    assert math.isnan(native["transfer_feature_rel_error"])
    assert math.isnan(native["transfer_feature_cosine"])
    # Exact rules report no numeric error; the SVD factorisation reports its truncation error.
    assert summary["transfer_error"].isna().tolist() == [True, True, True, False]
    # large_kernel: the (3,7,7) kernel zero-padded to (5,11,11): the same function.
    large = summary.loc["large_kernel"]
    assert int(large["weights_transferred"]) == 1
    assert large["transfer_feature_rel_error"] < 1e-5
    assert large["transfer_feature_cosine"] > 0.9999
    # wide: Net2Wider (filter copies; layer1.0 reads each copy at 1/k): exact in eval mode.
    wide = summary.loc["wide"]
    assert int(wide["weights_transferred"]) > 1
    assert wide["transfer_feature_rel_error"] < 1e-5
    assert wide["transfer_feature_cosine"] > 0.9999
    # r2plus1d: a rank-22 SVD of the random (64, 3, 3, 7, 7) kernel: close to, not at, the source.
    svd = summary.loc["r2plus1d"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = create_model(
            "r3d_18", stem="r2plus1d", num_classes=len(CLASSES), weights=checkpoint, **TINY
        ).weights_report
    stated = report["detail"].str.extract(r"reconstruction error ([0-9.]+)")[0].dropna()
    assert svd["transfer_error"] == report.attrs["svd_relative_error"]
    assert f"{svd['transfer_error']:.4g}" == stated.iloc[0]
    assert 0.1 < svd["transfer_error"] < 1
    assert 1e-3 < svd["transfer_feature_rel_error"] < 1
    assert 0.5 < svd["transfer_feature_cosine"] < 0.9999
    print(
        f"\nr2plus1d (SVD): transfer_error {svd['transfer_error']:.4f}, rel error "
        f"{svd['transfer_feature_rel_error']:.3e}, cosine {svd['transfer_feature_cosine']:.6f}"
    )
    print(
        f"survival (rel error, cosine): large_kernel {large['transfer_feature_rel_error']:.2e} "
        f"{large['transfer_feature_cosine']:.8f}; wide {wide['transfer_feature_rel_error']:.2e} "
        f"{wide['transfer_feature_cosine']:.8f}; run_study {seconds:.1f} s"
    )

    trained = cells[cells["kind"] == "train"].set_index("stem")
    assert (trained["num_classes"] == len(CLASSES)).all()
    assert trained["top1"].between(0, 1).all()
    paths = render_report(tmp_path)
    markdown = paths["markdown"].read_text()
    assert "weights_transferred" in markdown or "transferred" in markdown
    assert paths["html"].stat().st_size > 1000
    saved = pd.read_csv(tmp_path / "tables" / "summary.csv").set_index("stem")
    assert int(saved.loc["wide", "weights_transferred"]) == int(wide["weights_transferred"])


def _cli(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_overrides}
    env.pop("STEMLAB_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "stemlab.cli", "study", "run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


REFUSALS = {
    "ucf101_transfer": (
        "STEMLAB_UCF101",
        'prepare_ucf101("UCF-101", "{data}", split_dir="ucfTrainTestlist")',
    ),
    "hmdb51_transfer": (
        "STEMLAB_HMDB51",
        'prepare_hmdb51("testTrainMulti_7030_splits", "{data}")',
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_dataset_study_refuses_without_data_or_checkpoint(name: str, tmp_path: Path) -> None:
    variable, call = REFUSALS[name]
    data, cache = tmp_path / "data", tmp_path / "torch"
    data.mkdir()
    cache.mkdir()
    out = tmp_path / "out"
    start = time.perf_counter()
    result = _cli(
        {variable: str(data), "TORCH_HOME": str(cache)}, f"studies/{name}.py", "--out", str(out)
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 2, result.stderr
    assert seconds < 60
    message = result.stderr.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1
    assert message.startswith(f"stemlab: error: {name} cannot start.")
    weights = resolve_torchvision_weights("KINETICS400_V1", backbone="r3d_18")
    expected_path = cache / "hub" / "checkpoints" / Path(weights.url).name
    assert call.format(data=data) in message
    assert "python -c" in message and variable in message
    assert str(expected_path) in message and weights.url in message
    assert not out.exists()  # stopped before any cell


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_dataset_study_loads_when_data_and_checkpoint_exist(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, cache = tmp_path / "data", tmp_path / "torch"
    (data / "some_class").mkdir(parents=True)
    (data / "trainlist01.txt").write_text("some_class/a.avi 1\n")
    (data / "testlist01.txt").write_text("some_class/b.avi\n")
    monkeypatch.setenv(REFUSALS[name][0], str(data))
    monkeypatch.setenv("TORCH_HOME", str(cache))
    weights = resolve_torchvision_weights("KINETICS400_V1", backbone="r3d_18")
    path = torchvision_weights_path(weights)
    assert path == cache / "hub" / "checkpoints" / Path(weights.url).name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"only its presence is checked when the study loads")
    study = load_study(REPO / "studies" / f"{name}.py")
    assert study.name == name
    assert list(study.stems) == ["native", "wide", "large_kernel", "channel_attention", "r2plus1d"]
    assert list(study.seeds) == [0, 1, 2] and study.weights == "KINETICS400_V1"
    assert study.head_lr_multiplier == 10.0 and list(study.backbones) == ["r3d_18"]
    assert study.data["train_split"] == str(data / "trainlist01.txt")
    assert study.data["val_split"] == str(data / "testlist01.txt")
    assert len(study.cells()) == 5 * 3 + 5
