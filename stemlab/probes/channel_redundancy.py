"""Channel redundancy: pairwise correlation of a layer's channels and the effective rank.

Each channel's activations over every sample and position are one variable; their Pearson
correlations and covariance are accumulated over batches from float64 sums and cross-products
(shifted by the first batch's channel means for accuracy), so memory stays at ``C x C``.
The effective rank is the participation ratio of the covariance spectrum,
``(sum lambda)^2 / sum lambda^2 = tr(S)^2 / ||S||_F^2``: ``C`` for equal, uncorrelated channels,
1 when all channels are multiples of one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from stemlab._validation import check_positive_float
from stemlab.probes._baselines import init_columns, on_trained_and_init, training_change_findings
from stemlab.probes._modules import check_model, first_tensor, model_device
from stemlab.probes.cka import _evaluating, _iter_batches, _resolve_layer
from stemlab.probes.contract import (
    CellContext,
    ProbeOutput,
    StudyProbe,
    StudyView,
    SummaryColumn,
    register_probe,
)

__all__ = ["ChannelMoments", "channel_redundancy", "effective_rank"]


class ChannelMoments:
    """Running float64 first and second moments of the channels (dim 1) of activation tensors."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sums: torch.Tensor | None = None
        self.products: torch.Tensor | None = None

    def update(self, activation: torch.Tensor) -> None:
        """Add every position of every sample of ``activation`` (``(N, C, ...)``)."""
        if activation.ndim < 2:
            raise ValueError(
                f"activations need channels in dim 1, got shape {tuple(activation.shape)}"
            )
        rows = activation.detach().movedim(1, -1).reshape(-1, activation.shape[1])
        rows = rows.to(torch.float64)
        if self.shift is None:
            self.shift = rows.mean(dim=0)
            channels = rows.shape[1]
            self.sums = rows.new_zeros(channels)
            self.products = rows.new_zeros(channels, channels)
        elif rows.shape[1] != self.shift.shape[0]:
            raise ValueError(
                f"channel count changed between batches: {self.shift.shape[0]} then {rows.shape[1]}"
            )
        centred = rows - self.shift
        self.sums += centred.sum(dim=0)
        self.products += centred.T @ centred
        self.count += rows.shape[0]

    def covariance(self) -> np.ndarray:
        """The population covariance ``(C, C)`` of the channels."""
        if self.count == 0 or self.sums is None or self.products is None:
            raise ValueError("no activations were recorded")
        mean = self.sums / self.count
        covariance = self.products / self.count - torch.outer(mean, mean)
        return covariance.cpu().numpy()


def _correlation(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlations (NaN on rows/columns of constant channels) and the dead mask."""
    variance = np.clip(np.diag(covariance), 0.0, None)
    scale = variance.max() if variance.size else 0.0
    dead = variance <= 1e-12 * scale if scale > 0 else np.ones_like(variance, dtype=bool)
    std = np.sqrt(np.where(dead, 1.0, variance))
    correlation = covariance / np.outer(std, std)
    correlation[dead, :] = np.nan
    correlation[:, dead] = np.nan
    return np.clip(correlation, -1.0, 1.0), dead


def effective_rank(covariance: np.ndarray) -> float:
    """Participation ratio ``(sum lambda)^2 / sum lambda^2`` of a symmetric covariance matrix."""
    squared = float(np.sum(covariance * covariance))
    return float(np.trace(covariance)) ** 2 / squared if squared > 0 else math.nan


def channel_redundancy(
    model: nn.Module,
    data: Iterable[Any],
    *,
    layer: str = "stem",
    threshold: float = 0.95,
    max_batches: int | None = None,
) -> pd.DataFrame:
    """Pairwise correlation of ``layer``'s output channels over ``data``, and its effective rank.

    Runs in eval mode under ``no_grad``; the model's modes are restored and the hook removed.

    Args:
        model: the model.
        data: iterable of batches ``(clip, label, ...)`` (labels unused).
        layer: module whose output channels (dim 1) are compared, e.g. ``"stem"``.
        threshold: pairs with ``|correlation| >= threshold`` are near duplicates; in (0, 1].
        max_batches: use at most this many batches.

    Returns:
        DataFrame ``channel_a, channel_b, correlation, near_duplicate``, one row per pair
        ``a < b``. A constant (dead) channel has NaN correlations and is never a near duplicate.
        ``.attrs``: ``layer``, ``num_channels``, ``effective_rank`` (participation ratio of the
        channel covariance spectrum), ``near_duplicate_pairs``, ``dead_channels`` (list),
        ``positions`` (values per channel), ``threshold``.

    Raises:
        TypeError / ValueError: unknown layer (with close matches), bad threshold, data or
            ``max_batches``.
    """
    check_model(model)
    threshold = check_positive_float("threshold", threshold)
    if threshold > 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    module = _resolve_layer(model, layer)
    moments = ChannelMoments()

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        tensor = first_tensor(output)
        if tensor is None:
            raise ValueError(f"layer {layer!r} returned no tensor")
        moments.update(tensor)

    device = model_device(model)
    with _evaluating(model):
        handle = module.register_forward_hook(hook)
        try:
            for x, _ in _iter_batches(data, max_batches=max_batches):
                model(x.to(device))
        finally:
            handle.remove()
    if moments.count == 0:
        raise ValueError(f"data produced no activation of layer {layer!r}")
    covariance = moments.covariance()
    correlation, dead = _correlation(covariance)
    first, second = np.triu_indices(correlation.shape[0], k=1)
    values = correlation[first, second]
    near = np.abs(np.nan_to_num(values, nan=0.0)) >= threshold
    frame = pd.DataFrame(
        {
            "channel_a": first.astype(np.int64),
            "channel_b": second.astype(np.int64),
            "correlation": values,
            "near_duplicate": near,
        }
    )
    frame.attrs.update(
        {
            "layer": layer,
            "num_channels": int(correlation.shape[0]),
            "effective_rank": effective_rank(covariance),
            "near_duplicate_pairs": int(near.sum()),
            "dead_channels": [int(c) for c in np.flatnonzero(dead)],
            "positions": moments.count,
            "threshold": threshold,
        }
    )
    return frame


# Study integration: how this probe runs in a study cell and what it adds to the report.


def _redundancy_run(context: CellContext) -> ProbeOutput:
    data = context.batch_list("probe_samples", 128)

    def measure(model: nn.Module) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        table = channel_redundancy(model, data)
        attrs = table.attrs
        width = int(attrs["num_channels"])
        metrics = {
            "effective_rank": float(attrs["effective_rank"]),
            "effective_rank_fraction": float(attrs["effective_rank"]) / width,
            "near_duplicate_pairs": int(attrs["near_duplicate_pairs"]),
            "mean_abs_correlation": float(table["correlation"].abs().mean()),
            "dead_stem_channels": len(attrs.get("dead_channels", [])),
        }
        return metrics, {
            "channel_redundancy": table[table["near_duplicate"]].to_dict(orient="records")
        }

    return on_trained_and_init(context, measure)


def _redundancy_findings(view: StudyView) -> list[str]:
    return training_change_findings(
        view,
        "effective_rank_fraction",
        "Effective rank of the stem output / stem width (lower: more redundant channels)",
    )


register_probe(
    StudyProbe(
        name="channel_redundancy",
        description="correlation between the stem's channels and their effective rank",
        run=_redundancy_run,
        needs=frozenset({"data"}),
        tables=("channel_redundancy",),
        summary=init_columns(
            (
                SummaryColumn(
                    "effective_rank",
                    "participation ratio of the stem output's channel covariance (probe clips)",
                ),
                SummaryColumn("effective_rank_fraction", "effective_rank / stem width"),
                SummaryColumn(
                    "near_duplicate_pairs", "stem channel pairs with |correlation| >= 0.95"
                ),
                SummaryColumn("mean_abs_correlation", "mean |correlation| over stem channel pairs"),
            )
        ),
        findings=_redundancy_findings,
        order=81,
    )
)
