"""stemlab: ablation and analysis studies of the stem and first-layer filters of video and image CNNs."""

from stemlab.backbones import BACKBONES, list_backbones, register_backbone
from stemlab.models import create_model
from stemlab.spec import parse_stem_spec
from stemlab.stems import STEMS, create_stem, list_stems, register_stem
from stemlab.weights import load_weights

__version__ = "0.1.0"

# Heavier layers load on first use: ``stemlab.data``, ``stemlab.probes``, ...
_LAZY_SUBMODULES = ("data", "probes", "report", "study", "train", "weights")


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"stemlab.{name}")
    raise AttributeError(f"module 'stemlab' has no attribute {name!r}")


__all__ = [
    "BACKBONES",
    "STEMS",
    "__version__",
    "create_model",
    "create_stem",
    "list_backbones",
    "list_stems",
    "load_weights",
    "parse_stem_spec",
    "register_backbone",
    "register_stem",
]
