"""Every registered stem: declared geometry against real forwards, parity, argument validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models.video.resnet import BasicStem, R2Plus1dStem

import stemlab
from stemlab.stems import STEMS, FrameWise, SqueezeExcitation

ALL_STEMS = stemlab.list_stems()


def _input(kind: str, *, channels: int = 3, batch: int = 2) -> torch.Tensor:
    shape = (batch, channels, 4, 32, 32) if kind == "video" else (batch, channels, 32, 32)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ALL_STEMS)
def test_declared_geometry_matches_forward(name):
    stem = stemlab.create_stem(name)
    kind = STEMS.entry(name).kind
    x = _input(kind)
    y = stem(x)
    assert len(stem.stride) == (3 if kind == "video" else 2)
    expected = (2, stem.out_channels, *(math.ceil(s / r) for s, r in zip(x.shape[2:], stem.stride)))
    assert tuple(y.shape) == expected
    assert stem.in_channels == 3


@pytest.mark.parametrize("name", ALL_STEMS)
def test_width_and_in_channels_are_honoured(name):
    stem = stemlab.create_stem(name, in_channels=1, width=12)
    kind = STEMS.entry(name).kind
    y = stem(_input(kind, channels=1))
    assert stem.out_channels == 12 and y.shape[1] == 12 and stem.in_channels == 1


@pytest.mark.parametrize("name", ALL_STEMS)
@pytest.mark.parametrize("bad", [0, -3])
def test_non_positive_width_is_refused(name, bad):
    with pytest.raises(ValueError, match=rf"width must be > 0, got {bad}"):
        stemlab.create_stem(name, width=bad)


@pytest.mark.parametrize("name", ALL_STEMS)
def test_wrong_types_and_unknown_kwargs_are_refused(name):
    with pytest.raises(TypeError, match=r"width must be an int, got float 1\.5"):
        stemlab.create_stem(name, width=1.5)
    with pytest.raises(
        TypeError, match=r"unknown argument\(s\) 'widht' \(did you mean 'width'\?\)"
    ):
        stemlab.create_stem(name, widht=32)


@pytest.mark.parametrize("name", ["basic", "wide", "large_kernel", "channel_attention", "dilated"])
def test_kernels_that_cannot_be_centred_are_refused(name):
    with pytest.raises(ValueError, match=r"kernel_size=\(4, 7, 7\) cannot be centred"):
        stemlab.create_stem(name, kernel_size=(4, 7, 7))
    with pytest.raises(ValueError, match="kernel_size must have 3 elements"):
        stemlab.create_stem(name, kernel_size=(3, 7))


def test_defaults_of_the_named_variants():
    basic, wide = stemlab.create_stem("basic"), stemlab.create_stem("wide")
    assert (basic.out_channels, wide.out_channels) == (64, 128)
    assert stemlab.create_stem("large_kernel")[0].kernel_size == (5, 11, 11)
    assert stemlab.create_stem("large_kernel")[0].padding == (2, 5, 5)
    r2d = stemlab.create_stem("r2d")[0]
    assert (r2d.kernel_size, r2d.stride, r2d.padding) == ((1, 7, 7), (1, 2, 2), (0, 3, 3))
    dilated = stemlab.create_stem("dilated")[0]
    # effective reach of a dilated kernel: d * (k - 1) + 1 -> 7x7 spatially, like basic
    assert [d * (k - 1) + 1 for k, d in zip(dilated.kernel_size, dilated.dilation)] == [3, 7, 7]
    c3d = stemlab.create_stem("c3d")
    assert c3d[0].kernel_size == (3, 3, 3) and c3d[0].bias is not None
    assert isinstance(c3d[-1], nn.MaxPool3d) and c3d.stride == (1, 2, 2)
    separable = stemlab.create_stem("depthwise_separable")
    assert separable[0].groups == 3 and separable[3].kernel_size == (1, 1, 1)
    assert stemlab.create_stem("patchify:patch_size=8").stride == (8, 8)


def _copy_and_compare(ours: nn.Module, reference: nn.Module, x: torch.Tensor) -> None:
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval(), reference.eval()
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_basic_is_torchvision_basic_stem():
    _copy_and_compare(stemlab.create_stem("basic"), BasicStem(), _input("video"))


def test_r2plus1d_is_torchvision_r2plus1d_stem():
    _copy_and_compare(stemlab.create_stem("r2plus1d"), R2Plus1dStem(), _input("video"))


def test_squeeze_excitation_is_identity_at_init_and_batch_independent():
    se = SqueezeExcitation(16, reduction=4)
    x = torch.randn(3, 16, 2, 5, 5)
    torch.testing.assert_close(se(x), x, rtol=0, atol=0)
    torch.nn.init.normal_(se.fc2.weight)
    batch = se(x)
    singles = torch.cat([se(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, singles)
    # independent formula: gate = 2 * sigmoid(W2 relu(W1 mean + b1) + b2)
    mean = x.mean(dim=(2, 3, 4))
    gate = 2 * torch.sigmoid(se.fc2(torch.relu(se.fc1(mean))))
    torch.testing.assert_close(batch, x * gate[:, :, None, None, None])
    # works on 4-D maps too
    assert se(torch.randn(1, 16, 7, 7)).shape == (1, 16, 7, 7)


def test_channel_attention_stem_with_batch_size_one():
    stem = stemlab.create_stem("channel_attention").eval()
    torch.nn.init.normal_(stem[3].fc2.weight)
    x = _input("video", batch=2)
    torch.testing.assert_close(stem(x)[1:], stem(x[1:]))


def test_framewise_equals_a_loop_over_frames():
    image_stem = stemlab.create_stem("deep", width=8).eval()
    wrapped = FrameWise(image_stem)
    assert wrapped.stride == (1, 4, 4) and wrapped.out_channels == 8
    x = _input("video")
    expected = torch.stack([image_stem(x[:, :, t]) for t in range(x.shape[2])], dim=2)
    torch.testing.assert_close(wrapped(x), expected)
    with pytest.raises(TypeError, match="wraps image stems"):
        FrameWise(stemlab.create_stem("basic"))
    with pytest.raises(TypeError, match="lacks the stem attributes"):
        FrameWise(nn.ReLU())


def test_layer_types_are_callables():
    stem = stemlab.stems.conv_stem(width=8, norm=lambda c: nn.GroupNorm(2, c), activation=nn.SiLU)
    assert isinstance(stem[1], nn.GroupNorm) and isinstance(stem[2], nn.SiLU)
    with pytest.raises(TypeError, match="norm must be a callable"):
        stemlab.stems.conv_stem(norm="batchnorm")
