"""stemlab.anatomy: one resolver for stem, consumers, stages and head; builders keep their stem."""

from __future__ import annotations

import pytest
import torch
from small_models import randomized, small_kwargs
from torch import nn

import stemlab
from stemlab.backbones import BACKBONES, Layout
from stemlab.stems import STEMS
from stemlab.stems.base import FrameWise

PAIRS = [
    (backbone.name, stem.name)
    for backbone in BACKBONES
    for stem in STEMS
    if not (backbone.kind == "image" and stem.kind == "video")
]


def _input(model: nn.Module) -> torch.Tensor:
    shape = small_kwargs(getattr(model, "backbone_name", "")).get("input_shape")
    if shape is not None:
        return torch.randn(shape)
    return torch.randn(1, 3, 8, 64, 64) if model.input_rank == 5 else torch.randn(1, 3, 64, 64)


@pytest.mark.parametrize(("backbone", "stem"), PAIRS)
def test_the_builder_leaves_the_stem_it_was_handed_unchanged(backbone: str, stem: str) -> None:
    torch.manual_seed(0)
    module = randomized(stemlab.create_stem(stem), seed=3)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    kwargs = {k: v for k, v in small_kwargs(backbone).items() if k != "input_shape"}
    model = stemlab.create_model(backbone, stem=module, num_classes=3, **kwargs)
    built = model.stem.image_stem if isinstance(model.stem, FrameWise) else model.stem
    assert built is module
    after = built.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{backbone} re-initialised its stem's {key}"


@pytest.mark.parametrize("backbone", [e.name for e in BACKBONES])
def test_channel_attention_gate_stays_the_identity(backbone: str) -> None:
    if BACKBONES.entry(backbone).kind == "image":
        pytest.skip("channel_attention is a video stem")
    kwargs = {k: v for k, v in small_kwargs(backbone).items() if k != "input_shape"}
    model = stemlab.create_model(backbone, stem="channel_attention", num_classes=3, **kwargs)
    gate = model.stem[-1]
    assert torch.count_nonzero(gate.fc2.weight) == 0 and torch.count_nonzero(gate.fc2.bias) == 0
    x = torch.randn(2, 64, 2, 5, 5)
    assert torch.equal(gate(x), x)


@pytest.mark.parametrize("backbone", [e.name for e in BACKBONES])
def test_anatomy_matches_the_running_model(backbone: str) -> None:
    kwargs = {k: v for k, v in small_kwargs(backbone).items() if k != "input_shape"}
    model = stemlab.create_model(backbone, stem=None, num_classes=3, **kwargs).eval()
    a = stemlab.anatomy(model)
    assert a.source == "registry"
    assert a.stem_module is model.get_submodule(a.stem)
    assert a.feature_info() == model.feature_info
    x = _input(model)
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(s.module).register_forward_hook(
            lambda _m, _i, out, name=s.module: seen.setdefault(name, out)
        )
        for s in a.stages
    ]
    head_out: list[torch.Tensor] = []
    handles.append(
        model.get_submodule(a.head).register_forward_hook(lambda _m, _i, o: head_out.append(o))
    )
    consumer_in: list[torch.Tensor] = []
    handles.append(
        model.get_submodule(a.consumers[0]).register_forward_pre_hook(
            lambda _m, args: consumer_in.append(args[0])
        )
    )
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    # S3D's head is a 1x1x1 conv whose map is averaged into the logits
    head = head_out[0]
    assert torch.equal(head.flatten(2).mean(2) if head.dim() == 5 else head, logits)
    stem_out = seen[a.stem]
    # the consumer reads exactly the stem's output (up to layout changes such as time folding)
    if backbone.startswith("mvit"):  # tokens, with one class token prepended per clip
        assert consumer_in[0].numel() == stem_out.numel() + stem_out.shape[0] * stem_out.shape[1]
    elif backbone.startswith("swin"):  # channels last
        assert consumer_in[0].shape[-1] == stem_out.shape[1]
    else:  # the stem's channels (S3D pools in between, recurrent nets fold time)
        assert consumer_in[0].shape[1] == stem_out.shape[1]
    assert a.stem_width == stem_out.shape[1] == a.stem_module.out_channels
    for s in a.stages:
        out = seen[s.module]
        if s.tokens:  # (N, 1 + T'H'W', C) for MViT blocks, channels last for Swin
            out = out[0] if isinstance(out, tuple) else out
            assert out.shape[-1] == s.width, s.module
            grid = [max(1, i // r) for i, r in zip(x.shape[2:], s.stride)]
            positions = out.shape[1] - 1 if out.dim() == 3 else out.shape[1:4].numel()
            assert positions == grid[0] * grid[1] * grid[2], s.module
            continue
        if s.time_folded:
            assert out.shape[1] == s.width
            assert x.shape[-1] // out.shape[-1] == s.stride[-1]
            continue
        assert out.shape[1] == s.width, s.module
        # size / stride, give or take the one element a padded pool adds
        for i, o, r in zip(x.shape[2:], out.shape[2:], s.stride):
            assert abs(o - max(1.0, i / r)) <= 1.0, (s.module, x.shape, out.shape, s.stride)


class _UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1),
            nn.ReLU(),
            nn.Conv3d(8, 16, 3, stride=2, padding=1),
        )
        self.classifier = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3, 4)))


def test_a_model_without_a_layout_is_refused_with_what_is_missing() -> None:
    with pytest.raises(ValueError, match=r"_UserNet has no layout.*register_backbone"):
        stemlab.anatomy(_UserNet())
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        stemlab.anatomy("r3d_18")


def test_a_declared_layout_is_measured_at_its_input_shape() -> None:
    model = _UserNet()
    model.layout = Layout(
        stem="features.0",
        first_block="features.2",
        head="classifier",
        stages=("features.0", "features.2"),
        input_shape=(1, 3, 8, 32, 32),
    )
    a = stemlab.anatomy(model)
    assert a.source == "model"
    assert [(s.module, s.width, s.stride) for s in a.stages] == [
        ("features.0", 8, (1, 2, 2)),
        ("features.2", 16, (2, 4, 4)),
    ]
    assert a.consumers == ("features.2",) and a.head == "classifier"
    # nothing ran on the real weights
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_a_layout_naming_a_missing_module_says_which() -> None:
    model = _UserNet()
    model.layout = Layout(stem="feature.0", first_block="features.2", head="classifier")
    with pytest.raises(ValueError, match=r"stem 'feature\.0'.*did you mean 'features\.0'"):
        stemlab.anatomy(model)
