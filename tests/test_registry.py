"""Registries, name lookup and stem specs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import stemlab
from stemlab._registry import Registry
from stemlab.stems import STEMS, Stem

REQUIRED_VIDEO_STEMS = {
    "basic",
    "r2plus1d",
    "wide",
    "large_kernel",
    "channel_attention",
    "c3d",
    "r2d",
    "depthwise_separable",
    "dilated",
}
REQUIRED_IMAGE_STEMS = {"resnet", "deep", "patchify"}
REQUIRED_BACKBONES = {
    "r3d_18",
    "mc3_18",
    "r2plus1d_18",
    "rmc3_18",
    "r2d_18",
    "c3d",
    "resnet18",
    "cnn_lstm",
    "cnn_gru",
    "conv_lstm",
}


def test_required_names_are_registered_with_kinds_and_descriptions():
    assert set(stemlab.list_stems()) >= REQUIRED_VIDEO_STEMS | REQUIRED_IMAGE_STEMS
    assert set(stemlab.list_backbones()) >= REQUIRED_BACKBONES
    for name in REQUIRED_VIDEO_STEMS:
        assert STEMS.entry(name).kind == "video"
    for name in REQUIRED_IMAGE_STEMS:
        assert STEMS.entry(name).kind == "image"
    assert stemlab.BACKBONES.entry("resnet18").kind == "image"
    for entry in [*STEMS, *stemlab.BACKBONES]:
        assert entry.description and "\n" not in entry.description


def test_list_patterns_are_fnmatch_and_sorted():
    assert stemlab.list_stems("r2*") == ["r2d", "r2plus1d"]
    assert stemlab.list_backbones("*_18") == [
        "mc3_18",
        "r2d_18",
        "r2plus1d_18",
        "r3d_18",
        "rmc3_18",
    ]
    assert stemlab.list_backbones("cnn_?ru") == ["cnn_gru"]
    assert stemlab.list_stems("nothing*") == []
    assert stemlab.list_stems() == sorted(stemlab.list_stems())
    # fnmatch, not substring matching
    assert stemlab.list_stems("wid") == []


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="'basic' is already registered"):
        stemlab.register_stem("basic")(lambda **kw: None)
    with pytest.raises(ValueError, match="'r3d_18' is already registered"):
        stemlab.register_backbone("r3d_18")(lambda **kw: None)


def test_register_rejects_bad_names_and_kinds():
    registry = Registry("thing")
    with pytest.raises(ValueError, match="identifier"):
        registry.register("has space")
    with pytest.raises(TypeError, match="must be a str"):
        registry.register(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind='audio'"):
        registry.register("x", kind="audio")  # type: ignore[arg-type]


def test_unknown_names_suggest_close_matches():
    with pytest.raises(ValueError, match=r"unknown stem 'wdie'\. Did you mean 'wide'"):
        stemlab.create_stem("wdie")
    with pytest.raises(ValueError, match=r"Did you mean 'r2plus1d_18'"):
        stemlab.create_model("r2plus1d18")
    with pytest.raises(ValueError, match=r"Available: .*basic"):
        stemlab.create_stem("zzzz")


def test_custom_stem_plugs_into_every_layer_of_the_api():
    @stemlab.register_stem("test_tiny")
    def test_tiny(*, in_channels: int = 3, width: int = 8) -> Stem:
        """A test stem."""
        conv = nn.Conv3d(in_channels, width, kernel_size=1, stride=(1, 2, 2))
        return Stem(conv, in_channels=in_channels, out_channels=width, stride=(1, 2, 2))

    try:
        assert "test_tiny" in stemlab.list_stems("test_*")
        model = stemlab.create_model(
            "r3d_18",
            stem="test_tiny:width=12",
            num_classes=3,
            widths=(8, 8, 8, 8),
            layers=(1, 1, 1, 1),
        )
        assert model.stem.out_channels == 12
        assert model.layer1[0].conv1[0].in_channels == 12
        assert model.eval()(torch.randn(1, 3, 2, 16, 16)).shape == (1, 3)
    finally:
        STEMS.unregister("test_tiny")
    assert "test_tiny" not in stemlab.list_stems()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("wide", ("wide", {})),
        ("wide:", ("wide", {})),
        ("  basic : width=32 ", ("basic", {"width": 32})),
        (
            "wide:width=128,kernel_size=(3,9,9)",
            ("wide", {"width": 128, "kernel_size": (3, 9, 9)}),
        ),
        (
            "r2d:kernel_size=[5, 5], stride=(2,2)",
            ("r2d", {"kernel_size": [5, 5], "stride": (2, 2)}),
        ),
        ("c3d:batch_norm=True", ("c3d", {"batch_norm": True})),
        ("x:a=-1.5e-3,b='s,t',c=None", ("x", {"a": -1.5e-3, "b": "s,t", "c": None})),
    ],
)
def test_parse_stem_spec(spec, expected):
    assert stemlab.parse_stem_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("wide:width=__import__('os').getcwd()", "must be a Python literal"),
        ("wide:width=128,width=64", "given twice|repeated"),
        ("wide:128", "only key=value"),
        ("wide:**{'a': 1}", r"'\*\*' is not allowed"),
        ("wide:width=(", "cannot be parsed"),
        ("1wide", "bad name"),
        (":width=3", "bad name"),
        ("wide:width=x", "must be a Python literal"),
    ],
)
def test_parse_stem_spec_rejects(spec, message):
    with pytest.raises(ValueError, match=message):
        stemlab.parse_stem_spec(spec)


def test_parse_stem_spec_type_error():
    with pytest.raises(TypeError, match="must be a str"):
        stemlab.parse_stem_spec(None)  # type: ignore[arg-type]
