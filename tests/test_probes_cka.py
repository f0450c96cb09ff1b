"""Linear CKA: closed forms, invariances, the unbiased estimator, minibatch CKA of models."""

from __future__ import annotations

import copy
import importlib
import itertools
import weakref
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch
from small_models import small_kwargs
from torch import nn

import stemlab
from stemlab.probes.cka import cka, cka_from_grams, gram_matrices, hsic, linear_cka

# stemlab.probes exports the function cka, which shadows the submodule of the same name
cka_module = importlib.import_module("stemlab.probes.cka")

VIDEO = ("r2plus1d_18", {"stem": "basic:width=8"})
BACKBONES = [
    ("r2plus1d_18", {"stem": "basic:width=8"}),
    ("r3d_18", {"stem": "basic:width=8"}),
    ("resnet18", {"stem": "resnet:width=8"}),
    ("cnn_lstm", {"stem": "basic:width=8"}),  # time-folded stages
]


def _features(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA from explicit centring matrices: tr(K H L H) normalised."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T  # noqa: E741

    def hsic0(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h))

    return hsic0(k, l) / np.sqrt(hsic0(k, k) * hsic0(l, l))


def _u_statistic_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Unbiased HSIC as the U-statistic over ordered distinct 4-tuples (Song et al. 2012)."""
    n = k.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def _small(backbone: str, seed: int = 0, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return stemlab.create_model(backbone, num_classes=5, **small_kwargs(backbone), **kwargs)


def _batches(backbone: str, count: int, n: int = 6, seed: int = 0) -> Iterator[tuple]:
    generator = torch.Generator().manual_seed(seed)
    shape = (n, 3, 16, 16) if backbone == "resnet18" else (n, 3, 4, 16, 16)
    for _ in range(count):
        yield torch.randn(shape, generator=generator), torch.randint(0, 5, (n,))


def _state(model: nn.Module) -> tuple:
    return (
        [m.training for m in model.modules()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _assert_same_state(before: tuple, after: tuple) -> None:
    assert before[:3] == after[:3]
    assert before[3].keys() == after[3].keys()
    for key, value in before[3].items():
        assert torch.equal(value, after[3][key]), key


# --- linear_cka on feature matrices -----------------------------------------------------------


@pytest.mark.parametrize(("n", "d1", "d2"), [(10, 3, 7), (25, 40, 5), (2, 4, 4)])
def test_linear_cka_matches_centring_matrix_closed_form(n: int, d1: int, d2: int) -> None:
    x, y = _features(n, d1, 0), _features(n, d2, 1)
    assert linear_cka(x, y) == pytest.approx(_reference_cka(x, y), rel=1e-10)
    # The feature-space form of Kornblith et al.: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F).
    xc, yc = x - x.mean(0), y - y.mean(0)
    feature_form = np.linalg.norm(yc.T @ xc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert linear_cka(x, y) == pytest.approx(feature_form, rel=1e-10)
    assert linear_cka(torch.tensor(x), torch.tensor(y, dtype=torch.float32)) == pytest.approx(
        feature_form, rel=1e-6
    )


@pytest.mark.parametrize("unbiased", [False, True])
def test_linear_cka_invariances(unbiased: bool) -> None:
    x, y = _features(30, 6, 2), _features(30, 9, 3)
    base = linear_cka(x, y, unbiased=unbiased)
    q, _ = np.linalg.qr(_features(9, 9, 4))
    assert linear_cka(x, y @ q, unbiased=unbiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x * 7.5, y, unbiased=unbiased) == pytest.approx(base, rel=1e-10)
    q6, _ = np.linalg.qr(_features(6, 6, 5))
    assert linear_cka(x, x @ q6 * 0.01, unbiased=unbiased) == pytest.approx(1.0, rel=1e-10)
    anisotropic = y * np.array([10.0, 0.1, 1, 1, 3, 1, 1, 0.5, 2])
    assert abs(linear_cka(x, anisotropic, unbiased=unbiased) - base) > 1e-3


def test_unbiased_hsic_matches_u_statistic() -> None:
    x, y = _features(7, 3, 5), _features(7, 4, 6)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    assert hsic(k, l, unbiased=True) == pytest.approx(_u_statistic_hsic(k, l), rel=1e-9)
    expected = _u_statistic_hsic(k, l) / np.sqrt(_u_statistic_hsic(k, k) * _u_statistic_hsic(l, l))
    assert linear_cka(x, y, unbiased=True) == pytest.approx(expected, rel=1e-9)
    # The biased HSIC is tr(K H L H) / (n - 1)^2.
    h = np.eye(7) - 1 / 7
    assert hsic(k, l) == pytest.approx(np.trace(k @ h @ l @ h) / 36, rel=1e-10)


def test_linear_cka_of_constant_features_is_nan() -> None:
    x = _features(6, 3, 0)
    assert np.isnan(linear_cka(x, np.ones((6, 2))))


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "message"),
    [
        (np.ones(5), np.ones((5, 2)), {}, "x must be a 2-D"),
        (np.ones((5, 2)), np.ones((6, 2)), {}, "same N"),
        (np.ones((1, 2)), np.ones((1, 2)), {}, "at least 2 samples"),
        (np.ones((3, 2)), np.ones((3, 2)), {"unbiased": True}, "at least 4 samples"),
    ],
)
def test_linear_cka_validation(x: np.ndarray, y: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        linear_cka(x, y, **kwargs)


def test_linear_cka_rejects_non_numeric() -> None:
    with pytest.raises(TypeError, match="x must be a numeric array"):
        linear_cka([["a", "b"]], [[1.0, 2.0]])


# --- cka between models -----------------------------------------------------------------------


@pytest.mark.parametrize(("backbone", "kwargs"), BACKBONES)
def test_cka_of_a_model_with_its_copy_is_one_and_state_is_kept(backbone: str, kwargs: dict) -> None:
    model = _small(backbone, **kwargs).train()
    model.layer2.eval()  # a mixed mode must come back as it was
    other = copy.deepcopy(model)
    before = _state(model)
    table = cka(model, other, list(_batches(backbone, 3)))
    _assert_same_state(before, _state(model))
    layers = [entry["module"] for entry in model.feature_info]
    assert list(table.columns) == ["layer_a", "layer_b", "cka"]
    assert list(zip(table["layer_a"], table["layer_b"])) == list(itertools.product(layers, layers))
    diagonal = table[table["layer_a"] == table["layer_b"]]
    np.testing.assert_allclose(diagonal["cka"], 1.0, atol=1e-6)
    assert table.attrs["batches"] == 3 and table.attrs["samples"] == 18
    # The same object on both sides gives the same matrix.
    same = cka(model, model, list(_batches(backbone, 3)))
    np.testing.assert_allclose(same["cka"], table["cka"], atol=1e-9)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


@pytest.mark.parametrize(("backbone", "kwargs"), [BACKBONES[0], BACKBONES[2]])
def test_cka_of_differently_initialised_models_is_below_one(backbone: str, kwargs: dict) -> None:
    table = cka(
        _small(backbone, seed=0, **kwargs),
        _small(backbone, seed=1, **kwargs),
        list(_batches(backbone, 2, n=8)),
    )
    diagonal = table[table["layer_a"] == table["layer_b"]]["cka"]
    assert diagonal.min() < 0.99


def test_cka_layer_pairs_and_max_batches() -> None:
    model_a = _small(*VIDEO[:1], **VIDEO[1])
    model_b = _small("r3d_18", seed=3, stem="wide:width=12")
    table = cka(
        model_a,
        model_b,
        _batches("r3d_18", 10),
        layers=(["stem", "layer1"], ["stem", "layer2", "layer4"]),
        max_batches=2,
    )
    assert table["layer_a"].tolist() == ["stem"] * 3 + ["layer1"] * 3
    assert table["layer_b"].tolist() == ["stem", "layer2", "layer4"] * 2
    assert table.attrs["batches"] == 2


def test_gram_matrices_are_per_sample_feature_products() -> None:
    model = _small("cnn_lstm", stem="basic:width=8").eval()
    batches = list(_batches("cnn_lstm", 2, n=5))
    grams = gram_matrices(model, batches, layers=["stem", "layer1"])
    assert set(grams) == {"stem", "layer1"} and len(grams["stem"]) == 2
    with torch.no_grad():
        x = batches[1][0]
        stem = model.stem(x)
        n, c, t, h, w = stem.shape
        layer1 = model.layer1(stem.transpose(1, 2).reshape(n * t, c, h, w))
    for name, output in (("stem", stem), ("layer1", layer1)):
        features = output.reshape(n, -1).double().numpy()
        np.testing.assert_allclose(grams[name][1], features @ features.T, rtol=1e-5)


def test_cka_from_grams_is_the_minibatch_estimator_of_cka() -> None:
    model_a = _small("resnet18", seed=0, stem="resnet:width=8")
    model_b = _small("resnet18", seed=1, stem="deep:width=8")
    batches = list(_batches("resnet18", 3, n=5))
    grams_a = gram_matrices(model_a, batches)
    grams_b = gram_matrices(model_b, batches)
    direct = cka(model_a, model_b, batches)
    stored = cka_from_grams(grams_a, grams_b)
    np.testing.assert_allclose(stored["cka"], direct["cka"], rtol=1e-12)
    # Nguyen et al. 2021: mean over batches of unbiased HSIC, then normalise.
    for row in direct.itertuples():
        ka, kb = grams_a[row.layer_a], grams_b[row.layer_b]
        cross = np.mean([_u_statistic_hsic(a, b) for a, b in zip(ka, kb)])
        self_a = np.mean([_u_statistic_hsic(a, a) for a in ka])
        self_b = np.mean([_u_statistic_hsic(b, b) for b in kb])
        assert row.cka == pytest.approx(cross / np.sqrt(self_a * self_b), rel=1e-8)


def test_cka_skips_batches_under_four_samples_with_a_warning() -> None:
    model = _small("resnet18", stem="resnet:width=8")
    batches = [*_batches("resnet18", 2, n=6), next(_batches("resnet18", 1, n=3))]
    with pytest.warns(RuntimeWarning, match="skipped 1 batch"):
        table = cka(model, model, batches, layers=["stem"])
    assert table.attrs["batches"] == 2 and table.attrs["skipped_batches"] == 1
    with pytest.raises(ValueError, match="at least one batch of 4"), pytest.warns(RuntimeWarning):
        cka(model, model, [next(_batches("resnet18", 1, n=3))], layers=["stem"])


def test_cka_keeps_no_gram_of_earlier_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    model_a = _small("resnet18", seed=0, stem="resnet:width=8")
    model_b = _small("resnet18", seed=1, stem="resnet:width=8")
    refs: list[weakref.ref] = []
    alive: list[int] = []
    original = cka_module._GramRecorder.run

    def run(self: cka_module._GramRecorder, x: torch.Tensor) -> dict[str, np.ndarray]:
        alive.append(sum(ref() is not None for ref in refs))
        grams = original(self, x)
        refs.extend(weakref.ref(gram) for gram in grams.values())
        return grams

    monkeypatch.setattr(cka_module._GramRecorder, "run", run)
    table = cka(model_a, model_b, _batches("resnet18", 24, n=8))
    assert table.attrs["batches"] == 24 and len(refs) == 24 * 2 * 5
    # At most the current batch's Grams of model_a are alive when model_b runs.
    assert max(alive) <= 5, alive
    assert all(ref() is None for ref in refs)


def test_cka_validation() -> None:
    model = _small("resnet18", stem="resnet:width=8")
    data = list(_batches("resnet18", 1))
    with pytest.raises(ValueError, match="Did you mean 'layer1'"):
        cka(model, model, data, layers=["layr1"])
    with pytest.raises(TypeError, match="write \\['stem'\\]"):
        cka(model, model, data, layers="stem")
    with pytest.raises(TypeError, match=r"model_b must be a torch\.nn\.Module"):
        cka(model, "model", data)
    with pytest.raises(TypeError, match="DataLoader"):
        cka(model, model, stemlab.data.SyntheticMotion(4, clip_len=2, size=16))
    with pytest.raises(ValueError, match="max_batches must be > 0"):
        cka(model, model, data, max_batches=0)
    with pytest.raises(ValueError, match="same number of batches"):
        cka_from_grams({"a": [np.eye(4)]}, {"b": [np.eye(4), np.eye(4)]})
    with pytest.raises(ValueError, match="expected \\(4, 4\\)"):
        cka_from_grams({"a": [np.eye(4)]}, {"b": [np.eye(5)]})


# --- the study integration: seed-paired stem x stem CKA, trained and before training ---------


def _cka_study(stems: tuple[str, ...] = ("basic", "r2d"), seeds: tuple[int, ...] = (0, 1, 2)):
    from stemlab.probes.contract import CellContext, StudyView

    data = list(_batches("r2plus1d_18", 2, n=6))
    arrays, rows, models = {}, [], {}
    for stem in stems:
        for seed in seeds:
            model = _small("r2plus1d_18", seed, stem=f"{stem}:width=4").eval()
            init = _small("r2plus1d_18", 100 + seed, stem=f"{stem}:width=4").eval()
            context = CellContext(
                kind="trained",
                model=model,
                inputs=data[0][0],
                config={"seed": seed},
                device=torch.device("cpu"),
                batches=lambda: iter(data),
                options={"probe_samples": 12},
                init_model=init,
            )
            key = f"{stem}-{seed}"
            output = cka_module._cka_run(context)
            arrays[key] = {f"cka.{name}": value for name, value in output.arrays.items()}
            models[(stem, seed)] = {"trained": model, "init": init}
            rows.append(
                {"key": key, "kind": "train", "status": "ok", "backbone": "r2plus1d_18",
                 "stem": stem, "seed": seed}
            )  # fmt: skip
    view = StudyView(
        config={},
        cells=pd.DataFrame(rows),
        summary=pd.DataFrame(),
        tables={},
        arrays=arrays.__getitem__,
        baseline=stems[-1],
    )
    return view, models, data


def test_study_cka_pairs_stems_by_seed_in_both_states_and_matches_cka_of_the_models() -> None:
    view, models, data = _cka_study()
    tables = cka_module._cka_combine(view)
    table, matrix = tables["cka"], tables["cka_matrix"]
    roles = ["stem output", "layer1", "layer2", "layer3", "layer4"]
    assert list(dict.fromkeys(table["layer"])) == roles
    counts = table.groupby(["comparison", "state"]).size().to_dict()
    # 3 seeds x 1 stem pair x 5 layers, both orders; 2 stems x 3 seed pairs x 5 layers
    assert counts == {
        ("same_stem_other_seed", "init"): 30,
        ("same_stem_other_seed", "trained"): 30,
        ("stem_pair", "init"): 30,
        ("stem_pair", "trained"): 30,
    }
    layers = cka_module.default_cka_layers(models[("basic", 0)]["trained"])
    for state in ("trained", "init"):
        direct = cka(models[("basic", 1)][state], models[("r2d", 1)][state], data)
        direct = direct[direct["layer_a"] == direct["layer_b"]].set_index("layer_a")["cka"]
        for role, layer in zip(roles, layers):
            for stem, reference in (("basic", "r2d"), ("r2d", "basic")):
                (value,) = table.loc[
                    (table["comparison"] == "stem_pair")
                    & (table["state"] == state)
                    & (table["stem"] == stem)
                    & (table["reference"] == reference)
                    & (table["seed"] == 1)
                    & (table["layer"] == role),
                    "cka",
                ]
                assert value == pytest.approx(direct[layer], rel=1e-9, abs=1e-12)
        floor = cka(models[("r2d", 0)][state], models[("r2d", 2)][state], data, layers=layers)
        floor = floor[floor["layer_a"] == floor["layer_b"]]["cka"].to_numpy()
        got = table[
            (table["comparison"] == "same_stem_other_seed")
            & (table["state"] == state)
            & (table["stem"] == "r2d")
            & (table["seed"] == 0)
            & (table["seed_b"] == 2)
        ]["cka"].to_numpy()
        np.testing.assert_allclose(got, floor, rtol=1e-9, atol=1e-12)
    # the matrix: seed means off the diagonal, seed-pair means on it
    pairs = table[(table["comparison"] == "stem_pair") & (table["stem"] == "basic")]
    expected = pairs.groupby(["state", "layer"])["cka"].mean()
    off = matrix[(matrix["stem_a"] == "basic") & (matrix["stem_b"] == "r2d")]
    assert len(off) == 10 and set(off["kind"]) == {"stem_pair"} and set(off["n"]) == {3}
    for row in off.itertuples():
        assert row.cka_mean == pytest.approx(expected[(row.state, row.layer)], rel=1e-12)
    diagonal = matrix[matrix["stem_a"] == matrix["stem_b"]]
    assert set(diagonal["kind"]) == {"seed_floor"} and set(diagonal["n"]) == {3}
    # untrained networks of different seeds are not the trained ones: the states differ
    trained = table[table["state"] == "trained"]["cka"].to_numpy()
    initial = table[table["state"] == "init"]["cka"].to_numpy()
    assert not np.allclose(trained, initial)


def test_study_cka_of_a_cell_without_init_grams_has_trained_rows_only() -> None:
    view, _, _ = _cka_study(seeds=(0, 1))
    stored = {key: view.arrays(key) for key in view.cells["key"]}
    for value in stored.values():
        for name in [n for n in value if n.startswith("cka.init_gram.")]:
            del value[name]
    view.arrays = stored.__getitem__
    table = cka_module._cka_combine(view)["cka"]
    assert set(table["state"]) == {"trained"}
    assert len(table) == 2 * 5 * 2 + 2 * 1 * 5


def test_cka_matrix_figure_renders(tmp_path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    view, _, _ = _cka_study(stems=("basic", "c3d", "r2d"), seeds=(0, 1))
    view.tables = cka_module._cka_combine(view)
    specs = {spec.name: spec for spec in cka_module._cka_figures(view)}
    # no top1 in the cells: the reference stays the baseline (its learning cannot be tested)
    assert set(specs) == {"cka_by_stage", "cka_matrix"}
    figure = specs["cka_matrix"].make()
    axes = [ax for ax in figure.axes if ax.get_title() or ax.get_ylabel()]
    assert len([ax for ax in figure.axes if ax.images]) == 2 * 5
    assert [ax.get_title() for ax in axes[:5]] == [
        "stem output",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    FigureCanvasAgg(figure).print_png(tmp_path / "cka_matrix.png")
    assert (tmp_path / "cka_matrix.png").stat().st_size > 10_000
