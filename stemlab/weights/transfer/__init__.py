"""Stem weight transfer: adapt a checkpoint's stem, and the first block that reads it, to another stem.

Each rule handles one kind of difference and is function-preserving where the maths allows:

- ``in_channels``: another number of input channels (grayscale, flow, RGB + depth): every new
  input channel gets the mean of the RGB kernels x ``3 / new_in`` (TSN). Exact whenever all input
  channels carry the same signal (a gray clip replicated to RGB, a constant).
- ``3d_to_2plus1d``: one 3-D conv -> an R(2+1)D stem (spatial conv, norm, ReLU, temporal conv).
  Truncated SVD; exact up to the reconstruction error it reports (eval mode).
- ``2plus1d_to_3d``: an R(2+1)D stem -> one 3-D conv + norm: the two convs composed through the
  mid norm, the middle ReLU dropped. Approximate; the report gives the relative error on a
  random clip.
- ``gate``: an added squeeze-excitation gate. Exact: the gate starts as the identity.
- ``kernel_size``: other kernel sizes. Larger: centred zero-padding, exact. Fewer taps in time:
  outer taps summed in, exact on static clips away from the temporal border. Smaller in space:
  centre crop, approximate (the report gives the kernel energy kept).
- ``width``: more stem channels (Net2Wider). Exact in eval mode, through the stem and the first
  block, including the projection shortcut the wider stem needs.

Rules run in that order on a working copy of the checkpoint's stem and first-block tensors (float64,
CPU); the first three run before the key sets are compared (two change which tensors exist), the
last two reshape tensors. The transfer succeeds
only if every model tensor of the stem and first block ends up with its exact shape and every
checkpoint stem tensor was used; otherwise :class:`NoTransfer` says why.

A 2-D (image) checkpoint for a 3-D model is inflated first, over the whole network
(:mod:`~stemlab.weights.transfer.inflate`, I3D); its stem then goes through these rules.

Modules: ``base`` (shared records), ``channels``, ``factorise`` ((2+1)D), ``gate``, ``kernels``
(kernel resizing), ``widen``, ``rules`` (the table and :func:`transfer_stem`), ``inflate``.
"""

from stemlab.weights.transfer.base import (
    Item,
    NoTransfer,
    StemPair,
    StemRule,
    StemTransfer,
)
from stemlab.weights.transfer.inflate import Inflation, inflate_2d_to_3d, is_2d_checkpoint
from stemlab.weights.transfer.kernels import resize_kernel
from stemlab.weights.transfer.rules import STEM_TRANSFERS, stem_output_width, transfer_stem

__all__ = [
    "STEM_TRANSFERS",
    "Inflation",
    "Item",
    "NoTransfer",
    "StemPair",
    "StemRule",
    "StemTransfer",
    "inflate_2d_to_3d",
    "is_2d_checkpoint",
    "resize_kernel",
    "stem_output_width",
    "transfer_stem",
]
