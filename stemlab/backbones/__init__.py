"""Registry of backbones that accept any stem and adapt their first stage to its width."""

from stemlab.backbones import (  # noqa: F401  (registration)
    c3d,
    recurrent,
    resnet2d,
    torchvision_video,
    video_resnet,
)
from stemlab.backbones.base import Backbone
from stemlab.backbones.build import build_backbone, resolve_stem
from stemlab.backbones.c3d import C3D
from stemlab.backbones.layout import Layout, layout_of, torchvision_weights_enum
from stemlab.backbones.recurrent import ConvLSTMCell, ConvLSTMNet, FrameRNN
from stemlab.backbones.registry import BACKBONES, list_backbones, register_backbone
from stemlab.backbones.resnet2d import ResNet2d
from stemlab.backbones.video_resnet import VideoResNet

__all__ = [
    "BACKBONES",
    "C3D",
    "Backbone",
    "ConvLSTMCell",
    "ConvLSTMNet",
    "FrameRNN",
    "Layout",
    "ResNet2d",
    "VideoResNet",
    "build_backbone",
    "layout_of",
    "list_backbones",
    "register_backbone",
    "resolve_stem",
    "torchvision_weights_enum",
]
