"""Pretrained weights: what the weights report says each stem change kept, adapted or made new."""

from __future__ import annotations

from stemlab.report.sections import ReportView, StudySection, TableSpec, register_section
from stemlab.report.sections._summary import summary_table

__all__ = ["SECTION"]

SHOWN = (
    "weights_loaded",
    "weights_transferred",
    "weights_initialized",
    "transfer_error",
    "transfer_feature_rel_error",
    "transfer_feature_cosine",
)


def _show(view: ReportView) -> list[TableSpec]:
    return summary_table(
        view,
        None,
        SHOWN,
        "Tensor counts from the weights report; feature errors compare the stem-changed "
        "pretrained model with the native one on the probe clips, before fine-tuning.",
    )


SECTION = register_section(
    StudySection(
        name="weights",
        title="Pretrained weights",
        summary=SHOWN,
        show=_show,
        order=25,
    )
)
