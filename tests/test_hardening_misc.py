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


# --- smaller cases: one-line errors and warnings -------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from stemlab import cli

    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_and_argument_errors_do_not_import_torch() -> None:
    # The CLI answered --help only after importing torch and torchvision (7.4 s on a quiet machine).
    script = (
        "import sys, contextlib, io\n"
        "import stemlab, stemlab.cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    codes = [stemlab.cli.main(['--help']), stemlab.cli.main(['inspect', 'r3d_18', "
        "'--num-classes', 'x']), stemlab.cli.main(['bogus'])]\n"
        "print(codes, 'torch' in sys.modules)\n"
        "model = stemlab.create_model('resnet18', num_classes=3, widths=(8, 8, 8, 8))\n"
        "print(type(model).__name__, 'torch' in sys.modules)\n"
    )
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        check=True,
    )
    assert done.stdout.splitlines() == ["[0, 2, 2] False", "ResNet2d True"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["inspect", "r3d_18", "--num-classes", "1000000000000"],
            "stemlab: error: inspect: argument --num-classes: expected an integer in [1, 100000], "
            "got '1000000000000' (see 'stemlab inspect --help')",
        ),
        (
            ["inspect", "r3d_18", "--input", "100000x3x16x112x112"],
            "stemlab: error: --input '100000x3x16x112x112' holds 60,211,200,000 values; at most "
            "134,217,728 (512 MiB of float32) are allowed: a small batch is enough, "
            "e.g. 1x3x16x112x112",
        ),
        (
            ["bogus"],
            "stemlab: error: argument COMMAND: invalid choice: 'bogus' (choose from 'list', "
            "'inspect', 'filters', 'channels', 'study', 'report') (see 'stemlab --help')",
        ),
        (
            ["channels", "r3d_18", "--data", "synthetic_motion"],
            "stemlab: error: channels --data synthetic_motion needs --weights: without them the "
            "model is untrained (random init, --num-classes 400), so every ablation drop would "
            "measure noise around chance, not what a stem channel contributes; pass --weights of "
            "a model trained on this data, or leave out --data for the weight-usage table",
        ),
        (
            ["channels", "r3d_18", "--data", "synthetic_motion", "--weights", "trained.pt"],
            "stemlab: error: channels --num-classes 400: the data (32 synthetic_motion (motion) "
            "clips) has 4 classes and the ablation scores the model's predictions against them; "
            "use --num-classes 4 with --weights of a model trained on these classes",
        ),
    ],
)
def test_cli_one_line_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _cli(capsys, *argv)
    assert (code, out, err.strip()) == (2, "", message)


def test_inspect_out_of_memory_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memory(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 240844800000 bytes."
        )

    monkeypatch.setattr(probes, "flops_table", no_memory)
    code, _, err = _cli(
        capsys, "inspect", "r3d_18", "--stem", "basic:width=4", "--input", "1x3x4x16x16",
        "--num-classes", "4", "--device", "cpu",
    )  # fmt: skip
    assert code == 2
    assert err.strip() == (
        "stemlab: error: inspect --input 1x3x4x16x16: r3d_18's activations at this size do not "
        "fit in CPU memory; use a smaller batch or clip, e.g. 1x3x16x112x112"
    )


def test_num_classes_has_an_upper_bound() -> None:
    with pytest.raises(ValueError) as error:
        stemlab.create_model("resnet18", num_classes=10**12)
    assert str(error.value) == (
        "num_classes=1000000000000 is too large: num_classes must be in [1, 100000]"
    )


def test_wrong_rank_under_tracing_names_int_sizes() -> None:
    # flops_table traces the model, where x.shape holds tensors: "got shape (tensor(1), ...)"
    model = stemlab.create_model("r3d_18", num_classes=4, stem="basic:width=4")
    with pytest.raises(ValueError) as error:
        probes.flops_table(model, torch.randn(1, 3, 32, 32))
    assert "got shape (1, 3, 32, 32); for a single clip add the batch dimension" in str(error.value)


def test_all_nan_checkpoint_loads_with_a_warning(tmp_path: object) -> None:
    from pathlib import Path

    model = stemlab.create_model("resnet18", num_classes=3, widths=(8, 8, 8, 8))
    state = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    floating = sum(v.is_floating_point() and v.numel() > 0 for v in state.values())
    path = Path(str(tmp_path)) / "diverged.pt"
    torch.save(state, path)
    with pytest.warns(UserWarning) as caught:
        stemlab.load_weights(model, path)
    messages = [str(w.message) for w in caught if "floating-point tensors" in str(w.message)]
    assert messages == [
        f"{path}: {floating} of {floating} floating-point tensors hold all NaN ('stem.0.weight', "
        f"'stem.1.weight', 'stem.1.bias' and {floating - 3} more); a model with these weights "
        "outputs NaN (was the checkpoint saved after training diverged?)"
    ]
    finite = stemlab.create_model("resnet18", num_classes=3, widths=(8, 8, 8, 8))
    torch.save(finite.state_dict(), path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stemlab.load_weights(model, path)
