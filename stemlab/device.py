"""Device resolution, written once: every layer (train, study, CLI) asks this module."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device name into a usable ``torch.device``.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``, ``"mps"``, or a ``torch.device``.

    Returns:
        The device, checked to exist on this machine.

    Raises:
        TypeError: if ``device`` is neither a string nor a ``torch.device``.
        ValueError: if the name is not a device torch knows, or names CUDA (or MPS) on a
            machine without it, or a CUDA index beyond the visible GPUs.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        name = device.strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            resolved = torch.device(name)
        except (RuntimeError, ValueError):
            raise ValueError(
                f"device={device!r} is not a device name; use 'auto', 'cpu', 'cuda', "
                "'cuda:N' or 'mps'"
            ) from None
    else:
        raise TypeError(
            f"device must be a str or torch.device, got {type(device).__name__} {device!r}"
        )
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={str(resolved)!r} was asked for but CUDA is not available on this "
                "machine; use 'cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device={str(resolved)!r}: this machine has {count} CUDA device(s), "
                f"so the index must be < {count}"
            )
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(
                f"device={str(resolved)!r} was asked for but MPS is not available on this "
                "machine; use 'cpu' or 'auto'"
            )
    elif resolved.type != "cpu":
        raise ValueError(
            f"device={str(resolved)!r} is not supported; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        )
    return resolved
