"""Seeds as a paired design, and the probe contract (a probe is one module the study loops over)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

import stemlab
from stemlab.probes import contract
from stemlab.study import run_study
from stemlab.study.cell import common_random_init, replicate_data
from stemlab.study.datasets import build_datasets, build_probe_set

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from test_study import TINY_BACKBONE, tiny_study

DATA = {
    "dataset": "synthetic_motion",
    "train_samples": 8,
    "val_samples": 8,
    "clip_len": 4,
    "size": 16,
    "seed": 3,
}


def _model(stem: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(1234 + len(stem))  # stems built from different RNG states on purpose
    model = stemlab.create_model("r2plus1d_18", stem=stem, num_classes=4, **TINY_BACKBONE)
    common_random_init(model, seed)
    return model


def test_same_seed_same_shared_init_whatever_the_stem():
    a, b = _model("basic:width=4", 0), _model("wide:width=8", 0)
    sa, sb = a.state_dict(), b.state_dict()
    shared = [k for k in sa if not k.startswith("stem.") and sa[k].shape == sb[k].shape]
    differing_shape = [k for k in sa if k in sb and sa[k].shape != sb[k].shape]
    assert "layer1.0.conv1.0.0.weight" in differing_shape  # reads 4 vs 8 stem channels
    assert any(k.startswith("layer4.") for k in shared) and "fc.weight" in shared
    for key in shared:
        assert torch.equal(sa[key], sb[key]), key
    # a new seed draws new weights
    c = _model("basic:width=4", 1).state_dict()
    assert not torch.equal(sa["layer3.0.conv1.0.0.weight"], c["layer3.0.conv1.0.0.weight"])
    assert not torch.equal(sa["fc.weight"], c["fc.weight"])


def test_redraw_keeps_the_init_scheme():
    model = _model("basic:width=4", 5)
    conv = model.layer4[0].conv2[0][3]  # the temporal (t, 1, 1) conv of R(2+1)D
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
    expected_std = (2.0 / fan_out) ** 0.5  # Kaiming normal, fan-out, ReLU gain
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.15)
    bn = model.layer2[0].conv1[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.2)
    before = {k: v.clone() for k, v in model.stem.state_dict().items()}
    common_random_init(model, 6)
    assert all(torch.equal(before[k], v) for k, v in model.stem.state_dict().items())


def test_replicates_draw_their_own_sample_and_probe_set_is_shared():
    train0, val0, _ = build_datasets(replicate_data(DATA, 0))
    train1, val1, _ = build_datasets(replicate_data(DATA, 1))
    again, _, _ = build_datasets(replicate_data(DATA, 0))
    assert torch.equal(train0[0][0], again[0][0])
    assert not torch.equal(train0[0][0], train1[0][0])
    assert not torch.equal(val0[0][0], val1[0][0])
    probe = build_probe_set(DATA)
    assert torch.equal(probe[0][0], build_probe_set(DATA)[0][0])
    for other in (train0, val0, train1, val1):
        assert not torch.equal(probe[0][0], other[0][0])


def _toy_probe_module() -> types.ModuleType:
    """A probe written as its own module: the only file a new probe needs."""
    module = types.ModuleType("toy_probe")

    def run(context: contract.CellContext) -> contract.ProbeOutput:
        stem_weight = next(context.model.stem.parameters()).detach()
        return contract.ProbeOutput(
            metrics={"stem_weight_norm": float(stem_weight.norm())},
            tables={
                "toy": [{"channel": c, "norm": float(stem_weight[c].norm())} for c in range(2)]
            },
            arrays={"first": stem_weight[:1].numpy()},
        )

    def findings(view: contract.StudyView) -> list[str]:
        table = view.compare(view.trained(), metric="stem_weight_norm", by="stem")
        return [f"toy: {len(table)} comparison(s), n={int(table['n_a'].min())}"]

    def figures(view: contract.StudyView) -> list[contract.FigureSpec]:
        from matplotlib.figure import Figure

        def make() -> Figure:
            fig = Figure(figsize=(2, 2))
            fig.subplots().bar(range(len(view.summary)), view.summary["stem_weight_norm"])
            return fig

        return [contract.FigureSpec("toy_norms", "Toy probe: stem weight norms.", make)]

    module.PROBE = contract.register_probe(
        contract.StudyProbe(
            name="toy_norm",
            description="norm of the stem's first weight",
            run=run,
            tables=("toy",),
            summary=(contract.SummaryColumn("stem_weight_norm", "L2 norm of the stem weight"),),
            findings=findings,
            figures=figures,
        )
    )
    return module


def test_a_new_probe_is_one_module(tmp_path):
    _toy_probe_module()
    try:
        study = tiny_study(probes=["toy_norm"], stems=("basic:width=4", "r2d:width=4"))
        run = run_study(study, out_dir=tmp_path, progress=False)
        assert run.failed == 0
        summary = run.tables["summary"].set_index("stem")
        cells = run.tables["cells"]
        for stem in ("basic:width=4", "r2d:width=4"):
            per_seed = cells[(cells["stem"] == stem) & (cells["kind"] == "train")]
            assert summary.loc[stem, "stem_weight_norm"] == pytest.approx(
                per_seed["stem_weight_norm"].mean()
            )
        toy = run.tables["toy"]
        assert len(toy) == 2 * 2 * 2 and set(toy["channel"]) == {0, 1}
        assert list(toy["seed"].unique()) == [0, 1]
        key = cells.loc[cells["kind"] == "train", "key"].iloc[0]
        from stemlab.study import CellStore

        assert CellStore(tmp_path / "cells").read_arrays(key)["toy_norm.first"].shape[0] == 1
        stemlab.report.render_report(tmp_path)
        text = (tmp_path / "report.md").read_text()
        assert "toy: 1 comparison(s), n=2" in text
        assert "stem_weight_norm" in text and "L2 norm of the stem weight" in text
        assert (tmp_path / "figures" / "toy_norms.png").is_file()
        assert (tmp_path / "tables" / "toy.csv").is_file()
    finally:
        contract._PROBES.pop("toy_norm", None)


def test_probe_registry_checks():
    with pytest.raises(TypeError, match="StudyProbe"):
        contract.register_probe("flops")
    with pytest.raises(ValueError, match="already registered"):
        contract.register_probe(
            contract.StudyProbe(name="flops", description="", run=lambda c: None)
        )
    with pytest.raises(ValueError, match="runs_on"):
        contract.register_probe(
            contract.StudyProbe(
                name="bad", description="", run=lambda c: None, runs_on=frozenset({"train"})
            )
        )
    with pytest.raises(ValueError, match="Did you mean 'grad_cam'"):
        contract.get_probe("gradcam")


def test_study_seeds_are_ints_in_tables_and_report(tmp_path):
    study = tiny_study(probes=["filters"], stems=("basic:width=4",))
    run = run_study(study, out_dir=tmp_path, progress=False)
    cells = run.tables["cells"]
    assert str(cells["seed"].dtype) == "Int64"
    stemlab.report.render_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "seed 0" in text and "seed 0.0" not in text
    reread = stemlab.study.read_tables(tmp_path / "tables")["cells"]
    assert str(reread["seed"].dtype) == "Int64"


def test_paired_design_shares_data_across_stems():
    """Two stems at one seed see the same validation clips, so their accuracies pair."""
    data = {**DATA, "val_samples": 4}
    _, val_a, _ = build_datasets(replicate_data(data, 2))
    _, val_b, _ = build_datasets(replicate_data(data, 2))
    clips_a = np.stack([val_a[i][0].numpy() for i in range(4)])
    clips_b = np.stack([val_b[i][0].numpy() for i in range(4)])
    assert np.array_equal(clips_a, clips_b)
    assert pd.Series([val_a[i][1] for i in range(4)]).equals(
        pd.Series([val_b[i][1] for i in range(4)])
    )


def test_a_cell_reruns_to_the_same_numbers():
    """A fresh run of a cell reproduces its accuracy and probe metrics exactly (same threads)."""
    from stemlab.study.cell import run_cell

    cell = next(
        c
        for c in tiny_study(probes=["flops", "filters", "channel_usage"]).cells()
        if c.kind == "train"
    )
    first = run_cell(cell.config, threads=1, device="cpu")
    second = run_cell(cell.config, threads=1, device="cpu")
    assert first["status"] == second["status"] == "ok"
    drop = {"train_seconds"}
    a = {k: v for k, v in first["result"]["metrics"].items() if k not in drop}
    b = {k: v for k, v in second["result"]["metrics"].items() if k not in drop}
    assert a == b
    assert [e["val_top1"] for e in first["result"]["epochs"]] == [
        e["val_top1"] for e in second["result"]["epochs"]
    ]


def test_default_workers_and_timed_cells_last(monkeypatch):
    from stemlab.study import executors

    monkeypatch.setattr(executors.os, "cpu_count", lambda: 6)
    assert executors.default_workers("cpu") == 6
    assert executors.default_workers("cuda:1") == 1
    seen = []
    executor = executors.LocalExecutor(workers=2, device="cpu", threads=1)
    monkeypatch.setattr(executor, "_run_pool", lambda cells, on_result: seen.extend(cells))
    monkeypatch.setattr(
        executors, "run_cell", lambda config, threads, device: seen.append((config, threads))
    )
    cells = tiny_study().cells()
    executor.run(cells, lambda record: None)
    trained = [c for c in cells if c.kind == "train"]
    profiled = [c.config for c in cells if c.kind == "profile"]
    # training cells go to the pool; profiling cells, which time the model, run afterwards,
    # one at a time, here, with every core
    assert seen[: len(trained)] == trained
    assert seen[len(trained) :] == [(config, 6) for config in profiled]


def test_report_page_structure(tmp_path):
    study = tiny_study(probes=["flops", "confusion"], stems=("basic:width=4", "r2d:width=4"))
    run_study(study, out_dir=tmp_path, progress=False)
    stemlab.report.render_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    page = (tmp_path / "index.html").read_text()
    assert "**Contents:** [Findings](#findings) · [Accuracy](#accuracy)" in text
    assert '<h2 id="cost-at-full-size">Cost at full size</h2>' in page
    assert '<a href="#cost-at-full-size">' in page
    # 4 classes: top-5 says nothing and is hidden
    assert "top5_mean" not in text and "Top-5 is hidden" in text
    assert "[tables/cells.csv](tables/cells.csv)" in text
    assert '<div class="scroll">' in page
    assert (tmp_path / "figures" / "confusion.png").is_file()
    assert "Each stem against `basic:width=4`" in text  # the first stem is the reference
