"""The stem contract: ``in_channels``, ``out_channels`` and ``stride`` on every stem module."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stemlab._validation import check_positive_int

__all__ = ["FrameWise", "Stem", "centred_padding", "check_stem", "stem_kind"]


class Stem(nn.Sequential):
    """An ``nn.Sequential`` of stem layers that declares its geometry.

    Children keep ``nn.Sequential`` indices (``stem.0`` is the first conv), so stems laid out like
    torchvision's share its state-dict keys.

    Args:
        *layers: the layers, applied in order.
        in_channels: input channels the first layer expects.
        out_channels: channels of the output.
        stride: total stride of the stem, ``(t, h, w)`` for video stems, ``(h, w)`` for image stems.
    """

    def __init__(
        self, *layers: nn.Module, in_channels: int, out_channels: int, stride: Sequence[int]
    ) -> None:
        super().__init__(*layers)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.stride = tuple(int(s) for s in stride)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}"


class FrameWise(nn.Module):
    """Run a 2-D (image) stem on every frame of a clip, with frames folded into the batch.

    ::

        (N, C, T, H, W) -> (N*T, C, H, W) -> image_stem -> (N*T, C', H', W') -> (N, C', T, H', W')

    Args:
        image_stem: a stem taking 4-D input (its ``stride`` has two elements).

    Raises:
        TypeError: if ``image_stem`` does not follow the stem contract or is not a 2-D stem.
    """

    def __init__(self, image_stem: nn.Module) -> None:
        super().__init__()
        check_stem(image_stem, argument="image_stem")
        if stem_kind(image_stem) != "image":
            raise TypeError(
                f"FrameWise wraps image stems (stride of 2 elements), got stride {image_stem.stride}"
            )
        self.image_stem = image_stem
        self.in_channels = image_stem.in_channels
        self.out_channels = image_stem.out_channels
        self.stride = (1, *image_stem.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(n * t, c, h, w)
        y = self.image_stem(frames)
        return y.reshape(n, t, *y.shape[1:]).transpose(1, 2)


def stem_kind(stem: nn.Module) -> str:
    """``"video"`` for stems with a 3-element stride, ``"image"`` for 2 elements."""
    return "video" if len(stem.stride) == 3 else "image"


def check_stem(stem: object, *, argument: str = "stem") -> nn.Module:
    """Check that ``stem`` follows the stem contract and return it.

    Raises:
        TypeError: if it is not an ``nn.Module`` or lacks ``in_channels``/``out_channels``/``stride``,
            or ``stride`` has neither 2 nor 3 elements.
    """
    if not isinstance(stem, nn.Module):
        raise TypeError(f"{argument} must be an nn.Module, got {type(stem).__name__}")
    missing = [a for a in ("in_channels", "out_channels", "stride") if not hasattr(stem, a)]
    if missing:
        raise TypeError(
            f"{argument} ({type(stem).__name__}) lacks the stem attributes {missing}; a stem declares "
            "in_channels: int, out_channels: int and stride: tuple ((t, h, w) or (h, w))"
        )
    check_positive_int(f"{argument}.in_channels", stem.in_channels)
    check_positive_int(f"{argument}.out_channels", stem.out_channels)
    stride = stem.stride
    if not isinstance(stride, tuple) or len(stride) not in (2, 3):
        raise TypeError(f"{argument}.stride must be a tuple of 2 or 3 ints, got {stride!r}")
    return stem


def centred_padding(
    argument: str, kernel_size: tuple[int, ...], dilation: tuple[int, ...]
) -> tuple[int, ...]:
    """Padding that centres an odd kernel ("same" padding before striding).

    Raises:
        ValueError: if an element of ``kernel_size`` is even (such a kernel has no centre).
    """
    even = [k for k in kernel_size if k % 2 == 0]
    if even:
        raise ValueError(
            f"{argument}={kernel_size} cannot be centred: every element must be odd, got even {even}"
        )
    return tuple(d * (k - 1) // 2 for k, d in zip(kernel_size, dilation))
