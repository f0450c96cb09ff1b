"""2-D ResNet-18 whose first stage takes the stem's width; also the per-frame encoder of the
recurrent backbones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from stemlab._init import init_conv_bn_linear
from stemlab.backbones.base import (
    Backbone,
    check_dropout,
    check_num_classes,
    stage_depths,
    stage_widths,
)
from stemlab.backbones.layout import Layout
from stemlab.backbones.registry import register_backbone
from stemlab.stems.base import check_stem

__all__ = ["ResNet2d", "make_image_stage", "make_image_stages", "resnet18"]


def make_image_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """A stage of ``blocks`` 2-D basic blocks; the first takes ``inplanes`` and applies ``stride``."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes),
        )
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
    stage = nn.Sequential(*layers)
    init_conv_bn_linear(stage)
    return stage


def make_image_stages(
    owner: nn.Module,
    *,
    in_channels: int,
    stem_reduction: tuple[int, ...],
    widths: Sequence[int],
    layers: Sequence[int],
    time_folded: bool = False,
) -> list[dict[str, Any]]:
    """Add ``layer1``.. to ``owner`` (first stride 1, then 2) and return their ``feature_info``.

    ``stem_reduction`` is ``(h, w)`` or, for time-folded encoders, ``(t, h, w)`` (time is never
    strided by 2-D stages).
    """
    info: list[dict[str, Any]] = []
    inplanes = in_channels
    reduction = tuple(stem_reduction)
    for index, (planes, blocks) in enumerate(zip(widths, layers)):
        stride = 1 if index == 0 else 2
        owner.add_module(f"layer{index + 1}", make_image_stage(inplanes, planes, blocks, stride))
        spatial = tuple(r * stride for r in reduction[-2:])
        reduction = (*reduction[:-2], *spatial)
        entry: dict[str, Any] = {
            "module": f"layer{index + 1}",
            "num_chs": planes,
            "reduction": reduction,
        }
        if time_folded:
            entry["time_folded"] = True
        info.append(entry)
        inplanes = planes
    return info


class ResNet2d(Backbone):
    """stem -> layer1..layer4 (2-D basic blocks) -> global average pool -> (dropout) -> fc.

    Args:
        stem: an image stem (``stride`` with 2 elements).
        widths: output channels of each stage.
        layers: blocks per stage.
        num_classes: size of the classifier.
        dropout: dropout probability before ``fc``.
    """

    input_rank = 4

    def __init__(
        self,
        *,
        stem: nn.Module,
        widths: Sequence[int],
        layers: Sequence[int],
        num_classes: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_stem(stem)
        self.stem = stem
        self.feature_info = [
            {"module": "stem", "num_chs": stem.out_channels, "reduction": stem.stride}
        ]
        self.feature_info += make_image_stages(
            self,
            in_channels=stem.out_channels,
            stem_reduction=stem.stride,
            widths=widths,
            layers=layers,
        )
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: ``(N, C, H, W) -> (N, C', H', W')``."""
        x = self.stem(x)
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.fc(self.dropout(x))


@register_backbone(
    "resnet18",
    default_stem="resnet",
    kind="image",
    layout=Layout(
        first_block="layer1.0",
        head="fc",
        stages=("stem", "layer1", "layer2", "layer3", "layer4"),
        torchvision_weights="ResNet18_Weights",
    ),
)
def resnet18(
    *,
    stem: nn.Module,
    num_classes: int = 1000,
    widths: Sequence[int] = (64, 128, 256, 512),
    layers: Sequence[int] = (2, 2, 2, 2),
    width_multiplier: float = 1.0,
    dropout: float = 0.0,
) -> ResNet2d:
    """2-D ResNet-18 (He et al. 2016) for images; torchvision's resnet18 with a swappable stem."""
    check_num_classes(num_classes)
    check_dropout(dropout)
    return ResNet2d(
        stem=stem,
        widths=stage_widths(widths, width_multiplier, num_stages=len(tuple(widths))),
        layers=stage_depths(layers, num_stages=len(tuple(widths))),
        num_classes=num_classes,
        dropout=dropout,
    )
