"""Video stems: 5-D input ``(N, C, T, H, W)``, 5-D output, ``stride = (t, h, w)``.

Every public factory is a thin keyword-only wrapper over :func:`conv_stem` or a small worker of its
own, and initialises its layers like torchvision's video ResNets (Kaiming fan-out, BN 1/0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from stemlab._init import init_conv_bn_linear
from stemlab._validation import check_int_tuple, check_positive_int
from stemlab.stems.base import Stem, centred_padding
from stemlab.stems.layers import SqueezeExcitation
from stemlab.stems.registry import register_stem

__all__ = [
    "basic",
    "c3d",
    "channel_attention",
    "conv_stem",
    "depthwise_separable",
    "dilated",
    "large_kernel",
    "r2d",
    "r2plus1d",
    "wide",
]

LayerFactory = Callable[..., nn.Module]


def _check_layer_factory(argument: str, value: Any, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not callable(value):
        raise TypeError(f"{argument} must be a callable that builds a layer, got {value!r}")


def conv_stem(
    *,
    in_channels: int = 3,
    width: int = 64,
    kernel_size: int | tuple[int, int, int] = (3, 7, 7),
    stride: int | tuple[int, int, int] = (1, 2, 2),
    dilation: int | tuple[int, int, int] = 1,
    bias: bool = False,
    conv: LayerFactory = nn.Conv3d,
    norm: LayerFactory | None = nn.BatchNorm3d,
    activation: LayerFactory | None = nn.ReLU,
    attention: LayerFactory | None = None,
    pool: nn.Module | None = None,
    pool_stride: tuple[int, int, int] = (1, 1, 1),
) -> Stem:
    """One centred 3-D convolution with optional norm, activation, attention and pooling.

    ::

        (N, C, T, H, W) -> conv(k, s, d) -> norm -> activation -> attention -> pool -> (N, width, ...)

    Args:
        in_channels: input channels.
        width: output channels.
        kernel_size: odd kernel ``(t, h, w)``; padding centres it.
        stride: conv stride ``(t, h, w)``.
        dilation: conv dilation.
        bias: whether the conv has a bias.
        conv: conv layer type, called as ``conv(in, out, kernel_size=, stride=, padding=, dilation=,
            bias=)``.
        norm: norm layer type called with ``width``, or ``None``.
        activation: activation type, called with ``inplace=True`` when it accepts it, or ``None``.
        attention: channel attention type called with ``width``, or ``None``.
        pool: a pooling module appended last, or ``None``.
        pool_stride: the stride ``pool`` contributes (for the declared stem stride).

    Returns:
        A :class:`~stemlab.stems.base.Stem`.

    Raises:
        TypeError / ValueError: for a non-positive ``width``/``in_channels``, a kernel that cannot
            be centred, malformed tuples, or non-callable layer types.
    """
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    kernel = check_int_tuple("kernel_size", kernel_size, 3)
    strides = check_int_tuple("stride", stride, 3)
    dilations = check_int_tuple("dilation", dilation, 3)
    padding = centred_padding("kernel_size", kernel, dilations)
    _check_layer_factory("conv", conv, optional=False)
    for argument, value in (("norm", norm), ("activation", activation), ("attention", attention)):
        _check_layer_factory(argument, value, optional=True)

    layers: list[nn.Module] = [
        conv(
            in_channels,
            width,
            kernel_size=kernel,
            stride=strides,
            padding=padding,
            dilation=dilations,
            bias=bias,
        )
    ]
    if norm is not None:
        layers.append(norm(width))
    if activation is not None:
        layers.append(_activation(activation))
    if attention is not None:
        layers.append(attention(width))
    if pool is not None:
        layers.append(pool)
    total = tuple(s * p for s, p in zip(strides, pool_stride))
    stem = Stem(*layers, in_channels=in_channels, out_channels=width, stride=total)
    _init(stem)
    return stem


def _activation(activation: LayerFactory) -> nn.Module:
    if activation in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU):
        return activation(inplace=True)
    return activation()


def _init(stem: nn.Module) -> None:
    """Kaiming-initialise convs and norms; attention blocks keep their own (identity) init."""
    for child in stem.children():
        if not isinstance(child, SqueezeExcitation):
            init_conv_bn_linear(child, linear_std=None)


@register_stem("basic")
def basic(
    *,
    in_channels: int = 3,
    width: int = 64,
    kernel_size: int | tuple[int, int, int] = (3, 7, 7),
    stride: int | tuple[int, int, int] = (1, 2, 2),
    norm: LayerFactory | None = nn.BatchNorm3d,
    activation: LayerFactory | None = nn.ReLU,
) -> Stem:
    """torchvision's R3D/MC3 stem: Conv3d (3,7,7)/(1,2,2) + BN + ReLU."""
    return conv_stem(
        in_channels=in_channels,
        width=width,
        kernel_size=kernel_size,
        stride=stride,
        norm=norm,
        activation=activation,
    )


@register_stem("wide")
def wide(
    *,
    in_channels: int = 3,
    width: int = 128,
    kernel_size: int | tuple[int, int, int] = (3, 7, 7),
    stride: int | tuple[int, int, int] = (1, 2, 2),
) -> Stem:
    """The basic stem at twice the width (128 channels by default)."""
    return conv_stem(in_channels=in_channels, width=width, kernel_size=kernel_size, stride=stride)


@register_stem("large_kernel")
def large_kernel(
    *,
    in_channels: int = 3,
    width: int = 64,
    kernel_size: int | tuple[int, int, int] = (5, 11, 11),
    stride: int | tuple[int, int, int] = (1, 2, 2),
) -> Stem:
    """The basic stem with a larger centred kernel, (5,11,11) by default."""
    return conv_stem(in_channels=in_channels, width=width, kernel_size=kernel_size, stride=stride)


@register_stem("channel_attention")
def channel_attention(
    *,
    in_channels: int = 3,
    width: int = 64,
    kernel_size: int | tuple[int, int, int] = (3, 7, 7),
    stride: int | tuple[int, int, int] = (1, 2, 2),
    reduction: int = 4,
) -> Stem:
    """The basic stem followed by a squeeze-excitation gate (identity at init)."""
    check_positive_int("reduction", reduction)

    def attention(channels: int) -> SqueezeExcitation:
        return SqueezeExcitation(channels, reduction=reduction)

    return conv_stem(
        in_channels=in_channels,
        width=width,
        kernel_size=kernel_size,
        stride=stride,
        attention=attention,
    )


@register_stem("r2d")
def r2d(
    *,
    in_channels: int = 3,
    width: int = 64,
    kernel_size: int | tuple[int, int] = (7, 7),
    stride: int | tuple[int, int] = (2, 2),
) -> Stem:
    """Frame-wise stem: Conv3d (1,7,7)/(1,2,2) + BN + ReLU, no temporal extent."""
    spatial_kernel = check_int_tuple("kernel_size", kernel_size, 2)
    spatial_stride = check_int_tuple("stride", stride, 2)
    return conv_stem(
        in_channels=in_channels,
        width=width,
        kernel_size=(1, *spatial_kernel),
        stride=(1, *spatial_stride),
    )


@register_stem("dilated")
def dilated(
    *,
    in_channels: int = 3,
    width: int = 64,
    kernel_size: int | tuple[int, int, int] = (3, 3, 3),
    dilation: int | tuple[int, int, int] = (1, 3, 3),
    stride: int | tuple[int, int, int] = (1, 2, 2),
) -> Stem:
    """A dilated 3x3x3 conv (spatial dilation 3: the 7x7 reach of basic with 1/5 of its weights)."""
    return conv_stem(
        in_channels=in_channels,
        width=width,
        kernel_size=kernel_size,
        stride=stride,
        dilation=dilation,
    )


@register_stem("c3d")
def c3d(*, in_channels: int = 3, width: int = 64, batch_norm: bool = False) -> Stem:
    """C3D's conv1 + pool1: Conv3d 3x3x3 (bias, no BN) + ReLU + MaxPool (1,2,2)."""
    if not isinstance(batch_norm, bool):
        raise TypeError(f"batch_norm must be a bool, got {batch_norm!r}")
    return conv_stem(
        in_channels=in_channels,
        width=width,
        kernel_size=(3, 3, 3),
        stride=(1, 1, 1),
        bias=not batch_norm,
        norm=nn.BatchNorm3d if batch_norm else None,
        pool=nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2)),
        pool_stride=(1, 2, 2),
    )


@register_stem("r2plus1d")
def r2plus1d(
    *,
    in_channels: int = 3,
    width: int = 64,
    mid_width: int | None = None,
    kernel_size: int | tuple[int, int, int] = (3, 7, 7),
    stride: int | tuple[int, int, int] = (1, 2, 2),
) -> Stem:
    """torchvision's R(2+1)D stem: Conv (1,7,7) 3->45 + BN + ReLU, Conv (3,1,1) 45->64 + BN + ReLU.

    ::

        x -> conv(1, kh, kw)/(1, sh, sw) -> BN -> ReLU -> conv(kt, 1, 1)/(st, 1, 1) -> BN -> ReLU

    ``mid_width`` defaults to 45 at width 64 (torchvision's choice) and scales with ``width``.
    """
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    kernel = check_int_tuple("kernel_size", kernel_size, 3)
    strides = check_int_tuple("stride", stride, 3)
    padding = centred_padding("kernel_size", kernel, (1, 1, 1))
    mid = max(1, round(45 * width / 64)) if mid_width is None else mid_width
    check_positive_int("mid_width", mid)
    stem = Stem(
        nn.Conv3d(
            in_channels,
            mid,
            kernel_size=(1, kernel[1], kernel[2]),
            stride=(1, strides[1], strides[2]),
            padding=(0, padding[1], padding[2]),
            bias=False,
        ),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(
            mid,
            width,
            kernel_size=(kernel[0], 1, 1),
            stride=(strides[0], 1, 1),
            padding=(padding[0], 0, 0),
            bias=False,
        ),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
        in_channels=in_channels,
        out_channels=width,
        stride=strides,
    )
    _init(stem)
    return stem


@register_stem("depthwise_separable")
def depthwise_separable(
    *,
    in_channels: int = 3,
    width: int = 64,
    depth_multiplier: int = 8,
    kernel_size: int | tuple[int, int, int] = (3, 7, 7),
    stride: int | tuple[int, int, int] = (1, 2, 2),
) -> Stem:
    """Depthwise (per input channel) 3-D conv + BN + ReLU, then a pointwise 1x1x1 conv + BN + ReLU.

    ::

        x -> conv(k, s, groups=C_in, C_in -> C_in*m) -> BN -> ReLU -> conv 1x1x1 -> BN -> ReLU
    """
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    check_positive_int("depth_multiplier", depth_multiplier)
    kernel = check_int_tuple("kernel_size", kernel_size, 3)
    strides = check_int_tuple("stride", stride, 3)
    padding = centred_padding("kernel_size", kernel, (1, 1, 1))
    mid = in_channels * depth_multiplier
    stem = Stem(
        nn.Conv3d(
            in_channels,
            mid,
            kernel_size=kernel,
            stride=strides,
            padding=padding,
            groups=in_channels,
            bias=False,
        ),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, kernel_size=1, bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
        in_channels=in_channels,
        out_channels=width,
        stride=strides,
    )
    _init(stem)
    return stem
