"""Scaled-down backbone options so every stem x backbone pair runs in milliseconds."""

from __future__ import annotations

from typing import Any

import torch

SMALL_KWARGS: dict[str, dict[str, Any]] = {
    "c3d": {"widths": (8, 16, 16, 16), "fc_width": 16, "input_size": (4, 32, 32)},
    "conv_lstm": {"widths": (8, 16), "layers": (1, 1), "hidden_channels": 8},
    "cnn_lstm": {"widths": (8, 8, 16, 16), "layers": (1, 1, 1, 1), "hidden_size": 16},
    "cnn_gru": {"widths": (8, 8, 16, 16), "layers": (1, 1, 1, 1), "hidden_size": 16},
}
_SMALL_MVIT = {
    "depths": (1, 1, 1, 1),
    "embed_dim": 8,
    "num_heads": 1,
    "spatial_size": (64, 64),
    "temporal_size": 8,
}
_SMALL_SWIN = {"embed_dim": 8, "depths": (1, 1), "num_heads": (1, 2), "window_size": (2, 4, 4)}
SMALL_KWARGS.update(
    {
        "s3d": {"width_multiplier": 0.125, "inception_blocks": (1, 1, 1)},
        "mvit_v1_b": _SMALL_MVIT,
        "mvit_v2_s": _SMALL_MVIT,
        **{name: _SMALL_SWIN for name in ("swin3d_t", "swin3d_s", "swin3d_b")},
    }
)
TORCHVISION_VIDEO = frozenset(("s3d", "mvit_v1_b", "mvit_v2_s", "swin3d_t", "swin3d_s", "swin3d_b"))
"""Token / inception backbones (issue 16), outside the ResNet-style contract of the older tests."""
DEFAULT_SMALL: dict[str, Any] = {"widths": (8, 8, 16, 16), "layers": (1, 1, 1, 1)}


def small_kwargs(backbone: str) -> dict[str, Any]:
    """Options that shrink ``backbone`` for CPU tests."""
    return dict(SMALL_KWARGS.get(backbone, DEFAULT_SMALL))


def randomized(model: torch.nn.Module, *, seed: int = 0) -> torch.nn.Module:
    """Give every tensor (BN statistics included) a random value, so no transfer passes by luck."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    return model
