"""Render a study folder (tables, cells, manifest) into figures, ``report.md`` and ``index.html``.

The report is one loop over declared parts: the report's own sections
(:mod:`stemlab.report.sections`: accuracy, sweep, budgets, costs, weights) and the study's
probes, in one order. Each part contributes tables, figures and findings; this module names no
metric. The page opens with the sections' headline figures (the forest plot of the declared
comparisons) and one short sentence per finding; the details follow part by part. A part whose
step raises is reported as missing and the rest is drawn from what finished.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from matplotlib.figure import Figure

from stemlab.probes.contract import FigureSpec, StudyProbe, get_probe, probe_names
from stemlab.report.document import Document
from stemlab.report.sections import ReportView, StudySection, TableSpec, get_section, section_names
from stemlab.report.sections._common import reference_arms
from stemlab.report.stats import compare, holm
from stemlab.study.store import CellStore, atomic_write_bytes, atomic_write_text
from stemlab.study.tables import TRAINED_COLUMNS, read_tables, summary_columns

__all__ = ["build_document", "build_view", "render_report"]

T = TypeVar("T")


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


def build_view(
    config: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    *,
    arrays: Callable[[str], dict[str, Any]] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> ReportView:
    """The view every section and probe of the report reads.

    Args:
        config: the study config (``Study.to_config()``, plus ``class_names`` if known).
        tables: the study's tables by name (``cells``, ``summary`` at least; may be empty).
        arrays: reader of a cell's stored arrays (default: none stored).
        descriptions: column descriptions for table legends.

    Returns:
        The :class:`ReportView`.

    Raises:
        ValueError: if ``config["comparisons"]`` is neither ``"baseline"`` nor ``"all_pairs"``.
    """
    from stemlab._validation import check_choice

    tables = dict(tables)
    for name in ("cells", "summary"):
        tables.setdefault(name, pd.DataFrame())
    cells = tables["cells"]
    comparisons = check_choice(
        "comparisons", config.get("comparisons") or "baseline", ["baseline", "all_pairs"]
    )
    num_classes = _num_classes(cells)
    chance = None
    if not cells.empty and "chance" in cells and cells["chance"].notna().any():
        chance = float(cells["chance"].dropna().iloc[0])
    elif num_classes:
        chance = 1.0 / num_classes
    declared = _reference_stem(config)
    references, notes = reference_arms(config, cells, declared)
    return ReportView(
        config=config,
        cells=cells,
        summary=tables["summary"],
        tables=tables,
        arrays=arrays or (lambda key: {}),
        compare=compare,
        baseline=next(iter(references.values()), declared) if references else declared,
        holm=holm,
        comparisons=comparisons,
        chance=chance,
        num_classes=num_classes,
        descriptions=dict(descriptions or {}),
        references=references,
        reference_notes=notes,
    )


@dataclass
class _Part:
    """A section or a probe, as the renderer loops over them."""

    name: str
    title: str
    order: int
    section: StudySection | None = None
    probe: StudyProbe | None = None


def _parts(view: ReportView, probes: list[StudyProbe]) -> list[_Part]:
    parts = [
        _Part(s.name, s.title, s.order, section=s)
        for s in (get_section(n) for n in section_names())
        if s.applies(view.tables)
    ]
    parts += [_Part(p.name, p.name, p.order, probe=p) for p in probes]
    return sorted(parts, key=lambda p: (p.order, p.section is None, p.name))


def _attempt(view: ReportView, what: str, step: Callable[[], T], default: T) -> T:
    """``step()``; if it raises, record what is missing and return ``default``."""
    try:
        return step()
    except Exception as exc:  # a failing part must not take the report with it
        view.missing.append(f"{what} could not be computed ({type(exc).__name__}: {exc}).")
        return default


def _step(
    view: ReportView,
    what: str,
    step: Callable[[ReportView], list[T]] | None,
    *,
    cells: bool = True,
    always: bool = False,
) -> list[T]:
    """``step(view)`` as a list ([] when the part declares no such step or nothing finished)."""
    if step is None or not (cells or always):
        return []
    return list(_attempt(view, what, lambda: step(view), []) or [])


def _probe_tables(view: ReportView, probe: StudyProbe, claimed: set[str]) -> list[TableSpec]:
    summary = view.summary
    columns = [
        c.name
        for c in probe.summary
        if c.name not in claimed and c.name in summary and summary[c.name].notna().any()
    ]
    if summary.empty or not columns:
        return []
    keys = ["backbone", "stem"] if summary["backbone"].nunique() > 1 else ["stem"]
    legend = "; ".join(f"**{c.name}**: {c.description}" for c in probe.summary if c.name in columns)
    chunks = [columns[start : start + 6] for start in range(0, len(columns), 6)]
    return [
        TableSpec(None, summary[[*keys, *chunk]], legend + "." if i == len(chunks) - 1 else "")
        for i, chunk in enumerate(chunks)
    ]


def _draw(
    doc: Document, view: ReportView, specs: list[FigureSpec], folder: Path, what: str
) -> None:
    for spec in specs:
        fig = _attempt(view, f"{what}: figure {spec.name}", spec.make, None)
        if fig is None:
            continue
        png = _png(fig)
        atomic_write_bytes(folder / f"{spec.name}.png", png)
        doc.figure(f"figures/{spec.name}.png", spec.caption, png)


def build_document(
    manifest: Mapping[str, Any],
    tables: Mapping[str, pd.DataFrame],
    *,
    figures_dir: str | os.PathLike[str],
    arrays: Callable[[str], dict[str, Any]] | None = None,
    command: str | None = None,
    title: str | None = None,
) -> Document:
    """The report of a study as a :class:`Document`; figures are written to ``figures_dir``.

    Args:
        manifest: the study's manifest (config, cell counts, runs, versions).
        tables: the study's tables by name.
        figures_dir: where the PNG files go.
        arrays: reader of a cell's stored arrays.
        command: the command that reproduces the study.
        title: the study's name (default: the manifest's).

    Returns:
        The document (render with ``.markdown()`` / ``.html()``).
    """
    config = dict(manifest.get("config", {}) or {})
    probes = [get_probe(name) for name in _study_probes(config)]
    descriptions = {c: d for c, d in TRAINED_COLUMNS}
    descriptions.update({c: d for c, _, d in summary_columns([p.name for p in probes])})
    view = build_view(config, tables, arrays=arrays, descriptions=descriptions)
    cells = view.cells
    folder = Path(figures_dir)
    name = title or manifest.get("study", "")

    for extra in ("problems",):  # steps the study could not build (a probe's combine, ...)
        problems = view.tables.get(extra)
        if isinstance(problems, pd.DataFrame) and not problems.empty and "error" in problems:
            for row in problems.itertuples():
                view.missing.append(
                    f"{getattr(row, 'part', 'a table step')}: {getattr(row, 'stage', 'step')} "
                    f"failed ({row.error}); its tables are missing."
                )

    parts = _parts(view, probes)
    claimed = {c for p in parts if p.section for c in p.section.summary}
    rendered: list[tuple[_Part, list[TableSpec], list[str], list[FigureSpec]]] = []
    headlines: list[str] = []
    headline_figures: list[FigureSpec] = []
    has_cells = not cells.empty
    for part in parts:
        what = f"{'section' if part.section else 'probe'} {part.name}"
        declared = part.section or part.probe
        if part.section is not None:
            tables_ = _step(view, f"{what}: tables", part.section.show, always=True)
            headlines += _step(view, f"{what}: headline", part.section.headline, cells=has_cells)
            headline_figures += _step(
                view, f"{what}: headline figures", part.section.headline_figures, cells=has_cells
            )
        else:
            tables_ = _probe_tables(view, part.probe, claimed)
        findings = _step(view, f"{what}: findings", declared.findings, cells=has_cells)
        specs = _step(view, f"{what}: figures", declared.figures, cells=has_cells)
        rendered.append((part, tables_, findings, specs))

    doc = Document(f"Study: {name}")
    if config.get("description"):
        doc.paragraph(config["description"])
    doc.paragraph(_status_line(manifest, cells))
    doc.contents()
    doc.heading("Findings")
    top_figures = Document("")
    _draw(top_figures, view, headline_figures, folder, "the headline")
    doc.blocks += top_figures.blocks
    if any(p.probe is not None and f for p, _, f, _ in rendered):
        headlines.append(
            "The probes' findings (with their intervals) are under each probe's heading below."
        )
    top = list(view.missing) + headlines if has_cells else ["No results yet."]
    reported = len(view.missing)
    doc.bullets(top)

    for part, tables_, findings, specs in rendered:
        if not (tables_ or findings or specs):
            continue
        doc.heading(part.title)
        description = part.section.description if part.section else part.probe.description
        if description and part.probe is not None:
            doc.paragraph(f"*{description}*")
        elif description:
            doc.paragraph(description)
        for spec in tables_:
            if spec.title:
                doc.paragraph(f"**{spec.title}**")
            doc.table(spec.frame)
            if spec.note:
                doc.paragraph(spec.note)
        if findings:
            doc.bullets(findings)
        _draw(doc, view, specs, folder, f"{part.name}")

    top.extend(view.missing[reported:])  # figure steps that failed after the list was made
    if has_cells and (cells["status"] != "ok").any():
        doc.heading("Failed cells")
        failed = cells.loc[
            cells["status"] != "ok",
            [
                c
                for c in ("key", "kind", "backbone", "stem", "seed", "status", "error")
                if c in cells
            ],
        ]
        doc.table(failed)

    doc.heading("Reproduce")
    doc.code(command or f"stemlab study run studies/{name}.py")
    doc.paragraph(
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items() if k != "platform")
        + "."
    )
    doc.paragraph("Tables (CSV):")
    for table in sorted(tables):
        doc.link(f"tables/{table}.csv", f"tables/{table}.csv")
    return doc


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
    manifest = dict(_read_manifest(out))
    tables = tables if tables is not None else read_tables(out / "tables")
    config = dict(manifest.get("config", {}) or {})
    manifest["config"] = {**config, "class_names": _class_names(config)}
    figures_dir = out / "figures"
    doc = build_document(
        manifest,
        tables,
        figures_dir=figures_dir,
        arrays=CellStore(out / "cells").read_arrays,
        command=command,
        title=manifest.get("study") or out.name,
    )
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
