"""Every stem x every backbone, channel propagation, torchvision parity, closed-form parameter counts."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from small_models import TORCHVISION_VIDEO, small_kwargs
from torch import nn

import stemlab
from stemlab.backbones import BACKBONES
from stemlab.stems import STEMS

VIDEO_BACKBONES = [
    e.name for e in BACKBONES if e.kind == "video" and e.name not in TORCHVISION_VIDEO
]
IMAGE_BACKBONES = [e.name for e in BACKBONES if e.kind == "image"]
VIDEO_STEMS = [e.name for e in STEMS if e.kind == "video"]
IMAGE_STEMS = [e.name for e in STEMS if e.kind == "image"]
RESNETS = ["r3d_18", "mc3_18", "r2plus1d_18", "rmc3_18", "r2d_18"]


def _clip(n: int = 1, t: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, t, size, size, generator=torch.Generator().manual_seed(1))


def _first_stage_input_convs(model: nn.Module) -> list[nn.Module]:
    """Convs that read the stem's output directly: layer1's first conv and its projection."""
    first_block = model.layer1[0]
    convs = [m for m in first_block.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    shortcut = getattr(first_block, "downsample", None)
    return [convs[0]] + ([shortcut[0]] if shortcut is not None else [])


def _stage_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        model.get_submodule(info["module"]).register_forward_hook(
            lambda _m, _i, out, name=info["module"]: shapes.__setitem__(name, tuple(out.shape))
        )
        for info in model.feature_info
    ]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


@pytest.mark.parametrize("backbone", VIDEO_BACKBONES)
@pytest.mark.parametrize("stem", VIDEO_STEMS + IMAGE_STEMS)
def test_every_stem_on_every_video_backbone(backbone, stem):
    model = stemlab.create_model(backbone, stem=stem, num_classes=5, **small_kwargs(backbone))
    model.eval()
    x = _clip(n=2)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    # channel propagation: the first stage reads the stem's width
    for conv in _first_stage_input_convs(model):
        assert conv.in_channels == model.stem.out_channels
    # feature_info is a contract: channels and reductions of the real outputs
    with torch.no_grad():
        shapes = _stage_outputs(model, x)
    for info in model.feature_info:
        shape = shapes[info["module"]]
        t, h, w = (math.ceil(s / r) for s, r in zip(x.shape[2:], info["reduction"]))
        if info.get("time_folded"):
            assert shape == (2 * t, info["num_chs"], h, w), info
        elif backbone == "c3d" and info["module"] != "stem":
            # C3D pools with ceil_mode, pool5 pads H and W by one
            assert shape[:2] == (2, info["num_chs"]) and shape[2] == max(1, t), info
        else:
            assert shape == (2, info["num_chs"], t, h, w), info


@pytest.mark.parametrize("stem", IMAGE_STEMS)
def test_image_stems_on_resnet18(stem):
    model = stemlab.create_model("resnet18", stem=stem, num_classes=7, **small_kwargs("resnet18"))
    x = torch.randn(2, 3, 64, 64)
    shapes = _stage_outputs(model.eval(), x)
    for info in model.feature_info:
        h, w = (math.ceil(s / r) for s, r in zip(x.shape[2:], info["reduction"]))
        assert shapes[info["module"]] == (2, info["num_chs"], h, w)
    for conv in _first_stage_input_convs(model):
        assert conv.in_channels == model.stem.out_channels


@pytest.mark.parametrize("stem", VIDEO_STEMS)
def test_video_stems_are_refused_by_image_backbones(stem):
    with pytest.raises(
        ValueError, match=r"is a video stem .* takes images; use an image stem: deep"
    ):
        stemlab.create_model("resnet18", stem=stem)


@pytest.mark.parametrize("backbone", VIDEO_BACKBONES + IMAGE_BACKBONES)
def test_input_validation_names_the_layout(backbone):
    model = stemlab.create_model(backbone, num_classes=3, **small_kwargs(backbone))
    video = BACKBONES.entry(backbone).kind == "video"
    wrong_rank = torch.randn(3, 32, 32) if not video else torch.randn(3, 4, 32, 32)
    layout = r"\(N, C, T, H, W\) video clip" if video else r"\(N, C, H, W\) image"
    with pytest.raises(ValueError, match=layout + r" with C=3, got shape"):
        model(wrong_rank)
    wrong_channels = torch.randn(1, 1, 4, 32, 32) if video else torch.randn(1, 1, 32, 32)
    with pytest.raises(ValueError, match=layout + r" with C=3 channels in dim 1, got shape"):
        model(wrong_channels)
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        model([[1.0]])


@pytest.mark.parametrize(
    ("backbone", "reference"),
    [
        ("r3d_18", torchvision.models.video.r3d_18),
        ("mc3_18", torchvision.models.video.mc3_18),
        ("r2plus1d_18", torchvision.models.video.r2plus1d_18),
    ],
)
def test_native_stem_models_are_torchvision_models(backbone, reference):
    torch.manual_seed(0)
    theirs = reference().eval()
    ours = stemlab.create_model(backbone).eval()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 8, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    # same initialisation scheme: identical parameter count and per-type init statistics
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_resnet18_matches_torchvision_parameter_count():
    ours = stemlab.create_model("resnet18", num_classes=1000)
    theirs = torchvision.models.resnet18()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert sum(p.numel() for p in ours.parameters()) == 11_689_512


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv2plus1d_params(inplanes: int, planes: int, midplanes: int) -> int:
    return inplanes * midplanes * 9 + 2 * midplanes + midplanes * planes * 3


def _block_conv_params(backbone: str, inplanes: int, planes: int) -> int:
    """Parameters of layer1.0's two convs (conv + BN each) reading ``inplanes`` channels."""
    if backbone == "r2plus1d_18":
        mid = (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)
        return (
            _conv2plus1d_params(inplanes, planes, mid)
            + _conv2plus1d_params(planes, planes, mid)
            + 4 * planes
        )
    kernel = 9 if backbone in ("r2d_18", "rmc3_18") else 27  # layer1 is 1x3x3 for these
    return inplanes * planes * kernel + planes * planes * kernel + 4 * planes


def _stem_params(stem: str, width: int) -> int:
    kernel = {"basic": 3 * 49, "wide": 3 * 49, "r2d": 49}[stem]
    return 3 * width * kernel + 2 * width


@pytest.mark.parametrize("backbone", RESNETS)
def test_wide_minus_basic_parameter_delta_is_closed_form(backbone):
    native = "r2d" if backbone in ("r2d_18", "rmc3_18") else "basic"
    wide_spec = "r2d:width=128" if native == "r2d" else "wide"
    narrow = stemlab.create_model(backbone, stem=native)
    wide = stemlab.create_model(backbone, stem=wide_spec)
    expected = (
        _stem_params(native, 128)
        - _stem_params(native, 64)
        + _block_conv_params(backbone, 128, 64)
        - _block_conv_params(backbone, 64, 64)
        + 128 * 64  # the new 1x1x1 projection shortcut
        + 2 * 64  # and its BN
    )
    assert _params(wide) - _params(narrow) == expected
    assert wide.layer1[0].downsample is not None and narrow.layer1[0].downsample is None


def test_scale_down_options():
    model = stemlab.create_model("r2plus1d_18", width_multiplier=0.25, layers=(1, 1, 2, 1))
    assert [info["num_chs"] for info in model.feature_info] == [64, 16, 32, 64, 128]
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [1, 1, 2, 1]
    assert model.fc.in_features == 128
    with pytest.raises(ValueError, match="width_multiplier must be > 0"):
        stemlab.create_model("r3d_18", width_multiplier=0)
    with pytest.raises(ValueError, match="layers must have 4 elements"):
        stemlab.create_model("r3d_18", layers=(1, 1))
    with pytest.raises(TypeError, match=r"unknown argument\(s\) 'blocks'"):
        stemlab.create_model("r3d_18", blocks=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        stemlab.create_model("cnn_lstm", dropout=1.5)


def test_c3d_head_is_sized_from_the_input():
    model = stemlab.create_model("c3d", num_classes=101)
    assert model.fc6.in_features == 8192  # 512 x 1 x 4 x 4 at 16x112x112
    expected_params = (
        3 * 64 * 27 + 64
        + 64 * 128 * 27 + 128
        + 128 * 256 * 27 + 256 + 256 * 256 * 27 + 256
        + 256 * 512 * 27 + 512 + 512 * 512 * 27 + 512
        + 2 * (512 * 512 * 27 + 512)
        + 8192 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 101 + 101
    )  # fmt: skip
    assert _params(model) == expected_params
    # 8x64x64: T 8->4->2->1->1, H 64->32->16->8->4->3 (pool5 pads by one)
    small = stemlab.create_model("c3d", num_classes=4, input_size=(8, 64, 64), fc_width=32)
    assert small.fc6.in_features == 512 * 1 * 3 * 3
    # a wider stem changes conv2's input, and the head follows the stem's stride
    wide = stemlab.create_model(
        "c3d", stem="wide", num_classes=4, fc_width=32, input_size=(8, 64, 64)
    )
    assert wide.layer1[0].in_channels == 128 and wide.fc6.in_features == 512 * 1 * 3 * 3
    # other clip sizes are pooled to the grid fc6 expects
    assert small.eval()(torch.randn(1, 3, 4, 48, 48)).shape == (1, 4)


@pytest.mark.parametrize(
    ("backbone", "bidirectional"),
    [
        ("cnn_lstm", False),
        ("cnn_lstm", True),
        ("cnn_gru", False),
        ("cnn_gru", True),
        ("conv_lstm", False),
    ],
)
def test_recurrent_lengths_ignore_padding(backbone, bidirectional):
    kwargs = small_kwargs(backbone)
    if bidirectional:
        kwargs["bidirectional"] = True
    model = stemlab.create_model(backbone, num_classes=3, **kwargs).eval()
    x = _clip(n=2, t=6)
    lengths = torch.tensor([3, 6])
    with torch.no_grad():
        padded = model(x, lengths=lengths)
        garbage = x.clone()
        garbage[0, :, 3:] = 100.0
        assert torch.allclose(model(garbage, lengths=lengths), padded, atol=1e-5)
        truncated = model(x[:1, :, :3])
        torch.testing.assert_close(padded[:1], truncated, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x, lengths=[6, 6]), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 6\]"):
        model(x, lengths=[0, 6])
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        model(x, lengths=[3])
    with pytest.raises(TypeError, match="lengths must hold integers"):
        model(x, lengths=torch.tensor([3.0, 6.0]))


def test_frame_encoder_is_vectorised_over_frames():
    model = stemlab.create_model("cnn_lstm", num_classes=3, **small_kwargs("cnn_lstm")).eval()
    x = _clip(n=2, t=5)
    with torch.no_grad():
        folded = model.encode_frames(x)
        for t in range(5):
            frame = model.stem.image_stem(x[:, :, t])
            for index in range(model.num_stages):
                frame = getattr(model, f"layer{index + 1}")(frame)
            torch.testing.assert_close(folded[:, t], frame)


def test_video_resnets_and_frame_rnns_are_built_from_one_table():
    from stemlab.backbones.recurrent import FRAME_RNNS
    from stemlab.backbones.video_resnet import VIDEO_RESNETS, video_resnet

    assert sorted(VIDEO_RESNETS) == sorted(RESNETS)
    for name, spec in VIDEO_RESNETS.items():
        entry = BACKBONES.entry(name)
        assert entry.default_stem == spec.default_stem
        assert entry.description == spec.description
        assert entry.layout.torchvision_weights == spec.torchvision_weights
        model = stemlab.create_model(name, num_classes=3, **small_kwargs(name))
        convs = [type(getattr(model, f"layer{i}")[0].conv1[0]) for i in range(1, 5)]
        assert convs == list(spec.conv_builders)
    for name, (rnn, description) in FRAME_RNNS.items():
        assert BACKBONES.entry(name).description == description
        model = stemlab.create_model(name, num_classes=3, **small_kwargs(name))
        assert type(model.rnn) is (nn.LSTM if rnn == "lstm" else nn.GRU)
    with pytest.raises(ValueError, match="Did you mean 'r3d_18'"):
        video_resnet("r3d_81", stem=stemlab.create_stem("basic"))
