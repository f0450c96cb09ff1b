"""Another number of input channels: RGB -> grayscale, optical flow (2 or 2L), RGB + depth.

The cross-modality initialisation of TSN (Wang et al. 2016; timm's ``adapt_input_conv`` does the
same for 2-D): every new input channel gets the mean of the checkpoint's kernels over its input
channels, scaled by ``old_in / new_in``::

    W_new[:, j] = (old_in / new_in) * mean_c W[:, c] = (1 / new_in) * sum_c W[:, c]

so ``sum_j W_new[:, j] = sum_c W[:, c]``: an input whose channels all carry the same signal ``v``
gives exactly the response the checkpoint gave to ``(v, ..., v)``. This covers grayscale (1 channel:
the sum of the RGB kernels, exact for a gray clip replicated to RGB), flow with 2 or 2L channels
(all-equal channels, e.g. a constant field, answer as before) and RGB + depth (4 channels). For
RGB + depth the RGB kernels are *not* kept: a 4-channel input is not known to be RGB followed by
depth (it could equally be two flow frames), so every channel is treated alike, which keeps the
activation's magnitude for any input whose channels agree; the colour selectivity is averaged away.
"""

from __future__ import annotations

from typing import Any

from torch.nn.modules.conv import _ConvNd

from stemlab.weights.transfer.base import NoTransfer, StemPair, Working

__all__ = ["adapt_input_channels"]


def _model_input_conv(pair: StemPair) -> tuple[str, _ConvNd] | None:
    for name, module in pair.stem.named_modules():
        if isinstance(module, _ConvNd):
            return f"{pair.stem_prefix}{name}.weight", module
    return None


def _checkpoint_input_conv(pair: StemPair, working: Working) -> str | None:
    for key, item in working.items():
        if (
            key.startswith(pair.stem_prefix)
            and key.endswith(".weight")
            and item.from_checkpoint
            and item.tensor.dim() >= 3
        ):
            return key
    return None


def adapt_input_channels(pair: StemPair, working: Working, metrics: dict[str, Any]) -> bool:
    """The checkpoint's input conv reads ``old_in`` channels, the model's ``new_in``: mean, replicate.

    Runs before the structural rules so that they see the model's input width.
    """
    model_side = _model_input_conv(pair)
    key = _checkpoint_input_conv(pair, working)
    if model_side is None or key is None:
        return False
    _, conv = model_side
    item = working[key]
    old_in, new_in = int(item.tensor.shape[1]), int(conv.in_channels)
    if old_in == new_in:
        return False
    if conv.groups != 1:
        raise NoTransfer(
            f"{key}: the model's input conv is grouped ({conv.groups} groups); input channels "
            f"{old_in} -> {new_in} need a dense conv"
        )
    item.tensor = item.tensor.sum(1, keepdim=True).expand(-1, new_in, *item.tensor.shape[2:])
    item.tensor = item.tensor / new_in
    item.notes.append(
        f"input channels {old_in} -> {new_in}: each new channel's kernel is the mean of the "
        f"{old_in} input kernels x {old_in}/{new_in} (cross-modality init, TSN); exact when every "
        "input channel carries the same signal (a gray clip, a constant), so the activation's "
        "magnitude is kept"
    )
    metrics.update(in_channels=(old_in, new_in))
    return True
