"""The CUDA path, resolved once per run: mixed precision, channels-last layout, cuDNN autotuning.

``TrainConfig`` holds the switches (``amp``, ``channels_last``, ``cudnn_benchmark``), each
``"auto"`` by default: on on CUDA (bf16 autocast where the GPU supports it, else fp16 with a
``GradScaler``), off elsewhere. :func:`resolve_execution` turns them into the settings a run
uses; :meth:`ExecutionSettings.to_dict` is what the training result records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["AMP_MODES", "ExecutionSettings", "cudnn_benchmark", "resolve_amp", "resolve_execution"]

AMP_MODES = ("auto", "bf16", "fp16", "off")
"""String values of ``TrainConfig.amp`` (``True`` and ``False`` mean ``"auto"``-dtype mixed
precision on any device, and ``"off"``)."""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ExecutionSettings:
    """How a run executes on its device.

    Attributes:
        device: the resolved device.
        amp: ``"bf16"``, ``"fp16"`` or ``"off"``.
        channels_last: channels-last (``channels_last_3d`` for clips) weights and inputs.
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` during the run.
        grad_scaler: losses scaled by a ``GradScaler`` (fp16 on CUDA).
    """

    device: torch.device
    amp: str
    channels_last: bool
    cudnn_benchmark: bool
    grad_scaler: bool

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, ``None`` without mixed precision."""
        return self.dtype_of(self.amp)

    @staticmethod
    def dtype_of(amp: str) -> torch.dtype | None:
        """The autocast dtype of a resolved ``amp`` (``"bf16"``, ``"fp16"``; ``"off"``: None)."""
        return _DTYPES.get(amp)

    def to_dict(self) -> dict[str, Any]:
        """``{"device", "amp", "channels_last", "cudnn_benchmark", "grad_scaler"}``, plain."""
        return {
            "device": str(self.device),
            "amp": self.amp,
            "channels_last": self.channels_last,
            "cudnn_benchmark": self.cudnn_benchmark,
            "grad_scaler": self.grad_scaler,
        }


def _cuda_amp_dtype() -> str:
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def resolve_amp(amp: str | bool, device: torch.device) -> str:
    """``"bf16"``, ``"fp16"`` or ``"off"`` for ``amp`` on ``device``.

    ``"auto"`` is mixed precision on CUDA only (bf16 where supported, else fp16); ``True`` is
    mixed precision anywhere (bf16 off CUDA); ``False`` is ``"off"``.

    Raises:
        ValueError: an unknown value, or ``"fp16"`` off CUDA.
    """
    if amp is False or amp == "off":
        return "off"
    if amp is True:
        return _cuda_amp_dtype() if device.type == "cuda" else "bf16"
    if amp == "auto":
        return _cuda_amp_dtype() if device.type == "cuda" else "off"
    if amp == "bf16":
        return "bf16"
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError(
                f"amp='fp16' needs a CUDA device, but this run is on {device}; use 'bf16', "
                "'off' or 'auto'"
            )
        return "fp16"
    raise ValueError(
        f"amp must be one of {', '.join(map(repr, AMP_MODES))}, True or False, got {amp!r}"
    )


def _flag(value: str | bool, device: torch.device) -> bool:
    return device.type == "cuda" if value == "auto" else bool(value)


def resolve_execution(config: Any, device: torch.device) -> ExecutionSettings:
    """The settings a run of ``config`` (a ``TrainConfig``) uses on ``device``.

    Raises:
        ValueError: ``amp='fp16'`` off CUDA.
    """
    amp = resolve_amp(config.amp, device)
    return ExecutionSettings(
        device=device,
        amp=amp,
        channels_last=_flag(config.channels_last, device),
        cudnn_benchmark=_flag(config.cudnn_benchmark, device) and device.type == "cuda",
        grad_scaler=amp == "fp16" and device.type == "cuda",
    )


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark = enabled`` inside the block, the old value after."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
