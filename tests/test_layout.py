"""Every backbone's declared layout, checked against the module tree it builds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torchvision
from small_models import TORCHVISION_VIDEO, randomized, small_kwargs
from torch import nn
from torchvision.models._api import WeightsEnum

import stemlab
from stemlab.backbones import BACKBONES, Layout, layout_of, torchvision_weights_enum
from stemlab.weights import load_weights, torchvision_weights_enums

NAMES = [entry.name for entry in BACKBONES if entry.name not in TORCHVISION_VIDEO]
WIDER = {"video": "wide:width=24", "image": "resnet:width=24"}


def build(name: str, **kwargs) -> nn.Module:
    return stemlab.create_model(name, num_classes=5, **small_kwargs(name), **kwargs)


def test_every_builtin_backbone_declares_a_layout() -> None:
    assert NAMES  # the registry is populated
    assert all(isinstance(entry.layout, Layout) for entry in BACKBONES)


@pytest.mark.parametrize("name", NAMES)
def test_layout_matches_the_module_tree(name: str) -> None:
    model = build(name).eval()
    layout = layout_of(name)
    assert model.layout == layout and layout_of(model) is model.layout
    modules = dict(model.named_modules())
    # stem
    assert modules[layout.stem] is model.stem
    # first block: its first conv reads the stem's output, also when the stem is wider
    for variant in (model, build(name, stem=WIDER[BACKBONES.entry(name).kind])):
        block = variant.get_submodule(layout.first_block)
        conv = next(m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
        assert conv.in_channels == variant.stem.out_channels
    # head: the Linear whose output is the logits
    head = modules[layout.head]
    assert isinstance(head, nn.Linear) and head.out_features == 5
    seen: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, _i, out: seen.append(out))
    x = torch.randn(2, 3, 4, 32, 32) if model.input_rank == 5 else torch.randn(2, 3, 32, 32)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], logits)
    # stages and time folding
    assert layout.stages == tuple(entry["module"] for entry in model.feature_info)
    assert all(stage in modules for stage in layout.stages)
    folded = any(entry.get("time_folded", False) for entry in model.feature_info)
    assert layout.time_folded == folded == model.time_folded


@pytest.mark.parametrize("name", [n for n in NAMES if layout_of(n).torchvision_weights])
def test_torchvision_weights_enum_is_the_one_for_this_architecture(name: str) -> None:
    enum = torchvision_weights_enum(layout_of(name).torchvision_weights)
    assert issubclass(enum, WeightsEnum) and "DEFAULT" in enum.__members__
    builders = [
        m
        for m in torchvision.models.list_models()
        if torchvision.models.get_model_weights(m) is enum
    ]
    assert len(builders) == 1
    with torch.device("meta"):
        theirs = torchvision.models.get_model(builders[0])
        ours = stemlab.create_model(name, num_classes=1000 if name == "resnet18" else 400)
    # torchvision's 2-D ResNets call their stem conv1/bn1; the loader maps those onto stem.0/1.
    stem_names = {"conv1.": "stem.0.", "bn1.": "stem.1."}

    def renamed(key: str) -> str:
        old = next((o for o in stem_names if key.startswith(o)), None)
        return key if old is None else stem_names[old] + key[len(old) :]

    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (renamed(k), v.shape) for k, v in theirs.state_dict().items()
    ]


def test_the_torchvision_table_is_read_from_the_layouts() -> None:
    enums = torchvision_weights_enums()
    assert sorted(enums) == sorted(
        ["mc3_18", "r2plus1d_18", "r3d_18", "resnet18", *TORCHVISION_VIDEO]
    )
    assert enums["r2plus1d_18"] is torchvision.models.video.R2Plus1D_18_Weights


def test_a_model_of_other_depth_carries_its_own_stages() -> None:
    model = stemlab.create_model("conv_lstm", widths=(8, 8, 8), layers=(1, 1, 1), num_classes=2)
    assert model.layout.stages == ("stem", "layer1", "layer2", "layer3")
    assert layout_of("conv_lstm").stages == ("stem", "layer1", "layer2")


def test_c3d_head_is_fc8_and_a_new_class_count_reinitialises_only_it() -> None:
    source = randomized(build("c3d"))
    target = stemlab.create_model("c3d", num_classes=7, **small_kwargs("c3d"))
    assert not hasattr(target, "fc")
    report = load_weights(target, source.state_dict()).set_index("key")
    assert report.loc["fc8.weight", "action"] == "initialized"
    assert "num_classes 5 -> 7" in report.loc["fc8.weight", "detail"]
    assert report.loc["fc7.weight", "action"] == "loaded"


def test_layout_of_errors() -> None:
    with pytest.raises(ValueError, match="Did you mean 'r3d_18'"):
        layout_of("r3d_81")
    with pytest.raises(TypeError, match=r"backbone name or an nn\.Module"):
        layout_of(3)
    with pytest.raises(ValueError, match="declares no layout"):
        layout_of(nn.Linear(2, 2))


def test_layout_fields_are_validated() -> None:
    with pytest.raises(TypeError, match=r"Layout\.head must be a non-empty module name"):
        Layout(first_block="layer1.0", head="", stages=("stem",))
    with pytest.raises(TypeError, match=r"Layout\.stages must be a tuple"):
        Layout(first_block="layer1.0", head="fc", stages=["stem"])
    with pytest.raises(TypeError, match=r"Layout\.time_folded must be a bool"):
        Layout(first_block="layer1.0", head="fc", stages=("stem",), time_folded=1)
    with pytest.raises(ValueError, match="no weights enum 'R3D_81_Weights'"):
        torchvision_weights_enum("R3D_81_Weights")
    with pytest.raises(TypeError, match="layout must be a stemlab Layout"):
        stemlab.register_backbone("layout_typo_backbone", layout="fc")


def test_a_backbone_without_a_layout_loads_key_by_key() -> None:
    @stemlab.register_backbone("undeclared_test_backbone")
    def undeclared(*, stem: nn.Module, num_classes: int = 3) -> nn.Module:
        pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten())
        return nn.Sequential(stem, pool, nn.Linear(stem.out_channels, num_classes))

    try:
        with pytest.raises(ValueError, match="declares no layout"):
            layout_of("undeclared_test_backbone")
        model = stemlab.create_model("undeclared_test_backbone", stem="basic:width=4")
        assert model.layout is None
        source = randomized(stemlab.create_model("undeclared_test_backbone", stem="basic:width=4"))
        report = load_weights(model, source.state_dict())
        assert (report.action == "loaded").all()
        assert report.attrs["stem_transfer"] is None
        # Without a declared head, a classifier of another size is a mismatch, not a new head.
        other = stemlab.create_model(
            "undeclared_test_backbone", stem="basic:width=4", num_classes=5
        )
        with pytest.raises(ValueError, match="have other shapes"):
            load_weights(other, source.state_dict())
    finally:
        BACKBONES.unregister("undeclared_test_backbone")


def test_weights_do_not_import_the_models_module() -> None:
    root = Path(stemlab.__file__).parent / "weights"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert "stemlab.models" not in imported, path
