"""Channel ablation, ablation curves, channel usage and channel redundancy against direct computations."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerFeatureAblation
from small_models import small_kwargs
from torch import nn

import stemlab
from stemlab.probes.channel_ablation import ablation_curve, channel_ablation
from stemlab.probes.channel_redundancy import channel_redundancy
from stemlab.probes.channel_usage import channel_usage, channels_for_share

BACKBONES = [
    ("r2plus1d_18", "basic:width=6"),
    ("r3d_18", "r2plus1d:width=6"),
    ("resnet18", "resnet:width=6"),
]


def _small(backbone: str, stem: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return stemlab.create_model(backbone, stem=stem, num_classes=5, **small_kwargs(backbone))


def _batches(backbone: str, count: int = 2, n: int = 4, seed: int = 0) -> list[tuple]:
    generator = torch.Generator().manual_seed(seed)
    shape = (n, 3, 16, 16) if backbone == "resnet18" else (n, 3, 4, 16, 16)
    return [
        (torch.randn(shape, generator=generator), torch.randint(0, 5, (n,), generator=generator))
        for _ in range(count)
    ]


def _last_bn(stem: nn.Module) -> nn.Module:
    return [m for m in stem.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)][-1]


def _kill(model: nn.Module, channels: list[int]) -> nn.Module:
    """A copy whose stem outputs exactly 0 on ``channels`` (BN scale and shift 0, then ReLU)."""
    model = copy.deepcopy(model)
    bn = _last_bn(model.stem)
    with torch.no_grad():
        bn.weight[channels] = 0.0
        bn.bias[channels] = 0.0
    return model


def _metric(model: nn.Module, batches: list[tuple], metric: str) -> float:
    model = copy.deepcopy(model).eval()
    total = count = 0.0
    with torch.no_grad():
        for x, y in batches:
            logits = model(x)
            if metric == "accuracy":
                total += float((logits.argmax(1) == y).sum())
            else:
                total += float(F.cross_entropy(logits.double(), y, reduction="sum"))
            count += len(y)
    return total / count


def _state(model: nn.Module) -> tuple:
    return (
        [m.training for m in model.modules()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [sorted(m.__dict__) for m in model.modules()],  # no instance attribute left behind
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _assert_same_state(before: tuple, model: nn.Module) -> None:
    after = _state(model)
    assert before[:4] == after[:4]
    for key, value in before[4].items():
        assert torch.equal(value, after[4][key]), key


def _prepared(backbone: str, stem: str) -> nn.Module:
    model = _small(backbone, stem).train()
    model.layer1.eval()
    next(model.parameters()).requires_grad_(False)
    return model


# --- channel_ablation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("backbone", "stem"), BACKBONES)
@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_dead_channel_has_zero_drop_and_others_match_a_zeroed_copy(
    backbone: str, stem: str, metric: str
) -> None:
    model = _kill(_prepared(backbone, stem), [2])
    batches = _batches(backbone)
    before = _state(model)
    table = channel_ablation(model, batches, metric=metric)
    _assert_same_state(before, model)
    assert list(table.columns) == ["channel", "metric", "baseline", "ablated", "drop"]
    assert table["channel"].tolist() == list(range(6)) and set(table["metric"]) == {metric}
    rows = table.set_index("channel")
    assert rows.loc[2, "drop"] == 0.0 and rows.loc[2, "ablated"] == rows.loc[2, "baseline"]
    assert rows.loc[0, "baseline"] == pytest.approx(_metric(model, batches, metric), abs=1e-12)
    for channel in (0, 4):
        expected = _metric(_kill(model, [channel]), batches, metric)
        assert rows.loc[channel, "ablated"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    sign = 1 if metric == "accuracy" else -1
    np.testing.assert_allclose(table["drop"], sign * (table["baseline"] - table["ablated"]))
    assert table.attrs["samples"] == 8 and table.attrs["num_channels"] == 6


def test_loss_drop_matches_captum_layer_feature_ablation() -> None:
    model = _small("r2plus1d_18", "basic:width=6").eval()
    ((x, y),) = _batches("r2plus1d_18", count=1, n=5)
    table = channel_ablation(model, [(x, y)], metric="loss")
    ablator = LayerFeatureAblation(
        lambda clip: F.cross_entropy(model(clip), y, reduction="none"), model.stem
    )
    mask = torch.arange(6).view(1, 6, 1, 1, 1)
    attribution = ablator.attribute(x, layer_mask=mask)  # loss(baseline) - loss(ablated)
    per_channel = -attribution[:, :, 0, 0, 0].double().mean(dim=0)
    np.testing.assert_allclose(table["drop"], per_channel.numpy(), rtol=1e-4, atol=1e-6)


def test_channel_ablation_on_a_stage_a_subset_and_a_generator() -> None:
    model = _small("resnet18", "resnet:width=6")
    batches = _batches("resnet18", count=3)
    table = channel_ablation(
        model, iter(batches), layer="layer1", channels=[7, 1], metric="loss", max_batches=2
    )
    assert table["channel"].tolist() == [7, 1]
    assert table.attrs["samples"] == 8 and table.attrs["layer"] == "layer1"


def test_ablation_of_a_layer_that_runs_once_per_frame_matches_a_zeroed_copy() -> None:
    # The ConvLSTM gate conv runs once per time step: its output cannot be replayed.
    model = _small("conv_lstm", "basic:width=6")
    batches = _batches("conv_lstm")
    table = channel_ablation(
        model, batches, layer="recurrent.cell.conv", channels=[3], metric="loss"
    )
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        zeroed.recurrent.cell.conv.weight[3] = 0.0
        zeroed.recurrent.cell.conv.bias[3] = 0.0
    expected = _metric(zeroed, batches, "loss")
    assert table["ablated"][0] == pytest.approx(expected, rel=1e-6)
    assert table["ablated"][0] != table["baseline"][0]


def test_channel_ablation_validation() -> None:
    model = _small("resnet18", "resnet:width=6")
    batches = _batches("resnet18")
    with pytest.raises(ValueError, match="Did you mean 'layer1'"):
        channel_ablation(model, batches, layer="layr1")
    with pytest.raises(ValueError, match="Did you mean 'loss'"):
        channel_ablation(model, batches, metric="los")
    with pytest.raises(ValueError, match=r"channels \[6\] do not exist: layer 'stem' has 6"):
        channel_ablation(model, batches, channels=[0, 6])
    with pytest.raises(TypeError, match="channels must hold ints"):
        channel_ablation(model, batches, channels=[0.5])
    with pytest.raises(ValueError, match="needs batches \\(clip, label"):
        channel_ablation(model, [x for x, _ in batches])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        channel_ablation(model, [(batches[0][0], torch.full((4,), 9))])
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


# --- ablation_curve -----------------------------------------------------------------------------


@pytest.mark.parametrize(("backbone", "stem"), [BACKBONES[0], BACKBONES[2]])
def test_ablation_curve_orders_and_end_points(backbone: str, stem: str) -> None:
    model = _prepared(backbone, stem)
    batches = _batches(backbone)
    before = _state(model)
    importance = channel_ablation(model, batches, metric="loss")
    curve = ablation_curve(model, batches, metric="loss", importance=importance, seed=3)
    _assert_same_state(before, model)
    assert list(curve.columns) == ["order", "removed", "metric_value"]
    assert curve["order"].tolist() == ["importance"] * 7 + ["random"] * 7
    assert curve["removed"].tolist() == list(range(7)) * 2
    by = {name: group["metric_value"].to_numpy() for name, group in curve.groupby("order")}
    baseline = importance["baseline"].iloc[0]
    everything = _metric(_kill(model, list(range(6))), batches, "loss")
    for values in by.values():
        assert values[0] == pytest.approx(baseline, abs=1e-12)
        assert values[-1] == pytest.approx(everything, rel=1e-6)
    ranked = importance.sort_values("drop", ascending=False, kind="stable")["channel"].tolist()
    assert curve.attrs["orders"]["importance"] == ranked
    assert by["importance"][1] == pytest.approx(importance["ablated"][ranked[0]], abs=1e-12)
    first_two = _metric(_kill(model, ranked[:2]), batches, "loss")
    assert by["importance"][2] == pytest.approx(first_two, rel=1e-6)
    random_order = curve.attrs["orders"]["random"]
    assert random_order == np.random.default_rng(3).permutation(6).tolist()
    assert by["random"][3] == pytest.approx(
        _metric(_kill(model, random_order[:3]), batches, "loss"), rel=1e-6
    )


def test_ablation_curve_measures_importance_itself_even_from_a_one_shot_iterator() -> None:
    model = _small("r3d_18", "basic:width=6")
    batches = _batches("r3d_18")
    given = ablation_curve(
        model, batches, order="importance", importance=channel_ablation(model, batches)
    )

    def one_shot() -> Iterator[tuple]:
        yield from batches

    measured = ablation_curve(model, one_shot(), order="importance")
    pd.testing.assert_frame_equal(given, measured)
    assert set(measured["order"]) == {"importance"}


def test_ablation_curve_validation() -> None:
    model = _small("resnet18", "resnet:width=6")
    batches = _batches("resnet18")
    partial = channel_ablation(model, batches, channels=[0, 1])
    with pytest.raises(ValueError, match=r"rank every channel 0\.\.5"):
        ablation_curve(model, batches, importance=partial)
    with pytest.raises(ValueError, match=r"steps \[7\] are outside 0\.\.6"):
        ablation_curve(model, batches, steps=[0, 7])
    with pytest.raises(TypeError, match="steps must be a sequence of ints"):
        ablation_curve(model, batches, steps=[0.5])
    with pytest.raises(ValueError, match="order='best' is not allowed"):
        ablation_curve(model, batches, order="best")


# --- channel_usage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backbone", "stem", "first_conv"),
    [
        ("r2plus1d_18", "basic:width=6", "layer1.0.conv1.0.0"),  # spatial conv of Conv2Plus1D
        ("r3d_18", "basic:width=6", "layer1.0.conv1.0"),
        ("resnet18", "resnet:width=6", "layer1.0.conv1"),
        ("cnn_lstm", "basic:width=6", "layer1.0.conv1"),
    ],
)
def test_channel_usage_is_the_input_weight_norm(backbone: str, stem: str, first_conv: str) -> None:
    model = _small(backbone, stem)
    modules = dict(model.named_modules())
    with torch.no_grad():  # layer1 ignores stem channel 3 entirely
        modules[first_conv].weight[:, 3] = 0.0
        modules["layer1.0.downsample.0"].weight[:, 3] = 0.0
    before = _state(model)
    table = channel_usage(model)
    _assert_same_state(before, model)
    assert list(table.columns) == ["channel", "usage", "share"]
    assert table.attrs["first_conv"] == first_conv
    assert table.attrs["projection"] == "layer1.0.downsample.0"
    expected = [
        torch.cat(
            [
                modules[first_conv].weight[:, c].flatten(),
                modules["layer1.0.downsample.0"].weight[:, c].flatten(),
            ]
        )
        .double()
        .norm()
        .item()
        for c in range(6)
    ]
    np.testing.assert_allclose(table["usage"], expected, rtol=1e-12)
    assert table["usage"][3] == 0.0 and table["share"][3] == 0.0
    assert table["share"].sum() == pytest.approx(1.0, abs=1e-12)
    assert table.attrs["channels_for_90pct"] == channels_for_share(table, share=0.9)


def test_channel_usage_without_projection_and_for_c3d() -> None:
    model = stemlab.create_model(
        "r3d_18", stem="basic:width=8", widths=(8, 8, 8, 8), layers=(1,) * 4
    )
    table = channel_usage(model)
    assert table.attrs["projection"] is None
    weight = model.layer1[0].conv1[0].weight.detach().double()
    np.testing.assert_allclose(table["usage"], weight.square().sum(dim=(0, 2, 3, 4)).sqrt())
    c3d = _small("c3d", "basic:width=6")
    assert channel_usage(c3d).attrs["first_conv"] == "layer1.0"


def test_channels_for_share_closed_form() -> None:
    table = pd.DataFrame({"channel": range(4), "share": [0.15, 0.5, 0.05, 0.3]})
    assert channels_for_share(table, share=0.9) == 3
    assert channels_for_share(table, share=0.8) == 2
    assert channels_for_share(table, share=0.5) == 1
    assert channels_for_share(table, share=1.0) == 4
    with pytest.raises(ValueError, match="share must be in \\(0, 1\\]"):
        channels_for_share(table, share=1.5)
    with pytest.raises(ValueError, match="sum to 1"):
        channels_for_share(pd.DataFrame({"share": [0.2, 0.2]}))


def test_channel_usage_needs_a_conv_reading_the_stem() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = stemlab.create_stem("resnet", width=4)
            self.layer1 = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))

    with pytest.raises(ValueError, match=r"no Conv2d/Conv3d in 'layer1'.*4 output channels"):
        channel_usage(Odd())
    with pytest.raises(ValueError, match=r"has no \.stem"):
        channel_usage(nn.Sequential(nn.Conv2d(3, 4, 3)))


# --- channel_redundancy -------------------------------------------------------------------------


def _stem_activations(model: nn.Module, batches: list[tuple]) -> np.ndarray:
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        outputs = [model.stem(x) for x, _ in batches]
    return np.concatenate(
        [o.movedim(1, -1).reshape(-1, o.shape[1]).double().numpy() for o in outputs]
    )


@pytest.mark.parametrize(("backbone", "stem"), [("r3d_18", "basic:width=6"), BACKBONES[2]])
def test_redundancy_flags_a_duplicated_channel_and_matches_numpy(backbone: str, stem: str) -> None:
    model = _prepared(backbone, stem)
    conv, bn = model.stem[0], model.stem[1]
    with torch.no_grad():  # channel 1 := channel 0
        conv.weight[1] = conv.weight[0]
        for tensor in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            tensor[1] = tensor[0]
    batches = _batches(backbone)
    before = _state(model)
    table = channel_redundancy(model, batches, threshold=0.9)
    _assert_same_state(before, model)
    assert list(table.columns) == ["channel_a", "channel_b", "correlation", "near_duplicate"]
    assert len(table) == 15 and (table["channel_a"] < table["channel_b"]).all()
    pair = table[(table["channel_a"] == 0) & (table["channel_b"] == 1)].iloc[0]
    assert pair["correlation"] == pytest.approx(1.0, abs=1e-9) and pair["near_duplicate"]
    activations = _stem_activations(model, batches)
    reference = np.corrcoef(activations, rowvar=False)
    np.testing.assert_allclose(
        table["correlation"], reference[np.triu_indices(6, k=1)], rtol=1e-7, atol=1e-9
    )
    assert table.attrs["near_duplicate_pairs"] == int((np.abs(table["correlation"]) >= 0.9).sum())
    spectrum = np.linalg.eigvalsh(np.cov(activations, rowvar=False, bias=True))
    expected_rank = spectrum.sum() ** 2 / np.square(spectrum).sum()
    assert table.attrs["effective_rank"] == pytest.approx(expected_rank, rel=1e-8)
    assert table.attrs["num_channels"] == 6 and table.attrs["positions"] == len(activations)


def test_redundancy_reports_dead_channels_as_nan() -> None:
    model = _kill(_small("r2plus1d_18", "basic:width=6"), [4])
    table = channel_redundancy(model, _batches("r2plus1d_18"), layer="stem")
    dead = table[(table["channel_a"] == 4) | (table["channel_b"] == 4)]
    assert len(dead) == 5 and dead["correlation"].isna().all()
    assert not dead["near_duplicate"].any()
    assert table.attrs["dead_channels"] == [4]
    assert table.drop(dead.index)["correlation"].notna().all()


def test_redundancy_of_a_time_folded_stage_and_validation() -> None:
    model = _small("cnn_lstm", "basic:width=6")
    table = channel_redundancy(model, _batches("cnn_lstm", count=1), layer="layer1")
    assert table.attrs["num_channels"] == 8 and len(table) == 28
    with pytest.raises(ValueError, match="threshold must be in \\(0, 1\\]"):
        channel_redundancy(model, _batches("cnn_lstm"), threshold=2.0)
    with pytest.raises(ValueError, match="Did you mean 'layer1'"):
        channel_redundancy(model, _batches("cnn_lstm"), layer="layer_1")


def test_channel_usage_follows_the_declared_first_block() -> None:
    model = _small("resnet18", "resnet:width=6")
    assert model.layout.first_block == "layer1.0"
    assert channel_usage(model).attrs["projection"] == "layer1.0.downsample.0"
    object.__setattr__(model, "layout", SimpleNamespace(first_block="layer1.0.conv1"))
    table = channel_usage(model)
    assert table.attrs["first_conv"] == "layer1.0.conv1" and table.attrs["projection"] is None
    weight = model.layer1[0].conv1.weight.detach().double()
    np.testing.assert_allclose(table["usage"], weight.square().sum(dim=(0, 2, 3)).sqrt())


def test_ablation_curve_steps_match_the_full_curve() -> None:
    model = _small("resnet18", "resnet:width=6")
    batches = _batches("resnet18")
    importance = channel_ablation(model, batches, metric="loss")
    full = ablation_curve(model, batches, metric="accuracy", importance=importance, seed=1)
    few = ablation_curve(
        model, batches, metric="accuracy", importance=importance, seed=1, steps=[0, 3, 6]
    )
    assert list(few["removed"]) == [0, 3, 6, 0, 3, 6]
    merged = few.merge(full, on=["order", "removed"], suffixes=("_few", "_full"))
    assert len(merged) == 6
    assert (merged["metric_value_few"] == merged["metric_value_full"]).all()


# --- initialisation baselines in study cells --------------------------------------------------


def _context(model: nn.Module, init: nn.Module | None, data: list[tuple]):
    from stemlab.probes.contract import CellContext

    return CellContext(
        kind="trained",
        model=model,
        inputs=data[0][0],
        labels=data[0][1],
        config={"seed": 0},
        device=torch.device("cpu"),
        batches=lambda: iter(data),
        options={"probe_samples": 8},
        init_model=init,
    )


def _usage_quarter(model: nn.Module) -> float:
    shares = np.sort(channel_usage(model)["share"].to_numpy())[::-1]
    return float(shares[: round(len(shares) / 4)].sum())


def test_usage_and_redundancy_report_the_untrained_model_beside_the_trained_one() -> None:
    from stemlab.probes.channel_redundancy import _redundancy_run
    from stemlab.probes.channel_usage import _usage_run

    data = _batches("r2plus1d_18", count=2, n=4)
    model = _small("r2plus1d_18", "basic:width=8", seed=0).eval()
    init = _small("r2plus1d_18", "basic:width=8", seed=1).eval()
    usage = _usage_run(_context(model, init, data))
    assert usage.metrics["usage_top_quarter"] == pytest.approx(_usage_quarter(model), rel=1e-12)
    assert usage.metrics["usage_top_quarter_init"] == pytest.approx(_usage_quarter(init), rel=1e-12)
    assert usage.metrics["usage_top_quarter_init"] != usage.metrics["usage_top_quarter"]
    assert set(usage.metrics) == {
        f"usage_{m}{s}" for m in ("channels_90", "fraction_90", "top_share", "top_quarter")
        for s in ("", "_init")
    }  # fmt: skip
    rows = pd.DataFrame(usage.tables["channel_usage"])
    assert rows["state"].value_counts().to_dict() == {"trained": 8, "init": 8}
    np.testing.assert_allclose(
        rows.loc[rows["state"] == "init", "share"], channel_usage(init)["share"], rtol=1e-12
    )
    redundancy = _redundancy_run(_context(model, init, data))
    direct = channel_redundancy(init, data)
    assert redundancy.metrics["effective_rank_init"] == pytest.approx(
        direct.attrs["effective_rank"], rel=1e-12
    )
    assert redundancy.metrics["effective_rank_fraction_init"] == pytest.approx(
        direct.attrs["effective_rank"] / 8, rel=1e-12
    )
    assert redundancy.metrics["mean_abs_correlation_init"] == pytest.approx(
        direct["correlation"].abs().mean(), rel=1e-12
    )
    no_init = _redundancy_run(_context(model, None, data))
    assert not any(k.endswith("_init") for k in no_init.metrics)
    assert no_init.metrics == {
        k: v for k, v in redundancy.metrics.items() if not k.endswith("_init")
    }


def test_a_model_whose_weights_equal_its_init_has_zero_change_in_every_finding() -> None:
    from stemlab.probes.activations import _findings as activation_findings
    from stemlab.probes.activations import _run_in_study
    from stemlab.probes.channel_redundancy import _redundancy_findings, _redundancy_run
    from stemlab.probes.channel_usage import _usage_findings, _usage_run
    from stemlab.probes.contract import StudyView
    from stemlab.report.stats import compare, holm

    data = _batches("r2plus1d_18", count=2, n=4)
    rows = []
    for stem in ("basic", "r2plus1d"):
        for seed in range(3):
            model = _small("r2plus1d_18", f"{stem}:width=8", seed=seed).eval()
            context = _context(model, copy.deepcopy(model), data)
            metrics = {}
            for run in (_usage_run, _redundancy_run, _run_in_study):
                metrics.update(run(context).metrics)
            for name, value in metrics.items():
                if name.endswith("_init"):
                    assert value == metrics[name.removesuffix("_init")], name
            rows.append({"key": f"{stem}{seed}", "kind": "train", "status": "ok",
                         "backbone": "r2plus1d_18", "stem": stem, "seed": seed, **metrics})  # fmt: skip
    view = StudyView(
        config={},
        cells=pd.DataFrame(rows),
        summary=pd.DataFrame(),
        tables={},
        arrays=lambda key: {},
        compare=compare,
        baseline="basic",
        holm=holm,
    )
    for findings in (_usage_findings, _redundancy_findings, activation_findings):
        change, between = findings(view)
        assert change.endswith(
            "no change distinguishable for `basic` (exactly 0 on every seed), `r2plus1d` "
            "(exactly 0 on every seed)."
        )
        assert "training changed it" not in change
        assert "training made the difference" not in between
        assert "gone after training" not in between
    cells = view.cells
    gap = (
        cells.loc[cells["stem"] == "r2plus1d", "effective_rank_fraction"].mean()
        - cells.loc[cells["stem"] == "basic", "effective_rank_fraction"].mean()
    )
    assert gap < -0.1  # the (2+1)D stem's lower rank is the architecture: there before training
    assert _redundancy_findings(view)[1].endswith(
        f"Holm over 1 stem in each state): the difference is already there at init for "
        f"`r2plus1d` ({gap:+.2f} at init vs {gap:+.2f} trained; training did not move the gap "
        "distinguishably (+0.00))."
    )
    assert _usage_findings(view)[1].endswith(
        "not distinguishable at init or trained for `r2plus1d`."
    )
