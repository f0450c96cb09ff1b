"""create_model: stem resolution, options and errors."""

from __future__ import annotations

import pytest
import torch

import stemlab
from stemlab.stems import FrameWise


def test_native_stems_and_names():
    expected = {
        "r3d_18": "basic",
        "mc3_18": "basic",
        "r2plus1d_18": "r2plus1d",
        "rmc3_18": "r2d",
        "r2d_18": "r2d",
        "c3d": "c3d",
        "resnet18": "resnet",
        "cnn_lstm": "resnet",
        "cnn_gru": "resnet",
        "conv_lstm": "resnet",
    }
    for backbone, stem in expected.items():
        assert stemlab.BACKBONES.entry(backbone).default_stem == stem


def test_spec_strings_and_attributes():
    model = stemlab.create_model(
        "r3d_18", stem="wide:width=96", num_classes=3, widths=(8, 8, 8, 8), layers=(1, 1, 1, 1)
    )
    assert model.stem.out_channels == 96 and model.stem_spec == "wide:width=96"
    assert model.backbone_name == "r3d_18" and model.fc.out_features == 3


def test_stem_module_is_used_as_given():
    stem = stemlab.create_stem("dilated", width=24)
    model = stemlab.create_model("mc3_18", stem=stem, num_classes=2, widths=(8, 8, 8, 8))
    assert model.stem is stem and model.stem_spec == "Stem"
    assert model.layer1[0].conv1[0].in_channels == 24


def test_image_stem_on_video_backbone_runs_frame_wise():
    model = stemlab.create_model(
        "r2d_18", stem="patchify:patch_size=4", num_classes=2, widths=(8, 8, 8, 8)
    )
    assert isinstance(model.stem, FrameWise) and model.stem.stride == (1, 4, 4)
    assert model.eval()(torch.randn(1, 3, 2, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_classes": 0}, ValueError, "num_classes must be > 0"),
        ({"num_classes": 2.0}, TypeError, "num_classes must be an int"),
        ({"stem_init": "zero"}, ValueError, "stem_init='zero' is not allowed"),
        ({"stem": 3}, TypeError, "stem must be None, a stem name/spec string or an nn.Module"),
        ({"stem": torch.nn.ReLU()}, TypeError, "lacks the stem attributes"),
        ({"stem": "basic:width=0"}, ValueError, "width must be > 0, got 0"),
        ({"stem": "basci"}, ValueError, "Did you mean 'basic'"),
        ({"stem": "basic", "stem_kwargs": 1}, TypeError, r"unknown argument\(s\) 'stem_kwargs'"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        stemlab.create_model("r3d_18", **kwargs)


def test_models_carry_their_backbones_declared_layout():
    from stemlab.backbones import layout_of
    from stemlab.models import resolve_stem

    model = stemlab.create_model("c3d", num_classes=2, widths=(8, 8, 8, 8), fc_width=8)
    assert model.layout == layout_of("c3d") and model.layout.head == "fc8"
    assert model.get_submodule(model.layout.head).out_features == 2
    stem, spec = resolve_stem("wide:width=96", backbone="r3d_18")
    assert stem.out_channels == 96 and spec == "wide:width=96"
