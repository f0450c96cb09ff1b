"""Study declarations of the channel probes (moved into their modules later)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stemlab.probes._plots import new_figure
from stemlab.probes.contract import (
    CellContext,
    FigureSpec,
    ProbeOutput,
    StudyProbe,
    StudyView,
    SummaryColumn,
    register_probe,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__: list[str] = []


def _batches(context: CellContext, option: str, default: int) -> list[Any]:
    limit = int(context.options.get(option, default))
    taken, count = [], 0
    for batch in context.batches():
        if count >= limit:
            break
        taken.append(batch)
        count += len(batch[0])
    return taken


def _groups(view: StudyView, rows: pd.DataFrame) -> list[str]:
    return [view.label(b, s) for b, s in zip(rows["backbone"], rows["stem"])]


# ---------------------------------------------------------------- channel_usage


def _usage_run(context: CellContext) -> ProbeOutput:
    from stemlab.probes.channel_usage import channel_usage

    table = channel_usage(context.model)
    count = int(table.attrs["channels_for_90pct"])
    return ProbeOutput(
        metrics={
            "usage_channels_90": count,
            "usage_fraction_90": count / len(table),
            "usage_top_share": float(table["share"].max()),
        },
        tables={"channel_usage": table.to_dict(orient="records")},
    )


def _usage_figures(view: StudyView) -> list[FigureSpec]:
    table = view.tables.get("channel_usage")
    if table is None or table.empty:
        return []
    first = set(view.first_seed_cells()["key"])
    rows = table[table["key"].isin(first)]
    rows = rows.assign(group=_groups(view, rows))

    def make() -> Figure:
        figure = new_figure(6.8, 4.2)
        ax = figure.subplots()
        for i, (name, group) in enumerate(rows.groupby("group", sort=False)):
            shares = np.sort(group["share"].to_numpy(dtype=float))[::-1]
            x = np.arange(1, len(shares) + 1) / len(shares)
            ax.plot(np.r_[0, x], np.r_[0, np.cumsum(shares)], color=f"C{i % 10}", label=name)
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="equal use")
        ax.axhline(0.9, color="gray", ls="--", lw=1)
        ax.set_xlabel("fraction of stem channels (most-read first)")
        ax.set_ylabel("cumulative share of layer1's input weight norm")
        ax.set_title("How layer1 reads the stem's channels (smallest seed)", fontsize=10)
        ax.grid(alpha=0.3)
        figure.legend(loc="outside right upper", fontsize=8)
        return figure

    return [
        FigureSpec(
            "channel_usage",
            "Channel usage: cumulative share of layer1's input weight (L2 norm over each stem "
            "channel in the first block's first conv and projection) against the fraction of "
            "stem channels; dashed: 90%, dotted: every channel read equally.",
            make,
        )
    ]


register_probe(
    StudyProbe(
        name="channel_usage",
        description="how strongly the first block reads each stem channel (weight norms)",
        run=_usage_run,
        tables=("channel_usage",),
        summary=(
            SummaryColumn(
                "usage_channels_90", "stem channels carrying 90% of layer1's input weight norm"
            ),
            SummaryColumn("usage_fraction_90", "usage_channels_90 / stem width"),
        ),
        figures=_usage_figures,
        order=80,
    )
)

# ---------------------------------------------------------------- channel_redundancy


def _redundancy_run(context: CellContext) -> ProbeOutput:
    from stemlab.probes.channel_redundancy import channel_redundancy

    table = channel_redundancy(context.model, _batches(context, "probe_samples", 128))
    attrs = table.attrs
    width = int(attrs["num_channels"])
    return ProbeOutput(
        metrics={
            "effective_rank": float(attrs["effective_rank"]),
            "effective_rank_fraction": float(attrs["effective_rank"]) / width,
            "near_duplicate_pairs": int(attrs["near_duplicate_pairs"]),
            "mean_abs_correlation": float(table["correlation"].abs().mean()),
            "dead_stem_channels": len(attrs.get("dead_channels", [])),
        },
        tables={"channel_redundancy": table[table["near_duplicate"]].to_dict(orient="records")},
    )


register_probe(
    StudyProbe(
        name="channel_redundancy",
        description="correlation between the stem's channels and their effective rank",
        run=_redundancy_run,
        needs=frozenset({"data"}),
        tables=("channel_redundancy",),
        summary=(
            SummaryColumn(
                "effective_rank",
                "participation ratio of the stem output's channel covariance (probe clips)",
            ),
            SummaryColumn("effective_rank_fraction", "effective_rank / stem width"),
            SummaryColumn("near_duplicate_pairs", "stem channel pairs with |correlation| >= 0.95"),
            SummaryColumn("mean_abs_correlation", "mean |correlation| over stem channel pairs"),
        ),
        order=81,
    )
)

# ---------------------------------------------------------------- channel_ablation

CURVE_POINTS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)


def _ablation_run(context: CellContext) -> ProbeOutput:
    from stemlab.probes.channel_ablation import ablation_curve, channel_ablation

    data = _batches(context, "ablation_samples", 64)
    table = channel_ablation(context.model, data, metric="loss")
    width = len(table)
    steps = sorted({round(f * width) for f in CURVE_POINTS})
    curve = ablation_curve(
        context.model,
        data,
        importance=table,
        metric="accuracy",
        seed=int(context.config.get("seed", 0)),
        steps=steps,
    )
    curve["fraction"] = curve["removed"] / width
    quarter = curve[curve["removed"] == round(0.25 * width)].set_index("order")["metric_value"]
    return ProbeOutput(
        metrics={
            "ablation_max_loss_rise": float(table["drop"].max()),
            "ablation_quarter_importance": float(quarter.get("importance", np.nan)),
            "ablation_quarter_random": float(quarter.get("random", np.nan)),
        },
        tables={
            "channel_ablation": table.to_dict(orient="records"),
            "ablation_curve": curve.to_dict(orient="records"),
        },
    )


def _ablation_figures(view: StudyView) -> list[FigureSpec]:
    curve = view.tables.get("ablation_curve")
    if curve is None or curve.empty:
        return []
    curve = curve.assign(group=_groups(view, curve))
    chance = None
    if "num_classes" in view.cells and view.cells["num_classes"].notna().any():
        chance = 1.0 / float(view.cells["num_classes"].dropna().iloc[0])
    groups = list(dict.fromkeys(curve["group"]))

    def make() -> Figure:
        columns = min(4, len(groups))
        rows = -(-len(groups) // columns)
        figure = new_figure(2.9 * columns + 0.6, 2.5 * rows + 0.6)
        axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
        for ax, name in zip(axes.flat, groups):
            part = curve[curve["group"] == name]
            for order, color in (("importance", "C3"), ("random", "C0")):
                lines = part[part["order"] == order].groupby("fraction")["metric_value"]
                mean, low, high = lines.mean(), lines.min(), lines.max()
                ax.plot(
                    100 * mean.index,
                    100 * mean.values,
                    marker="o",
                    ms=3,
                    color=color,
                    label=f"{order} order",
                )
                ax.fill_between(
                    100 * mean.index, 100 * low.values, 100 * high.values, color=color, alpha=0.15
                )
            if chance is not None:
                ax.axhline(100 * chance, color="gray", ls="--", lw=1, label="chance")
            ax.set_title(name, fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("stem channels zeroed (%)")
        for ax in axes[:, 0]:
            ax.set_ylabel("top-1 on probe clips (%)")
        for ax in list(axes.flat)[len(groups) :]:
            ax.set_visible(False)
        figure.legend(
            *axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8
        )
        return figure

    seeds = view.trained()["seed"].nunique() if not view.trained().empty else 0
    return [
        FigureSpec(
            "ablation_curves",
            "Cumulative ablation of stem channels: top-1 as more channels are zeroed, most "
            "important first (red; importance = loss rise when zeroed alone) or in random order "
            f"(blue); lines: mean over {seeds} seed(s), bands: min..max; dashed: chance.",
            make,
        )
    ]


def _ablation_findings(view: StudyView) -> list[str]:
    cells = view.trained()
    needed = {"ablation_quarter_importance", "ablation_quarter_random"}
    if cells.empty or not needed <= set(cells) or view.compare is None:
        return []
    rows = cells.dropna(subset=list(needed))
    parts, flat = [], []
    for (backbone, stem), group in rows.groupby(["backbone", "stem"], sort=False):
        long = pd.concat(
            [
                group.assign(order="random", value=group["ablation_quarter_random"]),
                group.assign(order="importance", value=group["ablation_quarter_importance"]),
            ]
        )[["order", "seed", "value"]]
        result = view.compare(long, metric="value", by="order", baseline="random").iloc[0]
        label = view.label(backbone, stem)
        if result["significant"] and result["diff"] < 0:
            parts.append(
                f"{label} {100 * result['diff']:+.1f} points (95% CI {100 * result['ci_low']:+.1f} "
                f"to {100 * result['ci_high']:+.1f}, p {result['p_value']:.2g})"
            )
        else:
            flat.append(label)
    n = int(rows["seed"].nunique())
    lines = []
    if parts:
        lines.append(
            "Zeroing the most important quarter of stem channels costs more top-1 than a random "
            f"quarter (paired over {n} seeds; each stem tested once): " + "; ".join(parts) + "."
        )
    if flat:
        lines.append(
            f"For {', '.join(f'`{s}`' for s in flat)} the important quarter is not "
            f"distinguishable from a random quarter at n={n}: no evidence that these models "
            "rely on a few stem channels."
        )
    return lines


register_probe(
    StudyProbe(
        name="channel_ablation",
        description="loss rise when each stem channel is zeroed, and cumulative ablation curves",
        run=_ablation_run,
        needs=frozenset({"data"}),
        tables=("channel_ablation", "ablation_curve"),
        summary=(
            SummaryColumn(
                "ablation_max_loss_rise", "largest loss rise from zeroing one stem channel"
            ),
            SummaryColumn(
                "ablation_quarter_importance",
                "top-1 with the most important quarter of stem channels zeroed",
            ),
            SummaryColumn(
                "ablation_quarter_random", "top-1 with a random quarter of stem channels zeroed"
            ),
        ),
        figures=_ablation_figures,
        findings=_ablation_findings,
        order=82,
    )
)

# ---------------------------------------------------------------- cka


def _cka_run(context: CellContext) -> ProbeOutput:
    from stemlab.probes.cka import gram_matrices

    grams = gram_matrices(context.model, _batches(context, "probe_samples", 128))
    arrays = {f"gram.{layer}": np.stack(values) for layer, values in grams.items()}
    arrays["layers"] = np.array(list(grams), dtype=str)  # network order of the layers
    return ProbeOutput(arrays=arrays)


def _cell_grams(view: StudyView, key: str) -> dict[str, list[np.ndarray]]:
    arrays = view.arrays(key)
    order = view.arrays(key).get("cka.layers")
    names = (
        [str(n) for n in order]
        if order is not None
        else sorted(n.removeprefix("cka.gram.") for n in arrays if n.startswith("cka.gram."))
    )
    return {name: list(arrays[f"cka.gram.{name}"]) for name in names}


def _roles(layers: list[str]) -> dict[str, str]:
    return {layer: ("stem output" if layer == "stem" else layer) for layer in layers}


def _diagonal(a: dict[str, list[np.ndarray]], b: dict[str, list[np.ndarray]]) -> dict[str, float]:
    from stemlab.probes.cka import cka_from_grams

    table = cka_from_grams(a, b)
    same = table[table["layer_a"] == table["layer_b"]]
    return dict(zip(same["layer_a"], same["cka"]))


def _cka_combine(view: StudyView) -> dict[str, pd.DataFrame]:
    trained = view.trained()
    if trained.empty:
        return {}
    rows = []
    for backbone, cells in trained.groupby("backbone", sort=False):
        grams = {key: _cell_grams(view, key) for key in cells["key"]}
        grams = {k: g for k, g in grams.items() if g}
        cells = cells[cells["key"].isin(grams)]
        if cells.empty:
            continue
        by = {(r.stem, int(r.seed)): r.key for r in cells.itertuples()}
        baseline = view.baseline if view.baseline in set(cells["stem"]) else None
        for (stem, seed), key in by.items():
            roles = _roles(list(grams[key]))
            if baseline is not None and stem != baseline and (baseline, seed) in by:
                for layer, value in _diagonal(grams[key], grams[by[(baseline, seed)]]).items():
                    rows.append(
                        {
                            "backbone": backbone,
                            "stem": stem,
                            "reference": baseline,
                            "comparison": "vs_baseline",
                            "seed": seed,
                            "seed_b": seed,
                            "layer": roles.get(layer, layer),
                            "cka": value,
                        }
                    )
        for stem in dict.fromkeys(cells["stem"]):
            seeds = sorted(s for (st, s) in by if st == stem)
            for s1, s2 in itertools.combinations(seeds, 2):
                roles = _roles(list(grams[by[(stem, s1)]]))
                for layer, value in _diagonal(grams[by[(stem, s1)]], grams[by[(stem, s2)]]).items():
                    rows.append(
                        {
                            "backbone": backbone,
                            "stem": stem,
                            "reference": stem,
                            "comparison": "same_stem_other_seed",
                            "seed": s1,
                            "seed_b": s2,
                            "layer": roles.get(layer, layer),
                            "cka": value,
                        }
                    )
    return {"cka": pd.DataFrame(rows)}


def _cka_figures(view: StudyView) -> list[FigureSpec]:
    table = view.tables.get("cka")
    if table is None or table.empty or not (table["comparison"] == "vs_baseline").any():
        return []
    layers = list(dict.fromkeys(table["layer"]))
    positions = {layer: i for i, layer in enumerate(layers)}
    versus = table[table["comparison"] == "vs_baseline"]
    floor = table[table["comparison"] == "same_stem_other_seed"]

    def make() -> Figure:
        figure = new_figure(8.5, 4.4)
        ax = figure.subplots()
        if not floor.empty:
            by_layer = floor.groupby("layer")["cka"]
            x = [positions[layer] for layer in layers if layer in by_layer.groups]
            low = [by_layer.get_group(layer).min() for layer in layers if layer in by_layer.groups]
            high = [by_layer.get_group(layer).max() for layer in layers if layer in by_layer.groups]
            mean = [
                by_layer.get_group(layer).mean() for layer in layers if layer in by_layer.groups
            ]
            ax.fill_between(
                x, low, high, color="gray", alpha=0.25, label="same stem, other seed (min..max)"
            )
            ax.plot(x, mean, color="gray", ls="--", lw=1.2, label="same stem, other seed (mean)")
        for i, (stem, group) in enumerate(versus.groupby("stem", sort=False)):
            stats = (
                group.groupby("layer")["cka"].agg(["mean", "min", "max"]).reindex(layers).dropna()
            )
            xs = [positions[layer] + (i - len(layers) / 2) * 0.01 for layer in stats.index]
            ax.errorbar(
                xs,
                stats["mean"],
                yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                marker="o",
                ms=4,
                capsize=3,
                color=f"C{i % 10}",
                label=f"{stem} vs {view.baseline}",
            )
        ax.set_xticks(range(len(layers)), layers)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("layer (aligned by role)")
        ax.set_ylabel("linear CKA on the probe clips")
        ax.set_title(
            f"How far down does changing the stem reach? (reference: {view.baseline})", fontsize=10
        )
        ax.grid(alpha=0.3)
        figure.legend(loc="outside right upper", fontsize=8)
        return figure

    seeds = int(versus["seed"].nunique())
    return [
        FigureSpec(
            "cka_by_stage",
            "Minibatch linear CKA (unbiased HSIC, Nguyen et al. 2021) between each stem's trained "
            f"model and the `{view.baseline}` model of the same seed, per layer (points: mean over "
            f"{seeds} seed(s), bars: min..max); grey: CKA between two seeds of the same stem, "
            "the noise floor. A stem change reaches a layer where its points sit below the band.",
            make,
        )
    ]


def _cka_findings(view: StudyView) -> list[str]:
    table = view.tables.get("cka")
    if table is None or table.empty or view.compare is None:
        return []
    versus = table[table["comparison"] == "vs_baseline"]
    floor = table[table["comparison"] == "same_stem_other_seed"]
    if versus.empty or floor.empty:
        return []
    layers = list(dict.fromkeys(table["layer"]))
    reaching, quiet = [], []
    for stem, group in versus.groupby("stem", sort=False):
        reached: list[tuple[str, pd.Series]] = []
        for layer in layers:
            ours = group[group["layer"] == layer]["cka"].to_numpy()
            noise = floor[(floor["layer"] == layer) & floor["stem"].isin([stem, view.baseline])]
            noise = noise["cka"].to_numpy()
            if len(ours) < 2 or len(noise) < 2:
                continue
            long = pd.DataFrame(
                {
                    "arm": ["floor"] * len(noise) + ["stem"] * len(ours),
                    "pair": [f"f{i}" for i in range(len(noise))]
                    + [f"s{i}" for i in range(len(ours))],
                    "value": np.r_[noise, ours],
                }
            )
            row = view.compare(long, metric="value", by="arm", baseline="floor", pair_by="pair")
            row = row.iloc[0]
            if row["p_value"] * len(layers) < 0.05 and row["diff"] < 0:
                reached.append((layer, row))
        if reached:
            layer, row = reached[-1]
            reaching.append(
                f"`{stem}` through {', '.join(r[0] for r in reached)} (deepest, {layer}: CKA "
                f"{row['mean_b']:.2f} vs floor {row['mean_a']:.2f}, difference 95% CI "
                f"{row['ci_low']:+.2f} to {row['ci_high']:+.2f})"
            )
        else:
            quiet.append(stem)
    n = int(versus["seed"].nunique())
    lines = []
    if reaching:
        lines.append(
            f"CKA to the `{view.baseline}` model of the same seed falls below the seed-to-seed "
            f"floor (CKA between two seeds of the same stem) for: {'; '.join(reaching)}. Welch "
            f"t per layer over {n} seeds, Bonferroni over {len(layers)} layers."
        )
    if quiet:
        lines.append(
            f"CKA: {', '.join(f'`{s}`' for s in quiet)} stay within the seed-to-seed floor of "
            f"`{view.baseline}` at every layer: not distinguishable from a retrained baseline at "
            f"n={n}."
        )
    return lines


register_probe(
    StudyProbe(
        name="cka",
        description="Gram matrices on the probe clips; CKA between stems and seeds (report)",
        run=_cka_run,
        needs=frozenset({"data"}),
        combine=_cka_combine,
        figures=_cka_figures,
        findings=_cka_findings,
        tables=("cka",),
        order=83,
    )
)
