"""stemlab: ablation and analysis studies of the stem and first-layer filters of video and image CNNs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Everything loads on first use, so that ``import stemlab`` (and ``stemlab --help``) does not
# import torch: the public names below, and the layers ``stemlab.data``, ``stemlab.probes``, ...
_LAZY_ATTRIBUTES = {
    "Anatomy": "stemlab._anatomy",
    "anatomy": "stemlab._anatomy",
    "swap_stem": "stemlab.swap",
    "BACKBONES": "stemlab.backbones",
    "list_backbones": "stemlab.backbones",
    "register_backbone": "stemlab.backbones",
    "create_model": "stemlab.models",
    "parse_stem_spec": "stemlab.spec",
    "STEMS": "stemlab.stems",
    "create_stem": "stemlab.stems",
    "list_stems": "stemlab.stems",
    "register_stem": "stemlab.stems",
    "load_weights": "stemlab.weights",
}
_LAZY_SUBMODULES = (
    "backbones",
    "data",
    "models",
    "probes",
    "report",
    "spec",
    "stems",
    "study",
    "train",
    "weights",
)

if TYPE_CHECKING:
    from stemlab._anatomy import Anatomy, anatomy
    from stemlab.backbones import BACKBONES, list_backbones, register_backbone
    from stemlab.models import create_model
    from stemlab.spec import parse_stem_spec
    from stemlab.stems import STEMS, create_stem, list_stems, register_stem
    from stemlab.swap import swap_stem
    from stemlab.weights import load_weights


def __getattr__(name: str) -> object:
    if name in _LAZY_ATTRIBUTES:
        value = getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
        globals()[name] = value
        return value
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"stemlab.{name}")
    raise AttributeError(f"module 'stemlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_ATTRIBUTES, *_LAZY_SUBMODULES})


__all__ = [
    "BACKBONES",
    "STEMS",
    "Anatomy",
    "__version__",
    "anatomy",
    "create_model",
    "create_stem",
    "list_backbones",
    "list_stems",
    "load_weights",
    "parse_stem_spec",
    "register_backbone",
    "register_stem",
    "swap_stem",
]
