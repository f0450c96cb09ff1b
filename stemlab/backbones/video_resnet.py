"""Video ResNets (R3D, MC3, rMC3, R(2+1)D, R2D) whose first stage takes the stem's width.

With their native stems these are torchvision's ``r3d_18``, ``mc3_18`` and ``r2plus1d_18`` tensor for
tensor (same modules, state-dict keys, init and forward); unlike torchvision, ``layer1`` is built with
``inplanes = stem.out_channels``, adding a 1x1x1 projection shortcut when that differs from the
stage width, so a wider or narrower stem really reaches the first stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.video.resnet import (
    BasicBlock,
    Conv2Plus1D,
    Conv3DNoTemporal,
    Conv3DSimple,
)

from stemlab._init import init_conv_bn_linear
from stemlab._validation import check_choice
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

__all__ = [
    "VIDEO_RESNETS",
    "VideoResNet",
    "VideoResNetSpec",
    "mc3_18",
    "r2d_18",
    "r2plus1d_18",
    "r3d_18",
    "rmc3_18",
    "video_resnet",
]

ConvBuilder = type[Conv3DSimple] | type[Conv3DNoTemporal] | type[Conv2Plus1D]


def make_video_stage(
    conv_builder: ConvBuilder, inplanes: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    """A stage of ``blocks`` basic blocks; the first takes ``inplanes`` and applies ``stride``."""
    downsample = None
    if stride != 1 or inplanes != planes * BasicBlock.expansion:
        downsample = nn.Sequential(
            nn.Conv3d(
                inplanes,
                planes * BasicBlock.expansion,
                kernel_size=1,
                stride=conv_builder.get_downsample_stride(stride),
                bias=False,
            ),
            nn.BatchNorm3d(planes * BasicBlock.expansion),
        )
    layers = [BasicBlock(inplanes, planes, conv_builder, stride, downsample)]
    layers += [BasicBlock(planes, planes, conv_builder) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class VideoResNet(Backbone):
    """stem -> layer1..layer4 (basic blocks) -> global average pool -> (dropout) -> fc.

    Args:
        stem: a video stem (``in_channels``, ``out_channels``, ``stride`` with 3 elements).
        conv_builders: the conv type of each of the four stages.
        widths: output channels of each stage.
        layers: blocks per stage.
        num_classes: size of the classifier.
        dropout: dropout probability before ``fc`` (0 = none, as in torchvision).
    """

    def __init__(
        self,
        *,
        stem: nn.Module,
        conv_builders: Sequence[ConvBuilder],
        widths: Sequence[int],
        layers: Sequence[int],
        num_classes: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_stem(stem)
        self.stem = stem
        inplanes = stem.out_channels
        reduction = stem.stride
        info = [{"module": "stem", "num_chs": inplanes, "reduction": reduction}]
        for index, (builder, planes, blocks) in enumerate(zip(conv_builders, widths, layers)):
            stride = 1 if index == 0 else 2
            stage = make_video_stage(builder, inplanes, planes, blocks, stride)
            init_conv_bn_linear(stage)
            self.add_module(f"layer{index + 1}", stage)
            step = builder.get_downsample_stride(stride)
            step = (step,) * 3 if isinstance(step, int) else tuple(step)
            reduction = tuple(r * s for r, s in zip(reduction, step))
            info.append({"module": f"layer{index + 1}", "num_chs": planes, "reduction": reduction})
            inplanes = planes
        self.feature_info = info
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(inplanes, num_classes)
        init_conv_bn_linear(self.fc)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages: ``(N, C, T, H, W) -> (N, C', T', H', W')``."""
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.avgpool(self.forward_features(x)).flatten(1)
        return self.fc(self.dropout(x))


_WIDTHS = (64, 128, 256, 512)
_LAYERS = (2, 2, 2, 2)
_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class VideoResNetSpec:
    """One row of :data:`VIDEO_RESNETS`: what distinguishes a video ResNet-18 variant.

    Attributes:
        conv_builders: the conv type of each of the four stages.
        default_stem: spec of the native stem.
        torchvision_weights: the torchvision weights enum name, if torchvision has the model.
        description: the registry's one-line description.
    """

    conv_builders: tuple[ConvBuilder, ConvBuilder, ConvBuilder, ConvBuilder]
    default_stem: str
    torchvision_weights: str | None
    description: str


VIDEO_RESNETS: dict[str, VideoResNetSpec] = {
    "r3d_18": VideoResNetSpec(
        (Conv3DSimple,) * 4,
        "basic",
        "R3D_18_Weights",
        "R3D-18: 3-D convolutions (3x3x3) in every stage (Tran et al. 2018).",
    ),
    "mc3_18": VideoResNetSpec(
        (Conv3DSimple, Conv3DNoTemporal, Conv3DNoTemporal, Conv3DNoTemporal),
        "basic",
        "MC3_18_Weights",
        "MC3-18: 3-D convolutions in layer1, frame-wise (1x3x3) in layer2-4.",
    ),
    "rmc3_18": VideoResNetSpec(
        (Conv3DNoTemporal, Conv3DSimple, Conv3DSimple, Conv3DSimple),
        "r2d",
        None,
        "rMC3-18: frame-wise (1x3x3) layer1, 3-D convolutions in layer2-4 (reversed MC3).",
    ),
    "r2plus1d_18": VideoResNetSpec(
        (Conv2Plus1D,) * 4,
        "r2plus1d",
        "R2Plus1D_18_Weights",
        "R(2+1)D-18: every 3x3x3 conv factorised into (1x3x3 spatial, 3x1x1 temporal).",
    ),
    "r2d_18": VideoResNetSpec(
        (Conv3DNoTemporal,) * 4,
        "r2d",
        None,
        "R2D-18 (frame-wise f-R2D): 1x3x3 convolutions only; time is pooled at the end.",
    ),
}
"""The video ResNet-18 variants, fed to one builder (as torchvision's ``_video_resnet``)."""


def video_resnet(
    name: str,
    *,
    stem: nn.Module,
    num_classes: int = 400,
    widths: Sequence[int] = _WIDTHS,
    layers: Sequence[int] = _LAYERS,
    width_multiplier: float = 1.0,
    dropout: float = 0.0,
) -> VideoResNet:
    """Build the :data:`VIDEO_RESNETS` variant ``name``.

    Args:
        name: a key of :data:`VIDEO_RESNETS`.
        stem: a video stem.
        num_classes: size of the classifier.
        widths: output channels of each stage.
        layers: blocks per stage.
        width_multiplier: scales every stage width.
        dropout: dropout probability before ``fc``.

    Raises:
        ValueError / TypeError: an unknown variant or invalid options.
    """
    spec = VIDEO_RESNETS[check_choice("name", name, tuple(VIDEO_RESNETS))]
    check_num_classes(num_classes)
    check_dropout(dropout)
    return VideoResNet(
        stem=stem,
        conv_builders=spec.conv_builders,
        widths=stage_widths(widths, width_multiplier, num_stages=4),
        layers=stage_depths(layers, num_stages=4),
        num_classes=num_classes,
        dropout=dropout,
    )


def _register(name: str) -> Callable[..., VideoResNet]:
    """Register the builder of ``name`` with the row's stem, description and layout."""
    spec = VIDEO_RESNETS[name]

    def builder(
        *,
        stem: nn.Module,
        num_classes: int = 400,
        widths: Sequence[int] = _WIDTHS,
        layers: Sequence[int] = _LAYERS,
        width_multiplier: float = 1.0,
        dropout: float = 0.0,
    ) -> VideoResNet:
        return video_resnet(
            name,
            stem=stem,
            num_classes=num_classes,
            widths=widths,
            layers=layers,
            width_multiplier=width_multiplier,
            dropout=dropout,
        )

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = spec.description
    layout = Layout(
        first_block="layer1.0",
        head="fc",
        stages=_STAGES,
        torchvision_weights=spec.torchvision_weights,
    )
    return register_backbone(name, default_stem=spec.default_stem, layout=layout)(builder)


r3d_18 = _register("r3d_18")
mc3_18 = _register("mc3_18")
rmc3_18 = _register("rmc3_18")
r2plus1d_18 = _register("r2plus1d_18")
r2d_18 = _register("r2d_18")
