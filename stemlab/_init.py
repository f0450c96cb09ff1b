"""Weight initialisation shared by stems and backbones (torchvision's video-ResNet scheme)."""

from __future__ import annotations

from torch import nn

__all__ = ["init_conv_bn_linear"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


def init_conv_bn_linear(module: nn.Module, *, linear_std: float | None = 0.01) -> None:
    """Initialise every conv (Kaiming normal, fan-out, ReLU), norm (1, 0) and linear layer of ``module``.

    Args:
        module: the module whose submodules are initialised in place.
        linear_std: std of the normal init of linear weights (biases zero); ``None`` keeps
            PyTorch's default linear init.
    """
    for m in module.modules():
        if isinstance(m, _CONVS):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
