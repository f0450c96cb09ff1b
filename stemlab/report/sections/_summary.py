"""A section table made of summary columns (costs, stems, pretrained weights)."""

from __future__ import annotations

from stemlab.report.sections import ReportView, TableSpec

__all__ = ["summary_table"]


def summary_table(
    view: ReportView,
    title: str | None,
    columns: tuple[str, ...],
    note: str,
    descriptions: dict[str, str] | None = None,
) -> list[TableSpec]:
    """The present, non-empty ``columns`` of the summary (one row per arm) with a legend
    (``descriptions`` override the view's).

    Returns:
        ``[TableSpec]``, or ``[]`` when none of the columns has a value.
    """
    summary = view.summary
    if summary.empty:
        return []
    present = [c for c in columns if c in summary and summary[c].notna().any()]
    if not present:
        return []
    keys = ["backbone", "stem"] if summary["backbone"].nunique() > 1 else ["stem"]
    known = {**view.descriptions, **(descriptions or {})}
    legend = "; ".join(f"**{c}**: {known[c]}" for c in present if c in known)
    text = f"{note} {legend}." if legend else note
    return [TableSpec(title, summary[[*keys, *present]], text)]
