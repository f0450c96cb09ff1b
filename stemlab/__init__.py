"""stemlab: ablation and analysis studies of the stem and first-layer filters of video and image CNNs."""

from stemlab.backbones import BACKBONES, list_backbones, register_backbone
from stemlab.models import create_model
from stemlab.spec import parse_stem_spec
from stemlab.stems import STEMS, create_stem, list_stems, register_stem
from stemlab.weights import load_weights

__version__ = "0.1.0"

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
