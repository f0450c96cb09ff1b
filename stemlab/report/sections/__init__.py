"""The report's own sections: accuracy, sweep, budgets, costs, weights.

A section is declared like a probe (:class:`stemlab.probes.contract.StudyProbe`): the study tables
it reads, the summary columns it shows, its tables, figures and findings, and its place in the
report. The renderer loops over sections and probes alike and names no metric; a study-level
figure lives in its section's module. Each module here declares one :class:`StudySection` and
registers it with :func:`register_section`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from stemlab.probes.contract import FigureSpec, StudyView

__all__ = [
    "ReportView",
    "StudySection",
    "TableSpec",
    "get_section",
    "register_section",
    "section_names",
]


@dataclass(frozen=True)
class TableSpec:
    """A table a part of the report shows: optional sub-heading, the frame, a note under it."""

    title: str | None
    frame: pd.DataFrame
    note: str = ""


@dataclass
class ReportView(StudyView):
    """A :class:`StudyView` with what the report's sections need beyond a probe's view.

    Attributes:
        comparisons: the study's multiplicity family, ``"baseline"`` or ``"all_pairs"``.
        chance: accuracy of guessing (``1 / classes``), or None when unknown.
        num_classes: classes of the task, or None.
        descriptions: column -> one-sentence description (for table legends).
        references: backbone -> the stem actually used as reference there (the declared one, or
            the first finished arm when the declared one has no finished cell).
        reference_notes: sentences about references that had no finished cell and what the
            comparisons use instead.
        missing: sentences saying what the report could not use (failed probe or section
            steps); shown at the top.
    """

    comparisons: str = "baseline"
    chance: float | None = None
    num_classes: int | None = None
    descriptions: dict[str, str] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    reference_notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def accuracy_text(self) -> str:
        """``"test top-1"``, or the validation wording for studies without a test split."""
        cells = self.cells
        if not cells.empty and "test_loss" in cells and cells["test_loss"].notna().any():
            return "test top-1"
        data = self.config.get("data") or {}
        if data.get("test_samples") or data.get("test_split"):
            return "test top-1"
        return "validation top-1 (this study has no separate test split)"


@dataclass(frozen=True)
class StudySection:
    """A section's declaration (the shape of a probe's, for what the report draws).

    Attributes:
        name: identifier (also the figure file prefix where it draws several).
        title: the heading in the report.
        description: one line for the section's first paragraph.
        tables: study tables it reads; the section is left out when none of them is present
            (empty: always shown).
        summary: summary columns it shows (probes' tables then leave them out).
        show: ``ReportView -> [TableSpec]``: its tables.
        figures: ``ReportView -> [FigureSpec]``.
        findings: ``ReportView -> [sentence]``: the detailed findings, under its heading.
        headline: ``ReportView -> [sentence]``: one short sentence per finding, at the top.
        headline_figures: ``ReportView -> [FigureSpec]``: figures that open the report.
        order: position in reports (probes' orders on the same scale; lower first).
    """

    name: str
    title: str
    description: str = ""
    tables: tuple[str, ...] = ()
    summary: tuple[str, ...] = ()
    show: Callable[[ReportView], list[TableSpec]] | None = None
    figures: Callable[[ReportView], list[FigureSpec]] | None = None
    findings: Callable[[ReportView], list[str]] | None = None
    headline: Callable[[ReportView], list[str]] | None = None
    headline_figures: Callable[[ReportView], list[FigureSpec]] | None = None
    order: int = 50

    def applies(self, tables: Mapping[str, Any]) -> bool:
        """Whether the study has a table this section reads (or it reads none)."""
        if not self.tables:
            return True
        return any(
            isinstance(tables.get(name), pd.DataFrame) and not tables[name].empty
            for name in self.tables
        )


_SECTIONS: dict[str, StudySection] = {}


def register_section(section: StudySection) -> StudySection:
    """Register ``section`` under its name and return it.

    Raises:
        TypeError: if ``section`` is not a :class:`StudySection`.
    """
    if not isinstance(section, StudySection):
        raise TypeError(f"section must be a StudySection, got {type(section).__name__}")
    _SECTIONS[section.name] = section
    return section


def _load_builtin() -> None:
    import importlib
    import pkgutil

    import stemlab.report.sections as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")


def section_names() -> list[str]:
    """Registered section names in report order."""
    _load_builtin()
    return [s.name for s in sorted(_SECTIONS.values(), key=lambda s: (s.order, s.name))]


def get_section(name: str) -> StudySection:
    """The registered section called ``name``.

    Raises:
        ValueError: unknown name (with close matches).
    """
    from stemlab._validation import check_choice

    _load_builtin()
    check_choice("section", name, sorted(_SECTIONS))
    return _SECTIONS[name]
