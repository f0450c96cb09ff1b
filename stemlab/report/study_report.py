"""Render a study folder (tables, cells, manifest) into figures, ``report.md`` and ``index.html``."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import re

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure

from stemlab.report.document import Document
from stemlab.report.figures import (
    plot_activation_stats,
    plot_filter_grid,
    plot_flops_breakdown,
    plot_grad_cam_strip,
)
from stemlab.report.findings import findings
from stemlab.report.study_figures import accuracy_vs_gflops, training_curves
from stemlab.study.store import CellStore, atomic_write_bytes, atomic_write_text
from stemlab.study.tables import read_tables

__all__ = ["render_report"]

SUMMARY_SHOWN = [
    "stem",
    "top1_mean",
    "top1_std",
    "n_seeds",
    "params",
    "gflops",
    "gflops_conv_linear",
    "latency_ms",
    "stem_params",
    "stem_gflops",
    "dead_channel_fraction",
    "gradcam_on_object",
]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def render_report(
    out_dir: str | os.PathLike[str], *, command: str | None = None
) -> dict[str, Path]:
    """(Re-)render the report of the study in ``out_dir`` from what is on disk.

    Args:
        out_dir: a study output folder (``tables/``, ``cells/``, ``manifest.json``).
        command: the command that reproduces the study, shown in the report.

    Returns:
        ``{"markdown": path, "html": path, "figures": folder}``.

    Raises:
        FileNotFoundError: ``out_dir`` has no ``manifest.json`` (not a study folder).
    """
    out = Path(out_dir)
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{out} is not a study folder: {manifest_path} is missing")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    tables = read_tables(out / "tables")
    store = CellStore(out / "cells")
    config = manifest.get("config", {})
    summary = tables["summary"]

    doc = Document(f"Study: {manifest.get('study', out.name)}")
    if config.get("description"):
        doc.paragraph(config["description"])
    cells = manifest.get("cells", {})
    runs = manifest.get("runs", [])
    doc.paragraph(
        f"{cells.get('ok', 0)} of {cells.get('total', 0)} cells finished"
        + (f", {cells['failed']} failed" if cells.get("failed") else "")
        + (" (quick run: fewer seeds, epochs and samples)." if manifest.get("quick") else ".")
        + (
            f" Last run: {runs[-1]['seconds']:.0f} s with the {runs[-1]['executor']} executor."
            if runs
            else ""
        )
    )

    doc.heading("Findings")
    doc.bullets(
        findings(summary, config.get("findings")) if not summary.empty else ["No results yet."]
    )

    doc.heading("Summary")
    if not summary.empty:
        shown = summary[[c for c in ["backbone", *SUMMARY_SHOWN] if c in summary]]
        if shown["backbone"].nunique() == 1:
            shown = shown.drop(columns="backbone")
        doc.table(shown)
        doc.paragraph(
            "top1: validation accuracy of the CPU-scaled training model (mean and sample std over "
            "seeds). params, gflops, latency_ms: the profiling model and input "
            f"({_profile_text(config)}); gflops counts every operator (one FMA = one flop), "
            "gflops_conv_linear only convolutions and linear layers (torchvision's convention); "
            "latency_ms is the median forward pass. dead_channel_fraction: stem output "
            "channels never positive on the probe batch. gradcam_on_object: share of Grad-CAM mass "
            "inside the object mask."
        )

    figures_dir = out / "figures"
    for name, caption, make in _figure_plan(tables, store, config):
        try:
            fig = make()
        except (
            ValueError,
            KeyError,
        ) as exc:  # a figure whose data is missing is reported, not fatal
            doc.paragraph(f"Figure {name} could not be drawn: {exc}")
            continue
        png = _png(fig)
        atomic_write_bytes(figures_dir / f"{name}.png", png)
        doc.figure(f"figures/{name}.png", caption, png)

    failed = tables["cells"]
    if not failed.empty and (failed["status"] != "ok").any():
        doc.heading("Failed cells")
        doc.table(failed.loc[failed["status"] != "ok", ["key", "kind", "stem", "error"]])

    doc.heading("Reproduce")
    doc.code(command or f"stemlab study run studies/{manifest.get('study', out.name)}.py")
    doc.paragraph(
        "Tables: "
        + ", ".join(f"tables/{name}.csv" for name in tables)
        + ". Versions: "
        + ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items() if k != "platform")
        + "."
    )
    markdown, page = out / "report.md", out / "index.html"
    atomic_write_text(markdown, doc.markdown())
    atomic_write_text(page, doc.html())
    return {"markdown": markdown, "html": page, "figures": figures_dir}


def _profile_text(config: dict[str, Any]) -> str:
    profile = config.get("profile")
    if not profile:
        return "training model"
    shape = "x".join(str(s) for s in profile.get("input", []))
    return f"{profile.get('backbone')} at {shape}"


def _figure_plan(
    tables: dict[str, pd.DataFrame], store: CellStore, config: dict[str, Any]
) -> list[tuple[str, str, Callable[[], Figure]]]:
    plan: list[tuple[str, str, Callable[[], Figure]]] = []
    summary, epochs = tables["summary"], tables["epochs"]
    if not summary.empty and summary["top1_mean"].notna().any():
        plan.append(
            (
                "accuracy_vs_gflops",
                "Validation top-1 against GFLOPs; error bars are the seed std.",
                lambda: accuracy_vs_gflops(summary),
            )
        )
    if not epochs.empty:
        plan.append(
            (
                "training_curves",
                "Validation top-1 and training loss per epoch (mean over seeds).",
                lambda: training_curves(epochs),
            )
        )
    single_backbone = (
        tables["cells"]["backbone"].nunique() == 1 if not tables["cells"].empty else True
    )

    def label(row: pd.Series) -> str:
        return row["stem"] if single_backbone else f"{row['backbone']}/{row['stem']}"

    activations = tables["activations"]
    if not activations.empty:
        for source, where in (
            ("trained", "the trained CPU-scale models (first seed, probe batch)"),
            ("profile", "the profiling models (random input)"),
        ):
            rows = activations[activations["source"] == source]
            if source == "trained" and not rows.empty:
                rows = rows[rows["key"].isin(_first_seed_keys(tables["cells"]))]
            if rows.empty:
                continue
            rows = rows.assign(group=rows.apply(label, axis=1))
            plan.append(
                (
                    f"activations_{source}",
                    f"Activation statistics per layer and stem, on {where}.",
                    lambda rows=rows: plot_activation_stats(rows, group="group"),
                )
            )
    flops = tables["flops"]
    if not flops.empty:
        rows = flops.assign(group=flops.apply(label, axis=1))
        plan.append(
            (
                "flops_breakdown",
                "GFLOPs and parameters per top-level module of the profiling models.",
                lambda: plot_flops_breakdown(rows, group="group"),
            )
        )
    for _, cell in _first_seed_cells(tables["cells"]).iterrows():
        arrays = store.read_arrays(cell["key"])
        title = label(cell)
        name = _slug(title)
        if "filters" in arrays:
            weight = torch.from_numpy(arrays["filters"].astype("float32"))
            plan.append(
                (
                    f"filters_{name}",
                    f"First-layer filters of {title} after training (seed {cell['seed']}).",
                    lambda weight=weight, title=title: plot_filter_grid(weight, title=title),
                )
            )
        if "gradcam_cam" in arrays and "gradcam_input" in arrays:
            clip = torch.from_numpy(arrays["gradcam_input"][0].astype("float32"))
            cam = torch.from_numpy(arrays["gradcam_cam"][0].astype("float32"))
            plan.append(
                (
                    f"gradcam_{name}",
                    f"Grad-CAM of {title} on a validation clip (seed {cell['seed']}).",
                    lambda clip=clip, cam=cam, title=title: plot_grad_cam_strip(
                        clip, cam, title=title
                    ),
                )
            )
    return plan


def _first_seed_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The successful training cell with the smallest seed of each (backbone, stem)."""
    if cells.empty:
        return cells
    trained = cells[(cells["kind"] == "train") & (cells["status"] == "ok")]
    return trained.sort_values("seed").drop_duplicates(["backbone", "stem"])


def _first_seed_keys(cells: pd.DataFrame) -> set[str]:
    return set(_first_seed_cells(cells)["key"])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
