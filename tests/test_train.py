"""The training loop: schedule, losses, parameter groups, divergence, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from stemlab.data import SyntheticMotion
from stemlab.train import (
    HISTORY_COLUMNS,
    FocalLoss,
    TrainConfig,
    WarmupCosine,
    build_loss,
    evaluate,
    fit,
    preserved_model_state,
)


class Blobs(Dataset):
    """Two-class points around (+-2, +-2): linearly separable, returned as (x, label, mask)."""

    def __init__(
        self, n: int, seed: int = 0, fail_at: int | None = None, interrupt_at: int | None = None
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 4, generator=g) * 0.5 + (self.y[:, None] * 4.0 - 2.0)
        self.fail_at, self.interrupt_at, self.calls = fail_at, interrupt_at, 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError("disk on fire")
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.x[i], int(self.y[i]), torch.zeros(1)


class TinyNet(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2))
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def quiet(**kwargs: object) -> TrainConfig:
    base: dict[str, object] = {"epochs": 3, "batch_size": 8, "lr": 0.05, "progress": False}
    base.update(kwargs)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"batch_size": 2.5}, TypeError, "batch_size"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"optimizer": "adam"}, ValueError, "adamw"),
        ({"schedule": "step"}, ValueError, "schedule"),
        ({"loss": "hinge"}, ValueError, "loss"),
        ({"label_smoothing": 1.0}, ValueError, "label_smoothing"),
        ({"loss": "focal", "label_smoothing": 0.1}, ValueError, "label_smoothing"),
        ({"warmup_epochs": 11}, ValueError, "warmup_epochs"),
        ({"momentum": 1.0}, ValueError, "momentum"),
        ({"grad_clip": 0.0}, ValueError, "grad_clip"),
        ({"device": "tpu"}, ValueError, "device"),
        ({"amp": "yes"}, ValueError, "amp"),
        ({"channels_last": 1}, ValueError, "channels_last"),
        ({"resume": True}, ValueError, "checkpoint_dir"),
        ({"freeze_backbone": "no"}, TypeError, "freeze_backbone"),
        ({"lr": math.inf}, ValueError, r"lr=inf is not allowed: lr must be a finite number > 0"),
        ({"lr": math.nan}, ValueError, r"lr=nan is not allowed"),
        ({"lr": 0}, ValueError, r"lr=0 is not allowed"),
        ({"weight_decay": math.nan}, ValueError, r"weight_decay=nan .* finite number >= 0"),
        ({"weight_decay": -0.1}, ValueError, r"weight_decay=-0.1 "),
        ({"momentum": math.nan}, ValueError, r"momentum=nan .* 0 <= momentum < 1"),
        ({"warmup_epochs": math.inf}, ValueError, r"warmup_epochs=inf .* <= 10 \(epochs=10\)"),
        ({"min_lr": 1.5}, ValueError, r"min_lr=1.5 .* 0 <= min_lr <= 1"),
        ({"focal_gamma": math.inf}, ValueError, r"focal_gamma=inf .* >= 0"),
        ({"focal_alpha": 0.0, "loss": "focal"}, ValueError, r"focal_alpha=0.0 .* > 0"),
        ({"head_lr_multiplier": math.nan}, ValueError, r"head_lr_multiplier=nan .* > 0"),
        ({"grad_clip": math.inf}, ValueError, r"grad_clip=inf .*use None for no clipping"),
        ({"epochs": 0}, ValueError, r"epochs=0 is not allowed: epochs must be an int >= 1"),
        ({"epochs": True}, TypeError, r"epochs must be an int"),
        ({"batch_size": 0}, ValueError, r"batch_size=0 .* >= 1"),
        ({"seed": -1}, ValueError, r"seed=-1 .* >= 0"),
        ({"num_workers": -2}, ValueError, r"num_workers=-2 .* >= 0"),
        ({"lr": "0.1"}, TypeError, r"lr must be a number, got str"),
        ({"device": "cuda:x"}, ValueError, r"device='cuda:x' is not allowed"),
        ({"freeze": "stem"}, ValueError, r"freeze='stem' .* such as \['stem'\]"),
        ({"freeze": []}, TypeError, r"freeze must be"),
        ({"freeze": ["stem", ""]}, TypeError, r"freeze must be"),
        ({"freeze": ["stem", "stem"]}, ValueError, r"names 'stem' twice"),
        ({"freeze": 3}, TypeError, r"freeze must be .* got int 3"),
        ({"freeze": ["stem"], "freeze_backbone": True}, ValueError, r"contradicts freeze"),
    ],
)
def test_config_validation(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        TrainConfig(**kwargs)


def test_config_freeze_forms_and_the_deprecated_flag() -> None:
    assert TrainConfig().freeze == "none"
    config = TrainConfig(freeze=["stem", "layer1"])
    assert config.freeze == ("stem", "layer1")
    assert config.to_dict()["freeze"] == ["stem", "layer1"]
    with pytest.warns(DeprecationWarning, match="use freeze='backbone'"):
        old = TrainConfig(freeze_backbone=True)
    assert old.freeze == "backbone" and old.freeze_backbone is None
    with pytest.warns(DeprecationWarning, match="use freeze='none'"):
        assert TrainConfig(freeze_backbone=False).freeze == "none"
    assert dataclasses.replace(old, freeze="none").freeze == "none", "the flag is not sticky"


def test_warmup_cosine_factors() -> None:
    factor = WarmupCosine(warmup_steps=4, total_steps=12, cosine=True)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == 1.0
    assert factor(8) == pytest.approx(0.5)
    assert factor(12) == pytest.approx(0.0)
    floor = WarmupCosine(warmup_steps=0, total_steps=10, cosine=True, min_factor=0.1)
    assert floor(5) == pytest.approx(0.55) and floor(10) == pytest.approx(0.1)
    assert WarmupCosine(warmup_steps=2, total_steps=10, cosine=False)(7) == 1.0


def test_losses_closed_form() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])
    target = torch.tensor([1])
    # p_t = 3/4: focal = -(1/4)^2 log(3/4), cross-entropy = -log(3/4).
    assert float(FocalLoss(gamma=2.0)(logits, target)) == pytest.approx(-(0.25**2) * math.log(0.75))
    assert float(FocalLoss(gamma=2.0, alpha=0.25)(logits, target)) == pytest.approx(
        -0.25 * 0.25**2 * math.log(0.75)
    )
    many = torch.randn(6, 5)
    labels = torch.randint(0, 5, (6,))
    torch.testing.assert_close(FocalLoss(gamma=0.0)(many, labels), F.cross_entropy(many, labels))
    smoothed = build_loss(TrainConfig(label_smoothing=0.2))
    # With smoothing eps over K=2 classes the target is (eps/2, 1 - eps/2).
    expected = -(0.1 * math.log(0.25) + 0.9 * math.log(0.75))
    assert float(smoothed(logits, target)) == pytest.approx(expected)


def test_fit_learns_and_reports_rows() -> None:
    model = TinyNet().eval()
    result = fit(
        model, Blobs(64), config=quiet(epochs=3, warmup_epochs=1), val_data=Blobs(32, seed=1)
    )
    assert result.status == "completed" and result.error is None
    assert list(result.history.columns) == list(HISTORY_COLUMNS)
    assert result.history["epoch"].tolist() == [1, 2, 3]
    # 8 steps per epoch; warm-up 8 steps then cosine over 16: factor after epoch 2 is 0.5.
    torch.testing.assert_close(
        torch.tensor(result.history["lr"].tolist()),
        torch.tensor([0.05, 0.025, 0.0]),
        atol=1e-9,
        rtol=0,
    )
    assert result.final["val_top1"] == 1.0 and result.final["val_top5"] == 1.0
    assert (result.history["clips_per_s"] > 0).all() and (result.history["seconds"] > 0).all()
    assert not model.training, "the caller's eval mode is restored"


def test_head_lr_multiplier_scales_the_head_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
    model.fc = nn.Linear(8, 2)
    data = Blobs(16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = nn.Sequential()
    reference.body, reference.fc = nn.Sequential(nn.Linear(4, 8), nn.Tanh()), nn.Linear(8, 2)
    reference.load_state_dict(before)
    F.cross_entropy(reference(data.x), data.y).backward()  # one full batch: order is irrelevant
    config = quiet(
        epochs=1,
        batch_size=16,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        lr=0.1,
        warmup_epochs=0,
        schedule="constant",
        head_lr_multiplier=10.0,
    )
    assert fit(model, data, config=config).status == "completed"
    for name, param in reference.named_parameters():
        lr = 1.0 if name.startswith("fc.") else 0.1
        torch.testing.assert_close(before[name] - model.state_dict()[name], lr * param.grad)


def test_freeze_backbone_trains_only_the_head() -> None:
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, Blobs(32), config=quiet(epochs=2, freeze="backbone"))
    assert result.status == "completed"
    after = model.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        assert changed == key.startswith("fc."), key  # BN running stats stay fixed too
    assert all(p.requires_grad for p in model.parameters()), "requires_grad is restored"


class Staged(nn.Module):
    """A stem, one stage (each with batch norm) and a head."""

    def __init__(self, head_name: str = "fc") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head_name = head_name
        self.add_module(head_name, nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.head_name)(self.layer1(self.stem(x)))


def changed_keys(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    after = model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_freeze_named_modules_keeps_them_fixed() -> None:
    model = Staged()
    model.layer1.eval()  # a caller's mixed modes come back as they were
    modes = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, Blobs(32), config=quiet(epochs=2, freeze=["stem"]))
    assert result.status == "completed", result.traceback
    changed = changed_keys(before, model)
    assert not any(k.startswith("stem.") for k in changed), "weights and BN statistics fixed"
    trained = {k for k in before if k.startswith(("layer1.", "fc.")) and "num_batches" not in k}
    assert trained <= changed, trained - changed
    assert [m.training for m in model.modules()] == modes
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_unknown_module_suggests_close_names() -> None:
    model = Staged()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"unknown module 'layr1'\. Did you mean 'layer1'") as err:
        fit(model, Blobs(32), config=quiet(freeze=["stem", "layr1"]))
    assert "Stages and top-level modules: stem, layer1, fc" in str(err.value)
    assert not changed_keys(before, model)
    with pytest.raises(ValueError, match="leaves no parameter to train"):
        fit(model, Blobs(32), config=quiet(freeze=["stem", "layer1", "fc"]))


def test_head_comes_from_the_declared_layout() -> None:
    """With ``model.layout`` the head is the module it names, even when another is called fc."""
    model = Staged(head_name="classifier")
    model.fc = nn.Linear(8, 8)  # a decoy: part of the backbone, never called
    model.layout = SimpleNamespace(stem="stem", head="classifier", stages=("stem", "layer1"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, Blobs(32), config=quiet(epochs=2, freeze="backbone"))
    assert result.status == "completed", result.traceback
    assert changed_keys(before, model) == {"classifier.weight", "classifier.bias"}

    model.layout = SimpleNamespace(stem="stem", head="head", stages=())
    with pytest.raises(ValueError, match="declares the head 'head', but the model has no module"):
        fit(model, Blobs(32), config=quiet(freeze="backbone"))
    plain = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"head_lr_multiplier=10\.0 needs a model whose head"):
        fit(plain, Blobs(32), config=quiet(head_lr_multiplier=10.0))
    with pytest.raises(ValueError, match="freeze='backbone' needs a model whose head is known"):
        fit(plain, Blobs(32), config=quiet(freeze="backbone"))


def test_head_lr_multiplier_on_a_nested_layout_head() -> None:
    """The head group gets lr * multiplier: one SGD step equals the hand-computed update."""
    model = Staged(head_name="fc")
    model.layout = SimpleNamespace(stem="stem", head="layer1.0", stages=())
    data = Blobs(16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = Staged(head_name="fc")
    reference.load_state_dict(before)
    reference.train()
    F.cross_entropy(reference(data.x), data.y).backward()
    config = quiet(
        epochs=1,
        batch_size=16,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        lr=0.1,
        warmup_epochs=0,
        schedule="constant",
        head_lr_multiplier=10.0,
    )
    assert fit(model, data, config=config).status == "completed"
    for name, param in reference.named_parameters():
        lr = 1.0 if name.startswith("layer1.0.") else 0.1
        torch.testing.assert_close(before[name] - model.state_dict()[name], lr * param.grad)


def test_frozen_backbone_of_a_registered_model_uses_its_layout_head() -> None:
    from stemlab.models import create_model

    model = create_model(
        "c3d", num_classes=3, widths=(4, 8, 8, 8), fc_width=8, input_size=(4, 16, 16)
    )
    head = model.layout.head
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = SyntheticMotion(4, size=16, clip_len=4, num_classes=3)
    result = fit(model, data, config=quiet(epochs=1, batch_size=2, freeze="backbone"))
    assert result.status == "completed", result.traceback
    assert changed_keys(before, model) == {f"{head}.weight", f"{head}.bias"}


def test_evaluate_and_fit_restore_the_models_state() -> None:
    model = TinyNet()
    model.body.eval()
    model.body[0].weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    evaluate(model, Blobs(8), device="cpu")
    assert [m.training for m in model.modules()] == modes
    fit(model, Blobs(16), config=quiet(epochs=1))
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    with pytest.raises(RuntimeError), preserved_model_state(model):
        model.train()
        model.fc.weight.requires_grad_(False)
        raise RuntimeError("inside")
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags


def test_nan_loss_stops_cleanly() -> None:
    class Explodes(TinyNet):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            out = super().forward(x)
            return out * math.nan if self.calls == 6 else out

    result = fit(Explodes(), Blobs(32), config=quiet(epochs=3))
    assert result.status == "diverged"
    assert result.error == "epoch 2, step 2: train_loss is nan"
    assert result.history["epoch"].tolist() == [1]


def test_sgd_huge_lr_is_diverged_in_its_epoch_not_a_result() -> None:
    # Issue 17: lr=1e6 used to finish "completed" with val_loss NaN in the last epoch's row.
    for epochs in (1, 3):
        result = fit(
            TinyNet(),
            Blobs(32),
            config=quiet(epochs=epochs, lr=1e6, optimizer="sgd"),
            val_data=Blobs(16, seed=1),
        )
        assert result.status == "diverged"
        assert result.error == "epoch 1: val_loss is nan"
        assert result.history.empty and result.final == {}


def test_lr_beyond_float32_is_diverged_not_an_overflow_failure() -> None:
    result = fit(
        TinyNet(), Blobs(32), config=quiet(epochs=1, lr=1e38, warmup_epochs=0.0), val_data=Blobs(8)
    )
    assert result.status == "diverged"
    assert result.error == "epoch 1, step 1: the optimizer step overflowed float32 (lr=1e+38)"
    assert result.traceback is None


def test_non_finite_weight_after_a_step_is_diverged_with_its_name() -> None:
    class InfGrad(TinyNet):
        """The loss stays finite; at the third step the bias gradient is infinite."""

        calls = 0

        def __init__(self) -> None:
            super().__init__()
            self.fc.bias.register_hook(
                lambda g: torch.full_like(g, math.inf) if self.calls == 3 else g
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return super().forward(x)

    result = fit(InfGrad(), Blobs(32), config=quiet(epochs=2, lr=10.0, optimizer="sgd"))
    assert result.status == "diverged"
    assert result.error is not None
    assert result.error == "epoch 1, step 3: weight fc.bias is -inf after the step"
    assert result.history.empty


def test_non_finite_validation_metric_is_diverged() -> None:
    class NanInEval(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            return out if self.training else out * math.nan

    result = fit(NanInEval(), Blobs(32), config=quiet(epochs=2), val_data=Blobs(8, seed=3))
    assert result.status == "diverged"
    assert result.error == "epoch 1: val_loss is nan"
    assert result.history.empty
    # without validation the same model trains: NaN val columns alone are not divergence
    assert fit(NanInEval(), Blobs(32), config=quiet(epochs=2)).status == "completed"


def test_exception_is_recorded_not_raised() -> None:
    result = fit(TinyNet(), Blobs(32, fail_at=40), config=quiet(epochs=3))
    assert result.status == "failed"
    assert result.error == "OSError: disk on fire"
    assert "Traceback" in result.traceback
    assert len(result.history) == 1


def test_checkpoint_resume_matches_uninterrupted(tmp_path: Path) -> None:
    config = {"epochs": 3, "batch_size": 8, "lr": 0.05, "progress": False}
    straight = TinyNet(seed=0)
    full = fit(straight, Blobs(32), config=TrainConfig(**config), val_data=Blobs(8, seed=1))

    run_dir = tmp_path / "run"
    interrupted = TinyNet(seed=0)
    with pytest.raises(KeyboardInterrupt):  # dies during epoch 2, after checkpointing epoch 1
        fit(
            interrupted,
            Blobs(32, interrupt_at=40),
            config=TrainConfig(**config, checkpoint_dir=run_dir),
            val_data=Blobs(8, seed=1),
        )
    assert sorted(p.name for p in run_dir.iterdir()) == ["last.pt"]
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 1

    resumed_model = TinyNet(seed=123)  # weights come from the checkpoint
    resumed = fit(
        resumed_model,
        Blobs(32),
        config=TrainConfig(**config, checkpoint_dir=run_dir, resume=True),
        val_data=Blobs(8, seed=1),
    )
    assert resumed.status == "completed"
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    cols = ["epoch", "train_loss", "train_top1", "val_loss", "lr"]
    assert resumed.history[cols].equals(full.history[cols])
    assert resumed.checkpoint == run_dir / "last.pt"

    with pytest.raises(ValueError, match="lr"):
        fit(
            TinyNet(),
            Blobs(32),
            config=TrainConfig(**{**config, "lr": 0.1}, checkpoint_dir=run_dir, resume=True),
        )


class IndexLogits(nn.Module):
    """Returns a fixed row of logits per sample index (the input is the index)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.long()]


class Indices(Dataset):
    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor(i), self.labels[i]


def test_evaluate_closed_form() -> None:
    table = torch.tensor(
        [[3.0, 2, 1, 0, -1, -2], [0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0], [0.0, 0, 0, 0, 0, 9]]
    )
    labels = [0, 0, 5, 2]  # ranks: 1st, 6th, 6th, 3rd
    metrics = evaluate(IndexLogits(table), Indices(labels), batch_size=3, device="cpu")
    expected = F.cross_entropy(table, torch.tensor(labels)).item()
    assert metrics["loss"] == pytest.approx(expected)
    assert metrics["top1"] == 0.25 and metrics["top5"] == 0.5 and metrics["clips"] == 4


def test_fit_synthetic_video_with_masks_amp_and_channels_last() -> None:
    from stemlab.models import create_model

    model = create_model(
        "r2plus1d_18", stem="r2plus1d", num_classes=4, widths=(8, 8, 8, 8), layers=(1, 1, 1, 1)
    )
    data = SyntheticMotion(8, size=16, clip_len=4)
    config = quiet(epochs=1, batch_size=4, amp=True, channels_last=True, device="cpu")
    result = fit(
        model, data, config=config, val_data=SyntheticMotion(4, size=16, clip_len=4, seed=1)
    )
    assert result.status == "completed", result.traceback
    assert all(p.is_contiguous() for p in model.parameters()), "layout restored"
    assert 0.0 <= result.final["val_top1"] <= 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(TinyNet(), Blobs(8), config=quiet(device="cuda"))


def test_resume_reads_checkpoints_written_before_freeze_existed(tmp_path: Path) -> None:
    """A checkpoint whose config has ``freeze_backbone`` and no ``freeze`` still resumes."""
    config = {"epochs": 2, "batch_size": 8, "lr": 0.05, "progress": False}
    straight = TinyNet(seed=0)
    fit(straight, Blobs(32), config=TrainConfig(**config))
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # dies in epoch 2, after checkpointing epoch 1
        fit(
            TinyNet(seed=0),
            Blobs(32, interrupt_at=40),
            config=TrainConfig(**config, checkpoint_dir=run_dir),
        )
    saved = torch.load(run_dir / "last.pt", weights_only=True)
    saved["config"].pop("freeze")
    saved["config"]["freeze_backbone"] = False
    torch.save(saved, run_dir / "last.pt")
    resumed = TinyNet(seed=5)
    result = fit(
        resumed, Blobs(32), config=TrainConfig(**config, checkpoint_dir=run_dir, resume=True)
    )
    assert result.status == "completed" and result.history["epoch"].tolist() == [1, 2]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
