"""Registry of stem variants: video stems (5-D) and image stems (4-D)."""

from stemlab.stems import image, tokens, video  # noqa: F401  (registers the built-in stems)
from stemlab.stems.base import FrameWise, Stem, check_stem, stem_kind
from stemlab.stems.layers import SqueezeExcitation
from stemlab.stems.registry import STEMS, create_stem, list_stems, register_stem
from stemlab.stems.video import conv_stem

__all__ = [
    "STEMS",
    "FrameWise",
    "SqueezeExcitation",
    "Stem",
    "check_stem",
    "conv_stem",
    "create_stem",
    "list_stems",
    "register_stem",
    "stem_kind",
]
