"""C3D (Tran et al. 2015) with a swappable stem and an fc6 sized from the input geometry."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stemlab._init import init_conv_bn_linear
from stemlab._shapes import infer_output_shape
from stemlab._validation import check_int_tuple, check_positive_int
from stemlab.backbones.base import Backbone, check_dropout, check_num_classes, stage_widths
from stemlab.backbones.layout import Layout
from stemlab.backbones.registry import register_backbone
from stemlab.stems.base import check_stem

__all__ = ["C3D", "c3d"]


def _conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)]


def _pool(padding: tuple[int, int, int] = (0, 0, 0)) -> nn.MaxPool3d:
    # ceil_mode keeps short clips (T < 16) alive; at 16x112x112 the shapes equal C3D's.
    return nn.MaxPool3d(kernel_size=2, stride=2, padding=padding, ceil_mode=True)


class C3D(Backbone):
    """stem (conv1 + pool1) -> layer1..layer4 (conv2 .. conv5b with pools) -> fc6 -> fc7 -> fc8.

    ::

        layer1: conv2 -> pool2         layer2: conv3a, conv3b -> pool3
        layer3: conv4a, conv4b -> pool4   layer4: conv5a, conv5b -> pool5 (pad 0,1,1)
        head:   flatten -> fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> fc8

    ``fc6`` takes ``num_chs * t * h * w`` of layer4's output for a clip of ``input_size`` through the
    actual stem (8192 for C3D's 16x112x112 and its own stem). Clips of another size are average-pooled
    to that grid before ``fc6``.

    Args:
        stem: a video stem.
        widths: channels of conv2, conv3, conv4, conv5.
        fc_width: width of fc6 and fc7.
        num_classes: size of fc8.
        dropout: dropout after fc6 and fc7.
        input_size: ``(T, H, W)`` the head is sized for.
    """

    def __init__(
        self,
        *,
        stem: nn.Module,
        widths: Sequence[int],
        fc_width: int,
        num_classes: int,
        dropout: float,
        input_size: tuple[int, int, int],
    ) -> None:
        super().__init__()
        check_stem(stem)
        self.stem = stem
        w2, w3, w4, w5 = widths
        self.layer1 = nn.Sequential(*_conv(stem.out_channels, w2), _pool())
        self.layer2 = nn.Sequential(*_conv(w2, w3), *_conv(w3, w3), _pool())
        self.layer3 = nn.Sequential(*_conv(w3, w4), *_conv(w4, w4), _pool())
        self.layer4 = nn.Sequential(*_conv(w4, w5), *_conv(w5, w5), _pool((0, 1, 1)))
        features = nn.Sequential(self.stem, self.layer1, self.layer2, self.layer3, self.layer4)
        _, channels, *grid = infer_output_shape(features, (1, stem.in_channels, *input_size))
        self.input_size = tuple(input_size)
        self.feature_grid = tuple(grid)
        self.fc6 = nn.Linear(channels * grid[0] * grid[1] * grid[2], fc_width)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.fc8 = nn.Linear(fc_width, num_classes)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        info = [{"module": "stem", "num_chs": stem.out_channels, "reduction": stem.stride}]
        reduction = stem.stride
        for index, channels_out in enumerate(widths):
            reduction = tuple(2 * r for r in reduction)  # every C3D pool after pool1 is 2x2x2
            info.append(
                {"module": f"layer{index + 1}", "num_chs": channels_out, "reduction": reduction}
            )
        self.feature_info = info
        for module in (self.layer1, self.layer2, self.layer3, self.layer4):
            init_conv_bn_linear(module)
        init_conv_bn_linear(nn.ModuleList([self.fc6, self.fc7, self.fc8]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and conv stages: ``(N, C, T, H, W) -> (N, C5, t, h, w)``."""
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.forward_features(x)
        if tuple(x.shape[2:]) != self.feature_grid:
            x = F.adaptive_avg_pool3d(x, self.feature_grid)
        x = self.dropout(self.relu(self.fc6(x.flatten(1))))
        x = self.dropout(self.relu(self.fc7(x)))
        return self.fc8(x)


@register_backbone(
    "c3d",
    default_stem="c3d",
    layout=Layout(
        first_block="layer1.0",
        head="fc8",
        stages=("stem", "layer1", "layer2", "layer3", "layer4"),
    ),
)
def c3d(
    *,
    stem: nn.Module,
    num_classes: int = 400,
    widths: Sequence[int] = (128, 256, 512, 512),
    fc_width: int = 4096,
    width_multiplier: float = 1.0,
    dropout: float = 0.5,
    input_size: Sequence[int] = (16, 112, 112),
) -> C3D:
    """C3D: eight 3x3x3 convs, five max-pools, three fcs; fc6 sized from the input, not fixed."""
    check_num_classes(num_classes)
    check_positive_int("fc_width", fc_width)
    check_dropout(dropout)
    size = check_int_tuple("input_size", tuple(input_size), 3)
    return C3D(
        stem=stem,
        widths=stage_widths(widths, width_multiplier, num_stages=4),
        fc_width=fc_width,
        num_classes=num_classes,
        dropout=dropout,
        input_size=size,
    )
