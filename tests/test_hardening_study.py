"""Hardening of studies, round 2 (issue 17): reports never replaced by poorer ones, workers that
know the study file's stems, dead workers recorded, a store that validates what it reads, counts
against the grid, the lock over the report, and the smaller cases (one line each).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from stemlab import cli
from stemlab.errors import StemlabError, StemlabWarning, StudyLockedError
from stemlab.study import CellStore, Study, config_hash, executors, run_study
from stemlab.study import store as store_module
from stemlab.study.lock import LOCK_NAME, StudyLock, lock_owner
from stemlab.study.runner import check_device_name, check_study, default_out_dir
from stemlab.study.store import MAX_DEPTH, StoreWriteError

TINY_BACKBONE = {"widths": [4, 4, 8, 8], "layers": [1, 1, 1, 1]}
DATA = {
    "dataset": "synthetic_motion",
    "train_samples": 8,
    "val_samples": 4,
    "clip_len": 4,
    "size": 16,
}
OPTIONS = {
    "name": "hardening",
    "backbones": {"r2plus1d_18": TINY_BACKBONE},
    "stems": ["r2d:width=4"],
    "seeds": [0, 1],
    "data": DATA,
    "training": {"epochs": 1, "batch_size": 4, "lr": 0.01},
    "probes": ["flops"],
    "quick": {"seeds": [0]},
}


def tiny(**changes: object) -> Study:
    return Study(**{**OPTIONS, **changes})


def cli_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *words: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("stemlab: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder with both training cells finished and its report drawn."""
    from stemlab.report import render_report

    out = tmp_path_factory.mktemp("finished") / "study"
    run = run_study(tiny(), out_dir=out, progress=False, device="cpu", after=None)
    assert (run.total, run.failed) == (2, 0)
    render_report(out)
    return out


@pytest.fixture
def copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "study"
    shutil.copytree(finished, out)
    return out


# ------------------------------------------------- 1. nothing a user made is lost


def test_report_without_cells_refuses_and_keeps_the_report(copy: Path, capsys) -> None:
    page = (copy / "index.html").read_bytes()
    shutil.rmtree(copy / "cells")  # a fresh clone: cells/ is not committed
    code, _, err = cli_run(capsys, "report", str(copy))
    line = one_line_error(code, err, f"report: {copy} has no finished cells", "2 cell(s)")
    assert "with an empty one" in line
    assert (copy / "index.html").read_bytes() == page
    assert not (copy / LOCK_NAME).exists()


def test_report_with_fewer_cells_refuses_unless_force(copy: Path, capsys) -> None:
    store = CellStore(copy / "cells")
    store.path(store.stored_keys()[0]).unlink()
    page = (copy / "index.html").read_bytes()
    code, _, err = cli_run(capsys, "report", str(copy))
    one_line_error(code, err, "holds 1 finished cell(s) but its report was drawn from 2", "--force")
    assert (copy / "index.html").read_bytes() == page
    code, _, err = cli_run(capsys, "report", str(copy), "--force")
    assert code == 0, err
    # 5. counted against the study's grid, never a rewritten total
    manifest = json.loads((copy / "manifest.json").read_text())
    assert {k: manifest["cells"][k] for k in ("total", "ok", "failed", "missing")} == {
        "total": 2,
        "ok": 1,
        "failed": 0,
        "missing": 1,
    }
    assert "1 of 2 cells finished" in (copy / "report.md").read_text()


def test_quick_run_has_its_own_folder_and_never_replaces_a_full_run(copy: Path, capsys) -> None:
    assert default_out_dir(tiny(), quick=True) == Path("reports") / "hardening-quick"
    assert default_out_dir(tiny()) == Path("reports") / "hardening"
    with pytest.raises(ValueError, match="holds a full \\(not --quick\\) run with 2 finished"):
        run_study(tiny(), out_dir=copy, quick=True, progress=False, device="cpu")
    assert not (copy / LOCK_NAME).exists()
    script = copy.parent / "hardening.py"
    script.write_text(f"from stemlab.study import Study\nSTUDY = Study(**{OPTIONS!r})\n")
    code, _, err = cli_run(capsys, "study", "run", str(script), "--quick", "--out", str(copy))
    one_line_error(code, err, f"{copy} holds a full", "reports/<name>-quick", "--force")


def test_disk_full_during_a_cell_write(tmp_path: Path, monkeypatch, capsys) -> None:
    real = store_module._write_all

    def full(handle, data, path):
        if path.parent.name == "cells":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle, data, path)

    monkeypatch.setattr(store_module, "_write_all", full)
    out = tmp_path / "study"
    with pytest.raises(StoreWriteError, match="No space left on device") as caught:
        run_study(tiny(seeds=[0]), out_dir=out, progress=False, device="cpu")
    message = str(caught.value)
    assert message.startswith(f"cannot write {out / 'cells'}") and "free some space" in message
    assert "\n" not in message and caught.value.errno == errno.ENOSPC
    assert not (out / LOCK_NAME).exists()
    assert list((out / "cells").iterdir()) == []  # no temporary file left behind


def test_disk_full_during_a_table_write_keeps_the_cells(tmp_path: Path, monkeypatch) -> None:
    real = store_module._write_all

    def full(handle, data, path):
        if path.parent.name == "tables":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle, data, path)

    monkeypatch.setattr(store_module, "_write_all", full)
    out = tmp_path / "study"
    with pytest.raises(StoreWriteError, match=f"cannot write {out / 'tables'}"):
        run_study(tiny(seeds=[0]), out_dir=out, progress=False, device="cpu")
    assert len(CellStore(out / "cells").stored_keys()) == 1  # the finished cell is kept
    assert not (out / LOCK_NAME).exists()


def test_disk_full_while_writing_the_lock_leaves_no_lock(tmp_path: Path, monkeypatch) -> None:
    from stemlab.study import lock as lock_module

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock_module.os, "fsync", full)
    with pytest.raises(StemlabError, match=r"cannot create the lock .*No space left on device"):
        StudyLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()


def _mount_tmpfs(path: Path, size: str = "64k") -> bool:
    path.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_full_disk_before_the_start_on_a_real_tmpfs(tmp_path: Path, capsys) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with open(disk / "filler", "wb") as handle, pytest.raises(OSError):
            handle.write(b"\0" * 200_000)
            handle.flush()
        script = tmp_path / "hardening.py"
        script.write_text(f"from stemlab.study import Study\nSTUDY = Study(**{OPTIONS!r})\n")
        out = disk / "study"
        code, _, err = cli_run(capsys, "study", "run", str(script), "--out", str(out))
        one_line_error(code, err, f"output folder {out} is not writable", "No space left")
        assert not (out / LOCK_NAME).exists()
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_report_on_a_read_only_folder(copy: Path, monkeypatch, capsys) -> None:
    from stemlab.study import runner

    def read_only(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(runner, "open", read_only, raising=False)
    code, _, err = cli_run(capsys, "report", str(copy))
    one_line_error(
        code, err, f"output folder {copy} is not writable (Permission denied)", "somewhere writable"
    )


def test_report_on_a_read_only_mount(copy: Path, tmp_path: Path, capsys) -> None:
    disk = tmp_path / "ro"
    if not _mount_tmpfs(disk, "8m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        shutil.copytree(copy, disk / "study")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        code, _, err = cli_run(capsys, "report", str(disk / "study"))
        one_line_error(code, err, "is not writable (Read-only file system)")
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------- 2 + 3. the study file in every worker; dead workers

STUDY_FILE = """
import os, signal
import stemlab
from stemlab.study import Study


@stemlab.register_stem("hardening_stem")
def hardening_stem(*, in_channels: int = 3, width: int = 4, die: int = 0):
    \"\"\"A stem of the study file; die=9 kills its worker, die=-3 exits it with code 3.\"\"\"
    if die == 9:
        os.kill(os.getpid(), signal.SIGKILL)
    if die == -3:
        os._exit(3)
    return stemlab.stems.conv_stem(in_channels=in_channels, width=width, kernel_size=(1, 3, 3))


STUDY = Study(**OPTIONS)
"""


def test_study_file_stems_in_spawned_workers_and_dead_workers_recorded(
    tmp_path: Path, capsys
) -> None:
    options = {
        **OPTIONS,
        "name": "workers",
        "seeds": [0],
        "stems": ["hardening_stem:width=4", "hardening_stem:die=9", "hardening_stem:die=-3"],
    }
    script = tmp_path / "workers_study.py"
    script.write_text(STUDY_FILE.replace("OPTIONS", repr(options)))
    out = tmp_path / "out"
    code, _, err = cli_run(
        capsys, "study", "run", str(script), "--workers", "2", "--out", str(out), "--quiet"
    )
    assert code == 1, err  # two cells failed; the study went on and wrote its report
    assert (out / "index.html").is_file() and (out / "tables" / "cells.csv").is_file()
    store = CellStore(out / "cells")
    records = {r["config"]["stem"]: r for r in map(store.read, store.stored_keys())}
    ok = records["hardening_stem:width=4"]
    assert ok["status"] == "ok", ok["error"]  # the stem exists in the spawned worker
    assert 0.0 <= ok["result"]["metrics"]["top1"] <= 1.0
    killed, exited = records["hardening_stem:die=9"], records["hardening_stem:die=-3"]
    assert killed["status"] == exited["status"] == "failed"
    assert killed["error"] == (
        "the worker process running this cell was killed by signal 9 (SIGKILL) "
        "(the out-of-memory killer sends SIGKILL)"
    )
    assert exited["error"] == "the worker process running this cell exited with code 3"
    assert (killed["exit_code"], exited["exit_code"]) == (-9, 3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {k: manifest["cells"][k] for k in ("total", "ok", "failed")} == {
        "total": 3,
        "ok": 1,
        "failed": 2,
    }
    assert not (out / LOCK_NAME).exists()


class _Ref:
    """A task reference (hashable by identity, as Ray's are)."""

    def __init__(self, config: dict, kwargs: dict) -> None:
        self.config, self.kwargs = config, kwargs


class _FakeRay(types.ModuleType):
    """Just enough of Ray for :class:`RayExecutor`: tasks run at once, ``crash`` ones crash."""

    def __init__(self, *, init_error: Exception | None = None, crash: str = "") -> None:
        super().__init__("ray")
        self.init_error, self.crash, self.started = init_error, crash, False

        class RayError(Exception):
            pass

        class WorkerCrashedError(RayError):
            pass

        self.exceptions = types.SimpleNamespace(
            RayError=RayError, WorkerCrashedError=WorkerCrashedError
        )

    def is_initialized(self) -> bool:
        return self.started

    def init(self, **kwargs: object) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.started = True

    def shutdown(self) -> None:
        self.started = False

    def remote(self, **options: object):
        fake = self

        def wrap(function):
            class Remote:
                @staticmethod
                def remote(config, **kwargs):
                    return _Ref(config, kwargs)

            fake.function = function
            return Remote

        return wrap

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        config, kwargs = ref.config, ref.kwargs
        if config["stem"] == self.crash:
            raise self.exceptions.WorkerCrashedError("The worker died unexpectedly (SIGKILL)")
        return executors.failed_record(config, "ran", threads=kwargs["threads"]) | {"status": "ok"}


def test_ray_worker_crash_is_a_failed_cell(monkeypatch) -> None:
    fake = _FakeRay(crash="basic:width=4")
    monkeypatch.setitem(sys.modules, "ray", fake)
    cells = tiny(stems=["r2d:width=4", "basic:width=4"], seeds=[0]).cells()
    seen: list[dict] = []
    executors.RayExecutor(workers=2, device="cpu").run(cells, seen.append)
    status = {r["config"]["stem"]: (r["status"], r["error"]) for r in seen}
    assert status["r2d:width=4"] == ("ok", "ran")
    assert status["basic:width=4"] == (
        "failed",
        "the Ray worker running this cell died (WorkerCrashedError: The worker died "
        "unexpectedly (SIGKILL))",
    )
    assert fake.function is executors._ray_cell  # which runs the study file first


def test_unreachable_ray_address_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(
        sys.modules, "ray", _FakeRay(init_error=ConnectionError("GCS at 10.9.9.9:6379 timed out"))
    )
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:6379")
    script = tmp_path / "hardening.py"
    script.write_text(f"from stemlab.study import Study\nSTUDY = Study(**{OPTIONS!r})\n")
    out = tmp_path / "out"
    code, _, err = cli_run(
        capsys, "study", "run", str(script), "--executor", "ray", "--out", str(out)
    )
    one_line_error(
        code,
        err,
        "cannot reach the Ray cluster at RAY_ADDRESS='10.9.9.9:6379' (ConnectionError: GCS at "
        "10.9.9.9:6379 timed out); start it (ray start --head) or unset RAY_ADDRESS",
    )
    assert not (out / LOCK_NAME).exists()


def test_per_cell_checkpoint_folders_and_device_spelling(tmp_path: Path) -> None:
    assert check_device_name("CPU") == "cpu" and check_device_name(" Auto ") == "auto"
    with pytest.raises(ValueError, match="device='gpu' is not a device name"):
        check_device_name("gpu")
    folder = tmp_path / "ck"
    study = tiny(
        stems=["r2d:width=4", "basic:width=4"],
        seeds=[0],
        training={**OPTIONS["training"], "checkpoint_dir": str(folder), "resume": True},
    )
    run = run_study(study, out_dir=tmp_path / "out", progress=False, device="CPU")
    assert run.failed == 0  # 'CPU' reaches the cells as 'cpu'
    keys = sorted(c.key for c in study.cells())
    assert sorted(p.name for p in folder.iterdir()) == keys
    assert all((folder / key / "last.pt").is_file() for key in keys)
    store = CellStore(tmp_path / "out" / "cells")
    losses = {store.read(k)["result"]["metrics"]["train_loss"] for k in keys}
    assert len(losses) == 2  # each cell trained its own model, none resumed another's


def test_probe_requirements_checked_before_the_first_cell(tmp_path: Path) -> None:
    study = tiny(probes=["cka"], data={**DATA, "val_samples": 2})
    with pytest.raises(ValueError, match=r"probe 'cka' needs at least 4 probe clips, but the "):
        run_study(study, out_dir=tmp_path / "out", progress=False, device="cpu")
    assert not (tmp_path / "out").exists()


def test_the_lock_covers_the_report_and_a_failing_report_keeps_the_cells(tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen = []

    def render(run):
        seen.append(lock_owner(out / LOCK_NAME)["pid"])
        assert (out / "manifest.json").is_file() and (out / "tables" / "cells.csv").is_file()
        raise RuntimeError("the report failed")

    with pytest.raises(RuntimeError, match="the report failed"):
        run_study(tiny(seeds=[0]), out_dir=out, progress=False, device="cpu", after=render)
    assert seen == [os.getpid()]
    assert len(CellStore(out / "cells").stored_keys()) == 1
    assert not (out / LOCK_NAME).exists()


def test_report_during_a_run_says_so_or_waits(copy: Path, capsys) -> None:
    held = StudyLock(copy, command="stemlab study run x.py")
    held.acquire()
    try:
        code, _, err = cli_run(capsys, "report", str(copy))
        one_line_error(code, err, f"another stemlab driver (pid {os.getpid()} on", "--wait")
        timer = threading.Timer(1.5, held.release)
        timer.start()
        code, _, err = cli_run(capsys, "report", str(copy), "--wait")
        timer.join()
    finally:
        held.release()
    assert code == 0, err
    assert f"stemlab: waiting for the driver (pid {os.getpid()}" in err


def test_lock_of_another_host_says_how_to_clear_it(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere-node", "started": "then"}))
    with pytest.raises(StudyLockedError) as caught:
        StudyLock(tmp_path).acquire()
    assert str(caught.value).endswith(
        f"(a driver on another host is never taken over: if it has ended, check on "
        f"elsewhere-node and delete {path})"
    )
    messages: list[str] = []
    lock = StudyLock(tmp_path, wait=True, poll_seconds=0.05, on_wait=messages.append)
    waiter = threading.Thread(target=lock.acquire, daemon=True)
    waiter.start()
    for _ in range(100):
        if messages:
            break
        time.sleep(0.05)
    assert messages and f"delete {path}" in messages[0]
    path.unlink()  # what the message says to do
    waiter.join(timeout=10)
    assert not waiter.is_alive() and lock_owner(path)["host"] == socket.gethostname()
    lock.release()


def test_empty_lock_file_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / LOCK_NAME
    path.write_bytes(b"")
    old = time.time() - 60
    os.utime(path, (old, old))
    match = "took over the stale lock .*unreadable lock file"
    with pytest.warns(StemlabWarning, match=match), StudyLock(tmp_path):
        assert lock_owner(path)["pid"] == os.getpid()
    assert not path.exists()


# ----------------------------------------------------------------------- 4. the store


def _record(**changes: object) -> dict:
    config = {"kind": "train", "study": "s", "backbone": "b", "stem": "x", "seed": 0}
    record = {
        "key": config_hash(config),
        "kind": "train",
        "config": config,
        "status": "ok",
        "error": None,
        "seconds": 1.5,
        "result": {
            "metrics": {"top1": 0.25, "val_loss": 1.2, "train_seconds": 3.0, "num_classes": 4},
            "epochs": [{"epoch": 1, "train_loss": 1.3, "val_top1": 0.25}],
            "tables": {"flops": [{"layer": "stem", "flops": 10}]},
            "probe_seconds": {"flops": 0.1},
        },
    }
    for path, value in changes.items():
        target = record
        *parents, last = path.split("__")
        for part in parents:
            target = target[part]
        target[last] = value
    return record


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"result__metrics__top1": 1.5}, "result.metrics.top1 = 1.5 is not a fraction in [0, 1]"),
        ({"result__metrics__val_loss": -0.1}, "result.metrics.val_loss = -0.1 is negative"),
        ({"seconds": -2.0}, "seconds -2.0 is not a number >= 0"),
        ({"result__metrics__train_seconds": -1}, "result.metrics.train_seconds = -1 is negative"),
        ({"result__metrics__num_classes": 2.5}, "num_classes = 2.5 is not a count"),
        ({"result__metrics__top1": {"a": 1}}, "result.metrics.top1 is a dict, not a number"),
        ({"result__epochs": "x"}, "result.epochs is not a list of rows"),
        ({"result__epochs": [{"val_top1": 7}]}, "result.epochs[0].val_top1 = 7 is not a fraction"),
        ({"result__tables": []}, "result.tables is not an object"),
        ({"result__tables__flops": [{"flops": [1]}]}, "result.tables.flops[0].flops is a list"),
        ({"result__probe_seconds": {"flops": -1}}, "result.probe_seconds is not an object"),
        ({"result__metrics": 3}, "status is ok but result has no metrics dict"),
        ({"status": "weird"}, "status 'weird' is not one of ('ok', 'failed', 'diverged')"),
        ({"error": 5}, "error is neither null nor a string"),
        ({"threads": 0}, "threads 0 is not an integer >= 1"),
        ({"versions": {"torch": 2}}, "versions is not an object of version strings"),
        ({"kind": 3}, "kind 3 is not a cell kind's name"),
    ],
)
def test_implausible_records_are_set_aside(tmp_path: Path, change: dict, reason: str) -> None:
    store = CellStore(tmp_path)
    record = _record(**change)
    store.path(record["key"]).parent.mkdir(parents=True, exist_ok=True)
    store.path(record["key"]).write_text(json.dumps(record))
    with pytest.warns(StemlabWarning) as caught:
        assert store.read(record["key"]) is None
    assert reason in str(caught[0].message)
    assert (store.damaged_dir / f"{record['key']}.json").is_file()


def test_config_of_wrong_types_is_set_aside(tmp_path: Path) -> None:
    config = {"kind": "train", "study": "s", "backbone": ["b"], "stem": "x", "seed": 0}
    record = {**_record(), "config": config, "key": config_hash(config)}
    CellStore(tmp_path).path(record["key"]).write_text(json.dumps(record))
    with pytest.warns(StemlabWarning, match="config.backbone is a list, not a string"):
        assert CellStore(tmp_path).read(record["key"]) is None


def test_valid_records_of_every_status_and_kind_read_back(tmp_path: Path) -> None:
    store = CellStore(tmp_path)
    for status in ("ok", "failed", "diverged"):
        config = {"kind": "sweep", "study": "s", "stem": status, "seed": 0, "sample": 1}
        record = {**_record(status=status), "config": config, "key": config_hash(config)}
        record["kind"] = "sweep"
        record["result"]["metrics"]["val_loss"] = float("nan")  # written as null
        store.write(record)
        text = store.path(record["key"]).read_text()
        assert "NaN" not in text and '"val_loss": null' in text
        back = store.read(record["key"])
        assert back is not None and back["result"]["metrics"]["val_loss"] is None
        assert store.is_finished(record["key"]) == (status != "failed")


def test_non_finite_number_in_a_record_file(tmp_path: Path) -> None:
    record = _record()
    text = json.dumps(record).replace('"top1": 0.25', '"top1": 1e999')
    CellStore(tmp_path).path(record["key"]).write_text(text)
    with pytest.warns(StemlabWarning, match=r"record.result.metrics.top1 is inf"):
        assert CellStore(tmp_path).read(record["key"]) is None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 5, 200_000])
def test_deep_json_is_set_aside_without_recursion_error(tmp_path: Path, depth: int) -> None:
    record = _record()
    text = json.dumps(record).replace(
        '"tables": {', '"tables": {"x": ' + "[" * depth + "]" * depth + ", ", 1
    )
    CellStore(tmp_path).path(record["key"]).write_text(text)
    with pytest.warns(StemlabWarning, match="nested deeper than"):
        assert CellStore(tmp_path).read(record["key"]) is None


def test_record_linked_to_dev_zero_and_oversized_records(tmp_path: Path, monkeypatch) -> None:
    store = CellStore(tmp_path)
    os.symlink("/dev/zero", store.path("a" * 16))
    with pytest.warns(StemlabWarning, match="it is a device or pipe, not a regular file"):
        assert store.read("a" * 16) is None
    assert (store.damaged_dir / f"{'a' * 16}.json").is_symlink()  # the link moved, not /dev/zero
    record = _record()
    store.write(record)
    monkeypatch.setattr(store_module, "MAX_RECORD_BYTES", 100)
    with pytest.warns(StemlabWarning, match="above the 100-byte cap of a record"):
        assert store.read(record["key"]) is None


# ------------------------------------------------------------------ 6. the smaller cases


def test_seed_beyond_two_to_the_32() -> None:
    with pytest.raises(ValueError) as caught:
        tiny(seeds=[0, 2**64])
    assert str(caught.value) == (
        "Study seeds[1]=18446744073709551616 is too large; allowed: 0 to 4294967295 (2**32 - 1)"
    )


@pytest.mark.parametrize(
    "stems",
    [
        ["r2d:width=4", "r2d: width=4"],
        ["basic:width=4,kernel_size=3", "basic:kernel_size=3,width=4"],
    ],
)
def test_one_stem_listed_twice_under_two_spellings(stems: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        tiny(stems=stems)
    assert str(caught.value) == (
        f"Study stems[1]={stems[1]!r} is the same stem as stems[0]={stems[0]!r}; "
        "list each stem once"
    )


def test_probe_option_nobody_reads_is_warned() -> None:
    with pytest.warns(StemlabWarning) as caught:
        check_study(tiny(probe_options={"probe_sample": 8}))
    assert str(caught[0].message) == (
        "Study probe_options key 'probe_sample' is ignored: no probe reads it "
        "(did you mean 'probe_samples'?)"
    )
    with pytest.warns(StemlabWarning) as caught:
        check_study(tiny(probe_options={"ablation_samples": 8}))
    assert str(caught[0].message) == (
        "Study probe_options key 'ablation_samples' is ignored: only probe 'channel_ablation' "
        "reads it, and this study does not run it"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_study(tiny(probes=["grad_cam"], probe_options={"gradcam_layer": "layer2"}))


def test_threads_upper_bound(tmp_path: Path, capsys) -> None:
    cores = os.cpu_count() or 1
    with pytest.raises(ValueError) as caught:
        executors.LocalExecutor(workers=1, threads=cores + 1)
    assert str(caught.value) == (
        f"threads={cores + 1} is more than the {cores} CPU core(s) of this machine; "
        f"allowed: 1 to {cores}"
    )
    script = tmp_path / "hardening.py"
    script.write_text(f"from stemlab.study import Study\nSTUDY = Study(**{OPTIONS!r})\n")
    code, _, err = cli_run(
        capsys, "study", "run", str(script), "--threads", "100000", "--out", str(tmp_path / "o")
    )
    one_line_error(code, err, "threads=100000 is more than the")
    assert not (tmp_path / "o" / LOCK_NAME).exists()


def test_arrays_survive_the_round_trip(tmp_path: Path) -> None:
    store = CellStore(tmp_path)
    record = _record()
    record["arrays"] = {"filters": np.arange(6, dtype=np.float32).reshape(2, 3)}
    store.write(record)
    assert store.read_arrays(record["key"])["filters"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_hand_edited_result_is_set_aside(tmp_path: Path) -> None:
    store = CellStore(tmp_path)
    record = _record()
    store.write(record)
    path = store.path(record["key"])
    stored = json.loads(path.read_text())
    assert stored["digest"] == store_module.record_digest(stored)
    path.write_text(path.read_text().replace('"top1": 0.25', '"top1": 0.99'))  # in range, edited
    with pytest.warns(StemlabWarning, match=r"digest mismatch: hand-edited\?"):
        assert store.read(record["key"]) is None
