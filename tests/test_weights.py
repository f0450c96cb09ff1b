"""Loading weights: checkpoint formats, torchvision names, safety, errors and the report."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from small_models import randomized

import stemlab
from stemlab.weights import (
    ACTIONS,
    UnsafeCheckpointError,
    guess_backbones,
    load_weights,
    read_checkpoint,
    summarize_report,
    torchvision_weights_path,
)
from stemlab.weights.checkpoint import resolve_torchvision_weights

SMALL = {"widths": (16, 32, 64, 128), "layers": (1, 1, 1, 1), "num_classes": 5}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    assert list(current) == list(state)
    for key, value in state.items():
        assert torch.equal(current[key], value), key


def assert_covers_model(report, model: torch.nn.Module) -> None:
    assert list(report.columns) == ["key", "action", "detail", "shape", "source"]
    assert set(report.action) <= set(ACTIONS)
    assert report.loc[report.action != "skipped", "key"].tolist() == list(model.state_dict())


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache for this test (nothing outside it is read)."""
    directory = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(directory))
    return directory


@pytest.fixture
def small() -> torch.nn.Module:
    return randomized(stemlab.create_model("r3d_18", **SMALL))


# ---------------------------------------------------------------- torchvision weight names


@pytest.mark.parametrize(
    ("backbone", "builder", "name", "filename"),
    [
        ("r3d_18", torchvision.models.video.r3d_18, "KINETICS400_V1", "r3d_18-b3b3357e.pth"),
        (
            "r2plus1d_18",
            torchvision.models.video.r2plus1d_18,
            "DEFAULT",
            "r2plus1d_18-91a641e6.pth",
        ),
    ],
)
def test_torchvision_video_weights_load_strictly_from_the_hub_cache(
    hub: Path, backbone: str, builder, name: str, filename: str
) -> None:
    reference = randomized(builder()).eval()
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), hub / "checkpoints" / filename)
    model = stemlab.create_model(backbone, weights=name).eval()
    report = model.weights_report
    assert_covers_model(report, model)
    assert (report.action == "loaded").all()
    assert report.attrs["origin"] == str(hub / "checkpoints" / filename)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=0)


def test_torchvision_resnet18_keys_are_mapped_onto_the_stem(hub: Path) -> None:
    reference = randomized(torchvision.models.resnet18()).eval()
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), hub / "checkpoints" / "resnet18-f37072fd.pth")
    model = stemlab.create_model("resnet18", num_classes=1000, weights="IMAGENET1K_V1").eval()
    rows = model.weights_report.set_index("key")
    assert (rows.action == "loaded").all()
    assert rows.loc["stem.0.weight", "source"] == "conv1.weight"
    assert rows.loc["stem.1.running_var", "source"] == "bn1.running_var"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=0)


def test_full_weights_name_works_without_create_model(hub: Path) -> None:
    reference = torchvision.models.video.r3d_18()
    path = torchvision_weights_path(resolve_torchvision_weights("DEFAULT", backbone="r3d_18"))
    assert path == hub / "checkpoints" / "r3d_18-b3b3357e.pth"
    path.parent.mkdir(parents=True)
    torch.save(randomized(reference).state_dict(), path)
    model = torchvision.models.video.r3d_18()
    report = load_weights(model, "R3D_18_Weights.KINETICS400_V1")
    assert (report.action == "loaded").all()
    assert_same_state(model, reference.state_dict())
    with pytest.raises(ValueError, match="backbone_name"):
        load_weights(model, "KINETICS400_V1")


def test_missing_torchvision_file_names_path_and_url_and_downloads_nothing(hub: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        stemlab.create_model("r2plus1d_18", weights="KINETICS400_V1")
    message = str(info.value)
    assert str(hub / "checkpoints" / "r2plus1d_18-91a641e6.pth") in message
    assert "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth" in message
    assert not hub.exists()


@pytest.mark.parametrize("backbone", ["rmc3_18", "r2d_18", "c3d", "cnn_lstm", "conv_lstm"])
def test_backbones_without_torchvision_weights_say_so(hub: Path, backbone: str) -> None:
    model = stemlab.create_model(backbone, num_classes=3)
    with pytest.raises(ValueError, match=rf"{backbone}' has no torchvision weights.*r3d_18"):
        load_weights(model, "DEFAULT")


def test_unknown_weights_name_suggests_close_ones(hub: Path) -> None:
    with pytest.raises(ValueError, match="Did you mean 'KINETICS400_V1'"):
        stemlab.create_model("r3d_18", weights="KINETICS400_V2")


def test_missing_file_is_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        stemlab.create_model("r3d_18", weights=tmp_path / "absent.pth", **SMALL)


# ---------------------------------------------------------------- checkpoint formats


def wrapped(state: dict[str, torch.Tensor], layout: str) -> object:
    prefixed = {f"module.{k}": v for k, v in state.items()}
    return {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3, "optimizer": {"lr": 0.1}},
        "model": {"model": state, "args": ["--lr", "0.1"]},
        "model_state": {"model_state": prefixed, "cur_epoch": 9},
        "module": prefixed,
        "lightning": {"state_dict": {f"model.{k}": v for k, v in state.items()}},
    }[layout]


@pytest.mark.parametrize(
    ("layout", "wrapper", "prefixes"),
    [
        ("plain", None, []),
        ("state_dict", "state_dict", []),
        ("model", "model", []),
        ("model_state", "model_state", ["module."]),
        ("module", None, ["module."]),
        ("lightning", "state_dict", ["model."]),
    ],
)
def test_checkpoint_layouts_load_every_tensor(
    tmp_path: Path, small: torch.nn.Module, layout: str, wrapper: str | None, prefixes: list[str]
) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save(wrapped(small.state_dict(), layout), path)
    model = stemlab.create_model("r3d_18", **SMALL)
    report = load_weights(model, path)
    assert_covers_model(report, model)
    assert (report.action == "loaded").all()
    assert report.attrs["wrapper"] == wrapper
    assert report.attrs["stripped_prefixes"] == prefixes
    assert_same_state(model, small.state_dict())


def test_a_state_dict_mapping_is_accepted(small: torch.nn.Module) -> None:
    model = stemlab.create_model("r3d_18", **SMALL)
    report = load_weights(model, small.state_dict())
    assert report.attrs["origin"] == "<state dict>"
    assert model.weights_report is report
    assert_same_state(model, small.state_dict())


def test_file_without_state_dict_lists_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "optimizer_only.pth"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(ValueError, match=r"holds no state dict.*\['epoch', 'optimizer'\]"):
        load_weights(stemlab.create_model("r3d_18", **SMALL), path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", bytes(range(256))])
def test_files_that_are_not_checkpoints_are_value_errors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=str(path)):
        load_weights(stemlab.create_model("r3d_18", **SMALL), path)


# ---------------------------------------------------------------- safety


class _Payload:
    """Unpickling this would create ``marker``: the test checks that it never does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["zip", "legacy", "pickle"])
def test_malicious_pickle_is_refused_without_executing(
    tmp_path: Path, small: torch.nn.Module, writer: str
) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": small.state_dict(), "hook": _Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "zip")
    model = stemlab.create_model("r3d_18", **SMALL)
    before = snapshot(model)
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        load_weights(model, path)
    assert not marker.exists()
    assert_same_state(model, before)
    assert not hasattr(model, "weights_report")


def test_torch_load_is_always_weights_only(
    tmp_path: Path, small: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    path = tmp_path / "ok.pth"
    torch.save(small.state_dict(), path)
    read_checkpoint(path)
    assert calls == [True]


# ---------------------------------------------------------------- backbone mismatches


def test_checkpoint_of_another_backbone_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r2plus1d.pth"
    torch.save(torchvision.models.video.r2plus1d_18().state_dict(), path)
    model = stemlab.create_model("r3d_18")
    before = snapshot(model)
    with pytest.raises(ValueError) as info:
        load_weights(model, path)
    message = str(info.value)
    assert f"checkpoint {path} does not fit backbone 'r3d_18'" in message
    assert "matches backbone 'r2plus1d_18'" in message
    assert "strict_backbone=False" in message
    assert len(message) < 800 and message.count("layer") <= 6  # not a wall of keys
    assert_same_state(model, before)


def test_guess_names_the_backbone_and_ignores_stem_and_head() -> None:
    state = stemlab.create_model("mc3_18", stem="wide", num_classes=7).state_dict()
    assert guess_backbones(state) == ["mc3_18"]
    assert guess_backbones(stemlab.create_model("r3d_18", **SMALL).state_dict()) == []


def test_scaled_down_model_with_a_default_size_checkpoint_says_so(tmp_path: Path) -> None:
    state = stemlab.create_model("r3d_18").state_dict()
    with pytest.raises(ValueError, match="matches 'r3d_18' at its default size"):
        load_weights(stemlab.create_model("r3d_18", **SMALL), state)


def test_non_strict_loads_what_fits(small: torch.nn.Module) -> None:
    source = randomized(stemlab.create_model("mc3_18", **SMALL), seed=3)
    model = stemlab.create_model("r3d_18", **SMALL)
    with pytest.raises(ValueError, match="have other shapes"):
        load_weights(model, source.state_dict())
    report = load_weights(model, source.state_dict(), strict_backbone=False).set_index("key")
    # mc3 and r3d share layer1 (3x3x3) and every norm; layers 2-4 use 1x3x3 convs in mc3.
    assert report.loc["layer1.0.conv1.0.weight", "action"] == "loaded"
    assert report.loc["layer2.0.conv1.0.weight", "action"] == "initialized"
    assert "does not fit" in report.loc["layer2.0.conv1.0.weight", "detail"]
    assert report.loc["layer2.0.conv1.1.weight", "action"] == "loaded"
    assert torch.equal(model.layer2[0].conv1[1].weight, source.layer2[0].conv1[1].weight)


def test_non_strict_still_refuses_a_checkpoint_where_nothing_fits() -> None:
    state = {"encoder.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match="does not fit"):
        load_weights(stemlab.create_model("r3d_18", **SMALL), state, strict_backbone=False)


# ---------------------------------------------------------------- the report


def test_head_of_another_size_is_reinitialised_and_reported(small: torch.nn.Module) -> None:
    model = stemlab.create_model("r3d_18", **{**SMALL, "num_classes": 7})
    head = model.fc.weight.detach().clone()
    report = load_weights(model, small.state_dict())
    rows = report.set_index("key")
    assert rows.loc["fc.weight", "action"] == "initialized"
    assert "num_classes 5 -> 7" in rows.loc["fc.weight", "detail"]
    assert torch.equal(model.fc.weight, head)
    assert (rows.drop(["fc.weight", "fc.bias"]).action == "loaded").all()
    assert (
        summarize_report(report)
        == f"{len(rows) - 2} loaded, 0 transferred, 2 initialized, 0 skipped"
    )


def test_unused_checkpoint_entries_are_skipped_rows(small: torch.nn.Module) -> None:
    state = {**small.state_dict(), "aux_head.weight": torch.zeros(2, 3), "step": 100}
    model = stemlab.create_model("r3d_18", **SMALL)
    report = load_weights(model, state)
    assert_covers_model(report, model)
    skipped = report[report.action == "skipped"].set_index("key")
    assert skipped.index.tolist() == ["aux_head.weight", "step"]
    assert skipped.loc["aux_head.weight", "shape"] == (2, 3)
    assert skipped.loc["step", "detail"] == "not a tensor (int)"


def test_old_checkpoints_without_step_counters_still_load(small: torch.nn.Module) -> None:
    state = {k: v for k, v in small.state_dict().items() if "num_batches_tracked" not in k}
    model = stemlab.create_model("r3d_18", **SMALL)
    report = load_weights(model, state).set_index("key")
    counters = report.index.str.endswith("num_batches_tracked")
    assert (report[counters].action == "initialized").all()
    assert (report[~counters].action == "loaded").all()


def test_stem_init_random_on_the_native_stem_keeps_it(small: torch.nn.Module) -> None:
    model = stemlab.create_model("r3d_18", **SMALL)
    stem = model.stem[0].weight.detach().clone()
    report = load_weights(model, small.state_dict(), stem_init="random").set_index("key")
    assert torch.equal(model.stem[0].weight, stem)
    assert "stem_init='random'" in report.loc["stem.0.weight", "detail"]
    assert torch.equal(model.layer1[0].conv1[0].weight, small.layer1[0].conv1[0].weight)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"stem_init": "randon"}, ValueError, "Did you mean 'random'"),
        ({"strict_backbone": "yes"}, TypeError, "strict_backbone must be a bool"),
    ],
)
def test_invalid_arguments(small: torch.nn.Module, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        load_weights(stemlab.create_model("r3d_18", **SMALL), small.state_dict(), **kwargs)


def test_invalid_sources_and_models() -> None:
    with pytest.raises(TypeError, match="weights must be a checkpoint path"):
        load_weights(stemlab.create_model("r3d_18", **SMALL), 42)
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        load_weights("r3d_18", {})
