"""Render a study folder (tables, cells, manifest) into figures, ``report.md`` and ``index.html``.

The report is assembled from the registered probes: each contributes its summary columns (with
their descriptions), its figures and its findings; this module adds what is about accuracy
(comparisons paired by seed, accuracy against cost, training curves) and the page around them.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from stemlab.probes.contract import FigureSpec, StudyView, get_probe, probe_names
from stemlab.report.document import Document
from stemlab.report.findings import accuracy_findings
from stemlab.report.stats import compare, holm
from stemlab.report.study_figures import accuracy_vs_gflops, training_curves
from stemlab.study.store import CellStore, atomic_write_bytes, atomic_write_text
from stemlab.study.tables import TRAINED_COLUMNS, read_tables, summary_columns

__all__ = ["render_report"]

ACCURACY_SHOWN = [
    "top1_mean",
    "top1_ci",
    "top1_std",
    "top5_mean",
    "train_loss",
    "val_loss",
    "n_seeds",
    "n_failed",
]
TRAINED_SHOWN = ["train_stem_width", "train_params", "train_gflops", "train_seconds"]
COST_SHOWN = [
    "params",
    "gflops",
    "gflops_conv_linear",
    "stem_gflops",
    "downstream_gflops",
    "latency_ms",
    "latency_fwd_bwd_ms",
]
STEM_SHOWN = ["stem_kernel", "stem_stride", "stem_width", "stem_params"]
WEIGHTS_SHOWN = [
    "weights_loaded",
    "weights_transferred",
    "weights_initialized",
    "transfer_error",
    "transfer_feature_rel_error",
    "transfer_feature_cosine",
]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _reference_stem(config: Mapping[str, Any]) -> str | None:
    if config.get("baseline"):
        return str(config["baseline"])
    legacy = config.get("findings") or {}
    if legacy.get("baseline"):
        return str(legacy["baseline"])
    stems = config.get("stems") or []
    return str(stems[0]) if stems else None


def _study_probes(config: Mapping[str, Any]) -> list[str]:
    listed = set(config.get("probes") or []) | set(config.get("profile_probes") or [])
    return [name for name in probe_names() if name in listed]


def _read_manifest(out: Path) -> dict[str, Any]:
    path = out / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{out} is not a study folder: {path} is missing")
    try:
        from stemlab.study.manifest import read_manifest

        return read_manifest(out)
    except ImportError:
        return json.loads(path.read_text(encoding="utf-8"))


def _class_names(config: Mapping[str, Any]) -> list[str] | None:
    """The class names of the study's dataset (None when it cannot be opened here)."""
    from stemlab.study.datasets import build_probe_set

    try:
        classes = getattr(build_probe_set(config.get("data") or {}), "classes", None)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return [str(c) for c in classes] if classes else None


def _num_classes(cells: pd.DataFrame) -> int | None:
    if cells.empty or "num_classes" not in cells or cells["num_classes"].isna().all():
        return None
    return int(cells["num_classes"].dropna().iloc[0])


def _label_frame(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty or frame["backbone"].nunique() == 1:
        return frame.drop(columns=["backbone"], errors="ignore")
    return frame


def _accuracy_intervals(view: StudyView) -> pd.DataFrame:
    """95% t-interval of each row's mean top-1 over seeds (label, ci_low, ci_high)."""
    from scipy import stats

    rows = []
    for (backbone, stem), group in view.trained().groupby(["backbone", "stem"], sort=False):
        values = group["top1"].dropna().to_numpy(dtype=float)
        if len(values) < 2:
            continue
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / len(values) ** 0.5
        rows.append(
            {
                "backbone": backbone,
                "stem": stem,
                "label": view.label(backbone, stem),
                "ci_low": values.mean() - half,
                "ci_high": values.mean() + half,
            }
        )
    return pd.DataFrame(rows, columns=["backbone", "stem", "label", "ci_low", "ci_high"])


def _legend(columns: list[str], descriptions: dict[str, str]) -> str:
    return "; ".join(f"**{c}**: {descriptions[c]}" for c in columns if c in descriptions) + "."


def render_report(
    out_dir: str | os.PathLike[str],
    *,
    command: str | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
) -> dict[str, Path]:
    """(Re-)render the report of the study in ``out_dir`` from what is on disk.

    Args:
        out_dir: a study output folder (``tables/``, ``cells/``, ``manifest.json``).
        command: the command that reproduces the study, shown in the report.
        tables: the study's tables when the caller has just built them (else read from
            ``tables/``).

    Returns:
        ``{"markdown": path, "html": path, "figures": folder}``.

    Raises:
        FileNotFoundError: ``out_dir`` has no ``manifest.json`` (not a study folder).
    """
    out = Path(out_dir)
    manifest = _read_manifest(out)
    tables = tables if tables is not None else read_tables(out / "tables")
    store = CellStore(out / "cells")
    config = manifest.get("config", {}) or {}
    config = {**config, "class_names": _class_names(config)}
    summary, cells = tables["summary"], tables["cells"]
    baseline = _reference_stem(config)
    view = StudyView(
        config=config,
        cells=cells,
        summary=summary,
        tables=tables,
        arrays=store.read_arrays,
        compare=compare,
        baseline=baseline,
        holm=holm,
    )
    probes = [get_probe(name) for name in _study_probes(config)]
    descriptions = {c: d for c, d in TRAINED_COLUMNS}
    descriptions.update({c: d for c, _, d in summary_columns([p.name for p in probes])})
    descriptions.update(
        {
            "top1_mean": "validation top-1 of the trained CPU-scale model, mean over seeds",
            "top1_ci": "95% t-interval of that mean",
            "top1_std": "sample std over seeds",
            "top5_mean": "validation top-5, mean over seeds",
            "n_seeds": "seeds that finished",
            "n_failed": "seeds that failed",
            "latency_ms": "median forward time of the profiling model (ms, this machine)",
        }
    )
    num_classes = _num_classes(cells)
    chance = 1.0 / num_classes if num_classes else None

    doc = Document(f"Study: {manifest.get('study', out.name)}")
    if config.get("description"):
        doc.paragraph(config["description"])
    doc.paragraph(_status_line(manifest, cells))
    doc.contents()

    doc.heading("Findings")
    lines = accuracy_findings(cells, baseline=baseline, config=config) if not cells.empty else []
    for probe in probes:
        if probe.findings is not None and not cells.empty:
            lines += probe.findings(view)
    doc.bullets(lines or ["No results yet."])

    intervals = _accuracy_intervals(view) if not cells.empty else pd.DataFrame()
    if not summary.empty:
        _summary_tables(doc, summary, intervals, descriptions, num_classes, view)

    if not cells.empty and "top1" in cells:
        trained = view.trained()
        for backbone, rows in trained.groupby("backbone", sort=False):
            if rows["stem"].nunique() < 2:
                continue
            table = compare(rows, metric="top1", by="stem", baseline=baseline)
            doc.heading(
                f"Comparisons on {backbone}" if view.single_backbone() is False else "Comparisons"
            )
            doc.paragraph(
                f"Each stem against `{baseline}`: top-1 difference (b - a, points), its 95% "
                "interval, and the Holm-adjusted p of a paired t-test over seeds (Welch where the "
                "seeds differ). `significant` means adjusted p < 0.05."
            )
            shown = table[
                [
                    "a",
                    "b",
                    "n_a",
                    "n_b",
                    "diff",
                    "ci_low",
                    "ci_high",
                    "p_value",
                    "p_adjusted",
                    "significant",
                    "test",
                ]
            ].copy()
            for column in ("diff", "ci_low", "ci_high"):
                shown[column] = (100 * shown[column]).round(1)
            doc.table(shown)
        if (
            trained["backbone"].nunique() > 1
            and trained.groupby("backbone")["stem"].nunique().max() == 1
        ):
            table = compare(trained, metric="top1", by="backbone")
            doc.heading("Comparisons")
            doc.paragraph(
                "Every pair of backbones: top-1 difference (b - a, points), 95% interval, "
                "Holm-adjusted p of a paired t-test over seeds."
            )
            shown = table[
                ["a", "b", "n_a", "diff", "ci_low", "ci_high", "p_adjusted", "significant"]
            ].copy()
            for column in ("diff", "ci_low", "ci_high"):
                shown[column] = (100 * shown[column]).round(1)
            doc.table(shown)

    doc.heading("Figures")
    specs: list[FigureSpec] = []
    if not summary.empty and summary.get("top1_mean", pd.Series()).notna().any():
        specs.append(
            FigureSpec(
                "accuracy_vs_gflops",
                "Validation top-1 of the trained CPU-scale models against their own GFLOPs "
                "(one training clip); error bars: 95% interval of the mean over seeds; dashed: "
                "chance. The full-size profiling GFLOPs are in the cost table.",
                lambda: accuracy_vs_gflops(
                    summary, chance=chance, intervals=intervals if len(intervals) else None
                ),
            )
        )
    epochs = tables.get("epochs", pd.DataFrame())
    if not epochs.empty:
        specs.append(
            FigureSpec(
                "training_curves",
                "Validation top-1 and training loss per epoch (mean over seeds; band: min..max); "
                "dashed: chance.",
                lambda: training_curves(epochs, chance=chance),
            )
        )
    for probe in probes:
        if probe.figures is not None and not cells.empty:
            specs += probe.figures(view)
    figures_dir = out / "figures"
    for spec in specs:
        try:
            fig = spec.make()
        except (ValueError, KeyError) as exc:  # a figure whose data is missing is reported
            doc.paragraph(f"Figure {spec.name} could not be drawn: {exc}")
            continue
        png = _png(fig)
        atomic_write_bytes(figures_dir / f"{spec.name}.png", png)
        doc.figure(f"figures/{spec.name}.png", spec.caption, png)

    if not cells.empty and (cells["status"] != "ok").any():
        doc.heading("Failed cells")
        failed = cells.loc[cells["status"] != "ok", ["key", "kind", "backbone", "stem", "error"]]
        doc.table(failed)

    doc.heading("Reproduce")
    doc.code(command or f"stemlab study run studies/{manifest.get('study', out.name)}.py")
    doc.paragraph(
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items() if k != "platform")
        + "."
    )
    doc.paragraph("Tables (CSV):")
    for name in sorted(tables):
        doc.link(f"tables/{name}.csv", f"tables/{name}.csv")
    markdown, page = out / "report.md", out / "index.html"
    atomic_write_text(markdown, doc.markdown())
    atomic_write_text(page, doc.html())
    return {"markdown": markdown, "html": page, "figures": figures_dir}


def _status_line(manifest: Mapping[str, Any], cells: pd.DataFrame) -> str:
    counts = manifest.get("cells", {}) or {}
    runs = manifest.get("runs", []) or []
    text = (
        f"{counts.get('ok', 0)} of {counts.get('total', 0)} cells finished"
        + (f", {counts['failed']} failed" if counts.get("failed") else "")
        + (" (quick run: fewer seeds, epochs and samples)." if manifest.get("quick") else ".")
    )
    if not cells.empty and "seconds" in cells:
        text += f" Compute time of the cells: {cells['seconds'].sum():.0f} s in total."
    if runs:
        last = runs[-1]
        text += f" Last run: {last['seconds']:.0f} s wall time with the {last['executor']} executor"
        if last.get("workers"):
            text += f" ({last['workers']} worker(s))"
        if last.get("ran") is not None:
            text += f", {last['ran']} cell(s) computed, {last.get('skipped', 0)} reused"
        text += "."
    return text


def _summary_tables(
    doc: Document,
    summary: pd.DataFrame,
    intervals: pd.DataFrame,
    descriptions: dict[str, str],
    num_classes: int | None,
    view: StudyView,
) -> None:
    frame = summary.copy()
    if len(intervals):
        merged = frame.merge(intervals, on=["backbone", "stem"], how="left")
        frame["top1_ci"] = [
            f"{100 * lo:.1f} to {100 * hi:.1f}" if pd.notna(lo) else ""
            for lo, hi in zip(merged["ci_low"], merged["ci_high"])
        ]
    for column in ("top1_mean", "top1_std", "top5_mean"):
        if column in frame:
            frame[column] = (100 * frame[column]).round(1)
    hidden_top5 = num_classes is not None and num_classes <= 5
    groups = [
        (
            "Accuracy",
            [c for c in ACCURACY_SHOWN if not (hidden_top5 and c == "top5_mean")] + TRAINED_SHOWN,
            "Top-1 in percent. The trained models are the CPU-scale ones of the study."
            + (" Top-5 is hidden: with 5 or fewer classes it says nothing." if hidden_top5 else ""),
        ),
        (
            "Cost at full size",
            COST_SHOWN,
            f"The full-size profiling model ({view.profile_text()}); one FMA = one flop.",
        ),
        ("Stems", STEM_SHOWN, "The stems at full size (profiling model)."),
        (
            "Pretrained weights",
            WEIGHTS_SHOWN,
            "Tensor counts from the weights report; feature "
            "errors compare the stem-changed pretrained model with the native one on the probe clips, "
            "before fine-tuning.",
        ),
    ]
    shown_columns = {"backbone", "stem", "profile_backbone", "top5_mean"}
    for title, columns, note in groups:
        present = [c for c in columns if c in frame and frame[c].notna().any()]
        shown_columns.update(present)
        if not present:
            continue
        doc.heading(title)
        doc.table(_label_frame(frame[["backbone", "stem", *present]]))
        doc.paragraph(note + " " + _legend(present, descriptions))
    rest = [
        c
        for c in frame.columns
        if c not in shown_columns and c in descriptions and frame[c].notna().any()
    ]
    if rest:
        doc.heading("Probes")
        for start in range(0, len(rest), 5):
            part = rest[start : start + 5]
            doc.table(_label_frame(frame[["backbone", "stem", *part]]))
        doc.paragraph(_legend(rest, descriptions))
