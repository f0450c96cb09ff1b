"""Grad-CAM for video (5-D), time-folded (4-D frames of a clip) and image (4-D) layers.

Grad-CAM weighs each channel of a layer's activation ``A`` by the mean of the gradient of the
target logit over the layer's positions, sums over channels and applies a ReLU::

    cam = relu(sum_c mean_{t,h,w}(dy/dA[c]) * A[c])            # mode="standard"
    cam = relu(sum_c mean_{h,w}(dy/dA[c, t]) * A[c, t])        # mode="temporal"

The temporal mode keeps one channel weight per time step, as SlowFast and mmaction2 do. Layers
of recurrent backbones that fold time into the batch, ``(N*T, C, h, w)``, are unfolded to
``(N, C, T, h, w)`` first, so both modes mean the same thing there.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from captum._utils.gradient import compute_layer_gradients_and_eval
from captum.attr import LayerGradCam
from torch import nn

from stemlab._modes import preserved_modes
from stemlab._validation import check_choice
from stemlab.probes._modules import check_model, model_device, module_names_hint
from stemlab.probes._plots import slug
from stemlab.probes.contract import (
    CellContext,
    FigureSpec,
    ProbeOutput,
    StudyProbe,
    StudyView,
    SummaryColumn,
    register_probe,
)

__all__ = ["GRAD_CAM_MODES", "at_chance", "attribution_per_frame", "grad_cam", "pick_per_class"]

GRAD_CAM_MODES: tuple[str, ...] = ("standard", "temporal")


def _resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(f"layer {type(layer).__name__} is not a submodule of the model")
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name or an nn.Module, got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        raise ValueError(f"unknown layer {layer!r}." + module_names_hint(model, layer))
    return modules[layer]


def _check_target(target: int | Sequence[int] | torch.Tensor, batch: int) -> int | list[int]:
    if isinstance(target, torch.Tensor):
        if target.dtype.is_floating_point or target.ndim > 1:
            raise TypeError(f"target tensor must hold integer class indices, got {target!r}")
        target = target.tolist()
    if isinstance(target, int) and not isinstance(target, bool):
        values: list[int] = [target]
    elif isinstance(target, (list, tuple)):
        values = list(target)
        if len(values) != batch:
            raise ValueError(f"target needs one class index per sample ({batch}), got {target!r}")
    else:
        raise TypeError(f"target must be an int or a sequence of ints, got {target!r}")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"target must hold class indices >= 0, got {target!r}")
    return values[0] if isinstance(target, int) else values


def _map_extent(output: Any, x: torch.Tensor) -> tuple[int, ...] | None:
    """Positions of a layer's map per sample and channel, ``(T, H, W)`` or ``(H, W)``, or
    ``None`` if the output is no feature map for input ``x`` (time-folded maps are unfolded)."""
    if not isinstance(output, torch.Tensor) or output.ndim not in ((4, 5) if x.ndim == 5 else (4,)):
        return None
    if x.ndim == 5 and output.ndim == 4:  # (N*T, C, h, w) of a time-folded backbone
        return (max(output.shape[0] // max(x.shape[0], 1), 1), *output.shape[-2:])
    return tuple(output.shape[2:])


@contextlib.contextmanager
def _checked_forward(
    model: nn.Module, module: nn.Module, x: torch.Tensor, target: int | list[int]
) -> Iterator[None]:
    """Hooks that refuse, during the forward, a target beyond the model's classes and a layer
    whose output is no feature map with spatial extent (before captum fails on either)."""
    names = {m: n for n, m in model.named_modules()}
    info = getattr(model, "feature_info", None)
    watched = [e["module"] for e in info] if info else [n for n, _ in model.named_children()]
    stem = getattr(model, "stem", None)
    if isinstance(stem, nn.Module) and names.get(stem) not in watched:
        watched.insert(0, names.get(stem, "stem"))
    sizes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            size = _map_extent(output, x)
            if size is not None:
                sizes.setdefault(name, size)

        return hook

    def check_layer(_module: nn.Module, _inputs: Any, output: Any) -> None:
        name = names.get(module, type(module).__name__)
        size = _map_extent(output, x)
        if size is not None and math.prod(size) > 1:
            return
        usable = [f"{n} ({'x'.join(map(str, s))})" for n, s in sizes.items() if math.prod(s) > 1]
        choose = (
            f"choose a layer with spatial extent: {', '.join(usable)}"
            if usable
            else f"no stage has spatial extent at input {tuple(x.shape)}; use a larger input"
        )
        if size is None:
            what = (
                f"returns a {type(output).__name__}, not a tensor"
                if not isinstance(output, torch.Tensor)
                else f"returns shape {tuple(output.shape)}, which cannot be mapped onto input "
                f"{tuple(x.shape)}"
            )
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) {what}: it is no feature map, so it "
                f"has no Grad-CAM; {choose}"
            )
        raise ValueError(
            f"layer {name!r} has a map of size 1 (output {tuple(output.shape)}), so its Grad-CAM "
            f"would be all zeros (one position normalises to zero); {choose}"
        )

    def check_target(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor) or output.ndim != 2:
            return
        classes = output.shape[1]
        wanted = [target] if isinstance(target, int) else target
        bad = [t for t in wanted if t >= classes]
        if bad:
            raise ValueError(
                f"target {bad[0] if isinstance(target, int) else target} is out of range: the "
                f"model has {classes} classes, so targets must be in [0, {classes - 1}]"
            )

    handles = []
    try:
        modules = dict(model.named_modules())
        for name in watched:
            if name in modules and modules[name] is not module:
                handles.append(modules[name].register_forward_hook(record(name)))
        handles.append(module.register_forward_hook(check_layer))
        handles.append(model.register_forward_hook(check_target))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _unfold_time(t: torch.Tensor, batch: int) -> torch.Tensor:
    folded = t.shape[0]
    if folded % batch:
        raise ValueError(
            f"cannot unfold a time-folded layer output of batch {folded} into batch {batch}"
        )
    return t.reshape(batch, folded // batch, *t.shape[1:]).transpose(1, 2)


def _weighted_sum(grads: torch.Tensor, acts: torch.Tensor, mode: str) -> torch.Tensor:
    dims = tuple(range(3 if mode == "temporal" else 2, grads.ndim))
    weights = grads.mean(dim=dims, keepdim=True)
    return F.relu((weights * acts).sum(dim=1, keepdim=True))


def _rnn_safe(model: nn.Module, device: torch.device) -> contextlib.AbstractContextManager[None]:
    # cuDNN refuses the backward of an RNN in eval mode; the native kernels do it.
    if device.type == "cuda" and any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    layer: str | nn.Module = "layer4",
    *,
    mode: Literal["standard", "temporal"] = "standard",
) -> torch.Tensor:
    """Grad-CAM of ``layer`` for class ``target``, upsampled to the input and normalised.

    Runs in eval mode (the model's mode is restored); gradients are taken with
    ``torch.autograd.grad``, so no ``.grad`` of the model changes. ``x`` is moved to the model's
    device.

    Args:
        model: a video model taking ``(N, C, T, H, W)`` or an image model taking ``(N, C, H, W)``.
        x: the input batch.
        target: the class index, one for every sample or one per sample.
        layer: a module name (``"layer4"``, ``"layer3.1.conv2"``) or the module itself; its output
            must be 4-D or 5-D (time-folded 4-D outputs of recurrent backbones are unfolded).
        mode: ``"standard"`` (one weight per channel) or ``"temporal"`` (one weight per channel
            and time step; needs a layer with a time axis).

    Returns:
        Tensor ``(N, T, H, W)`` for video input or ``(N, H, W)`` for image input: ReLU'd,
        upsampled to the input size (trilinear/bilinear, ``align_corners=False``), then min-max
        normalised to [0, 1] per sample (all zeros where the map is constant).

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: for an unknown layer (the message lists candidate layers), a bad mode, a
            target beyond the model's classes, an empty batch, or a layer whose output is not a
            feature map with spatial extent (an LSTM, a layer after global pooling): the message
            names the layers that have one.
    """
    check_model(model)
    if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (N, C, H, W) or (N, C, T, H, W) tensor, got {got}")
    check_choice("mode", mode, GRAD_CAM_MODES)
    if mode == "temporal" and x.ndim == 4:
        raise ValueError("mode='temporal' needs video input (N, C, T, H, W); use mode='standard'")
    if x.shape[0] == 0:
        raise ValueError(
            f"x is an empty batch (N=0), shape {tuple(x.shape)}; pass at least one sample"
        )
    module = _resolve_layer(model, layer)
    target = _check_target(target, x.shape[0])
    device = model_device(model)
    x = x.to(device)
    if not any(p.requires_grad for p in model.parameters()):
        x = x.detach().requires_grad_(True)
    batch = x.shape[0]
    folded = x.ndim == 5 and bool(getattr(model, "time_folded", False))

    with preserved_modes(model):
        model.eval()
        with _rnn_safe(model, device), _checked_forward(model, module, x, target):
            if mode == "standard" and not folded:
                cam = LayerGradCam(model, module).attribute(
                    x, target=target, relu_attributions=True
                )
            else:
                grads, acts = compute_layer_gradients_and_eval(model, module, (x,), target)
                grads, acts = grads[0], acts[0]
                if x.ndim == 5 and acts.ndim == 4:
                    grads, acts = _unfold_time(grads, batch), _unfold_time(acts, batch)
                if mode == "temporal" and acts.ndim != 5:
                    raise ValueError(
                        "mode='temporal' needs a layer with a time axis (5-D output), "
                        f"got output shape {tuple(acts.shape)}"
                    )
                cam = _weighted_sum(grads, acts, mode)

    if cam.ndim != x.ndim or cam.shape[0] != batch:
        raise ValueError(
            f"layer output of rank {cam.ndim} cannot be mapped onto input {tuple(x.shape)}; "
            "choose a convolutional layer (4-D or 5-D output)"
        )
    interpolation = "trilinear" if x.ndim == 5 else "bilinear"
    cam = F.interpolate(cam.detach(), size=x.shape[2:], mode=interpolation, align_corners=False)
    cam = cam[:, 0]
    flat = cam.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    shape = (batch,) + (1,) * (cam.ndim - 1)
    # A constant map has no range: divide by 1 there, which leaves it all zeros.
    span = torch.where(high > low, high - low, torch.ones_like(high))
    return (cam - low.view(shape)) / span.view(shape)


def attribution_per_frame(cam: torch.Tensor) -> torch.Tensor:
    """Share of a video Grad-CAM's attribution mass in each frame.

    Args:
        cam: ``(N, T, H, W)`` as returned by :func:`grad_cam` for video input.

    Returns:
        ``(N, T)``: each frame's sum over ``(H, W)`` divided by the clip's sum (rows sum to 1;
        all zeros for an all-zero map).

    Raises:
        ValueError: if ``cam`` is not 4-D.
    """
    if not isinstance(cam, torch.Tensor) or cam.ndim != 4:
        raise ValueError(f"cam must be a (N, T, H, W) tensor, got {getattr(cam, 'shape', cam)!r}")
    per_frame = cam.sum(dim=(2, 3))
    total = per_frame.sum(dim=1, keepdim=True)
    return torch.where(total > 0, per_frame / total.clamp_min(1e-30), torch.zeros_like(per_frame))


# Study integration: how this probe runs in a study cell and what it adds to the report.


MIN_MAP_SIZE = 8
CLIPS_PER_CLASS = 2
"""Probe clips of each class whose maps a trained cell stores for the figures."""
FIGURE_FRAMES = 4
"""Frames of each stored clip (evenly spaced) the figures show."""
FIGURE_SEEDS = 3
"""Seeds per arm the study figure shows."""


def pick_per_class(labels: torch.Tensor | Sequence[int], per_class: int) -> list[int]:
    """Indices of the first ``per_class`` samples of every class, class by class (ascending).

    Args:
        labels: one integer label per sample.
        per_class: samples kept per class (fewer where a class has fewer).

    Returns:
        Indices into ``labels``: class 0's first ones, then class 1's, ...

    Raises:
        ValueError: if ``per_class`` < 1.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be an int >= 1, got {per_class!r}")
    values = [int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    picked: list[int] = []
    for label in sorted(set(values)):
        picked += [i for i, v in enumerate(values) if v == label][:per_class]
    return picked


def at_chance(top1: float, chance: float, n: int | None = None) -> bool:
    """Whether a model's top-1 accuracy is indistinguishable from chance.

    With ``n`` test clips: the two-sided 95% Clopper-Pearson interval of ``round(top1 * n)``
    correct out of ``n`` covers ``chance``. Without: ``top1 < chance + 0.05``.

    Args:
        top1: accuracy, a fraction in [0, 1].
        chance: chance accuracy (``1 / num_classes``).
        n: number of test clips, or None when unknown.

    Returns:
        True when the model is at chance (its Grad-CAM maps then explain no learned decision).

    Raises:
        ValueError: for a fraction outside [0, 1] or ``n`` < 1.
    """
    for name, value in (("top1", top1), ("chance", chance)):
        if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    if n is None:
        return float(top1) < float(chance) + 0.05
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int (test clips) or None, got {n!r}")
    from scipy.stats import beta

    correct = round(float(top1) * int(n))
    low = 0.0 if correct == 0 else float(beta.ppf(0.025, correct, n - correct + 1))
    high = 1.0 if correct == n else float(beta.ppf(0.975, correct + 1, n - correct))
    return low <= float(chance) <= high


def default_gradcam_layer(model: torch.nn.Module, inputs: torch.Tensor) -> tuple[str, int]:
    """The deepest stage whose maps are at least 8x8 at ``inputs`` (and that map's size).

    Falls back to the largest map when no stage reaches 8x8.
    """
    from stemlab.probes.activations import record_activations

    stages = [info["module"] for info in model.feature_info]
    with torch.no_grad(), record_activations(model, stages, stats=False) as recorder:
        model(inputs[:1])
    table = recorder.table()
    table = table[(table["call"] == 0) & (table["shape"].map(len) >= 4)]
    sizes = {m: int(min(shape[-2:])) for m, shape in zip(table["module"], table["shape"])}
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
        share = (cam * mask).flatten(1).sum(1) / mass.clamp_min(1e-30)
        clip_area = mask.flatten(1).mean(1)
        on_object = share[scored]
        area = float(clip_area.mean())
        output.metrics["object_area"] = area
        if scored.any():
            output.metrics["gradcam_on_object"] = float(on_object.mean())
            output.metrics["gradcam_lift"] = float(on_object.mean()) - area
        # per clip, for tests with the clips as replicates (NaN: an all-zero map)
        output.arrays["clip_on_object"] = torch.where(scored, share, torch.nan).numpy()
        output.arrays["clip_area"] = clip_area.numpy()
    # For the figures: the first clips of every class, at a few evenly spaced frames.
    shown = torch.tensor(pick_per_class(labels, CLIPS_PER_CLASS), dtype=torch.long)
    if cam.ndim == 4:
        steps = cam.shape[1]
        frames = np.unique(np.linspace(0, steps - 1, min(FIGURE_FRAMES, steps)).round())
        frames = torch.from_numpy(frames.astype(np.int64))
        output.arrays["frames"] = frames.numpy()
        pick = (shown[:, None], frames[None, :])
        output.arrays["cam"] = cam[pick].numpy().astype(np.float16)
        output.arrays["input"] = context.inputs[shown][:, :, frames].numpy().astype(np.float16)
        if context.masks is not None:
            output.arrays["mask"] = context.masks[pick].numpy().astype(np.uint8)
    else:
        output.arrays["cam"] = cam[shown].numpy().astype(np.float16)
        output.arrays["input"] = context.inputs[shown].numpy().astype(np.float16)
        if context.masks is not None:
            output.arrays["mask"] = context.masks[shown].numpy().astype(np.uint8)
    output.arrays["labels"] = labels[shown].numpy()
    output.arrays["predicted"] = predicted[shown].numpy()
    return output


def _test_clips(view: StudyView) -> int | None:
    data = view.config.get("data") or {}
    count = data.get("test_samples")
    return int(count) if isinstance(count, (int, np.integer)) and count > 0 else None


def _gradcam_figures(view: StudyView) -> list[FigureSpec]:
    from stemlab.probes.figures import plot_grad_cam_grid

    specs = []
    names = view.config.get("class_names") or None
    trained = view.trained()
    if trained.empty:
        return specs
    n_test = _test_clips(view)
    for (backbone, stem), rows in trained.groupby(["backbone", "stem"], sort=False):
        panels = []
        for _, cell in rows.sort_values("seed", kind="stable").iterrows():
            arrays = view.arrays(cell["key"])
            if "grad_cam.cam" not in arrays:
                continue
            cams = arrays["grad_cam.cam"].astype("float32")
            frames = arrays.get("grad_cam.frames")
            if frames is None and cams.ndim == 4:  # stored before frames were picked: all
                frames = np.arange(cams.shape[1])
            top1, chance = cell.get("top1"), cell.get("chance")
            heading = f"seed {int(cell['seed'])}"
            flat = False
            if top1 is not None and chance is not None and np.isfinite([top1, chance]).all():
                flat = at_chance(float(top1), float(chance), n_test)
                heading += f": test top-1 {100 * top1:.1f}% (chance {100 * chance:.1f}%)"
            panels.append(
                {
                    "clips": arrays["grad_cam.input"].astype("float32"),
                    "cams": cams,
                    "masks": arrays.get("grad_cam.mask"),
                    "labels": arrays["grad_cam.labels"],
                    "predicted": arrays.get("grad_cam.predicted"),
                    "frames": None if frames is None else [int(f) for f in frames],
                    "heading": heading,
                    "at_chance": flat,
                }
            )
            if len(panels) == FIGURE_SEEDS:
                break
        if not panels:
            continue
        for panel in panels:
            if panel["frames"] is None:
                del panel["frames"]
        title = view.label(backbone, stem)
        layer = rows["gradcam_layer"].dropna().iloc[0] if "gradcam_layer" in rows else "?"
        chance_rule = (
            f"95% Clopper-Pearson interval of top-1 on the {n_test} test clips covers chance"
            if n_test
            else "top-1 below chance + 5 points (test clip count unknown)"
        )
        specs.append(
            FigureSpec(
                f"gradcam_{slug(title)}",
                f"Grad-CAM of {title} (layer {layer}): the first {CLIPS_PER_CLASS} probe clips "
                f"of each class, for {len(panels)} seed(s), each with its true and predicted "
                "class; the white outline is the moving object's mask. A model is marked "
                f"'at chance' when the {chance_rule}: its map explains no learned decision.",
                partial(plot_grad_cam_grid, panels, class_names=names, title=title),
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
    one_stem_each = (
        cells["backbone"].nunique() > 1 and cells.groupby("backbone")["stem"].nunique().max() == 1
    )
    # a family of backbones (one stem each) is one family of tests; else one per backbone
    groups = [("the backbones", cells)] if one_stem_each else cells.groupby("backbone", sort=False)
    for backbone, rows in groups:
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
        where = backbone if one_stem_each else f"`{backbone}`"
        text = (
            f"Grad-CAM ({layer}{size_text}) on {where}: a uniform map puts "
            f"{100 * area:.1f}% of its mass on the object. "
        )
        if len(better):
            text += (
                f"{len(better)} of {len(table)} models put significantly more there "
                f"(Holm over {len(table)} comparisons): "
                + "; ".join(
                    f"{r.b} {100 * r.mean_b:.1f}% (lift {100 * r.diff:+.1f} points, 95% CI "
                    f"{100 * r.ci_low:+.1f} to {100 * r.ci_high:+.1f}, p_adj {r.p_adjusted:.3g})"
                    for r in better.itertuples()
                )
                + "."
            )
        else:
            n = int(table["n_b"].min())
            excluding = table[(table["ci_low"] > 0) & ~table["significant"]]
            text += f"No model's map beats it after Holm over {len(table)} models at n={n} seeds"
            if len(excluding):
                text += (
                    "; on its own, the interval of "
                    + "; ".join(
                        f"{r.b} ({100 * r.mean_b:.1f}%, lift {100 * r.diff:+.1f} points, 95% CI "
                        f"{100 * r.ci_low:+.1f} to {100 * r.ci_high:+.1f}, Holm-adjusted p "
                        f"{r.p_adjusted:.2g})"
                        for r in excluding.itertuples()
                    )
                    + " excludes zero, a lead that more seeds would have to confirm."
                )
            else:
                text += (
                    f"; the largest lift is {best['b']} ({100 * best['diff']:+.1f} points, 95% CI "
                    f"{100 * best['ci_low']:+.1f} to {100 * best['ci_high']:+.1f})."
                )
        lines.append(text)
    lines += _per_model_findings(view, cells)
    return lines


def _per_model_findings(view: StudyView, cells: pd.DataFrame) -> list[str]:
    """Does each trained model localise, with its probe clips as the replicates?

    A different question from the one over seeds: it asks about these trained models, not about
    the stem; it is how localisation is usually scored (over images).
    """
    if view.holm is None or view.compare is None:
        return []
    tests = []
    for _, cell in cells.iterrows():
        arrays = view.arrays(cell["key"])
        if "grad_cam.clip_on_object" not in arrays:
            continue
        share = arrays["grad_cam.clip_on_object"].astype(float)
        area = arrays["grad_cam.clip_area"].astype(float)
        keep = ~np.isnan(share)
        if keep.sum() < 2:
            continue
        clips = np.arange(len(share))[keep]
        long = pd.DataFrame(
            {
                "arm": ["uniform"] * int(keep.sum()) + ["grad-cam"] * int(keep.sum()),
                "clip": np.r_[clips, clips],
                "value": np.r_[area[keep], share[keep]],
            }
        )
        row = view.compare(long, metric="value", by="arm", baseline="uniform", pair_by="clip")
        tests.append((view.label(cell["backbone"], cell["stem"]), row.iloc[0]))
    if not tests:
        return []
    adjusted = view.holm([row["p_value"] for _, row in tests])
    beats: dict[str, list[str]] = {}
    totals: dict[str, int] = {}
    for (label, row), p_adj in zip(tests, adjusted):
        totals[label] = totals.get(label, 0) + 1
        if p_adj < 0.05 and row["diff"] > 0:
            beats.setdefault(label, []).append(
                f"{100 * row['diff']:+.1f} points (95% CI {100 * row['ci_low']:+.1f} to "
                f"{100 * row['ci_high']:+.1f}, p_adj {p_adj:.2g})"
            )
    clips = int(tests[0][1]["n_pairs"])
    text = (
        f"Per trained model, with its {clips} probe clips as the replicates (paired t of each "
        f"clip's on-object share against the clip's object area, Holm over {len(tests)} models): "
    )
    if beats:
        text += "; ".join(
            f"{len(v)} of {totals[k]} `{k}` models beat the uniform map ({', '.join(v)})"
            for k, v in beats.items()
        )
        others = [f"`{k}`" for k in totals if k not in beats]
        if others:
            text += f"; none of the {', '.join(others)} models does"
    else:
        text += "no model's map beats the uniform map"
    return [
        text + ". This is about these trained models and these clips; the comparison over seeds "
        "above is the one about the stems."
    ]


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
        options=("gradcam_layer",),
    )
)
