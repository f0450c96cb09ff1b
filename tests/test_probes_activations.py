"""record_activations: module selection, statistics against numpy, hook hygiene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from small_models import randomized, small_kwargs
from torch import nn

import stemlab
from stemlab import probes
from stemlab.probes import STAT_COLUMNS, activation_stats, activations, record_activations


def _clip(n: int = 1, t: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, t, size, size, generator=torch.Generator().manual_seed(seed))


def _small(backbone: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return stemlab.create_model(backbone, num_classes=5, **small_kwargs(backbone), **kwargs).eval()


def _reference_stats(x: torch.Tensor) -> dict[str, float]:
    """The statistics computed independently, in float64 numpy."""
    a = x.detach().double().numpy()
    channel_axes = tuple(d for d in range(a.ndim) if d != 1)
    return {
        "mean": a.mean(),
        "std": a.std(),
        "min": a.min(),
        "max": a.max(),
        "zero_fraction": float((a == 0).mean()),
        "dead_channel_fraction": float((a.max(axis=channel_axes) <= 0).mean()),
        "temporal_std": a.std(axis=2).mean() if a.ndim == 5 else math.nan,
    }


def _assert_stats(values: dict[str, float] | torch.Tensor, x: torch.Tensor) -> None:
    if isinstance(values, torch.Tensor):
        values = dict(zip(STAT_COLUMNS, values.tolist()))
    expected = _reference_stats(x)
    for name in STAT_COLUMNS:
        assert values[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-5, nan_ok=True), name


@pytest.mark.parametrize("shape", [(2, 6, 5, 7, 9), (3, 4, 8, 8), (4, 10), (2, 3, 11)])
def test_activation_stats_match_numpy(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)) + 0.5
    x = x.relu()  # real zeros
    x[:, 1] = 0.0  # a dead channel
    if len(shape) > 2:
        x[:, 2] = -1.0  # non-positive everywhere: dead after a ReLU too
    _assert_stats(activation_stats(x), x)


@pytest.mark.parametrize("block_elements", [7, 50, 1 << 21])
def test_activation_stats_in_channel_blocks(
    block_elements: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activations, "_BLOCK_ELEMENTS", block_elements)
    x = torch.randn(2, 7, 3, 4, 5, generator=torch.Generator().manual_seed(5)).relu()
    _assert_stats(activation_stats(x), x)
    _assert_stats(activation_stats(x[:, :, 0]), x[:, :, 0])


def test_activation_stats_closed_form_values() -> None:
    # Channel 0 alternates 0/2 over time, channel 1 is constant 1: mean 1, std 1/sqrt(2)...
    x = torch.zeros(1, 2, 4, 1, 1)
    x[0, 0, :, 0, 0] = torch.tensor([0.0, 2.0, 0.0, 2.0])
    x[0, 1] = 1.0
    stats = dict(zip(STAT_COLUMNS, activation_stats(x).tolist()))
    assert stats["mean"] == pytest.approx(1.0)
    assert stats["std"] == pytest.approx(math.sqrt(0.5))
    assert stats["zero_fraction"] == pytest.approx(0.25)
    assert stats["dead_channel_fraction"] == 0.0
    # Per-position std over T: 1 for channel 0, 0 for channel 1 -> mean 0.5.
    assert stats["temporal_std"] == pytest.approx(0.5)


def test_static_clip_has_zero_temporal_std() -> None:
    frame = torch.randn(2, 3, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 100 + 1000
    stats = dict(zip(STAT_COLUMNS, activation_stats(frame.expand(-1, -1, 8, -1, -1)).tolist()))
    assert stats["temporal_std"] == 0.0


def test_activation_stats_edge_cases() -> None:
    assert torch.isnan(activation_stats(torch.empty(0, 3))).all()
    ints = torch.tensor([[0, 1], [2, 0]])
    _assert_stats(activation_stats(ints), ints.float())


def test_default_modules_are_stem_children_and_stages() -> None:
    model = _small("r2plus1d_18")
    x = _clip()
    with torch.no_grad(), record_activations(model) as rec:
        model(x)
    table = rec.table()
    assert list(table.columns) == [
        "module", "call", "type", "shape", "numel", "bytes", *STAT_COLUMNS,
    ]  # fmt: skip
    # Children finish before their parent, so the stem row follows stem.5.
    expected = [f"stem.{i}" for i in range(6)] + ["stem", "layer1", "layer2", "layer3", "layer4"]
    assert table["module"].tolist() == expected
    shapes = dict(zip(table["module"], table["shape"]))
    assert shapes["stem.0"] == (1, 45, 4, 16, 16)
    assert shapes["stem"] == (1, 64, 4, 16, 16)
    assert shapes["layer1"] == (1, 8, 4, 16, 16)
    assert shapes["layer4"] == (1, 16, 1, 2, 2)
    assert (table["numel"] == [math.prod(s) for s in table["shape"]]).all()
    assert (table["bytes"] == table["numel"] * 4).all()
    assert table["type"].tolist()[:3] == ["Conv3d", "BatchNorm3d", "ReLU"]


def test_statistics_equal_numpy_on_kept_maps_and_survive_inplace_relu() -> None:
    model = _small("r3d_18")
    with torch.no_grad(), record_activations(model, keep=True) as rec:
        model(_clip())
    table = rec.table().set_index("module")
    for name, maps in rec.maps.items():
        assert len(maps) == 1
        _assert_stats(table.loc[name, list(STAT_COLUMNS)].to_dict(), maps[0])
    # stem.2 is an in-place ReLU on stem.1's output: the BN statistics and the kept BN map were
    # taken before the ReLU overwrote the tensor.
    assert table.loc["stem.1", "min"] < 0
    assert rec.maps["stem.1"][0].min() < 0
    assert table.loc["stem.2", "min"] == 0.0


def test_selectors_names_patterns_types_predicates() -> None:
    model = _small("r3d_18")

    def names(selector: object) -> list[str]:
        with record_activations(model, selector) as rec:
            return list(rec.modules)

    assert names("layer2") == ["layer2"]
    assert names("layer1.*.conv1") == ["layer1.0.conv1"]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv3d)]
    assert names(nn.Conv3d) == convs and convs[:2] == ["stem.0", "layer1.0.conv1.0"]
    norms_in_layer1 = names(
        lambda name, module: name.startswith("layer1") and isinstance(module, nn.BatchNorm3d)
    )
    # widths=(8, ...) after a 64-channel stem: layer1 has a projection shortcut.
    assert norms_in_layer1 == ["layer1.0.conv1.1", "layer1.0.conv2.1", "layer1.0.downsample.1"]
    assert names(["fc", nn.AdaptiveAvgPool3d]) == ["avgpool", "fc"]
    assert names("") == [""]
    leaves = names(lambda name, module: next(module.children(), None) is None)
    assert leaves == [n for n, m in model.named_modules() if n and not list(m.children())]


def _enter(model: object, selector: object = None) -> None:
    with record_activations(model, selector):  # type: ignore[arg-type]
        pass


def test_unknown_names_and_bad_selectors_raise() -> None:
    model = _small("r3d_18")
    with pytest.raises(ValueError, match=r"no module 'layer5'.*'layer4'"):
        _enter(model, "layer5")
    with pytest.raises(ValueError, match="matches no module"):
        _enter(model, "nothing.*")
    with pytest.raises(TypeError, match="entries must be"):
        _enter(model, [3])
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        _enter("not a model")


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_removed_after_block_and_after_error() -> None:
    model = _small("r3d_18")
    with record_activations(model, "*"):
        assert _hook_count(model) == len(list(model.named_modules())) - 1
    assert _hook_count(model) == 0
    with pytest.raises(ValueError), record_activations(model):
        model(torch.randn(1, 3, 32, 32))  # wrong rank: the model raises
    assert _hook_count(model) == 0


def test_multiple_calls_keep_subset_and_model_untouched() -> None:
    model = _small("r3d_18").train()
    x = _clip(n=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model.eval()(x)
    model.train()
    with torch.no_grad(), record_activations(model, ["stem", "layer4"], keep="stem") as rec:
        model.eval()
        first = model(x)
        model(x)
    assert torch.equal(first, reference)
    table = rec.table()
    assert table["module"].tolist() == ["stem", "layer4", "stem", "layer4"]
    assert table["call"].tolist() == [0, 0, 1, 1]
    assert set(rec.maps) == {"stem"} and len(rec.maps["stem"]) == 2
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    rec.clear()
    assert rec.table().empty and rec.maps == {}


def test_stats_false_records_shapes_only() -> None:
    model = _small("resnet18")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), record_activations(model, stats=False) as rec:
        model(x)
    table = rec.table()
    assert table.loc[table["module"] == "stem", "shape"].item() == (2, 64, 8, 8)
    assert table[list(STAT_COLUMNS)].isna().all().all()


def test_time_folded_layers_of_recurrent_backbones() -> None:
    model = _small("cnn_lstm")
    with torch.no_grad(), record_activations(model) as rec:
        model(_clip(n=2, t=4))
    table = rec.table().set_index("module")
    assert table.loc["stem", "shape"] == (2, 64, 4, 8, 8)
    assert table.loc["layer1", "shape"] == (8, 8, 8, 8)  # (N*T, C, h, w)
    assert np.isfinite(table.loc["stem", "temporal_std"])
    assert np.isnan(table.loc["layer1", "temporal_std"])


def test_probes_namespace_exports() -> None:
    for name in ("record_activations", "flops_table", "latency", "grad_cam", "first_layer_filters"):
        assert callable(getattr(probes, name))


def test_study_activations_record_the_untrained_model_too(tmp_path) -> None:
    import copy

    import pandas as pd
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from stemlab.probes.contract import CellContext, StudyView

    x = _clip(n=2, size=16)
    model = _small("r2plus1d_18", stem="basic:width=4")
    init = randomized(_small("r2plus1d_18", stem="basic:width=4"), seed=5)
    context = CellContext(
        kind="trained", model=model, inputs=x, config={}, device=torch.device("cpu"),
        init_model=init,
    )  # fmt: skip
    output = activations._run_in_study(context)
    table = pd.DataFrame(output.tables["activations"])
    with torch.no_grad(), record_activations(init) as recorder:
        init(x)
    direct = recorder.table()
    mine = table[table["state"] == "init"].drop(columns=["state", "role"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, direct)
    assert (table["state"] == "trained").sum() == len(direct)
    stem = direct[direct["module"] == "stem"]["dead_channel_fraction"].iloc[0]
    assert output.metrics["dead_channel_fraction_init"] == stem
    # a profile cell's model is untrained: its rows are "init", and it has no metric
    profile = activations._run_in_study(
        CellContext(kind="profile", model=model, inputs=x, config={}, device=torch.device("cpu"))
    )
    assert profile.metrics == {}
    assert {row["state"] for row in profile.tables["activations"]} == {"init"}
    # the figure of trained minus init: a copy of the model changes nothing
    same = activations._run_in_study(
        CellContext(kind="trained", model=model, inputs=x, config={}, device=torch.device("cpu"),
                    init_model=copy.deepcopy(model))
    )  # fmt: skip
    rows = []
    for key, out in (("a0", output), ("b0", same)):
        rows += [
            {"key": key, "backbone": "m", "stem": key[0], "source": "trained", **row}
            for row in out.tables["activations"]
        ]
    cells = pd.DataFrame(
        [{"key": k, "backbone": "m", "stem": k[0], "seed": 0, "kind": "train", "status": "ok"}
         for k in ("a0", "b0")]
    )  # fmt: skip
    view = StudyView(
        config={}, cells=cells, summary=pd.DataFrame(),
        tables={"activations": pd.DataFrame(rows)}, arrays=lambda key: {},
    )  # fmt: skip
    specs = {spec.name: spec for spec in activations._figures(view)}
    assert set(specs) == {"activations_trained", "activations_change"}
    figure = specs["activations_change"].make()
    b_line = figure.axes[0].get_lines()[1]
    assert b_line.get_label() == "b"
    np.testing.assert_array_equal(b_line.get_ydata(), np.zeros(5))  # 5 roles, no change
    a_line = figure.axes[0].get_lines()[0]
    assert np.abs(a_line.get_ydata()).max() > 0
    FigureCanvasAgg(figure).print_png(tmp_path / "change.png")
