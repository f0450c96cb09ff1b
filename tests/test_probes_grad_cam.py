"""grad_cam against the Grad-CAM formula computed here with hooks and torch.autograd.grad."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from small_models import TORCHVISION_VIDEO, small_kwargs
from torch import nn

import stemlab
from stemlab.backbones import BACKBONES
from stemlab.probes import attribution_per_frame, grad_cam


def _small(backbone: str) -> nn.Module:
    torch.manual_seed(0)
    return stemlab.create_model(backbone, num_classes=5, **small_kwargs(backbone))


def _input(backbone: str, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if BACKBONES.entry(backbone).kind == "image":
        return torch.randn(n, 3, 32, 32, generator=g)
    return torch.randn(n, 3, 4, 32, 32, generator=g)


def _reference(
    model: nn.Module, x: torch.Tensor, targets: list[int], layer: str, mode: str
) -> torch.Tensor:
    """Grad-CAM from scratch: forward hook, autograd.grad, weights, ReLU, resize, min-max."""
    model.eval()
    module = dict(model.named_modules())[layer]
    captured: list[torch.Tensor] = []

    def keep_and_detour(module: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor:
        # Later in-place ops (residual +=, ReLU(inplace=True)) then modify the copy, not `out`.
        captured.append(out)
        return out.clone()

    handle = module.register_forward_hook(keep_and_detour)
    try:
        logits = model(x.detach().requires_grad_(True))
    finally:
        handle.remove()
    acts = captured[0]
    score = logits[torch.arange(len(targets)), torch.tensor(targets)].sum()
    (grads,) = torch.autograd.grad(score, acts)
    n = x.shape[0]
    if x.ndim == 5 and acts.ndim == 4:  # (N*T, C, h, w) -> (N, C, T, h, w)
        acts = acts.reshape(n, -1, *acts.shape[1:]).permute(0, 2, 1, 3, 4)
        grads = grads.reshape(n, -1, *grads.shape[1:]).permute(0, 2, 1, 3, 4)
    spatial = (3, 4) if mode == "temporal" else tuple(range(2, acts.ndim))
    weights = grads.mean(dim=spatial, keepdim=True)
    cam = F.relu((weights * acts).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(
        cam, size=x.shape[2:], mode="trilinear" if x.ndim == 5 else "bilinear", align_corners=False
    )[:, 0]
    out = torch.empty_like(cam)
    for i in range(n):
        low, high = cam[i].min(), cam[i].max()
        out[i] = (cam[i] - low) / (high - low) if high > low else torch.zeros_like(cam[i])
    return out


@pytest.mark.parametrize(
    ("backbone", "layer", "mode"),
    [
        ("r3d_18", "layer3", "standard"),
        ("r3d_18", "layer3", "temporal"),
        ("r2plus1d_18", "stem", "temporal"),
        ("r2plus1d_18", "layer2.0.conv2", "standard"),
        ("resnet18", "layer3", "standard"),
        ("cnn_lstm", "layer2", "standard"),  # time-folded 4-D layer
        ("cnn_lstm", "layer2", "temporal"),
        ("conv_lstm", "layer1", "standard"),
    ],
)
def test_matches_independent_formula(backbone: str, layer: str, mode: str) -> None:
    model = _small(backbone)
    x = _input(backbone)
    targets = [1, 3]
    cam = grad_cam(model, x, targets, layer, mode=mode)
    expected = _reference(model, x, targets, layer, mode)
    assert cam.shape == expected.shape == (2, *x.shape[2:])
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-5)


def test_temporal_mode_differs_from_standard_on_video() -> None:
    model = _small("r3d_18")
    x = _input("r3d_18")
    standard = grad_cam(model, x, 2, "layer1")
    temporal = grad_cam(model, x, 2, "layer1", mode="temporal")
    assert not torch.allclose(standard, temporal)


@pytest.mark.parametrize(
    "backbone", [b for b in stemlab.list_backbones() if b not in TORCHVISION_VIDEO]
)
def test_every_backbone_every_stage(backbone: str) -> None:
    model = _small(backbone).train()
    x = _input(backbone, n=1)
    for entry in model.feature_info:
        with torch.no_grad():
            module, shapes = model.get_submodule(entry["module"]), []
            handle = module.register_forward_hook(lambda m, i, o, s=shapes: s.append(o.shape))
            model.eval()(x)
            model.train()
            handle.remove()
        positions = shapes[0][2:].numel() * (shapes[0][0] if shapes[0][0] != x.shape[0] else 1)
        if positions == 1:  # one position: the map would be all zeros, so it is refused
            with pytest.raises(ValueError, match="map of size 1"):
                grad_cam(model, x, 0, entry["module"])
            continue
        cam = grad_cam(model, x, 0, entry["module"])
        assert cam.shape == (1, *x.shape[2:])
        assert cam.min() >= 0 and cam.max() <= 1
        assert cam.max() in (0.0, 1.0)  # normalised, or constant (all zero)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_attribution_per_frame() -> None:
    cam = torch.zeros(2, 4, 3, 3)
    cam[0, 1] = 1.0
    cam[0, 3, 0, 0] = 3.0
    mass = attribution_per_frame(cam)
    torch.testing.assert_close(mass[0], torch.tensor([0.0, 0.75, 0.0, 0.25]))
    torch.testing.assert_close(mass[1], torch.zeros(4))
    model = _small("r3d_18")
    mass = attribution_per_frame(grad_cam(model, _input("r3d_18"), 0, "layer2"))
    torch.testing.assert_close(mass.sum(dim=1), torch.ones(2))


def test_frozen_model_and_module_layer() -> None:
    model = _small("resnet18").requires_grad_(False)
    x = _input("resnet18")
    cam = grad_cam(model, x, torch.tensor([4, 0]), model.layer3)
    torch.testing.assert_close(cam, _reference(model, x, [4, 0], "layer3", "standard"))


def test_errors() -> None:
    model = _small("r3d_18")
    x = _input("r3d_18")
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'.*Candidate layers: stem, layer1"):
        grad_cam(model, x, 0, "layer9")
    with pytest.raises(ValueError, match="mode='spatial' is not allowed"):
        grad_cam(model, x, 0, mode="spatial")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one class index per sample"):
        grad_cam(model, x, [0, 1, 2])
    with pytest.raises(ValueError, match="class indices >= 0"):
        grad_cam(model, x, -1)
    with pytest.raises(ValueError, match="cannot be mapped onto input"):
        grad_cam(model, x, 0, "fc")
    with pytest.raises(ValueError, match="needs video input"):
        grad_cam(_small("resnet18"), _input("resnet18"), 0, "layer4", mode="temporal")
    with pytest.raises(ValueError, match="not a submodule"):
        grad_cam(model, x, 0, nn.Conv3d(1, 1, 1))
