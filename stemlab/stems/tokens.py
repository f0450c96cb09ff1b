"""Video stems of torchvision's modern video models, and the patchify stems of transformers.

- ``s3d``: S3D's ``features[0]``, a (1,7,7)/(1,2,2) conv then a (7,1,1)/(2,1,1) conv, each with
  BN (eps 1e-3, momentum 1e-3) and ReLU: torchvision's ``TemporalSeparableConv`` key for key.
- ``mvit_patch``: MViT's ``conv_proj``, one Conv3d (3,7,7)/(2,4,4), padding (1,3,3), with bias.
- ``swin_patch``: Swin3D's ``PatchEmbed3d`` (pad to a multiple of the patch, Conv3d with
  kernel = stride = patch, LayerNorm over channels), returning channels first like every stem.
- ``tubelet``: patchify, kernel = stride (ViViT's tubelet embedding), with bias, no norm.
- ``xiao``: a compute-matched convolutional stem in the manner of Xiao et al. 2021 ("Early
  convolutions help transformers see better"): stacked small stride-2 convs with BN + ReLU, then
  a 1x1x1 projection, at the patchify stem's total stride.

All output ``(N, width, T', H', W')``; transformers take them through a stem-to-tokens adapter
(:class:`stemlab.backbones.torchvision_video.TokenStem`) where widths or strides differ.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv3dNormActivation

from stemlab._validation import check_int_tuple, check_positive_int
from stemlab.stems.base import Stem
from stemlab.stems.registry import register_stem

__all__ = ["MViTPatch", "SwinPatch", "mvit_patch", "s3d", "swin_patch", "tubelet", "xiao"]


@register_stem("s3d")
def s3d(*, in_channels: int = 3, width: int = 64) -> Stem:
    """S3D's stem: Conv (1,7,7)/(1,2,2) + BN + ReLU, Conv (7,1,1)/(2,1,1) + BN + ReLU."""
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    norm = partial(nn.BatchNorm3d, eps=0.001, momentum=0.001)
    return Stem(
        Conv3dNormActivation(
            in_channels,
            width,
            kernel_size=(1, 7, 7),
            stride=(1, 2, 2),
            padding=(0, 3, 3),
            bias=False,
            norm_layer=norm,
        ),
        Conv3dNormActivation(
            width,
            width,
            kernel_size=(7, 1, 1),
            stride=(2, 1, 1),
            padding=(3, 0, 0),
            bias=False,
            norm_layer=norm,
        ),
        in_channels=in_channels,
        out_channels=width,
        stride=(2, 2, 2),
    )


class MViTPatch(nn.Conv3d):
    """MViT's patch embedding: one biased Conv3d whose stride is the stem's (a stem by itself)."""


@register_stem("mvit_patch")
def mvit_patch(
    *,
    in_channels: int = 3,
    width: int = 96,
    kernel_size: int | tuple[int, int, int] = (3, 7, 7),
    stride: int | tuple[int, int, int] = (2, 4, 4),
) -> MViTPatch:
    """MViT's conv_proj: Conv3d (3,7,7)/(2,4,4), padding (1,3,3), with bias."""
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    kernel = check_int_tuple("kernel_size", kernel_size, 3)
    strides = check_int_tuple("stride", stride, 3)
    return MViTPatch(
        in_channels, width, kernel, stride=strides, padding=tuple(k // 2 for k in kernel)
    )


class SwinPatch(nn.Module):
    """Swin3D's patch embedding (``proj`` + ``norm``, torchvision's keys), channels-first output.

    ::

        x -> zero-pad T, H, W up to multiples of the patch -> Conv3d(k = s = patch)
          -> LayerNorm over channels -> (N, width, T/pt, H/ph, W/pw)

    Args:
        in_channels: input channels.
        width: embedding width.
        patch_size: ``(t, h, w)``.
    """

    def __init__(self, *, in_channels: int, width: int, patch_size: tuple[int, int, int]) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, width, tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = [(-size) % p for size, p in zip(x.shape[2:], self.stride)]
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        x = self.proj(x).permute(0, 2, 3, 4, 1)
        return self.norm(x).permute(0, 4, 1, 2, 3)


@register_stem("swin_patch")
def swin_patch(
    *,
    in_channels: int = 3,
    width: int = 96,
    patch_size: int | tuple[int, int, int] = (2, 4, 4),
) -> SwinPatch:
    """Swin3D's PatchEmbed3d: Conv3d kernel = stride = (2,4,4) + LayerNorm (channels first)."""
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    return SwinPatch(
        in_channels=in_channels,
        width=width,
        patch_size=check_int_tuple("patch_size", patch_size, 3),
    )


@register_stem("tubelet")
def tubelet(
    *,
    in_channels: int = 3,
    width: int = 96,
    patch_size: int | tuple[int, int, int] = (2, 4, 4),
) -> Stem:
    """Patchify video stem (tubelet embedding): Conv3d with kernel = stride = (2,4,4), bias."""
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    patch = check_int_tuple("patch_size", patch_size, 3)
    return Stem(
        nn.Conv3d(in_channels, width, kernel_size=patch, stride=patch),
        in_channels=in_channels,
        out_channels=width,
        stride=patch,
    )


@register_stem("xiao")
def xiao(*, in_channels: int = 3, width: int = 96, mid_width: int | None = None) -> Stem:
    """Conv stem (Xiao et al. 2021) at stride (2,4,4): 3x3x3/2, 1x3x3/(1,2,2) convs + BN + ReLU, 1x1x1.

    ::

        x -> conv 3x3x3 /2 (C -> m/2) -> BN -> ReLU -> conv 1x3x3 /(1,2,2) (m/2 -> m) -> BN
          -> ReLU -> conv 1x1x1 (m -> width, bias)

    ``mid_width`` (``m``) defaults to ``width // 2``; the multiply-adds are then close to the
    patchify stem's at the same stride (Xiao et al. then drop one transformer block to match the
    rest).
    """
    check_positive_int("in_channels", in_channels)
    check_positive_int("width", width)
    mid = max(2, width // 2) if mid_width is None else mid_width
    check_positive_int("mid_width", mid)
    half = max(1, mid // 2)
    stem = Stem(
        nn.Conv3d(in_channels, half, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm3d(half),
        nn.ReLU(inplace=True),
        nn.Conv3d(half, mid, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, 1),
        in_channels=in_channels,
        out_channels=width,
        stride=(2, 4, 4),
    )
    for m in stem.modules():
        if isinstance(m, nn.Conv3d) and m.bias is None:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return stem
