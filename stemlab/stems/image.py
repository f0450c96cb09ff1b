"""Image stems: 4-D input ``(N, C, H, W)``, 4-D output, ``stride = (h, w)``.

On video backbones they run frame by frame (see :class:`~stemlab.stems.base.FrameWise`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from stemlab._init import init_conv_bn_linear
from stemlab._validation import check_positive_int
from stemlab.stems.base import Stem, centred_padding
from stemlab.stems.registry import register_stem

__all__ = ["deep", "patchify", "resnet"]


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int
) -> list[nn.Module]:
    padding = centred_padding("kernel_size", (kernel_size, kernel_size), (1, 1))
    return [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


@register_stem("resnet", kind="image")
def resnet(
    *, in_channels: int = 3, width: int = 64, kernel_size: int = 7, pool: bool = True
) -> Stem:
    """torchvision ResNet's stem: Conv 7x7/2 + BN + ReLU + MaxPool 3x3/2.

    ::

        (N, C, H, W) -> conv k x k /2 -> BN -> ReLU -> [maxpool 3x3/2] -> (N, width, H/4, W/4)
    """
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    check_positive_int("kernel_size", kernel_size)
    if not isinstance(pool, bool):
        raise TypeError(f"pool must be a bool, got {pool!r}")
    layers = _conv_bn_relu(in_channels, width, kernel_size, 2)
    if pool:
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    stride = 4 if pool else 2
    stem = Stem(*layers, in_channels=in_channels, out_channels=width, stride=(stride, stride))
    init_conv_bn_linear(stem)
    return stem


@register_stem("deep", kind="image")
def deep(*, in_channels: int = 3, width: int = 64, mid_width: int | None = None) -> Stem:
    """Deep stem (ResNet-C): three 3x3 convs (the first /2) with BN + ReLU, then MaxPool 3x3/2.

    ::

        x -> conv3x3/2 (mid) -> conv3x3 (mid) -> conv3x3 (width) -> maxpool/2, each conv + BN + ReLU
    """
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    mid = max(1, width // 2) if mid_width is None else mid_width
    check_positive_int("mid_width", mid)
    stem = Stem(
        *_conv_bn_relu(in_channels, mid, 3, 2),
        *_conv_bn_relu(mid, mid, 3, 1),
        *_conv_bn_relu(mid, width, 3, 1),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        in_channels=in_channels,
        out_channels=width,
        stride=(4, 4),
    )
    init_conv_bn_linear(stem)
    return stem


@register_stem("patchify", kind="image")
def patchify(
    *,
    in_channels: int = 3,
    width: int = 64,
    patch_size: int = 4,
    norm: Callable[..., nn.Module] | None = nn.BatchNorm2d,
) -> Stem:
    """Non-overlapping k x k patches (ViT/ConvNeXt style): Conv k/k + norm.

    ::

        (N, C, H, W) -> conv k x k, stride k -> norm -> (N, width, H/k, W/k)
    """
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    check_positive_int("patch_size", patch_size)
    if norm is not None and not callable(norm):
        raise TypeError(f"norm must be a callable that builds a layer or None, got {norm!r}")
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size, bias=norm is None)
    ]
    if norm is not None:
        layers.append(norm(width))
    stem = Stem(
        *layers, in_channels=in_channels, out_channels=width, stride=(patch_size, patch_size)
    )
    init_conv_bn_linear(stem)
    return stem
