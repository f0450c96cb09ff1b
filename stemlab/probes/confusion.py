"""Confusion matrix of a classifier on a fixed set of clips."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from stemlab._modes import preserved_modes
from stemlab._validation import check_positive_int
from stemlab.probes._modules import check_model, model_device
from stemlab.probes._plots import new_figure
from stemlab.probes.contract import (
    CellContext,
    FigureSpec,
    ProbeOutput,
    StudyProbe,
    StudyView,
    register_probe,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["confusion_matrix", "plot_confusion_matrices"]


@torch.no_grad()
def confusion_matrix(
    model: nn.Module, data: Iterable[Sequence[Any]], *, num_classes: int
) -> np.ndarray:
    """Counts ``C[true, predicted]`` of ``model``'s top-1 predictions over ``data``.

    Args:
        model: a classifier; run in eval mode, its mode is restored.
        data: batches ``(inputs, labels, ...)``.
        num_classes: number of classes.

    Returns:
        An int64 array ``(num_classes, num_classes)``.

    Raises:
        TypeError: if ``model`` is not a module.
        ValueError: if a label or prediction is outside ``[0, num_classes)``.
    """
    check_model(model)
    check_positive_int("num_classes", num_classes)
    device = model_device(model)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    with preserved_modes(model):
        model.eval()
        for batch in data:
            inputs, labels = batch[0], torch.as_tensor(batch[1])
            predicted = model(inputs.to(device)).argmax(1).cpu()
            if predicted.max() >= num_classes or labels.max() >= num_classes or labels.min() < 0:
                raise ValueError(
                    f"labels/predictions must lie in [0, {num_classes}), got labels "
                    f"{labels.min().item()}..{labels.max().item()} and predictions up to "
                    f"{predicted.max().item()}"
                )
            np.add.at(matrix, (labels.numpy(), predicted.numpy()), 1)
    return matrix


def _run_in_study(context: CellContext) -> ProbeOutput:
    num_classes = int(context.options["num_classes"])
    matrix = confusion_matrix(context.model, context.batches(), num_classes=num_classes)
    return ProbeOutput(
        metrics={"probe_top1": float(np.trace(matrix) / max(1, matrix.sum()))},
        arrays={"matrix": matrix},
    )


def plot_confusion_matrices(
    matrices: dict[str, np.ndarray], *, class_names: Sequence[str] | None = None
) -> Figure:
    """One row-normalised confusion matrix per group (counts written in the cells)."""
    names = list(matrices)
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure = new_figure(3.1 * columns + 0.8, 3.0 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False)
    image = None
    for ax, name in zip(axes.flat, names):
        matrix = matrices[name]
        k = matrix.shape[0]
        labels = list(class_names) if class_names and len(class_names) == k else list(range(k))
        share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        image = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(int(matrix[i, j])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black",
                )
        ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted class", fontsize=8)
        ax.set_ylabel("true class", fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    if image is not None:
        figure.colorbar(image, ax=axes, shrink=0.6, label="share of the true class's clips")
    return figure


def _figures(view: StudyView) -> list[FigureSpec]:
    trained = view.trained()
    matrices: dict[str, np.ndarray] = {}
    for _, cell in trained.iterrows():
        matrix = view.arrays(cell["key"]).get("confusion.matrix")
        if matrix is None:
            continue
        label = view.label(cell["backbone"], cell["stem"])
        matrices[label] = matrices.get(label, 0) + matrix
    if not matrices:
        return []
    names = view.config.get("class_names")
    seeds = trained["seed"].nunique()
    return [
        FigureSpec(
            "confusion",
            f"Confusion matrices of the trained models on the probe clips, summed over {seeds} "
            "seed(s); colour: share of each true class, numbers: clip counts.",
            lambda: plot_confusion_matrices(matrices, class_names=names),
        )
    ]


PROBE = register_probe(
    StudyProbe(
        name="confusion",
        description="confusion matrix of the trained model on the probe clips",
        run=_run_in_study,
        needs=frozenset({"data"}),
        figures=_figures,
        order=40,
    )
)
