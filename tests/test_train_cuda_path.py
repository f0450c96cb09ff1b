"""The CUDA path of fit(): mixed precision, channels-last, cuDNN autotuning, resolved and recorded.

No CUDA device is needed: the switches are resolved for a ``cuda`` device with the GPU's bf16
support mocked, and runs on the CPU check that the resolved settings are what training used.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
from test_train import Blobs, TinyNet, quiet
from torch import nn

from stemlab.train import TrainConfig, fit
from stemlab.train.precision import cudnn_benchmark, resolve_amp, resolve_execution

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def _settings(device: torch.device, bf16: bool = True, **kwargs: object) -> dict[str, object]:
    with mock.patch("torch.cuda.is_bf16_supported", return_value=bf16):
        return resolve_execution(quiet(**kwargs), device).to_dict()


def test_auto_is_the_cuda_path_on_cuda_only() -> None:
    assert _settings(CUDA) == {
        "device": "cuda", "amp": "bf16", "channels_last": True, "cudnn_benchmark": True,
        "grad_scaler": False,
    }  # fmt: skip
    # A GPU without bf16: fp16 autocast, and a GradScaler against underflowing gradients.
    assert _settings(CUDA, bf16=False)["amp"] == "fp16"
    assert _settings(CUDA, bf16=False)["grad_scaler"] is True
    assert _settings(CPU) == {
        "device": "cpu", "amp": "off", "channels_last": False, "cudnn_benchmark": False,
        "grad_scaler": False,
    }  # fmt: skip


def test_each_switch_overrides_auto() -> None:
    assert _settings(CUDA, amp="off")["amp"] == "off"
    assert _settings(CUDA, amp="fp16")["amp"] == "fp16"  # fp16 even where bf16 is supported
    assert _settings(CUDA, amp="fp16")["grad_scaler"] is True
    assert _settings(CUDA, channels_last=False)["channels_last"] is False
    assert _settings(CUDA, cudnn_benchmark=False)["cudnn_benchmark"] is False
    assert _settings(CPU, amp="bf16")["amp"] == "bf16"
    assert _settings(CPU, channels_last=True)["channels_last"] is True
    # cuDNN autotuning exists on CUDA only: recorded as off elsewhere, whatever was asked.
    assert _settings(CPU, cudnn_benchmark=True)["cudnn_benchmark"] is False
    # The old boolean spellings keep their meaning.
    assert resolve_amp(True, CPU) == "bf16" and resolve_amp(False, CUDA) == "off"


def test_fp16_off_cuda_is_refused_before_training() -> None:
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="amp='fp16' needs a CUDA device"):
        fit(model, Blobs(8), config=quiet(amp="fp16", device="cpu"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"amp": "bf61"}, r"amp='bf61' .*Did you mean 'bf16'"),
        ({"amp": 1}, r"amp=1 is not allowed"),
        ({"cudnn_benchmark": "on"}, r"cudnn_benchmark must be 'auto', True or False"),
    ],
)
def test_bad_switches(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


class _Spy(nn.Module):
    """TinyNet that records the autocast state and input layout of every training forward."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()
        self.fc = self.net.fc
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return self.net(x)


def test_fit_records_and_uses_the_resolved_settings() -> None:
    spy = _Spy()
    result = fit(spy, Blobs(16), config=quiet(epochs=1, device="cpu", amp="bf16"))
    assert result.status == "completed", result.traceback
    assert result.settings == {
        "device": "cpu", "amp": "bf16", "channels_last": False, "cudnn_benchmark": False,
        "grad_scaler": False,
    }  # fmt: skip
    assert spy.seen and all(seen == (True, torch.bfloat16) for seen in spy.seen)
    plain = _Spy()
    result = fit(plain, Blobs(16), config=quiet(epochs=1, device="cpu"))
    assert result.settings["amp"] == "off"
    assert plain.seen and not any(enabled for enabled, _ in plain.seen)


def test_cudnn_benchmark_is_restored() -> None:
    before = torch.backends.cudnn.benchmark
    with cudnn_benchmark(not before):
        assert torch.backends.cudnn.benchmark is (not before)
    assert torch.backends.cudnn.benchmark is before
    with pytest.raises(KeyError), cudnn_benchmark(True):
        raise KeyError("inside")
    assert torch.backends.cudnn.benchmark is before


def test_checkpoint_from_before_the_switch_still_resumes(tmp_path: Path) -> None:
    config = {"epochs": 2, "batch_size": 8, "lr": 0.05, "progress": False, "device": "cpu"}
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # dies in epoch 2, after checkpointing epoch 1
        fit(
            TinyNet(),
            Blobs(32, interrupt_at=40),
            config=TrainConfig(**config, checkpoint_dir=run_dir),
        )
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    saved["config"].pop("cudnn_benchmark")
    torch.save(saved, run_dir / "last.pt")
    result = fit(
        TinyNet(), Blobs(32), config=TrainConfig(**config, checkpoint_dir=run_dir, resume=True)
    )
    assert result.status == "completed" and result.history["epoch"].tolist() == [1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_takes_the_cuda_path() -> None:
    from stemlab.models import create_model

    model = create_model("r3d_18", num_classes=4, widths=(8, 8, 8, 8), layers=(1, 1, 1, 1))
    from stemlab.data.synthetic import SyntheticMotion

    result = fit(model, SyntheticMotion(8, size=16, clip_len=4), config=quiet(epochs=1))
    assert result.status == "completed", result.traceback
    assert result.settings["amp"] in ("bf16", "fp16")
    assert result.settings["channels_last"] and result.settings["cudnn_benchmark"]
    assert all(p.is_contiguous() for p in model.parameters())
