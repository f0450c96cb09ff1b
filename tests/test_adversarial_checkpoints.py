"""Damaged checkpoints and bad training configs: each case is our own clear error, never a crash.

Checkpoint files are verified (every zip member against its CRC-32) before anything is unpickled;
a failure names the file and what is wrong, and leaves the model untouched. The trainer keeps
``previous.pt`` and falls back to it, with a warning, when ``last.pt`` is damaged.
"""

from __future__ import annotations

import errno
import math
import random
import re
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from test_train import Blobs, TinyNet

import stemlab
from stemlab.train import TrainConfig, fit
from stemlab.weights import UnsafeCheckpointError, load_weights, read_checkpoint
from stemlab.weights.checkpoint import load_checkpoint_file, verify_checkpoint_file

SMALL = {"widths": (4, 8, 8, 8), "layers": (1, 1, 1, 1), "num_classes": 3}


def member_data_offset(path: Path, member: str) -> tuple[int, int]:
    """Byte offset and size of ``member``'s stored data inside the zip archive at ``path``."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    raw = path.read_bytes()
    header = raw[info.header_offset : info.header_offset + 30]
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length, info.file_size


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def tensor_member(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return next(n for n in archive.namelist() if re.search(r"/data/\d+$", n))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.arange(256.0).reshape(16, 16), "b": torch.ones(16)}, path)
    return path


# ---------------------------------------------------------------- reading one checkpoint file


def test_flipped_bytes_in_tensor_data_are_a_crc_error(saved: Path) -> None:
    member = tensor_member(saved)
    start, size = member_data_offset(saved, member)
    flip_byte(saved, start + size // 2)
    # torch itself does not notice: the damaged file loads, with one wrong value
    loaded = torch.load(saved, weights_only=True)
    assert not torch.equal(loaded["w"], torch.arange(256.0).reshape(16, 16)) or not torch.equal(
        loaded["b"], torch.ones(16)
    )
    with pytest.raises(ValueError, match="CRC mismatch in member") as caught:
        read_checkpoint(saved)
    message = str(caught.value)
    assert str(saved) in message and repr(member) in message


def test_flipped_byte_in_the_pickle_is_a_crc_error(saved: Path) -> None:
    member = next(n for n in zipfile.ZipFile(saved).namelist() if n.endswith("data.pkl"))
    start, size = member_data_offset(saved, member)
    flip_byte(saved, start + size // 2)
    with pytest.raises(ValueError, match=rf"{re.escape(str(saved))}.*CRC mismatch.*data\.pkl"):
        load_checkpoint_file(saved)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_checkpoint_names_the_file(saved: Path, keep: float) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="is unreadable: truncated: the zip archive") as caught:
        read_checkpoint(saved)
    assert str(saved) in str(caught.value)
    assert "Errno" not in str(caught.value)


def test_empty_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty \(0 bytes\)") as caught:
        read_checkpoint(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_are_a_value_error(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "noise.pt"
    data = random.Random(seed).randbytes(4096)
    path.write_bytes(data)
    with pytest.raises(ValueError) as caught:
        read_checkpoint(path)
    assert str(path) in str(caught.value)
    if data[:1] != b"\x80":  # not a pickle opcode: refused before torch reads anything
        assert "is not a PyTorch checkpoint" in str(caught.value)


def test_zip_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "archive.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint: a zip archive") as caught:
        read_checkpoint(path)
    assert str(path) in str(caught.value)


def test_truncated_legacy_file_cannot_be_crc_checked(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.randn(32)}, path, _use_new_zipfile_serialization=False)
    assert verify_checkpoint_file(path) == "legacy"
    assert read_checkpoint(path).state["w"].shape == (32,)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"legacy.*no checksum") as caught:
        read_checkpoint(path)
    assert str(path) in str(caught.value)


def test_unsafe_pickle_is_refused_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save({"w": torch.ones(2), "cls": zipfile.ZipInfo("x")}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused to load") as caught:
        read_checkpoint(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_checkpoint_saved_without_crc_loads_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "nocrc.pt"
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.arange(8.0)}, path)
    finally:
        torch.serialization.set_crc32_options(True)
    with pytest.warns(UserWarning, match="without checksums"):
        state = read_checkpoint(path).state
    assert torch.equal(state["w"], torch.arange(8.0))


def test_intact_checkpoint_passes_the_check(saved: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert verify_checkpoint_file(saved) == "zip"
        state = read_checkpoint(saved).state
    assert torch.equal(state["w"], torch.arange(256.0).reshape(16, 16))


def test_damaged_weights_leave_the_model_untouched(tmp_path: Path) -> None:
    model = stemlab.create_model("r3d_18", **SMALL)
    path = tmp_path / "r3d.pt"
    torch.save({k: v + 1 for k, v in model.state_dict().items()}, path)
    member = tensor_member(path)
    start, size = member_data_offset(path, member)
    flip_byte(path, start + size - 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="CRC mismatch"):
        load_weights(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not hasattr(model, "weights_report")


# ---------------------------------------------------------------- the trainer's checkpoints

CONFIG = {"epochs": 3, "batch_size": 8, "lr": 0.05, "progress": False}


def interrupted_run(run_dir: Path, *, interrupt_at: int) -> None:
    with pytest.raises(KeyboardInterrupt):
        fit(
            TinyNet(seed=0),
            Blobs(32, interrupt_at=interrupt_at),
            config=TrainConfig(**CONFIG, checkpoint_dir=run_dir),
            val_data=Blobs(8, seed=1),
        )


def test_checkpoints_rotate_last_and_previous(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"stale": torch.ones(1)}, run_dir / "previous.pt")  # from an earlier run
    result = fit(
        TinyNet(), Blobs(32), config=TrainConfig(**{**CONFIG, "epochs": 1}, checkpoint_dir=run_dir)
    )
    assert result.status == "completed"
    assert sorted(p.name for p in run_dir.iterdir()) == ["last.pt"], "stale previous.pt removed"
    fit(TinyNet(), Blobs(32), config=TrainConfig(**CONFIG, checkpoint_dir=run_dir))
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 3
    assert torch.load(run_dir / "previous.pt", weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["last.pt", "previous.pt"]


@pytest.mark.parametrize("damage", ["crc", "truncated", "empty", "missing"])
def test_resume_falls_back_to_previous_and_matches_uninterrupted(
    tmp_path: Path, damage: str
) -> None:
    straight = TinyNet(seed=0)
    full = fit(straight, Blobs(32), config=TrainConfig(**CONFIG), val_data=Blobs(8, seed=1))

    run_dir = tmp_path / "run"
    interrupted_run(run_dir, interrupt_at=70)  # dies in epoch 3, after checkpointing epoch 2
    last, previous = run_dir / "last.pt", run_dir / "previous.pt"
    assert torch.load(previous, weights_only=True)["epoch"] == 1
    if damage == "crc":
        start, size = member_data_offset(last, tensor_member(last))
        flip_byte(last, start + size // 2)
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[:100])
    elif damage == "empty":
        last.write_bytes(b"")
    else:
        last.unlink()

    resumed_model = TinyNet(seed=123)
    with pytest.warns(RuntimeWarning, match=r"resuming from .*previous\.pt \(epoch 1\)") as got:
        resumed = fit(
            resumed_model,
            Blobs(32),
            config=TrainConfig(**CONFIG, checkpoint_dir=run_dir, resume=True),
            val_data=Blobs(8, seed=1),
        )
    reason = {
        "crc": "is unreadable: CRC mismatch in member",
        "truncated": "is unreadable: truncated",
        "empty": "is empty (0 bytes)",
        "missing": "the file does not exist",
    }
    fallback = [w for w in got if issubclass(w.category, RuntimeWarning)]
    assert len(fallback) == 1 and reason[damage] in str(fallback[0].message)
    assert resumed.status == "completed"
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    cols = ["epoch", "train_loss", "train_top1", "val_loss", "lr"]
    assert resumed.history[cols].equals(full.history[cols])
    if damage != "missing":
        assert (run_dir / "last.pt.damaged").exists(), "the damaged file is kept, not deleted"
    assert torch.load(last, weights_only=True)["epoch"] == 3
    assert torch.load(previous, weights_only=True)["epoch"] == 2


def test_resume_over_an_empty_last_checkpoint_names_both_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"")
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="neither checkpoint can be read") as caught:
        fit(model, Blobs(32), config=TrainConfig(**CONFIG, checkpoint_dir=run_dir, resume=True))
    message = str(caught.value)
    assert f"{run_dir / 'last.pt'}: checkpoint" in message and "empty (0 bytes)" in message
    assert f"{run_dir / 'previous.pt'}: the file does not exist" in message
    assert not isinstance(caught.value, EOFError)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_resume_with_both_checkpoints_damaged_names_both(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    interrupted_run(run_dir, interrupt_at=70)
    (run_dir / "last.pt").write_bytes(b"")
    previous = run_dir / "previous.pt"
    start, size = member_data_offset(previous, tensor_member(previous))
    flip_byte(previous, start + size // 2)
    with pytest.raises(ValueError) as caught:
        fit(TinyNet(), Blobs(32), config=TrainConfig(**CONFIG, checkpoint_dir=run_dir, resume=True))
    message = str(caught.value)
    assert "last.pt" in message and "is empty (0 bytes)" in message
    assert "previous.pt" in message and "is unreadable: CRC mismatch in member" in message
    assert sorted(p.name for p in run_dir.iterdir()) == ["last.pt", "previous.pt"], "nothing moved"


def test_resume_into_another_model_leaves_it_untouched(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = {**CONFIG, "epochs": 1}
    fit(TinyNet(), Blobs(32), config=TrainConfig(**config, checkpoint_dir=run_dir))
    other = torch.nn.Sequential(torch.nn.Linear(4, 3))
    other.fc = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"its weights do not fit this model \(missing: 0\.weight"):
        fit(other, Blobs(32), config=TrainConfig(**config, checkpoint_dir=run_dir, resume=True))
    for key, value in other.state_dict().items():
        assert torch.equal(value, before[key]), key


# ---------------------------------------------------------------- bad training configs


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("lr", math.inf, "a finite number > 0"),
        ("lr", math.nan, "a finite number > 0"),
        ("lr", 0.0, "a finite number > 0"),
        ("weight_decay", math.nan, "a finite number >= 0"),
        ("head_lr_multiplier", math.inf, "a finite number > 0"),
        ("epochs", 0, "an int >= 1"),
    ],
)
def test_non_finite_or_out_of_range_config_is_refused(
    field: str, value: float, allowed: str
) -> None:
    with pytest.raises(ValueError) as caught:
        TrainConfig(**{field: value})
    assert str(caught.value) == f"{field}={value!r} is not allowed: {field} must be {allowed}"


def test_os_error_reading_a_checkpoint_is_a_value_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "unreadable.pt"
    torch.save({"w": torch.ones(1)}, path)

    def failing_open(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error", str(self))

    monkeypatch.setattr(Path, "open", failing_open)
    with pytest.raises(ValueError, match="Input/output error") as caught:
        read_checkpoint(path)
    assert str(caught.value) == f"cannot read checkpoint {path}: Input/output error"
