"""Classification losses: cross-entropy (with label smoothing) and focal loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stemlab.train.config import TrainConfig

__all__ = ["FocalLoss", "build_loss"]


class FocalLoss(nn.Module):
    """Focal loss ``-alpha * (1 - p_t) ** gamma * log(p_t)``, averaged over the batch.

    Args:
        gamma: focusing exponent; 0 gives cross-entropy (times ``alpha``).
        alpha: constant weight, or ``None`` for 1.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = self.alpha * loss
        return loss.mean()


def build_loss(config: TrainConfig) -> nn.Module:
    """The training criterion ``config`` asks for."""
    if config.loss == "focal":
        return FocalLoss(config.focal_gamma, config.focal_alpha)
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
