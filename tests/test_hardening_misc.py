"""Hardening round 2 (issue 17): per-module modes, smaller argument checks, CLI messages."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from small_models import small_kwargs
from torch import nn

import stemlab
from stemlab import probes
from stemlab._modes import preserved_modes
from stemlab.study.cell import _head_inputs
from stemlab.train import evaluate


def _mixed_mode_model() -> nn.Module:
    """A training model whose stem BatchNorms are frozen in eval mode (a common fine-tune setup)."""
    model = stemlab.create_model(
        "r2plus1d_18", num_classes=3, stem="basic:width=8", **small_kwargs("r2plus1d_18")
    )
    model.train()
    for module in model.stem.modules():
        if isinstance(module, nn.BatchNorm3d):
            module.eval()
    return model


def _clips(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(_clips(), torch.tensor([0, 1, 2, 0]))]


def _dataset() -> torch.utils.data.TensorDataset:
    return torch.utils.data.TensorDataset(_clips(), torch.tensor([0, 1, 2, 0]))


def _recorded(model: nn.Module) -> None:
    with probes.record_activations(model):
        model(_clips())


PROBES: dict[str, Callable[[nn.Module], object]] = {
    "grad_cam": lambda m: probes.grad_cam(m, _clips(2), 0, layer="layer1"),
    "confusion_matrix": lambda m: probes.confusion_matrix(m, _batches(), num_classes=3),
    "flops_table": lambda m: probes.flops_table(m, _clips(1)),
    "cka": lambda m: probes.cka(m, m, _batches(), layers=["layer1"]),
    "gram_matrices": lambda m: probes.gram_matrices(m, _batches(), layers=["layer1"]),
    "record_activations": _recorded,
    "channel_ablation": lambda m: probes.channel_ablation(m, _batches(), channels=[0, 1]),
    "ablation_curve": lambda m: probes.ablation_curve(m, _batches(), steps=[0, 4]),
    "channel_redundancy": lambda m: probes.channel_redundancy(m, _batches()),
    "channel_usage": probes.channel_usage,
    "first_layer_filters": probes.first_layer_filters,
    "latency": lambda m: probes.latency(m, _clips(1), runs=1, warmup=0, progress=False),
    "evaluate": lambda m: evaluate(m, _dataset(), batch_size=4),
    "head_inputs": lambda m: _head_inputs(m, _clips(2)),
}


@pytest.mark.parametrize("name", sorted(PROBES))
def test_every_probe_restores_each_modules_mode(name: str) -> None:
    model = _mixed_mode_model()
    before = {n: m.training for n, m in model.named_modules()}
    assert before[""] is True
    assert before["stem.1"] is False  # the frozen BN this test is about
    PROBES[name](model)
    after = {n: m.training for n, m in model.named_modules()}
    changed = sorted(n for n in before if before[n] != after[n])
    assert changed == []


def test_preserved_modes_restores_after_an_exception() -> None:
    model = _mixed_mode_model()
    before = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="boom"), preserved_modes(model):
        model.train()
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
    # model.train(True) alone would have put the frozen BN back in train mode
    model.train(True)
    assert [m.training for m in model.modules()] != before
