"""Small shared pieces of the probes' report figures (object-oriented matplotlib, no pyplot)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure", "slug", "stage_roles"]


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout, not attached to any pyplot state."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def stage_roles(model: Any) -> dict[str, str]:
    """Module name -> role (``"stem output"``, then each stage's name) from ``feature_info``."""
    roles: dict[str, str] = {}
    for index, info in enumerate(getattr(model, "feature_info", []) or []):
        roles[info["module"]] = "stem output" if index == 0 else info["module"]
    if not roles and hasattr(model, "stem"):
        roles["stem"] = "stem output"
    return roles


def slug(text: str) -> str:
    """``text`` as a file-name part: runs of other characters become one underscore."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
