"""The input-channel rule (TSN cross-modality init) and 2-D -> 3-D inflation (I3D), checked
numerically: the transferred model computes what the source computed where the maths says so."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from small_models import randomized
from torch import nn

import stemlab
from stemlab.weights import STEM_TRANSFERS, load_weights

SMALL = {"widths": (8, 8, 16, 16), "layers": (1, 1, 1, 1), "num_classes": 5}
EQUAL_WIDTHS = {"widths": (8, 8, 8, 8), "layers": (1, 1, 1, 1), "num_classes": 5}


def evaluate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last stage's maps: unlike the logits of a randomised network, they follow the input."""
    model.eval()
    with torch.no_grad():
        return model.forward_features(x)


def assert_same_function(
    source: nn.Module,
    target: nn.Module,
    x_source: torch.Tensor,
    x_target: torch.Tensor,
    tol: float,
    *,
    stem: bool = True,
) -> None:
    """Stem output, last-stage features and logits agree; the features really vary with x."""
    if stem:
        with torch.no_grad():
            assert max_error(source.eval().stem(x_source), target.eval().stem(x_target)) < tol
    theirs, ours = features(source, x_source), features(target, x_target)
    assert theirs.std() > 0.05  # the comparison is not vacuous
    assert max_error(theirs, ours) < tol
    assert max_error(evaluate(source, x_source), evaluate(target, x_target)) < tol


def rows(model: nn.Module):
    return model.weights_report.set_index("key")


# ------------------------------------------------------------------- input channels (TSN)


def test_input_channel_rule_runs_first_in_the_table() -> None:
    assert next(iter(STEM_TRANSFERS)) == "in_channels"
    assert STEM_TRANSFERS["in_channels"].structural


@pytest.mark.parametrize("backbone", ["r3d_18", "r2plus1d_18"])
def test_grayscale_model_equals_the_rgb_model_on_the_replicated_clip(backbone: str) -> None:
    native = stemlab.BACKBONES.entry(backbone).default_stem
    source = randomized(stemlab.create_model(backbone, **SMALL))
    target = stemlab.create_model(
        backbone, stem=f"{native}:in_channels=1", weights=source.state_dict(), **SMALL
    )
    report = target.weights_report
    assert report.attrs["stem_transfer"] == "in_channels"
    assert report.attrs["in_channels"] == (3, 1)
    row = rows(target).loc["stem.0.weight"]
    assert row.action == "transferred" and "input channels 3 -> 1" in row.detail
    # Closed form: the 1-channel kernel is the sum of the RGB kernels (mean x 3/1).
    expected = source.stem[0].weight.detach().sum(1, keepdim=True)
    assert torch.allclose(target.stem[0].weight.detach(), expected, atol=1e-6)
    gray = torch.randn(2, 1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    assert_same_function(source, target, gray.expand(-1, 3, -1, -1, -1), gray, 1e-5)


@pytest.mark.parametrize("channels", [2, 4, 10])
def test_equal_channels_give_the_rgb_response(channels: int) -> None:
    # 2 = one flow frame (x, y), 10 = 2L flow with L = 5, 4 = RGB + depth: every new channel is
    # the RGB mean x 3/new_in, so an input whose channels all equal v answers as RGB (v, v, v).
    # Checked in float64, so the comparison measures the rule, not float32 summation order.
    source = randomized(stemlab.create_model("r3d_18", **SMALL)).double().eval()
    target = stemlab.create_model(
        "r3d_18", stem=f"basic:in_channels={channels}", weights=source.state_dict(), **SMALL
    )
    target = target.double().eval()
    old = source.stem[0].weight.detach()
    new = target.stem[0].weight.detach()
    assert new.shape[1] == channels
    for j in range(channels):
        assert torch.allclose(new[:, j], old.mean(1) * 3 / channels, atol=1e-6)
    v = torch.randn(2, 1, 4, 32, 32, generator=torch.Generator().manual_seed(4)).double()
    rgb, ours = v.expand(-1, 3, -1, -1, -1), v.expand(-1, channels, -1, -1, -1)
    assert_same_function(source, target, rgb, ours, 1e-6)


def test_input_channels_combine_with_the_other_rules() -> None:
    source = randomized(stemlab.create_model("r3d_18", stem="basic:width=8", **SMALL))
    target = stemlab.create_model(
        "r3d_18",
        stem="wide:width=16,kernel_size=(5,11,11),in_channels=1",
        weights=source.state_dict(),
        **SMALL,
    )
    assert target.weights_report.attrs["stem_transfer"] == "in_channels+kernel_size+width"
    gray = torch.randn(2, 1, 4, 32, 32, generator=torch.Generator().manual_seed(5))
    # The wider stem's output is the old one with channels duplicated: compare what follows it.
    assert_same_function(source, target, gray.expand(-1, 3, -1, -1, -1), gray, 1e-5, stem=False)


def test_frame_wise_image_stem_with_one_channel() -> None:
    kwargs = {"widths": (8, 8, 16, 16), "layers": (1, 1, 1, 1), "hidden_size": 16}
    source = randomized(stemlab.create_model("cnn_lstm", **kwargs))
    target = stemlab.create_model(
        "cnn_lstm", stem="resnet:in_channels=1", weights=source.state_dict(), **kwargs
    )
    assert "input channels 3 -> 1" in rows(target).loc["stem.image_stem.0.weight", "detail"]
    gray = torch.randn(2, 1, 4, 32, 32, generator=torch.Generator().manual_seed(6))
    assert_same_function(source, target, gray.expand(-1, 3, -1, -1, -1), gray, 1e-5)


def test_grouped_input_conv_is_refused_with_a_reason() -> None:
    source = randomized(stemlab.create_model("r3d_18", **SMALL))
    target = stemlab.create_model("r3d_18", stem="depthwise_separable:in_channels=1", **SMALL)
    with pytest.warns(UserWarning, match="could not be transferred"):
        report = load_weights(target, source.state_dict())
    assert report.attrs["stem_transfer_failed"]


# ------------------------------------------------------------------- 2-D -> 3-D inflation


def replicate_time_padding(model: nn.Module) -> nn.Module:
    """A copy whose 3-D convs pad time by repeating the edge frames instead of with zeros.

    A static clip then stays static through every layer, so the 3-D model sees the frame
    everywhere, as the 2-D model does; spatial padding is untouched (still zeros).
    """
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.Conv3d) and module.padding[0] > 0:
            pad = module.padding[0]
            module.padding = (0, *module.padding[1:])
            module.register_forward_pre_hook(
                lambda _m, args, pad=pad: (F.pad(args[0], (0, 0, 0, 0, pad, pad), "replicate"),)
            )
    return model


def static_clip(image: torch.Tensor, frames: int) -> torch.Tensor:
    return image[:, :, None].expand(-1, -1, frames, -1, -1).contiguous()


INFLATE = [
    ("r3d_18", "basic:width=8"),
    ("mc3_18", "basic:width=8"),
    ("r2plus1d_18", "r2plus1d:width=8,mid_width=16"),
]


@pytest.fixture(scope="module")
def image_model() -> nn.Module:
    # No max-pool: the video stems have none, so the 2-D network the 3-D one must match has none.
    model = stemlab.create_model("resnet18", stem="resnet:width=8,pool=False", **EQUAL_WIDTHS)
    return randomized(model).eval()


@pytest.mark.parametrize(("backbone", "stem"), INFLATE)
def test_inflated_model_on_a_static_clip_equals_the_image_model(
    image_model: nn.Module, backbone: str, stem: str
) -> None:
    model = stemlab.create_model(
        backbone, stem=stem, weights=image_model.state_dict(), **EQUAL_WIDTHS
    ).eval()
    report = model.weights_report
    assert report.attrs["inflation"] == "2-D -> 3-D"
    assert report.attrs["inflation_approximate_channels"] == 0
    conv = rows(model).loc[
        "layer1.0.conv1.0.weight" if backbone != "r2plus1d_18" else "layer1.0.conv1.0.0.weight"
    ]
    assert conv.action == "transferred" and conv.detail.startswith("inflated 2-D -> 3-D")
    assert conv.source == "layer1.0.conv1.weight"
    assert (report.action == "skipped").sum() == 0
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    expected = evaluate(image_model, image)
    flat = features(image_model, image)
    assert flat.std() > 0.05
    clip = static_clip(image, 8)
    # Edge frames repeated in time: the inflated model is the image model, at every frame.
    replicated = replicate_time_padding(model)
    assert max_error(features(replicated, clip), flat[:, :, None].expand(-1, -1, 1, -1, -1)) < 1e-4
    assert max_error(evaluate(replicated, clip), expected) < 1e-4
    # With its own zero padding, frames far enough from the ends still match: compare layer1 on
    # frames 3..4 of 8 (r3d/mc3 stem and layer1's two 3x3x3 convs each reach one frame out).
    with torch.no_grad():
        frames = model.layer1(model.stem(clip))[:, :, 3:5]
        flat = image_model.layer1(image_model.stem(image))
    assert max_error(frames, flat[:, :, None].expand_as(frames)) < 1e-4


def test_r2plus1d_inflation_is_exact_without_replicate_padding(image_model: nn.Module) -> None:
    # (2+1)D: centre-tap identity in time, so even zero-padded time changes nothing.
    model = stemlab.create_model(
        "r2plus1d_18",
        stem="r2plus1d:width=8,mid_width=16",
        weights=image_model.state_dict(),
        **EQUAL_WIDTHS,
    )
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    assert max_error(evaluate(model, static_clip(image, 4)), evaluate(image_model, image)) < 1e-4


def test_r3d_kernel_is_repeated_and_divided_by_t(image_model: nn.Module) -> None:
    model = stemlab.create_model(
        "r3d_18", stem="basic:width=8", weights=image_model.state_dict(), **EQUAL_WIDTHS
    )
    flat = image_model.layer2[0].conv1.weight.detach()
    inflated = model.layer2[0].conv1[0].weight.detach()
    assert inflated.shape == (8, 8, 3, 3, 3)
    for tap in range(3):
        assert torch.allclose(inflated[:, :, tap], flat / 3, atol=1e-7)
    stem = rows(model).loc["stem.0.weight"]
    assert "repeated over 3 taps and divided by 3" in stem.detail
    mc3 = stemlab.create_model(
        "mc3_18", stem="basic:width=8", weights=image_model.state_dict(), **EQUAL_WIDTHS
    )
    assert torch.equal(mc3.layer2[0].conv1[0].weight.detach()[:, :, 0], flat)


def test_widening_r2plus1d_blocks_are_reported_approximate() -> None:
    # layer3.0 doubles the width: mid = (8*16*27)//(8*9+3*16) = 28 < 2*16, so its conv2 has 12
    # +/- pairs and 4 channels that pass only their positive part; its conv1 needs only 16.
    image = randomized(stemlab.create_model("resnet18", stem="resnet:width=8,pool=False", **SMALL))
    model = stemlab.create_model(
        "r2plus1d_18", stem="r2plus1d:width=8,mid_width=16", weights=image.state_dict(), **SMALL
    )
    report = model.weights_report
    assert report.attrs["inflation_approximate_channels"] == 4
    detail = rows(model).loc["layer3.0.conv2.0.0.weight", "detail"]
    assert "approximate: 4 of 16 channels" in detail
    assert "exact in eval mode" in rows(model).loc["layer3.0.conv1.0.0.weight", "detail"]


@pytest.mark.parametrize("num_classes", [1000, 7])
def test_torchvision_resnet18_keys_inflate_and_the_head_follows_num_classes(
    num_classes: int, tmp_path
) -> None:
    reference = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    reference = randomized(reference).eval()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    model = stemlab.create_model(
        "mc3_18", layers=(1, 1, 1, 1), num_classes=num_classes, weights=path
    ).eval()
    assert model.weights_report.attrs["inflation"] == "2-D -> 3-D"
    table = rows(model)
    assert table.loc["stem.0.weight", "source"] == "conv1.weight"
    assert table.loc["layer1.0.conv1.1.running_var", "source"] == "layer1.0.bn1.running_var"
    assert table.loc["layer1.0.conv1.1.running_var", "action"] == "transferred"
    if num_classes == 1000:
        assert table.loc["fc.weight", "action"] == "loaded"
        reference.maxpool = nn.Identity()  # the video stem has no max-pool
        image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
        expected = evaluate(reference, image)
        got = evaluate(replicate_time_padding(model), static_clip(image, 4))
        assert max_error(got, expected) < 1e-4
    else:
        assert table.loc["fc.weight", "action"] == "initialized"
        assert "num_classes 1000 -> 7" in table.loc["fc.weight", "detail"]


def test_two_d_checkpoint_for_a_two_d_encoder_is_not_inflated(image_model: nn.Module) -> None:
    kwargs = {"widths": (8, 8, 8, 8), "layers": (1, 1, 1, 1), "hidden_size": 16}
    model = stemlab.create_model("cnn_lstm", stem="resnet:width=8,pool=False", **kwargs)
    state = {
        k.replace("stem.", "stem.image_stem.", 1): v for k, v in image_model.state_dict().items()
    }
    report = load_weights(model, state, strict_backbone=False)
    assert report.attrs["inflation"] is None
    assert rows(model).loc["layer1.0.conv1.weight", "action"] == "loaded"
