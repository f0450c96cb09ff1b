"""stemlab.swap_stem on models stemlab has never seen: consumers traced, widths and weights followed."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv3DSimple

import stemlab
from stemlab import probes
from stemlab.backbones import Layout
from stemlab.study import load_study, run_study


class UserNet(nn.Module):
    """A user's own video net: conv stem, one torchvision residual block, a linear head."""

    def __init__(self, width: int = 8, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(3, width, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        self.block = BasicBlock(width, width, Conv3DSimple)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)).mean((2, 3, 4)))


class Untraceable(UserNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 1.0
        return super().forward(x)


def _randomised(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.3)
    return model.eval()


def _wider_stem(width: int) -> nn.Module:
    return stemlab.create_stem("basic", width=width, kernel_size=(3, 5, 5))


def test_a_wider_stem_is_function_preserving_and_the_input_is_untouched() -> None:
    model = _randomised(UserNet())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stem_before = model.stem
    x = torch.randn(2, 3, 4, 16, 16)
    swapped = stemlab.swap_stem(model, _wider_stem(20)).eval()
    # the input model is unchanged
    assert model.stem is stem_before and model.block.downsample is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # traced consumers: the block's first conv, and a projection for its identity shortcut
    assert swapped.swapped_consumers == ("block.conv1.0", "block.downsample")
    assert swapped.block.conv1[0].in_channels == 20
    assert swapped.block.downsample[0].weight.shape == (8, 20, 1, 1, 1)
    a = stemlab.anatomy(swapped)
    assert (a.stem, a.head, a.stem_width) == ("stem", "head", 20)
    assert a.consumers == ("block.conv1.0", "block.downsample") and a.layout.first_block == "block"
    # Net2Wider through stem, first conv and the new projection: exact in eval mode
    torch.testing.assert_close(swapped(x), model(x), rtol=0, atol=1e-5)
    report = swapped.weights_report
    actions = report.set_index("key")["action"]
    assert actions["stem.0.weight"] == "transferred"
    details = report.set_index("key")["detail"]
    assert "sums the duplicated stem channels back" in details["block.downsample.0.weight"]
    assert actions["block.conv2.0.weight"] == "loaded" and actions["head.weight"] == "loaded"
    assert report.attrs["stem_transfer"] == "width"


def test_transfer_false_keeps_the_new_stem_and_loads_the_rest() -> None:
    model = _randomised(UserNet())
    stem = _wider_stem(20)
    init = stem.state_dict()["0.weight"].clone()
    swapped = stemlab.swap_stem(model, stem, transfer=False)
    assert torch.equal(swapped.stem[0].weight, init)
    assert stem.state_dict()["0.weight"].data_ptr() != swapped.stem[0].weight.data_ptr()
    assert torch.equal(swapped.block.conv2[0].weight, model.block.conv2[0].weight)


def test_an_untraceable_model_asks_for_consumers_and_takes_them() -> None:
    model = _randomised(Untraceable())
    with pytest.raises(ValueError, match=r"does not trace with torch\.fx.*consumers=\["):
        stemlab.swap_stem(model, _wider_stem(12))
    swapped = stemlab.swap_stem(model, _wider_stem(12), consumers=["block"]).eval()
    assert swapped.block.conv1[0].in_channels == 12
    x = torch.randn(1, 3, 4, 16, 16).abs()
    torch.testing.assert_close(swapped(x), model(x), rtol=0, atol=1e-5)


def test_bad_arguments_name_what_is_wrong() -> None:
    model = UserNet()
    with pytest.raises(ValueError, match=r"at='stm' is not a module.*did you mean 'stem'"):
        stemlab.swap_stem(model, "basic", at="stm")
    with pytest.raises(ValueError, match=r"consumers \['blok'\] are not modules"):
        stemlab.swap_stem(model, "basic", consumers=["blok"])
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        stemlab.swap_stem("r3d_18", "basic")
    with pytest.raises(ValueError, match="Did you mean 'basic'"):
        stemlab.swap_stem(model, "basik")


def test_a_registered_backbone_keeps_its_logits_under_a_wider_stem() -> None:
    model = stemlab.create_model(
        "r3d_18", num_classes=3, stem="basic:width=8", widths=(8, 8, 16, 16), layers=(1, 1, 1, 1)
    )
    model = _randomised(model)
    swapped = stemlab.swap_stem(model, "wide:width=16").eval()
    assert swapped.swapped_consumers == ("layer1.0.conv1.0", "layer1.0.downsample")
    assert swapped.feature_info[0] == {"module": "stem", "num_chs": 16, "reduction": (1, 2, 2)}
    x = torch.randn(2, 3, 4, 32, 32)
    torch.testing.assert_close(swapped(x), model(x), rtol=0, atol=1e-5)


def test_2plus1d_to_3d_composition_is_exact_where_the_middle_relu_passes_everything() -> None:
    model = stemlab.create_model(
        "r2plus1d_18", num_classes=3, widths=(8, 8, 16, 16), layers=(1,) * 4
    )
    model = _randomised(model)
    with torch.no_grad():  # a large mid-norm shift: every mid activation is positive
        model.stem[1].bias.fill_(50.0)
    swapped = stemlab.swap_stem(model, "basic").eval()
    report = swapped.weights_report
    assert report.attrs["stem_transfer"] == "2plus1d_to_3d"
    assert report.attrs["composition_relative_error"] < 1e-6
    x = torch.rand(1, 3, 6, 32, 32)  # non-negative pixels keep mid activations positive
    inner = nn.Sequential(*list(model.stem)[:5])  # (2+1)D stem before its last ReLU
    composed = nn.Sequential(*list(swapped.stem)[:2])
    # away from the temporal border the composition equals the (2+1)D stem
    torch.testing.assert_close(composed(x)[:, :, 1:-1], inner(x)[:, :, 1:-1], rtol=1e-4, atol=1e-3)
    # at init-like statistics the dropped ReLU matters, and the report says how much
    plain = stemlab.swap_stem(
        _randomised(
            stemlab.create_model(
                "r2plus1d_18", num_classes=3, widths=(8, 8, 16, 16), layers=(1,) * 4
            )
        ),
        "basic",
    )
    assert 0.2 < plain.weights_report.attrs["composition_relative_error"] < 2.0
    assert (
        "middle ReLU dropped"
        in plain.weights_report.set_index("key").loc["stem.0.weight", "detail"]
    )


def test_probes_run_on_a_swapped_user_model() -> None:
    model = _randomised(UserNet())
    swapped = stemlab.swap_stem(model, _wider_stem(12))
    x = torch.randn(2, 3, 4, 16, 16)
    with probes.record_activations(swapped) as rec:
        swapped(x)
    table = rec.table().set_index("module")
    assert table.loc["stem", "shape"] == (2, 12, 4, 8, 8)
    flops = probes.flops_table(swapped, x[:1]).set_index("module")
    # stem conv: 12 out x 3 in x 75 taps per output element, 4 x 8 x 8 outputs
    assert flops.loc["stem.0", "flops"] == 12 * 3 * 75 * 4 * 8 * 8
    cam = probes.grad_cam(swapped, x, target=1, layer="block")
    assert cam.shape == (2, 4, 16, 16) and float(cam.max()) == pytest.approx(1.0)
    usage = probes.channel_usage(swapped)
    assert len(usage) == 12 and usage.attrs["first_conv"] == "block.conv1.0"


STUDY_FILE = '''
"""A user's model in a study: its factory is registered with a declared layout."""
import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv3DSimple

import stemlab
from stemlab.backbones import BACKBONES, Layout
from stemlab.study import Study


class UserNet(nn.Module):
    def __init__(self, width, num_classes):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, width, 3, stride=(1, 2, 2), padding=1, bias=False),
                                  nn.BatchNorm3d(width), nn.ReLU(inplace=True))
        self.block = BasicBlock(width, width, Conv3DSimple)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3, 4)))


def user_net(*, stem, num_classes=400, width=8):
    """The user's net with any stem swapped in."""
    return stemlab.swap_stem(UserNet(width, num_classes), stem, transfer=False)


if "user_net" not in BACKBONES:
    stemlab.register_backbone(
        "user_net",
        default_stem="basic:width=8",
        layout=Layout(stem="stem", first_block="block", head="head",
                      stages=("stem", "block"), input_shape=(1, 3, 4, 16, 16)),
    )(user_net)

STUDY = Study(
    name="user_net_study",
    backbones={"user_net": {"width": 4}},
    stems=["basic:width=4", "wide:width=8"],
    seeds=[0],
    data={"dataset": "synthetic_motion", "train_samples": 8, "val_samples": 4, "clip_len": 4,
          "size": 16},
    training={"epochs": 1, "batch_size": 4, "lr": 0.01},
    profile={"backbone": "user_net", "input": [1, 3, 4, 16, 16], "kwargs": {"width": 4}},
    latency_runs=1,
    probes=["flops", "activations", "grad_cam", "channel_usage"],
    gradcam_layer="block",
)
'''


def test_a_user_model_runs_through_a_tiny_study(tmp_path) -> None:
    path = tmp_path / "user_net_study.py"
    path.write_text(textwrap.dedent(STUDY_FILE))
    study = load_study(path)
    result = run_study(study, out_dir=tmp_path / "out", progress=False)
    cells = result.tables["cells"]
    assert (cells["status"] == "ok").all(), cells.loc[cells["status"] != "ok", "error"].tolist()
    summary = result.tables["summary"].set_index("stem")
    assert set(summary.index) == {"basic:width=4", "wide:width=8"}
    # params of the user net at stem width 8 (stem conv 8*3*27, BN 16, block convs 4*8*27 + 4*4*27,
    # their BNs 16, a projection 4*8 + BN 8, head 4*400 ... counted independently below)
    model = stemlab.create_model("user_net", stem="wide:width=8", num_classes=400, width=4)
    assert summary.loc["wide:width=8", "params"] == sum(p.numel() for p in model.parameters())
    assert model.block.downsample[0].weight.shape == (4, 8, 1, 1, 1)
    a = stemlab.anatomy(model)
    assert [(s.module, s.width, s.stride) for s in a.stages] == [
        ("stem", 8, (1, 2, 2)),
        ("block", 4, (1, 2, 2)),
    ]
    assert 0.0 <= summary.loc["basic:width=4", "top1_mean"] <= 1.0


def test_layout_declared_without_registry_is_used_by_swap() -> None:
    model = UserNet()
    model.layout = Layout(stem="stem", first_block="block", head="head")
    swapped = stemlab.swap_stem(model, _wider_stem(10))
    assert swapped.block.conv1[0].in_channels == 10
    # the declared consumer is the block; inside it the readers are traced
    assert stemlab.anatomy(swapped).consumers == ("block",)
    assert swapped.swapped_consumers == ("block.conv1.0", "block.downsample")
