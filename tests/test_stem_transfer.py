"""Stem weight transfer: each rule's claim, checked numerically against the checkpoint's model."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from small_models import randomized

import stemlab
from stemlab.weights import STEM_TRANSFERS, load_weights

SMALL = {"widths": (16, 32, 64, 128), "layers": (1, 1, 1, 1), "num_classes": 5}
SMALL_RESNET2D = {"widths": (16, 16, 32, 32), "layers": (1, 1, 1, 1), "num_classes": 5}
SMALL_CNN_LSTM = {"widths": (8, 8, 16, 16), "layers": (1, 1, 1, 1), "hidden_size": 16}


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def clip(*, frames: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def pair(
    backbone: str, source_stem: str, target_stem: str, *, kwargs: dict | None = None, seed: int = 0
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A randomised checkpoint model and a fresh model with another stem, weights transferred."""
    kwargs = SMALL if kwargs is None else kwargs
    source = randomized(stemlab.create_model(backbone, stem=source_stem, **kwargs), seed=seed)
    target = stemlab.create_model(backbone, stem=target_stem, **kwargs)
    load_weights(target, source.state_dict())
    return source, target


EXACT = [
    # backbone, checkpoint stem, model stem, kwargs, rules the report must name
    ("r3d_18", "basic", "large_kernel", SMALL, "kernel_size"),
    ("r3d_18", "r2d", "basic", SMALL, "kernel_size"),
    ("r3d_18", "basic", "channel_attention", SMALL, "gate"),
    ("r3d_18", "basic:width=16", "wide:width=32", SMALL, "width"),
    ("r3d_18", "basic", "wide", SMALL, "width"),
    ("mc3_18", "basic:width=16", "wide:width=24", SMALL, "width"),
    ("r3d_18", "basic:width=16", "wide:width=32,kernel_size=(5,11,11)", SMALL, "kernel_size+width"),
    ("r3d_18", "channel_attention:width=16", "channel_attention:width=32", SMALL, "width"),
    ("r2plus1d_18", "r2plus1d:width=16", "r2plus1d:width=32", SMALL, "width"),
    ("r2plus1d_18", "basic:width=16", "wide:width=32", SMALL, "width"),
    ("r3d_18", "basic", "r2plus1d:mid_width=294", SMALL, "3d_to_2plus1d"),
    ("resnet18", "resnet:width=16", "resnet:width=32", SMALL_RESNET2D, "width"),
    ("resnet18", "resnet:kernel_size=3", "resnet:kernel_size=7", SMALL_RESNET2D, "kernel_size"),
    ("cnn_lstm", "resnet:width=8", "resnet:width=16", SMALL_CNN_LSTM, "width"),
]


@pytest.mark.parametrize(("backbone", "source_stem", "target_stem", "kwargs", "rules"), EXACT)
def test_exact_transfers_keep_the_logits(
    backbone: str, source_stem: str, target_stem: str, kwargs: dict, rules: str
) -> None:
    source, target = pair(backbone, source_stem, target_stem, kwargs=kwargs)
    report = target.weights_report
    assert report.attrs["stem_transfer"] == rules
    assert report.loc[report.action != "skipped", "key"].tolist() == list(target.state_dict())
    assert (report.action == "skipped").sum() == 0
    x = clip() if backbone != "resnet18" else clip()[:, :, 0]
    expected, got = logits(source, x), logits(target, x)
    assert expected.abs().max() > 0.1  # the check below is not vacuous
    assert (expected - got).abs().max().item() < 1e-4


def test_every_rule_is_registered_with_what_it_handles() -> None:
    assert list(STEM_TRANSFERS) == [
        "in_channels",
        "3d_to_2plus1d",
        "2plus1d_to_3d",
        "gate",
        "kernel_size",
        "width",
    ]
    assert all(rule.handles for rule in STEM_TRANSFERS.values())


def test_large_kernel_is_the_zero_padded_kernel() -> None:
    source, target = pair("r3d_18", "basic", "large_kernel")
    old = source.stem[0].weight.detach()
    new = target.stem[0].weight.detach()
    assert new.shape == (64, 3, 5, 11, 11)
    assert torch.equal(new[:, :, 1:4, 2:9, 2:9], old)
    assert new.abs().sum() == pytest.approx(old.abs().sum().item(), rel=1e-6)
    row = target.weights_report.set_index("key").loc["stem.0.weight"]
    assert row.action == "transferred" and "(exact)" in row.detail


def test_channel_attention_gate_starts_as_identity() -> None:
    _, target = pair("r3d_18", "basic", "channel_attention")
    gate = target.stem[3]
    assert torch.count_nonzero(gate.fc2.weight) == 0 and torch.count_nonzero(gate.fc2.bias) == 0
    x = torch.randn(3, 64, 2, 5, 5)
    assert torch.equal(gate(x), x * 1.0)
    rows = target.weights_report.set_index("key")
    assert rows.loc["stem.3.fc2.weight", "action"] == "initialized"
    assert rows.loc["stem.0.weight", "action"] == "loaded"


def test_wider_stem_duplicates_channels_and_adds_an_exact_projection() -> None:
    source, target = pair("r3d_18", "basic:width=16", "wide:width=32")
    old, new = source.stem[0].weight.detach(), target.stem[0].weight.detach()
    assert torch.equal(new[:16], old) and torch.equal(new[16:], old)
    conv1_old = source.layer1[0].conv1[0].weight.detach()
    conv1_new = target.layer1[0].conv1[0].weight.detach()
    assert torch.allclose(conv1_new[:, :16] + conv1_new[:, 16:], conv1_old, atol=1e-7)
    projection = target.layer1[0].downsample[0].weight.detach().reshape(16, 32)
    assert torch.equal(projection, torch.cat([torch.eye(16), torch.eye(16)], 1) / 2)
    # The stem's output really is the old one twice over (in eval and in train mode).
    x = clip()
    for mode in (False, True):
        source.train(mode)
        target.train(mode)
        with torch.no_grad():
            a, b = source.stem(x), target.stem(x)
        assert torch.allclose(b, torch.cat([a, a], 1), atol=1e-6)


def test_r2plus1d_midplanes_growth_is_zeroed_downstream() -> None:
    # torchvision's Conv2Plus1D: midplanes = (in*out*27) // (in*9 + 3*out): 36 at 16->16, 41 at 32->16.
    source, target = pair("r2plus1d_18", "r2plus1d:width=16", "r2plus1d:width=32")
    temporal = target.layer1[0].conv1[0][3].weight.detach()
    assert temporal.shape == (16, 41, 3, 1, 1)
    assert torch.count_nonzero(temporal[:, 36:]) == 0
    assert torch.equal(temporal[:, :36], source.layer1[0].conv1[0][3].weight.detach())
    second = target.layer1[0].conv2[0][3].weight.detach()
    assert second.shape == (16, 41, 3, 1, 1) and torch.count_nonzero(second[:, 36:]) == 0


def reference_rank(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, float]:
    """Best rank-``rank`` approximation of the (out*t, in*h*w) matrix, and its relative error."""
    out, cin, kt, kh, kw = weight.shape
    matrix = weight.double().permute(0, 2, 1, 3, 4).reshape(out * kt, cin * kh * kw)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    approx = (u[:, :rank] * s[:rank]) @ vh[:rank]
    error = math.sqrt(float(s[rank:].square().sum() / s.square().sum()))
    truncated = approx.reshape(out, kt, cin, kh, kw).permute(0, 2, 1, 3, 4)
    return truncated.float(), error


def test_r2plus1d_from_3d_is_the_truncated_svd_through_the_relu() -> None:
    source, target = pair("r3d_18", "basic", "r2plus1d")  # mid 45 -> rank 22 as +/- pairs
    report = target.weights_report
    weight = source.stem[0].weight.detach()
    truncated, error = reference_rank(weight, 22)
    assert report.attrs["svd_rank"] == 22
    assert report.attrs["svd_relative_error"] == pytest.approx(error, rel=1e-9)
    assert f"{error:.4g}" in report.set_index("key").loc["stem.3.weight", "detail"]
    # The (2+1)-D model equals the 3-D model whose kernel is the rank-22 truncation, exactly.
    reference = stemlab.create_model("r3d_18", **SMALL)
    reference.load_state_dict(source.state_dict())
    with torch.no_grad():
        reference.stem[0].weight.copy_(truncated)
    x = clip()
    assert (logits(reference, x) - logits(target, x)).abs().max().item() < 1e-4
    # The truncation costs accuracy relative to the real 3-D model, and the report says how much.
    assert (logits(source, x) - logits(target, x)).abs().max().item() > 1e-3


def test_r2plus1d_from_a_frame_wise_kernel_is_exact_with_enough_mid_channels() -> None:
    # A (1,7,7) kernel padded to (3,7,7) is a (64*3, 3*49) matrix of rank <= 64: 128 mid
    # channels hold all of it as +/- pairs.
    source, target = pair("r3d_18", "r2d", "r2plus1d:mid_width=128")
    assert target.weights_report.attrs["stem_transfer"] == "3d_to_2plus1d"
    assert target.weights_report.attrs["svd_relative_error"] < 1e-6
    x = clip()
    assert (logits(source, x) - logits(target, x)).abs().max().item() < 1e-4


def test_r2d_from_3d_is_exact_on_static_clips() -> None:
    source, target = pair("r3d_18", "basic", "r2d")
    kernel = source.stem[0].weight.detach()
    assert torch.allclose(target.stem[0].weight.detach()[:, :, 0], kernel.sum(2), atol=1e-6)
    frame = torch.randn(2, 3, 1, 32, 32)
    static = frame.expand(-1, -1, 6, -1, -1).contiguous()
    source.eval()
    target.eval()
    with torch.no_grad():
        ours = target.stem(static)
        theirs = source.stem(static)
        # The 3-D conv with time padded by repeating the edge frames sees a static clip everywhere.
        replicated = F.pad(static, (0, 0, 0, 0, 1, 1), mode="replicate")
        conv = F.conv3d(replicated, kernel, stride=(1, 2, 2), padding=(0, 3, 3))
        edge = source.stem[2](source.stem[1](conv))
    assert torch.allclose(ours, edge, atol=1e-5)
    assert torch.allclose(ours[:, :, 1:-1], theirs[:, :, 1:-1], atol=1e-5)
    # At the first and last frame the original conv zero-pads time, so there it differs.
    assert (ours[:, :, 0] - theirs[:, :, 0]).abs().max() > 1e-3
    detail = target.weights_report.set_index("key").loc["stem.0.weight", "detail"]
    assert "exact on static clips" in detail


def test_shorter_temporal_kernel_folds_outer_taps() -> None:
    source, target = pair("r3d_18", "basic:kernel_size=(5,7,7)", "basic")
    old = source.stem[0].weight.detach()
    new = target.stem[0].weight.detach()
    expected = torch.stack(
        [old[:, :, 0] + old[:, :, 1], old[:, :, 2], old[:, :, 3] + old[:, :, 4]], 2
    )
    assert torch.allclose(new, expected, atol=1e-6)
    static = torch.randn(1, 3, 1, 32, 32).expand(-1, -1, 8, -1, -1)
    source.eval()
    target.eval()
    with torch.no_grad():
        a, b = source.stem(static), target.stem(static)
    assert torch.allclose(a[:, :, 2:-2], b[:, :, 2:-2], atol=1e-5)


def test_smaller_spatial_kernel_is_cropped_and_reports_energy_kept() -> None:
    source, target = pair("r3d_18", "basic", "basic:kernel_size=(3,5,5)")
    old = source.stem[0].weight.detach().double()
    kept = float(old[:, :, :, 1:6, 1:6].square().sum() / old.square().sum())
    assert torch.equal(
        target.stem[0].weight.detach(), source.stem[0].weight.detach()[..., 1:6, 1:6]
    )
    detail = target.weights_report.set_index("key").loc["stem.0.weight", "detail"]
    assert f"{kept:.1%}" in detail and "approximate" in detail


def test_stem_init_random_keeps_the_new_stem() -> None:
    source = randomized(stemlab.create_model("r3d_18", stem="basic", **SMALL))
    target = stemlab.create_model("r3d_18", stem="large_kernel", **SMALL)
    before = target.stem[0].weight.detach().clone()
    report = load_weights(target, source.state_dict(), stem_init="random")
    assert torch.equal(target.stem[0].weight, before)
    rows = report.set_index("key")
    assert (rows.loc[rows.index.str.startswith("stem."), "action"] == "initialized").all()
    assert rows.loc["layer1.0.conv1.0.weight", "action"] == "loaded"
    assert report.attrs["stem_transfer"] is None


def test_stem_init_random_with_a_wider_stem_initialises_what_depends_on_it() -> None:
    source = randomized(stemlab.create_model("r3d_18", stem="basic:width=16", **SMALL))
    target = stemlab.create_model("r3d_18", stem="wide:width=32", **SMALL)
    report = load_weights(target, source.state_dict(), stem_init="random").set_index("key")
    assert report.loc["layer1.0.conv1.0.weight", "action"] == "initialized"
    assert "stem width" in report.loc["layer1.0.conv1.0.weight", "detail"]
    assert report.loc["layer1.0.conv2.0.weight", "action"] == "loaded"
    assert report.loc["layer1.0.downsample.0.weight", "action"] == "initialized"


@pytest.mark.parametrize(
    ("source_stem", "target_stem", "reason"),
    [("basic", "c3d", "differ in structure"), ("basic", "basic:width=32", "narrower")],
)
def test_untransferable_stems_warn_and_keep_their_init(
    source_stem: str, target_stem: str, reason: str
) -> None:
    source = randomized(stemlab.create_model("r3d_18", stem=source_stem, **SMALL))
    target = stemlab.create_model("r3d_18", stem=target_stem, **SMALL)
    before = {k: v.clone() for k, v in target.state_dict().items() if k.startswith("stem.")}
    with pytest.warns(UserWarning, match="could not be transferred"):
        report = load_weights(target, source.state_dict())
    assert reason in report.attrs["stem_transfer_failed"]
    for key, value in before.items():
        assert torch.equal(target.state_dict()[key], value)
    rows = report.set_index("key")
    assert rows.loc["stem.0.weight", "action"] == "initialized"
    assert rows.loc["layer2.0.conv1.0.weight", "action"] == "loaded"


def test_transfer_through_create_model_from_a_file(tmp_path) -> None:
    source = randomized(stemlab.create_model("r3d_18", stem="basic", **SMALL))
    path = tmp_path / "basic.pth"
    torch.save({"model": source.state_dict(), "epoch": 7}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = stemlab.create_model("r3d_18", stem="large_kernel", weights=path, **SMALL)
    assert model.weights_report.attrs["stem_transfer"] == "kernel_size"
    x = clip()
    assert (logits(source, x) - logits(model, x)).abs().max().item() < 1e-4
