"""Study declarations of the flops, grad_cam and filters probes (moved into their modules later)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

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

# ---------------------------------------------------------------- flops


def _stem_geometry(model: torch.nn.Module) -> dict[str, Any]:
    stem = model.stem
    convs = [m for m in stem.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    kernel = "+".join("x".join(str(k) for k in c.kernel_size) for c in convs)
    stride = getattr(stem, "stride", None)
    return {
        "stem_kernel": kernel,
        "stem_stride": "x".join(str(s) for s in stride) if stride is not None else "",
        "stem_width": int(stem.out_channels),
        "stem_params": int(sum(p.numel() for p in stem.parameters())),
    }


def _flops_run(context: CellContext) -> ProbeOutput:
    from stemlab.probes.flops import flops_table

    model = context.model
    if context.kind == "trained":
        table = flops_table(model, context.inputs[:1].to(context.device))
        total = float(table.loc[table["module"] == "", "flops"].iloc[0])
        return ProbeOutput(metrics={"train_gflops": total / 1e9})
    table = flops_table(model, context.inputs)
    total = table[table["module"] == ""].iloc[0]
    top = table[table["depth"] == 1].set_index("module")["flops"]
    stages = [info["module"] for info in getattr(model, "feature_info", [])[1:]]
    gflops = float(total["flops"]) / 1e9
    stem_gflops = float(top.get("stem", 0.0)) / 1e9
    metrics = {
        "params": int(total["params"]),
        "gflops": gflops,
        "gflops_conv_linear": float(total["flops_conv"] + total["flops_linear"]) / 1e9,
        "stem_gflops": stem_gflops,
        "downstream_gflops": gflops - stem_gflops,
        "first_stage_gflops": float(top.get(stages[0], math.nan)) / 1e9 if stages else None,
        "unsupported_ops": str(total.get("unsupported_ops", "") or ""),
        **_stem_geometry(model),
    }
    return ProbeOutput(metrics=metrics, tables={"flops": table.to_dict(orient="records")})


def plot_flops_by_module(rows: pd.DataFrame, *, group: str = "group") -> Figure:
    """Horizontal stacked GFLOPs (left) and parameters (right) per top-level module and group."""
    frame = rows[rows["depth"] == 1]
    modules = list(dict.fromkeys(frame["module"]))
    groups = list(dict.fromkeys(frame[group]))
    figure = new_figure(11.0, 0.42 * len(groups) + 1.8)
    axes = figure.subplots(1, 2, sharey=True)
    colors = {m: f"C{i % 10}" for i, m in enumerate(modules)}
    for ax, column, scale, label in (
        (axes[0], "flops", 1e9, "GFLOPs (one FMA = one flop)"),
        (axes[1], "params", 1e6, "parameters (millions)"),
    ):
        table = frame.pivot_table(index=group, columns="module", values=column, aggfunc="sum")
        table = table.reindex(index=groups, columns=modules).fillna(0) / scale
        left = np.zeros(len(groups))
        for module in modules:
            values = table[module].to_numpy()
            ax.barh(range(len(groups)), values, left=left, color=colors[module], label=module)
            left += values
        ax.set_xlim(0, left.max() * 1.05 if len(left) and left.max() > 0 else 1)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(groups)), groups, fontsize=8)
    axes[0].invert_yaxis()
    figure.legend(
        *axes[0].get_legend_handles_labels(), loc="outside right upper", fontsize=8, title="module"
    )
    return figure


def _flops_figures(view: StudyView) -> list[FigureSpec]:
    table = view.tables.get("flops")
    if table is None or table.empty:
        return []
    rows = table.assign(group=[f"{b}/{s}" for b, s in zip(table["backbone"], table["stem"])])
    if rows["backbone"].nunique() == 1:
        rows["group"] = rows["stem"]
    backbones = ", ".join(sorted(rows["backbone"].unique()))
    return [
        FigureSpec(
            "flops_breakdown",
            f"GFLOPs and parameters per top-level module of the full-size profiling models "
            f"({backbones}, random weights) at the profiling input.",
            lambda: plot_flops_by_module(rows),
        )
    ]


CONVENTION = (
    "FLOPs are counted by fvcore with one fused multiply-add = one flop: convolutions and linear "
    "layers exactly as torchvision's published GFLOPs; batch norm, activations, pooling and "
    "residual adds by fvcore-style per-element conventions (a small share of the total)."
)


def _flops_findings(view: StudyView) -> list[str]:
    summary = view.summary
    if "gflops" not in summary or summary["gflops"].isna().all():
        return []
    rows = summary.dropna(subset=["gflops"])
    cheap, dear = rows.loc[rows["gflops"].idxmin()], rows.loc[rows["gflops"].idxmax()]

    def name(row: pd.Series) -> str:
        profiled = row.get("profile_backbone") or row["backbone"]
        return f"`{profiled}` with `{row['stem']}`"

    lines = [
        f"Profiled at full size ({_profile_text(view.config)}), the {len(rows)} "
        f"(backbone, stem) rows span {cheap['gflops']:.2f} GFLOPs ({name(cheap)}) to "
        f"{dear['gflops']:.2f} GFLOPs ({name(dear)}), and {rows['params'].min() / 1e6:.2f} M to "
        f"{rows['params'].max() / 1e6:.2f} M parameters. {CONVENTION}"
    ]
    baseline = view.baseline
    if baseline is not None and "stem_gflops" in rows and baseline in set(rows["stem"]):
        parts = []
        for _, group in rows.groupby("backbone", sort=False):
            base = group[group["stem"] == baseline]
            if base.empty:
                continue
            base = base.iloc[0]
            for _, row in group[group["stem"] != baseline].iterrows():
                d_stem = row["stem_gflops"] - base["stem_gflops"]
                d_down = row["downstream_gflops"] - base["downstream_gflops"]
                parts.append(
                    f"{row['stem']} {row['gflops'] - base['gflops']:+.2f} "
                    f"(stem {d_stem:+.2f}, downstream {d_down:+.2f})"
                )
        if parts:
            lines.append(
                f"Cost of each stem change against `{baseline}`, in GFLOPs at the profiling input, "
                f"split into the stem itself and what it adds after the stem (a wider stem makes "
                f"the first stage read more channels): {'; '.join(parts)}."
            )
    return lines


def _profile_text(config: Any) -> str:
    profile = (config or {}).get("profile") or {}
    if not profile:
        return "training model"
    shape = "x".join(str(s) for s in profile.get("input", []))
    return f"input {shape}, random weights"


register_probe(
    StudyProbe(
        name="flops",
        description="FLOPs and parameters per module (fvcore; one FMA = one flop)",
        run=_flops_run,
        runs_on=frozenset({"trained", "profile"}),
        tables=("flops",),
        summary=(
            SummaryColumn("params", "parameters of the full-size profiling model", "profile"),
            SummaryColumn(
                "gflops", "GFLOPs of the profiling model at the profiling input", "profile"
            ),
            SummaryColumn(
                "gflops_conv_linear",
                "GFLOPs of its convolutions and linear layers only (torchvision's convention)",
                "profile",
            ),
            SummaryColumn("stem_gflops", "GFLOPs of the stem alone (profiling model)", "profile"),
            SummaryColumn(
                "downstream_gflops", "GFLOPs after the stem (profiling model)", "profile"
            ),
            SummaryColumn("stem_kernel", "kernel(s) of the stem's convolutions", "profile"),
            SummaryColumn("stem_stride", "total stride of the stem (t x h x w)", "profile"),
            SummaryColumn("stem_width", "stem output channels at full size", "profile"),
            SummaryColumn("stem_params", "parameters of the stem at full size", "profile"),
            SummaryColumn(
                "train_gflops",
                "GFLOPs of the trained CPU-scale model on one training clip",
            ),
        ),
        figures=_flops_figures,
        findings=_flops_findings,
        order=10,
    )
)

# ---------------------------------------------------------------- grad_cam

MIN_MAP_SIZE = 8


def default_gradcam_layer(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[str, int]:
    """The deepest stage whose maps are at least 8x8 at ``inputs`` (and that map's size).

    Falls back to the largest map when no stage reaches 8x8.
    """
    stages = [info["module"] for info in model.feature_info]
    sizes: dict[str, int] = {}
    handles = []
    try:
        for name in stages:
            module = model.get_submodule(name)

            def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
                tensor = out[0] if isinstance(out, (tuple, list)) else out
                if isinstance(tensor, torch.Tensor) and tensor.dim() >= 4:
                    sizes[name] = int(min(tensor.shape[-2:]))

            handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            model(inputs[:1])
    finally:
        for handle in handles:
            handle.remove()
    usable = [s for s in stages if sizes.get(s, 0) >= MIN_MAP_SIZE]
    if usable:
        return usable[-1], sizes[usable[-1]]
    best = max(sizes, key=lambda s: sizes[s])
    return best, sizes[best]


def _gradcam_run(context: CellContext) -> ProbeOutput:
    from stemlab.probes.grad_cam import grad_cam

    model, device = context.model, context.device
    inputs = context.inputs.to(device)
    layer = context.options.get("gradcam_layer")
    if layer is None:
        layer, size = default_gradcam_layer(model, inputs)
    else:
        size = None
    with torch.no_grad():
        predicted = model(inputs).argmax(1).cpu()
    labels = context.labels
    cam = grad_cam(model, inputs, labels.to(device), layer=layer).detach().cpu()
    output = ProbeOutput(metrics={"gradcam_layer": layer, "gradcam_map_size": size})
    if context.masks is not None:
        mask = context.masks.to(cam.dtype).reshape(cam.shape)
        mass = cam.flatten(1).sum(1)
        scored = mass > 0  # an all-zero map (no positive evidence) has no distribution to score
        on_object = (cam * mask).flatten(1).sum(1)[scored] / mass[scored]
        area = float(mask.flatten(1).mean(1).mean())
        output.metrics["object_area"] = area
        if scored.any():
            output.metrics["gradcam_on_object"] = float(on_object.mean())
            output.metrics["gradcam_lift"] = float(on_object.mean()) - area
        output.arrays["mask"] = context.masks[:2].numpy().astype(np.uint8)
    output.arrays["cam"] = cam[:2].numpy().astype(np.float16)
    output.arrays["input"] = context.inputs[:2].numpy().astype(np.float16)
    output.arrays["labels"] = labels[:2].numpy()
    output.arrays["predicted"] = predicted[:2].numpy()
    return output


def _gradcam_figures(view: StudyView) -> list[FigureSpec]:
    from stemlab.report.figures import plot_grad_cam_strip

    specs = []
    names = view.config.get("class_names") or None
    for _, cell in view.first_seed_cells().iterrows():
        arrays = view.arrays(cell["key"])
        if "grad_cam.cam" not in arrays:
            continue
        title = view.label(cell["backbone"], cell["stem"])
        clip = torch.from_numpy(arrays["grad_cam.input"][0].astype("float32"))
        cam = torch.from_numpy(arrays["grad_cam.cam"][0].astype("float32"))
        mask = arrays.get("grad_cam.mask")
        mask = torch.from_numpy(mask[0].astype("float32")) if mask is not None else None
        true = int(arrays["grad_cam.labels"][0])
        pred = int(arrays["grad_cam.predicted"][0]) if "grad_cam.predicted" in arrays else None
        layer = cell.get("gradcam_layer")
        specs.append(
            FigureSpec(
                f"gradcam_{_slug(title)}",
                f"Grad-CAM of {title} (layer {layer}, seed {int(cell['seed'])}) on a probe clip; "
                "the white outline is the moving object's mask.",
                lambda clip=clip, cam=cam, mask=mask, true=true, pred=pred, title=title: (
                    plot_grad_cam_strip(
                        clip,
                        cam,
                        mask=mask,
                        true_label=true,
                        predicted_label=pred,
                        class_names=names,
                        title=title,
                    )
                ),
            )
        )
    return specs


def _gradcam_findings(view: StudyView) -> list[str]:
    cells = view.trained()
    if cells.empty or "gradcam_on_object" not in cells or view.compare is None:
        return []
    cells = cells.dropna(subset=["gradcam_on_object", "object_area"])
    if cells.empty:
        return []
    lines = []
    for backbone, rows in cells.groupby("backbone", sort=False):
        uniform = rows.drop_duplicates("seed").assign(
            arm="uniform map", value=lambda r: r["object_area"]
        )
        arms = rows.assign(
            arm=[view.label(b, s) for b, s in zip(rows["backbone"], rows["stem"])],
            value=rows["gradcam_on_object"],
        )
        long = pd.concat([uniform, arms], ignore_index=True)[["arm", "seed", "value"]]
        table = view.compare(long, metric="value", by="arm", baseline="uniform map")
        layer = rows["gradcam_layer"].dropna().iloc[0] if "gradcam_layer" in rows else "?"
        size = rows["gradcam_map_size"].dropna() if "gradcam_map_size" in rows else []
        size_text = f", maps {int(size.iloc[0])}x{int(size.iloc[0])}" if len(size) else ""
        better = table[table["significant"] & (table["diff"] > 0)]
        area = float(rows["object_area"].mean())
        best = table.loc[table["diff"].idxmax()]
        text = (
            f"Grad-CAM ({layer}{size_text}) on `{backbone}`: a uniform map puts "
            f"{100 * area:.1f}% of its mass on the object. "
        )
        if len(better):
            text += (
                f"{len(better)} of {len(table)} stems put significantly more there "
                f"(Holm over {len(table)} comparisons): "
                + "; ".join(
                    f"{r.b} {100 * r.mean_b:.1f}% (lift {100 * r.diff:+.1f} points, 95% CI "
                    f"{100 * r.ci_low:+.1f} to {100 * r.ci_high:+.1f}, p_adj {r.p_adjusted:.3g})"
                    for r in better.itertuples()
                )
                + "."
            )
        else:
            text += (
                f"No stem's map beats it at n={int(table['n_b'].min())} seeds; the largest lift "
                f"is {best['b']} ({100 * best['diff']:+.1f} points, 95% CI "
                f"{100 * best['ci_low']:+.1f} to {100 * best['ci_high']:+.1f})."
            )
        lines.append(text)
    return lines


register_probe(
    StudyProbe(
        name="grad_cam",
        description="Grad-CAM maps and the share of their mass on the object",
        run=_gradcam_run,
        needs=frozenset({"labels", "masks"}),
        summary=(
            SummaryColumn(
                "gradcam_on_object", "share of Grad-CAM mass inside the object mask (probe clips)"
            ),
            SummaryColumn("object_area", "share a uniform map puts inside the mask"),
            SummaryColumn("gradcam_lift", "gradcam_on_object - object_area"),
        ),
        figures=_gradcam_figures,
        findings=_gradcam_findings,
        order=60,
    )
)

# ---------------------------------------------------------------- filters


def _filters_run(context: CellContext) -> ProbeOutput:
    from stemlab.probes.filters import first_layer_filters

    filters = first_layer_filters(context.model)
    table = filters.table
    output = ProbeOutput(tables={"filters": table.to_dict(orient="records")})
    output.arrays["weight"] = filters.weight.numpy().astype(np.float32)
    if filters.effective is not None:
        output.arrays["effective"] = filters.effective.numpy().astype(np.float32)
    kind = "effective" if (table["kernel"] == "effective").any() else "conv"
    rows = table[table["kernel"] == kind]
    if "temporal_energy_fraction" in rows:
        output.metrics["filter_temporal_energy"] = float(rows["temporal_energy_fraction"].mean())
    return output


def _filters_figures(view: StudyView) -> list[FigureSpec]:
    from stemlab.report.figures import plot_filter_grid

    specs = []
    for _, cell in view.first_seed_cells().iterrows():
        arrays = view.arrays(cell["key"])
        weight = arrays.get("filters.effective", arrays.get("filters.weight"))
        if weight is None:
            continue
        title = view.label(cell["backbone"], cell["stem"])
        factorised = "filters.effective" in arrays
        caption = (
            f"First-layer filters of {title} after training (seed {int(cell['seed'])}), "
            "ordered by L2 norm (largest first)"
            + (
                "; the (2+1)D stem is shown as its composed t x k x k kernel with the eval-mode "
                "BN scale folded in (the ReLU between the convolutions is left out)."
                if factorised
                else "."
            )
        )
        tensor = torch.from_numpy(weight.astype("float32"))
        specs.append(
            FigureSpec(
                f"filters_{_slug(title)}",
                caption,
                lambda tensor=tensor, title=title: plot_filter_grid(tensor, title=title),
            )
        )
    return specs


register_probe(
    StudyProbe(
        name="filters",
        description="the stem's first-layer filters (composed kernel for (2+1)D stems)",
        run=_filters_run,
        tables=("filters",),
        summary=(
            SummaryColumn(
                "filter_temporal_energy",
                "share of first-layer filter energy that varies over time (effective kernel)",
            ),
        ),
        figures=_filters_figures,
        order=70,
    )
)


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
