"""The report as declared sections: accuracy, sweep, budgets, costs, weights, with probes in one
loop; the declared comparison family, simultaneous clipped intervals, robustness to failures."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import LRS, TOP1, manifest, study_tables

from stemlab.probes import contract
from stemlab.report import study_report
from stemlab.report.sections import accuracy, budgets, get_section, section_names, sweep
from stemlab.report.study_report import build_document, build_view


def _view(**kw):
    config, tables = study_tables(**kw.pop("tables", {}))
    config.update(kw)
    return build_view(config, tables)


def _paired(a, b, confidence):
    d = np.asarray(b) - np.asarray(a)
    half = stats.t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half, stats.ttest_rel(b, a).pvalue


def test_sections_are_declared_modules_in_report_order():
    assert section_names() == ["accuracy", "sweep", "budgets", "costs", "weights"]
    for name in section_names():
        assert get_section(name).__class__.__name__ == "StudySection"
        assert Path(inspect.getfile(sys.modules[f"stemlab.report.sections.{name}"])).stem == name
    # the renderer names no metric: every number it shows comes from a section or a probe
    source = inspect.getsource(study_report)
    for metric in ("top1", "gflops", "train_loss", "val_loss", "latency_ms", "weights_"):
        assert metric not in source, metric


def test_baseline_family_holm_and_simultaneous_intervals():
    view = _view()
    table = accuracy.comparison_table(view)
    assert list(table["a"]) == ["r2d", "r2d"] and list(table["b"]) == ["r2plus1d", "basic"]
    raw = []
    for row, stem in zip(table.itertuples(), ("r2plus1d", "basic")):
        diff, low, high, p = _paired(TOP1["r2d"], TOP1[stem], 1 - 0.05 / 2)
        assert row.diff == pytest.approx(diff) and row.n_pairs == 5
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high))
        raw.append(p)
    order = np.argsort(raw)
    expected = np.empty(2)
    expected[order[0]] = min(1, 2 * raw[order[0]])
    expected[order[1]] = min(1, max(expected[order[0]], raw[order[1]]))
    assert table["p_adjusted"].to_numpy() == pytest.approx(expected)
    assert list(table["significant"]) == [True, False]
    assert table.attrs["family"] == "each stem vs `r2d`, Holm over 2"


def test_all_pairs_family_is_every_accuracy_finding():
    view = _view(comparisons="all_pairs")
    table = accuracy.comparison_table(view)
    assert [(r.a, r.b) for r in table.itertuples()] == [
        ("r2d", "r2plus1d"), ("r2d", "basic"), ("r2plus1d", "basic"),
    ]  # fmt: skip
    _, low, high, _ = _paired(TOP1["r2plus1d"], TOP1["basic"], 1 - 0.05 / 3)
    assert (table["ci_low"].iloc[2], table["ci_high"].iloc[2]) == pytest.approx((low, high))
    text = "\n".join(accuracy.SECTION.findings(view))
    assert "Highest mean test top-1: `r2plus1d` (81.6%); significantly above every other arm " \
        "(all 3 pairs, Holm over 3)." in text  # fmt: skip
    # the same family over the sweep samples
    assert len(sweep.comparison_table(view)) == 3
    with pytest.raises(ValueError, match="comparisons='some'"):
        _view(comparisons="some")


def test_edges_never_p_zero_clipped_and_noted():
    config, tables = study_tables()
    cells = tables["cells"]
    cells.loc[cells["stem"] == "r2d", "top1"] = [0.0, 0.9, 0.0, 0.9, 0.0]
    # every paired difference the same number: no test, no p
    same = cells["stem"] == "basic"
    cells.loc[same, "top1"] = cells.loc[cells["stem"] == "r2d", "top1"].to_numpy() + 0.05
    # a huge spread near the top of the range: the interval is clipped to +-100 points
    wide = cells["stem"] == "r2plus1d"
    cells.loc[wide, "top1"] = [1.0, 0.0, 1.0, 0.0, 1.0]
    view = build_view(config, tables)
    table = accuracy.comparison_table(view)
    basic = table.set_index("b").loc["basic"]
    assert basic["note"] == "all 5 paired differences equal (0.05): no variance, no test"
    assert not basic["significant"] and np.isnan(basic["ci_low"])
    plus = table.set_index("b").loc["r2plus1d"]
    assert plus["clipped"] and (plus["ci_low"], plus["ci_high"]) == (-1.0, 1.0)
    text = "\n".join(accuracy.SECTION.findings(view) + accuracy.SECTION.headline(view))
    assert not re.search(r"p (=|<) 0(?![.\d])", text) and "nan" not in text.lower()
    assert "`basic` vs `r2d`: all 5 paired differences equal (0.05): no variance, no test" in text
    assert "clipped to the metric's range" in text
    figure = accuracy.forest_plot(table)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "r2plus1d vs r2d (n=5)",
        "basic vs r2d (n=5)",
    ]
    assert ax.get_xlim() == (-102.0, 102.0) and "clipped" in ax.get_title()
    assert any(t.get_text().startswith("no test: all 5 paired differences equal") for t in ax.texts)


def test_a_note_from_compare_is_printed_instead_of_numbers():
    view = _view()
    plain = view.compare

    def noted(*args, **kwargs):
        table = plain(*args, **kwargs)
        return table.assign(note=["too few distinct values for a test"] * len(table))

    view.compare = noted
    text = "\n".join(accuracy.SECTION.findings(view))
    assert "`r2plus1d` vs `r2d`: too few distinct values for a test" in text
    assert "+41.6" not in text


def test_sweep_per_sample_means_and_paired_by_sample():
    view = _view()
    frame = sweep.per_sample(view)
    raw = view.tables["sweep"]
    mine = raw[(raw["stem"] == "basic") & (raw["sample"] == 2)]
    row = frame[(frame["stem"] == "basic") & (frame["sample"] == 2)].iloc[0]
    assert row["test_top1"] == pytest.approx(mine["test_top1"].mean()) and row["n_seeds"] == 2
    assert list(frame.loc[frame["selected"], "lr"]) == [LRS[3]] * 3
    table = sweep.comparison_table(view)
    a = frame[frame["stem"] == "r2d"].sort_values("sample")["test_top1"].to_numpy()
    b = frame[frame["stem"] == "basic"].sort_values("sample")["test_top1"].to_numpy()
    diff, low, high, _ = _paired(a, b, 1 - 0.05 / 2)
    basic = table.set_index("b").loc["basic"]
    assert basic["n_pairs"] == 4 and basic["diff"] == pytest.approx(diff)
    text = "\n".join(sweep.SECTION.findings(view))
    if "test" in inspect.signature(view.compare).parameters:  # the sign-flip test over samples
        assert basic["test"] == "sign-flip" and not basic["significant"]
    else:
        assert (basic["ci_low"], basic["ci_high"]) == pytest.approx((low, high))
        assert "paired t over 4 samples" in text
    assert "lr in {0.001, 0.003, 0.01, 0.03}" in text
    edf = sweep.sweep_edf(view).axes[0]
    line = edf.lines[0]  # r2d's step curve: sorted test errors, cumulative fraction
    assert np.allclose(line.get_xdata()[1:], np.sort(100 * (1 - a)))
    assert np.allclose(line.get_ydata(), [0, 0.25, 0.5, 0.75, 1.0])
    assert edf.get_xlabel().startswith("test error (%)")


def test_budgets_ranking_stable_or_flips():
    view = _view()
    stable = budgets.SECTION.headline(view)
    assert stable == ["Ranking by mean test top-1 stable across budgets 1/2/4 epochs."]
    flipped = _view(tables={"flip": True})
    text = "\n".join(budgets.SECTION.findings(flipped))
    # at 1 epoch r2d (35%) leads r2plus1d (28%); at 4 epochs r2plus1d leads by 41.6 points
    assert "`r2plus1d` vs `r2d` (-7.0 at 1, +20.8 at 2, +41.6 at 4 epochs; significant at" in text
    assert "changes across budgets 1/2/4 epochs" in text
    # training loss only beside validation loss and their gap
    loss = next(line for line in text.splitlines() if line.startswith("Training / validation"))
    assert "`r2d` 0.400 / 1.050 / +0.650" in loss
    figure = budgets.learning_curves(view)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["Validation top-1 (%)", "Test top-1 (%)",
                      "Loss (solid: training, dashed: validation)",
                      "Validation minus training loss"]  # fmt: skip
    ax = figure.axes[1]
    assert np.allclose(ax.lines[1].get_ydata(), [39.1, 53.3, 81.6], atol=0.05)


def test_reference_failed_probe_raised_diverged_counted(tmp_path):
    status = {("r2d", s): "failed" for s in range(5)} | {("basic", 4): "diverged"}
    config, tables = study_tables(status=status)

    def boom(view):
        raise RuntimeError("needs 4 probe clips, got 2")

    contract._PROBES["boom"] = contract.StudyProbe(
        name="boom", description="fails", run=lambda c: None, findings=boom, figures=boom
    )
    try:
        config["probes"] = ["boom"]
        doc = build_document(manifest(config), tables, figures_dir=tmp_path)
    finally:
        contract._PROBES.pop("boom")
    text = doc.markdown()
    assert (
        "Reference stem `r2d`: 0 of 5 cells finished; comparisons use `r2plus1d` (the first "
        "arm that finished) as the reference instead." in text
    )
    assert "probe boom: findings could not be computed (RuntimeError: needs 4 probe clips" in text
    assert "Diverged training cells, excluded from every finding: `basic` 1 of 5 (first: " \
        "val_loss non-finite at epoch 3)." in text  # fmt: skip
    # the diverged seed is out: basic vs r2plus1d on the 4 seeds it finished (Welch: 5 vs 4)
    assert "`basic` vs `r2plus1d`" in text and "n=5 vs 4" in text
    for name in ("accuracy_forest", "sweep_edf", "sweep_lr", "learning_curves"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5000
    # the page opens with the forest plot and the short sentences, details below
    assert text.index("figures/accuracy_forest.png") < text.index("## Accuracy")


def test_no_finished_cell_still_draws_a_report(tmp_path):
    status = {(s, seed): "failed" for s in ("r2d", "r2plus1d", "basic") for seed in range(5)}
    config, tables = study_tables(status=status)
    tables["sweep"] = tables["sweep"].iloc[0:0]
    tables["budgets"] = tables["budgets"].iloc[0:0]
    text = build_document(manifest(config), tables, figures_dir=tmp_path).markdown()
    assert "No training cell finished, so there is no accuracy to compare." in text
    assert "Reference stem `r2d`: 0 of 5 cells finished; comparisons with it are not possible." \
        in text  # fmt: skip
    assert "## Failed cells" in text and "## Sweep" not in text


def test_selected_lr_stated_per_arm():
    view = _view()
    line = accuracy.SECTION.findings(view)[0]
    assert line.startswith("Test top-1 over 5 seeds, lr selected per arm on validation only:")
    assert "`r2plus1d` 81.6% (lr 0.03, wd 0.0001)" in line
    frame = accuracy.accuracy_table(view)
    assert list(frame["lr"]) == [0.03] * 3 and list(frame["top1_mean"]) == [40.0, 81.6, 41.2]
    assert re.fullmatch(r"\d+\.\d to \d+\.\d", frame["top1_ci"].iloc[0])


def test_a_table_step_that_failed_is_said(tmp_path):
    config, tables = study_tables()
    tables["problems"] = pd.DataFrame(
        [{"part": "probe cka", "stage": "combine", "error": "ValueError: needs 4 clips"}]
    )
    text = build_document(manifest(config), tables, figures_dir=tmp_path).markdown()
    assert (
        "- probe cka: combine failed (ValueError: needs 4 clips); its tables are missing." in text
    )
    assert "## Accuracy" in text and "## Sweep" in text
