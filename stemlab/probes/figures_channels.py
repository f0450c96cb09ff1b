"""Report figures of the channel probes: trained-minus-init activations and the CKA matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stemlab.probes._plots import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_activation_change", "plot_cka_matrix"]


def plot_activation_change(rows: pd.DataFrame, stats: Sequence[str]) -> Figure:
    """Trained minus init of activation statistics by layer role, one line per group.

    Args:
        rows: activation table rows with ``group``, ``key``, ``state`` (``"trained"`` /
            ``"init"``), ``role``, ``call`` and the ``stats`` columns.
        stats: statistic columns, one panel each.

    Returns:
        The figure.

    Raises:
        ValueError: no statistic, or no role measured in both states.
    """
    if not stats:
        raise ValueError("stats must name at least one activation statistic")
    rows = rows[rows["role"].notna()]
    if "call" in rows:
        rows = rows[rows["call"] == 0]
    roles = list(dict.fromkeys(rows["role"]))
    index = ["group", "key", "role"]
    trained = rows[rows["state"] == "trained"].set_index(index)
    initial = rows[rows["state"] == "init"].set_index(index)
    shared = trained.index.intersection(initial.index)
    if shared.empty:
        raise ValueError("no layer role was measured both trained and before training")
    change = trained.loc[shared, list(stats)] - initial.loc[shared, list(stats)]
    change = change.reset_index()
    positions = {role: i for i, role in enumerate(roles)}
    figure = new_figure(max(6.0, 0.7 * len(roles) + 3.5), 2.1 * len(stats) + 0.8)
    axes = figure.subplots(len(stats), 1, sharex=True, squeeze=False)[:, 0]
    groups = list(dict.fromkeys(change["group"]))
    for ax, stat in zip(axes, stats):
        for i, name in enumerate(groups):
            part = change[change["group"] == name].groupby("role", sort=False)[stat].mean()
            part = part.reindex([r for r in roles if r in part.index])
            ax.plot(
                [positions[r] for r in part.index],
                part.to_numpy(float),
                marker="o",
                ms=3,
                color=f"C{i % 10}",
                label=str(name),
            )
        ax.axhline(0.0, color="gray", lw=1)
        ax.set_ylabel(f"{stat.replace('_', ' ')}\ntrained - init", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xticks(range(len(roles)), roles, fontsize=8)
    axes[-1].set_xlabel("layer (by role)")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    figure.suptitle("What training changed in the activations (smallest seed)", fontsize=10)
    return figure


def plot_cka_matrix(
    matrix: pd.DataFrame,
    *,
    stems: Sequence[str],
    layers: Sequence[str],
    title: str,
    reference: str | None = None,
) -> Figure:
    """Stem x stem CKA per layer, trained (top row) and before training (bottom row).

    Off-diagonal cells: CKA between the two stems' models of the same seed, averaged over
    seeds; diagonal cells (outlined): the seed-to-seed floor, CKA between two seeds of the same
    stem, averaged over seed pairs.

    Args:
        matrix: rows ``state, layer, stem_a, stem_b, cka_mean`` (as the ``cka_matrix`` table).
        stems: the stems, in axis order.
        layers: the layer roles, one column of panels each.
        title: the figure title.
        reference: a stem whose row and column labels are set in bold (the CKA reference).

    Returns:
        The figure.

    Raises:
        ValueError: no stems or no layers.
    """
    from matplotlib.patches import Rectangle

    if not stems or not layers:
        raise ValueError("plot_cka_matrix needs at least one stem and one layer")
    states = [s for s in ("trained", "init") if (matrix["state"] == s).any()] or ["trained"]
    size = len(stems)
    cell = min(0.5, 13.0 / (size * len(layers)))  # inches per matrix entry; at most ~16 wide
    figure = new_figure(cell * size * len(layers) + 2.6, cell * size * len(states) + 1.5)
    axes = figure.subplots(len(states), len(layers), squeeze=False)
    position = {stem: i for i, stem in enumerate(stems)}
    image = None
    for r, state in enumerate(states):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            grid = np.full((size, size), np.nan)
            part = matrix[(matrix["state"] == state) & (matrix["layer"] == layer)]
            for row in part.itertuples():
                if row.stem_a in position and row.stem_b in position:
                    grid[position[row.stem_a], position[row.stem_b]] = row.cka_mean
            image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis")
            for i in range(size):
                for j in range(size):
                    if np.isfinite(grid[i, j]):
                        ax.text(
                            j,
                            i,
                            f"{grid[i, j]:.2f}",
                            ha="center",
                            va="center",
                            fontsize=6 if size > 5 else 7,
                            color="black" if grid[i, j] > 0.6 else "white",
                        )
                ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.2))
            ax.set_xticks(range(size))
            ax.set_yticks(range(size))
            ax.set_xticklabels(stems if r == len(states) - 1 else [], rotation=60, fontsize=7)
            ax.set_yticklabels(stems if c == 0 else [], fontsize=7)
            for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
                for label in labels:
                    if label.get_text() == reference:
                        label.set_fontweight("bold")
            if r == 0:
                ax.set_title(layer, fontsize=9)
            if c == 0:
                ax.set_ylabel("trained" if state == "trained" else "before training", fontsize=9)
    if image is not None:
        bar = figure.colorbar(image, ax=axes, shrink=0.8)
        bar.set_label("linear CKA (probe clips)", fontsize=8)
    figure.suptitle(
        f"{title}\noff the diagonal: two stems, same seed; on the diagonal (red outline): the "
        "same stem, two seeds (the floor)",
        fontsize=10,
    )
    return figure
