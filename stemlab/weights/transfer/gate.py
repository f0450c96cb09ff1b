"""Squeeze-excitation gates the checkpoint lacks start as the identity."""

from __future__ import annotations

from typing import Any

import torch

from stemlab.stems.layers import SqueezeExcitation
from stemlab.weights.transfer.base import Item, StemPair, Working

__all__ = ["add_identity_gates"]


def add_identity_gates(pair: StemPair, working: Working, metrics: dict[str, Any]) -> bool:
    """Squeeze-excitation gates the checkpoint lacks start as the identity (``fc2`` zeroed)."""
    changed = False
    for name, module in pair.stem.named_modules():
        if not isinstance(module, SqueezeExcitation):
            continue
        prefix = f"{pair.stem_prefix}{name}."
        keys = [k for k in pair.target if k.startswith(prefix)]
        if any(k in working for k in keys):
            continue
        for key in keys:
            if key.startswith(prefix + "fc2."):
                value = torch.zeros_like(pair.target[key])
                note = "zeroed: the gate 2*sigmoid(0) = 1 starts as the identity (exact)"
            else:
                value = pair.target[key].clone()
                note = "keeps its init (with fc2 zeroed the gate is exactly 1)"
            working[key] = Item(value, (), [note], from_checkpoint=False)
        changed = True
    return changed
