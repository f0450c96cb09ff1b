"""Adversarial cases (issue 12): damaged study folders, two drivers, a killed driver, user mistakes.

Each test names the case it guards; every error is ours (type and key words asserted), and on the
command line it is one line on stderr with exit status 2 and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import stemlab
from stemlab import cli
from stemlab.errors import StemlabError, StemlabTypeError, StemlabWarning, StudyLockedError
from stemlab.study import CellStore, Study, config_hash, run_study
from stemlab.study.lock import LOCK_NAME, StudyLock, pid_alive
from stemlab.study.manifest import read_manifest

TINY_BACKBONE = {"widths": [4, 4, 8, 8], "layers": [1, 1, 1, 1]}
STUDY_OPTIONS = {
    "name": "adversarial",
    "backbones": {"r2plus1d_18": TINY_BACKBONE},
    "stems": ["r2d:width=4"],
    "seeds": [0],
    "data": {
        "dataset": "synthetic_motion",
        "train_samples": 8,
        "val_samples": 4,
        "clip_len": 4,
        "size": 16,
    },
    "training": {"epochs": 1, "batch_size": 4, "lr": 0.01},
    "probes": ["flops", "filters"],
    "profile": {"backbone": "r2plus1d_18", "input": [1, 3, 4, 16, 16], "kwargs": TINY_BACKBONE},
    "profile_probes": ["flops"],
    "latency_runs": 1,
    "description": "adversarial test study",
}
SMALL_VIDEO = {"widths": (8, 8, 16, 16), "layers": (1, 1, 1, 1)}
RECURRENT = {"widths": (8, 8, 16, 16), "layers": (1, 1, 1, 1), "hidden_size": 16}


def study_script(path: Path, **changes: object) -> Path:
    """A study file defining the tiny study (with ``changes``)."""
    options = {**STUDY_OPTIONS, **changes}
    path.write_text(
        f"from stemlab.study import Study\nSTUDY = Study(**{json.dumps(options)})\n".replace(
            "null", "None"
        )
    )
    return path


def cli_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("stemlab: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder with every cell finished (1 training cell with arrays + 1 profile cell)."""
    out = tmp_path_factory.mktemp("finished") / "study"
    run = run_study(Study(**STUDY_OPTIONS), out_dir=out, progress=False, device="cpu")
    assert (run.total, run.failed) == (2, 0)
    return out


@pytest.fixture
def study_copy(finished_study: Path, tmp_path: Path) -> Path:
    out = tmp_path / "study"
    shutil.copytree(finished_study, out)
    return out


def train_key(out: Path) -> str:
    return next(c.key for c in Study(**STUDY_OPTIONS).cells() if c.kind == "train")


# ---------------------------------------------------------------- damaged cells and manifest


def fake_record(store: CellStore, **config: object) -> str:
    config = {"kind": "train", "study": "s", "seed": 0, **config}
    key = config_hash(config)
    store.write(
        {
            "key": key,
            "kind": "train",
            "config": config,
            "status": "ok",
            "error": None,
            "seconds": 1.5,
            "result": {"metrics": {"top1": 0.25}},
            "arrays": {"filters": np.arange(64, dtype=np.float32).reshape(4, 16)},
        }
    )
    return key


def damaged_read(store: CellStore, key: str) -> str:
    with pytest.warns(StemlabWarning) as caught:
        assert store.read(key) is None
    message = str(caught[0].message)
    assert len(caught) == 1 and "\n" not in message
    assert not store.path(key).exists() and not store.arrays_path(key).exists()
    return message


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"[]", "not a JSON object but list"),
        (b'{"status": "ok"}', "missing field(s) key, kind, config, result"),
        (b'{"key": "x', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_damaged_cell_json_is_set_aside(tmp_path: Path, content: bytes, reason: str) -> None:
    store = CellStore(tmp_path)
    key = fake_record(store)
    store.path(key).write_bytes(content)
    message = damaged_read(store, key)
    assert f"damaged cell {key}" in message and reason in message
    assert "computed again" in message
    # nothing deleted: both files are in damaged/, the JSON with the user's bytes
    assert (store.damaged_dir / f"{key}.json").read_bytes() == content
    assert (store.damaged_dir / f"{key}.npz").is_file()
    assert not store.is_finished(key)


def test_forged_record_whose_config_does_not_hash_to_its_key(tmp_path: Path) -> None:
    store = CellStore(tmp_path)
    key = fake_record(store)
    record = json.loads(store.path(key).read_text())
    record["config"]["seed"] = 1  # hand-edited config, the file keeps the old name
    store.path(key).write_text(json.dumps(record))
    assert "not to its key (edited or forged)" in damaged_read(store, key)
    # a whole record copied under another cell's name
    key_a, key_b = fake_record(store, seed=2), fake_record(store, seed=3)
    shutil.copy(store.path(key_a), store.path(key_b))
    assert f"its key {key_a!r} is not its file name {key_b!r}" in damaged_read(store, key_b)
    assert store.is_finished(key_a)


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_array"])
def test_damaged_npz_is_set_aside(tmp_path: Path, damage: str) -> None:
    store = CellStore(tmp_path)
    key = fake_record(store)
    path = store.arrays_path(key)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "flip":
        import zipfile

        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("filters.npy")
        header = info.header_offset
        name_len, extra_len = np.frombuffer(bytes(data[header + 26 : header + 30]), "<u2")
        data[header + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        np.savez(path, other=np.zeros(2))
    message = damaged_read(store, key)
    assert f"{key}.npz" in message
    assert store.read_arrays(key) == {}


def test_set_aside_never_overwrites(tmp_path: Path) -> None:
    store = CellStore(tmp_path)
    key = fake_record(store)
    for _ in range(2):
        store.path(key).write_text("[]")
        damaged_read(store, key)
    names = sorted(p.name for p in store.damaged_dir.glob(f"{key}*.json"))
    assert len(names) == 2 and names[0] != names[1]


def test_damaged_cells_are_recomputed_and_report_uses_cells_not_csv(
    study_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, key = study_copy, train_key(study_copy)
    npz = out / "cells" / f"{key}.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    summary = out / "tables" / "summary.csv"
    summary.write_text(summary.read_text()[:20])  # a truncated summary must not be trusted
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text()[:-60])  # truncated inside "versions"
    code, _, err = cli_run(capsys, "report", str(out))
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("stemlab: warning: damaged")]
    assert len(warned) == 2 and "Traceback" not in err  # the cell and the manifest
    assert any(f"damaged cell {key}" in w and "BadZipFile" in w for w in warned)
    assert any("manifest.json: not valid JSON" in w for w in warned)
    # the damaged cell is set aside; the report is rebuilt from the remaining cell
    assert (out / "cells" / "damaged" / f"{key}.npz").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["name"] == "adversarial"
    # counted against the study's grid: the set-aside cell is missing, not out of the total
    assert manifest["cells"] == {**manifest["cells"], "total": 2, "ok": 1, "failed": 0}
    assert manifest["cells"]["missing"] == 1
    assert list(out.glob("manifest.json.damaged-*"))
    # resume recomputes exactly the set-aside cell
    run = run_study(Study(**STUDY_OPTIONS), out_dir=out, progress=False, device="cpu")
    assert (run.skipped, run.ran, run.failed) == (1, 1, 0)
    assert CellStore(out / "cells").is_finished(key)
    code, _, err = cli_run(capsys, "report", str(out))
    assert code == 0, err
    rows = (out / "tables" / "summary.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and "r2d:width=4" in rows[1]


def test_truncated_manifest_keeps_run_history_and_config(study_copy: Path) -> None:
    path = study_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["runs"] = manifest["runs"] * 3
    text = json.dumps(manifest, indent=2, sort_keys=True)
    path.write_text(text[: text.index('"study":')])  # cut after "runs", before the end
    with pytest.warns(StemlabWarning, match=r"3 run\(s\) of history kept"):
        rebuilt = read_manifest(study_copy)
    assert rebuilt["runs"] == manifest["runs"]
    assert rebuilt["config"]["description"] == "adversarial test study"  # salvaged, not guessed
    assert rebuilt["cells"]["total"] == 2
    assert read_manifest(study_copy) == json.loads(path.read_text())  # valid now: no warning


@pytest.mark.parametrize(
    "content", ["[]", '{"study": 3}', '{"study": "x", "quick": false, "config": {"name": 1}}']
)
def test_manifest_of_wrong_types_is_rebuilt_from_cells(study_copy: Path, content: str) -> None:
    (study_copy / "manifest.json").write_text(content)
    with pytest.warns(StemlabWarning, match="rebuilt from the cells"):
        rebuilt = read_manifest(study_copy)
    study = Study(**rebuilt["config"])  # recovered from the cells' configs
    assert {c.key for c in study.cells()} == {c.key for c in Study(**STUDY_OPTIONS).cells()}
    assert rebuilt["cells"]["ok"] == 2 and rebuilt["runs"] == []
    aside = list(study_copy.glob("manifest.json.damaged-*"))
    assert len(aside) == 1 and aside[0].read_text() == content


# ---------------------------------------------------------------- one driver per folder


def test_lock_records_owner_and_is_released(tmp_path: Path) -> None:
    with StudyLock(tmp_path, command="stemlab study run x.py") as lock:
        owner = json.loads((tmp_path / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and owner["command"] == "stemlab study run x.py"
        assert {"host", "started", "started_epoch"} <= set(owner)
        with pytest.raises(StudyLockedError, match=rf"pid {os.getpid()} on .* --wait"):
            StudyLock(tmp_path).acquire()
        assert lock.owner == owner
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_and_unreadable_locks_are_taken_over(tmp_path: Path) -> None:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert not pid_alive(finished.pid)
    import socket

    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"pid": finished.pid, "host": socket.gethostname()}))
    with (
        pytest.warns(StemlabWarning, match=rf"stale lock .*pid {finished.pid}"),
        StudyLock(tmp_path),
    ):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    path.write_text("{")
    old = time.time() - 60
    os.utime(path, (old, old))
    with pytest.warns(StemlabWarning, match="unreadable lock file"), StudyLock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def _driver(script: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stemlab.cli", "study", "run", str(script), "--out", str(out),
         "--quiet", "--device", "cpu", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def test_second_driver_exits_2_naming_the_owner(finished_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "study"
    shutil.copytree(finished_study, out)
    script = study_script(tmp_path / "study_file.py")
    lock = StudyLock(out, command="first driver")
    lock.acquire()
    try:
        start = time.monotonic()
        with pytest.raises(StudyLockedError, match=f"pid {os.getpid()}"):
            run_study(Study(**STUDY_OPTIONS), out_dir=out, progress=False, device="cpu")
        in_process = time.monotonic() - start
        assert in_process < 1.0
        start = time.monotonic()
        second = _driver(script, out)
        _, err = second.communicate(timeout=120)
        seconds = time.monotonic() - start
        line = assert_one_line_error(second.returncode, err, "another stemlab driver")
        assert f"(pid {os.getpid()} on " in line and f"is running on {out}" in line
        assert "--wait" in line
        print(f"second driver: refused in {in_process:.3f} s, CLI exited in {seconds:.2f} s")
    finally:
        lock.release()
    assert not (out / LOCK_NAME).exists()


def test_wait_polls_until_the_folder_is_free(tmp_path: Path) -> None:
    import threading

    messages: list[str] = []
    acquired = threading.Event()
    holder = StudyLock(tmp_path, command="first driver")
    holder.acquire()
    waiter = StudyLock(tmp_path, wait=True, poll_seconds=0.02, on_wait=messages.append)
    thread = threading.Thread(target=lambda: (waiter.acquire(), acquired.set()))
    try:
        thread.start()
        time.sleep(0.3)
        assert not acquired.is_set()
        assert messages == [
            f"stemlab: waiting for the driver (pid {os.getpid()} on {holder.owner['host']}) "
            f"that is running on {tmp_path}"
        ]
    finally:
        holder.release()
    assert acquired.wait(5.0)
    thread.join()
    assert (
        json.loads((tmp_path / LOCK_NAME).read_text())["started_epoch"]
        == waiter.owner["started_epoch"]
    )
    waiter.release()
    assert cli.build_parser().parse_args(["study", "run", "x.py", "--wait"]).wait is True


def _children(pid: int) -> set[int]:
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.add(int(stat.parent.name))
    return children


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_within_seconds_when_the_driver_is_killed(tmp_path: Path) -> None:
    script = study_script(
        tmp_path / "slow_study.py",
        stems=["r2d:width=4", "basic:width=4", "c3d:width=4"],
        training={"epochs": 30, "batch_size": 4, "lr": 0.01},
    )
    out = tmp_path / "out"
    driver = _driver(script, out, "--workers", "2")
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        # the workers are up once the (fast) profile cells come back
        while time.monotonic() < deadline and not list((out / "cells").glob("*.json")):
            workers = _children(driver.pid) or workers
            time.sleep(0.1)
        workers |= _children(driver.pid)
        assert len(workers) >= 2, driver.stderr.read() if driver.poll() is not None else ""
        os.kill(driver.pid, signal.SIGKILL)
        killed = time.monotonic()
        driver.wait()
        alive = set(workers)
        while alive and time.monotonic() - killed < 30:
            alive = {pid for pid in alive if pid_alive(pid)}
            time.sleep(0.05)
        seconds = time.monotonic() - killed
    finally:  # never leave a worker behind, even when the test fails
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in workers | _children(driver.pid):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not alive, f"workers {sorted(alive)} outlived their driver by {seconds:.1f} s"
    assert seconds < 5.0
    print(f"{len(workers)} processes exited {seconds:.2f} s after kill -9 of the driver")
    # the killed driver's lock is stale: the next driver takes it over
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == driver.pid
    with pytest.warns(StemlabWarning, match="stale lock"), StudyLock(out):
        pass


# ---------------------------------------------------------------- our own errors (Python API)


@pytest.mark.parametrize("dtype", [torch.float64, torch.uint8, torch.int64])
def test_model_refuses_input_dtype(dtype: torch.dtype) -> None:
    model = stemlab.create_model("r3d_18", num_classes=3, **SMALL_VIDEO)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ValueError, match=f"float32, float16 or bfloat16 input, got dtype {name}"):
        model(torch.zeros(1, 3, 4, 16, 16, dtype=dtype))
    model.double()  # a model converted to float64 takes float64
    assert model.eval()(torch.zeros(1, 3, 4, 16, 16, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("backbone", ["cnn_lstm", "cnn_gru", "r3d_18"])
def test_empty_batch_is_refused(backbone: str) -> None:
    kwargs = RECURRENT if backbone.startswith("cnn") else SMALL_VIDEO
    model = stemlab.create_model(backbone, num_classes=3, **kwargs).eval()
    with pytest.raises(ValueError, match=r"empty batch \(N=0\), shape \(0, 3, 4, 16, 16\)"):
        model(torch.zeros(0, 3, 4, 16, 16))


def test_grad_cam_errors_are_ours() -> None:
    from stemlab.probes import grad_cam

    model = stemlab.create_model("r3d_18", num_classes=5, **SMALL_VIDEO)
    x = torch.randn(2, 3, 4, 32, 32)
    with pytest.raises(ValueError, match=r"target 7 is out of range: the model has 5 classes, so targets must be in \[0, 4\]"):  # fmt: skip
        grad_cam(model, x, 7)
    with pytest.raises(ValueError, match=r"target \[1, 5\] is out of range"):
        grad_cam(model, x, [1, 5])
    with pytest.raises(ValueError, match=r"empty batch \(N=0\)"):
        grad_cam(model, x[:0], 1)
    with pytest.raises(ValueError, match=r"'avgpool' has a map of size 1 .* all zeros") as info:
        grad_cam(model, x, 1, layer="avgpool")
    assert "layer3 (1x4x4), layer4 (1x2x2)" in str(info.value)
    recurrent = stemlab.create_model("cnn_lstm", num_classes=5, **RECURRENT)
    with pytest.raises(ValueError, match=r"layer 'rnn' \(LSTM\) returns a tuple.* no Grad-CAM"):
        grad_cam(recurrent, x, 1, layer="rnn")
    for m in (model, recurrent):
        assert sum(len(mod._forward_hooks) for mod in m.modules()) == 0


def test_flops_table_removes_every_hook_when_the_forward_raises() -> None:
    from stemlab.probes import flops_table

    model = stemlab.create_model("r3d_18", num_classes=3, **SMALL_VIDEO).train()

    def count() -> list[int]:
        return [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]

    def fail(*_: object) -> None:
        raise RuntimeError("forward failed")

    model.layer3.register_forward_hook(fail)
    before = count()
    with pytest.raises(RuntimeError, match="forward failed"):
        flops_table(model, torch.randn(1, 3, 4, 16, 16))
    assert count() == before and model.training


def test_channel_counts_and_non_finite_numbers_are_refused() -> None:
    from stemlab._validation import MAX_CHANNELS, check_positive_float

    with pytest.raises(ValueError, match=rf"width=10000000000 is too large: .* \[1, {MAX_CHANNELS}\]"):  # fmt: skip
        stemlab.create_stem("wide", width=10**10)
    with pytest.raises(ValueError, match=r"widths=.* is too large"):
        stemlab.create_model("r3d_18", widths=(8, 8, 16, 10**9), layers=(1, 1, 1, 1))
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="lr must be a finite number"):
            check_positive_float("lr", bad)
    with pytest.raises(StemlabTypeError, match="width must be an int"):
        stemlab.create_stem("wide", width=2.5)


def test_resolve_device_errors() -> None:
    from stemlab.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device='gpu0' is not a device name"):
        resolve_device("gpu0")
    with pytest.raises(TypeError, match=r"device must be a str or torch\.device"):
        resolve_device(0)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda:1' was asked for but CUDA is not available"):
            resolve_device("cuda:1")


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("STUDY = (\n", ["line 1: SyntaxError"]),
        ("import sys\nsys.exit('no data folder here')\n", ["stopped: no data folder here"]),
        ("import sys\nsys.exit(3)\n", ["called sys.exit(3)"]),
        ("x = 1\ny = {}['missing']\n", ["line 2: KeyError: 'missing'"]),
        (
            "from stemlab.study import Study\nSTUDY = Study(name='x', backbones={'r3d_18': {}},"
            " stems=['basic'], seeds=[0, 0], data={'dataset': 'synthetic_motion'}, training={})\n",
            ["line 2: ValueError: Study seeds repeat"],
        ),
    ],
)
def test_study_file_errors_are_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    source: str,
    words: list[str],
) -> None:
    script = tmp_path / "bad_study.py"
    script.write_text(source)
    monkeypatch.chdir(tmp_path)  # a relative path, as users type it
    code, _, err = cli_run(capsys, "study", "run", "bad_study.py", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "study file bad_study.py", *words)
    assert not (tmp_path / "o").exists()


def test_up_front_checks_before_the_first_cell(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = study_script(tmp_path / "study_file.py")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = cli_run(capsys, "study", "run", str(script), "--out", str(blocker / "out"))
    assert_one_line_error(code, err, f"output folder {blocker / 'out'} is not writable", "--out")
    if not torch.cuda.is_available():
        out = tmp_path / "cuda_out"
        code, _, err = cli_run(capsys, "study", "run", str(script), "--device", "cuda", "--out",
                               str(out))  # fmt: skip
        assert_one_line_error(code, err, "device='cuda'", "CUDA is not available")
        assert not out.exists()
        code, _, err = cli_run(capsys, "inspect", "r3d_18", "--device", "cuda")
        assert_one_line_error(code, err, "CUDA is not available")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["inspect", "r2plus1d_18", "--input", "1x3x16x112"],
            "stemlab: error: inspect --input 1x3x16x112 has 4 dims; r2plus1d_18 takes "
            "N x C x T x H x W (e.g. 1x3x16x112x112)",
        ),
        (
            ["inspect", "resnet18", "--input", "1x3x8x32x32"],
            "stemlab: error: inspect --input 1x3x8x32x32 has 5 dims; resnet18 takes "
            "N x C x H x W (e.g. 1x3x224x224)",
        ),
        (
            ["inspect", "r3d_18", "--input", "1x1x4x16x16"],
            "stemlab: error: inspect --input 1x1x4x16x16 has C=1; r3d_18 with stem native takes "
            "C=3 (the second number)",
        ),
        (
            ["inspect", "r3d_18", "--stem", "wide:width=10**10"],
            "stemlab: error: stem spec 'wide:width=10**10': value of 'width' must be a Python "
            "literal, got '10**10'",
        ),
        (
            ["inspect", "r3d_18", "--stem", "wide:width=10000000000"],
            "stemlab: error: width=10000000000 is too large: channel counts must be in [1, 8192]",
        ),
        (
            ["inspect", "r3d_18", "--stem", "resnet:pool=3"],
            "stemlab: error: --stem resnet:pool=3: pool must be a bool, got 3",
        ),
    ],
)
def test_cli_user_mistakes_exact_messages(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    code, out, err = cli_run(capsys, *argv)
    assert out == "" and assert_one_line_error(code, err) == expected
    assert "unsqueeze" not in err and "tensor(" not in err


def test_filters_out_folder_and_untrained_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = cli_run(capsys, "filters", "r3d_18", "--stem", "basic:width=4", "--out",
                             str(tmp_path))  # fmt: skip
    assert code == 0, err
    written = tmp_path / "r3d_18-basic_width_4-filters.png"
    assert written.read_bytes()[:4] == b"\x89PNG"
    assert out.startswith(f"wrote {written}: ")
    assert err.strip() == (
        "stemlab: warning: no --weights given: these are the filters of an untrained model "
        "(random init)"
    )
    code, out, _ = cli_run(capsys, "filters", "r3d_18", "--stem", "basic:width=4", "--out",
                           str(tmp_path / "plain"))  # fmt: skip
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'plain.png'}: ")
    assert (tmp_path / "plain.png").is_file()


def test_cli_reports_only_our_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def raising(error: BaseException):
        def handler(_args: object) -> int:
            raise error

        return handler

    monkeypatch.setattr(cli, "_run_list", raising(StemlabTypeError("width must be an int")))
    code, _, err = cli_run(capsys, "list")
    assert_one_line_error(code, err, "width must be an int")
    for bug in (KeyError("x"), IndexError("y"), AttributeError("z"), TypeError("w")):
        monkeypatch.setattr(cli, "_run_list", raising(bug))
        with pytest.raises(type(bug)):
            cli.main(["list"])
    assert issubclass(StudyLockedError, StemlabError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "import_module" not in Path(cli.__file__).read_text()
