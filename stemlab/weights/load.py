"""``load_weights``: put a checkpoint into a model tensor by tensor and report what happened."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from torch import nn

from stemlab._validation import check_choice
from stemlab.backbones.build import build_backbone
from stemlab.backbones.layout import Layout, layout_of
from stemlab.weights.checkpoint import Checkpoint, WeightsSource, read_checkpoint
from stemlab.weights.report import Action, ReportRow, build_report
from stemlab.weights.transfer import NoTransfer, StemTransfer, stem_output_width, transfer_stem
from stemlab.weights.transfer.inflate import inflate_2d_to_3d, is_2d_checkpoint

__all__ = ["StemInit", "load_weights"]

StemInit = Literal["transfer", "random"]

# torchvision's 2-D ResNets name their stem conv1/bn1; stemlab's stems are Sequentials.
_TORCHVISION_2D_STEM = {"conv1.": "0.", "bn1.": "1."}


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _prefixed(state: Mapping[str, torch.Tensor], prefix: str | None) -> list[str]:
    return [] if prefix is None else [k for k in state if k.startswith(prefix)]


def declared_layout(model: nn.Module, layout: Layout | None = None) -> Layout | None:
    """``layout`` if given, else the model's declared layout, else ``None`` (undeclared).

    Raises:
        TypeError: ``layout`` is not a :class:`~stemlab.backbones.layout.Layout`.
    """
    if layout is not None:
        if not isinstance(layout, Layout):
            raise TypeError(f"layout must be a stemlab Layout or None, got {type(layout).__name__}")
        return layout
    try:
        return layout_of(model)
    except ValueError:
        return None


def _alias_keys(
    checkpoint: Mapping[str, torch.Tensor],
    model_keys: Mapping[str, torch.Tensor],
    stem_prefix: str | None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename torchvision 2-D ResNet stem keys (``conv1.*``, ``bn1.*``) to the model's stem keys.

    Returns:
        ``(state with model-style keys, model-style key -> original checkpoint key)``.
    """
    renamed = {k: k for k in checkpoint}
    if stem_prefix is None:
        return dict(checkpoint), renamed
    has_stem = any(k.startswith(stem_prefix) for k in checkpoint)
    stem_root = next(
        (
            root
            for root in (stem_prefix, f"{stem_prefix}image_stem.")
            if f"{root}0.weight" in model_keys
        ),
        None,
    )
    torchvision_2d = "conv1.weight" in checkpoint and "conv1.weight" not in model_keys
    if not has_stem and stem_root is not None and torchvision_2d:
        for key in checkpoint:
            for old, new in _TORCHVISION_2D_STEM.items():
                if key.startswith(old):
                    renamed[key] = stem_root + new + key[len(old) :]
    state = {renamed[k]: v for k, v in checkpoint.items()}
    return state, {new: old for old, new in renamed.items()}


@dataclass
class _Plan:
    """Rows and the tensors to copy, built completely before the model is touched."""

    rows: dict[str, ReportRow] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    inflated: Mapping[str, str] = field(default_factory=dict)

    def add(
        self,
        key: str,
        action: Action,
        detail: str,
        shape: tuple[int, ...],
        *,
        value: torch.Tensor | None = None,
        sources: tuple[str, ...] = (),
        original: Mapping[str, str] | None = None,
    ) -> None:
        names = tuple((original or {}).get(s, s) for s in sources)
        inflated = list(dict.fromkeys(self.inflated[s] for s in sources if s in self.inflated))
        if inflated and action != "initialized":
            kept = "" if detail.startswith("as is") else f"; {detail}"
            action, detail = "transferred", "; ".join(inflated) + kept
        elif action == "loaded" and names != (key,):
            detail = f"{detail}, from the checkpoint's {names[0]}"
        self.rows[key] = ReportRow(key, action, detail, shape, ", ".join(names))
        if value is not None:
            self.values[key] = value
        self.used.update(sources)


def _warn_non_finite(checkpoint: Checkpoint) -> None:
    """Warn when floating-point tensors of the checkpoint hold NaN or inf (legal, but useless)."""
    floating = {
        key: value
        for key, value in checkpoint.state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel()
    }
    bad = [key for key, value in floating.items() if not bool(torch.isfinite(value).all())]
    if not bad:
        return
    all_nan = [key for key in bad if bool(torch.isnan(floating[key]).all())]
    shown = ", ".join(repr(key) for key in bad[:3]) + (
        f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    )
    what = "all NaN" if len(all_nan) == len(bad) else "NaN or inf values"
    warnings.warn(
        f"{checkpoint.origin}: {len(bad)} of {len(floating)} floating-point tensors hold {what} "
        f"({shown}); a model with these weights outputs NaN (was the checkpoint saved after "
        "training diverged?)",
        stacklevel=3,
    )


def load_weights(
    model: nn.Module,
    source: WeightsSource,
    *,
    stem_init: StemInit = "transfer",
    strict_backbone: bool = True,
    layout: Layout | None = None,
) -> pd.DataFrame:
    """Load a checkpoint into ``model``, adapting the stem, and report every tensor.

    Tensors with the same key and shape load as they are. The stem loads as is when it matches the
    checkpoint's; otherwise ``stem_init="transfer"`` adapts the checkpoint's stem (and the first
    block reading it) with the rules of :mod:`stemlab.weights.transfer`, and ``"random"`` keeps the
    stem's init. A classifier of another size keeps the model's (fresh) init. A 2-D (image)
    checkpoint for a model whose first block is 3-D is inflated first (I3D; see
    :mod:`stemlab.weights.transfer.inflate`); its tensors are reported ``"transferred"`` with the
    detail ``"inflated 2-D -> 3-D: ..."``. Everything is computed and checked before the first
    tensor is copied, so an error leaves the model as it was.

    Args:
        model: the model; its stem, first block and head are those its declared layout names
            (``model.layout`` from :func:`stemlab.create_model`, or ``layout``). A model without
            a declared layout loads key by key: no stem transfer, no head re-initialisation.
        source: a checkpoint path, a torchvision weights name (``"DEFAULT"``, ``"KINETICS400_V1"``;
            needs ``model.backbone_name``) resolved from the torch hub cache, or a state dict.
        stem_init: ``"transfer"`` or ``"random"``.
        strict_backbone: require every backbone tensor (outside the stem, the stem-dependent first
            block and the head) in the checkpoint with the model's shape; ``False`` loads what fits
            and keeps the init of the rest (at least one backbone tensor must fit).
        layout: the layout to use instead of the model's declared one.

    Returns:
        The report, also stored as ``model.weights_report``: a DataFrame with columns ``key``,
        ``action`` (``"loaded"``, ``"transferred"``, ``"initialized"``, ``"skipped"``), ``detail``,
        ``shape`` and ``source``; one row per model tensor, in state-dict order, then a
        ``"skipped"`` row per checkpoint entry nothing used. ``report.attrs`` holds the origin,
        the stem transfer rules applied and their numbers (e.g. ``svd_relative_error``),
        ``inflation`` (``"2-D -> 3-D"`` or ``None``) and, when inflated, ``inflated_convs`` and
        ``inflation_approximate_channels``.

    Raises:
        FileNotFoundError: a missing file or a torchvision weights file absent from the cache.
        UnsafeCheckpointError: a file that is not a plain tensor checkpoint (refused unexecuted).
        ValueError: a checkpoint for another backbone (the message names the backbone it fits,
            if any), no state dict in the file, unknown names or invalid arguments.
        TypeError: arguments of the wrong type.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_choice("stem_init", stem_init, ("transfer", "random"))
    if not isinstance(strict_backbone, bool):
        raise TypeError(f"strict_backbone must be a bool, got {strict_backbone!r}")
    backbone = getattr(model, "backbone_name", None)
    declared = declared_layout(model, layout)
    checkpoint = read_checkpoint(source, backbone=backbone)
    _warn_non_finite(checkpoint)
    state = model.state_dict()
    stem_prefix = None if declared is None else declared.stem_prefix
    ckpt, original = _alias_keys(checkpoint.state, state, stem_prefix)
    plan = _Plan()
    inflation = None
    if declared is not None and is_2d_checkpoint(model, ckpt, layout=declared):
        inflation = inflate_2d_to_3d(model, ckpt, layout=declared)
        ckpt = inflation.state
        for key, sources in inflation.sources.items():
            original[key] = ", ".join(original.get(s, s) for s in sources)
        plan.inflated = inflation.notes

    head = _prefixed(state, None if declared is None else declared.head_prefix)
    stem = _prefixed(state, stem_prefix)
    block = [
        k
        for k in _prefixed(state, None if declared is None else declared.block_prefix)
        if k not in head
    ]
    model_width = None
    ckpt_width = None
    if declared is not None:
        model_width = getattr(model.get_submodule(declared.stem), "out_channels", None)
        ckpt_width = stem_output_width(ckpt, stem_prefix=declared.stem_prefix)
    width_changes = None not in (model_width, ckpt_width) and model_width != ckpt_width
    stem_dependent = set(stem) | (set(block) if width_changes else set())
    body = [k for k in state if k not in stem_dependent and k not in head]

    _plan_body(plan, body, state, ckpt, original, checkpoint, model, strict_backbone)
    _plan_head(plan, head, state, ckpt, original)
    attrs: dict[str, Any] = {
        "origin": checkpoint.origin,
        "wrapper": checkpoint.wrapper,
        "stripped_prefixes": list(checkpoint.stripped_prefixes),
        "stem_init": stem_init,
        "stem_transfer": None,
        "inflation": None if inflation is None else "2-D -> 3-D",
    }
    if inflation is not None:
        attrs.update(inflation.metrics)
    _plan_stem(
        plan,
        stem,
        block if width_changes else [],
        state,
        ckpt,
        original,
        stem_init,
        model,
        attrs,
        declared,
    )

    rows = [plan.rows[k] for k in state]
    for key, tensor in ckpt.items():
        if key not in plan.used and key not in state:
            rows.append(
                ReportRow(
                    original[key], "skipped", "not in the model", _shape(tensor), original[key]
                )
            )
    for key, kind in (checkpoint.ignored or {}).items():
        rows.append(ReportRow(key, "skipped", f"not a tensor ({kind})", (), key))

    with torch.no_grad():
        for key, value in plan.values.items():
            state[key].copy_(value)
    report = build_report(rows, attrs=attrs)
    model.weights_report = report
    return report


def _plan_body(
    plan: _Plan,
    keys: list[str],
    state: Mapping[str, torch.Tensor],
    ckpt: Mapping[str, torch.Tensor],
    original: Mapping[str, str],
    checkpoint: Checkpoint,
    model: nn.Module,
    strict: bool,
) -> None:
    missing, mismatched, loaded = [], [], 0
    for key in keys:
        if key in ckpt and _shape(ckpt[key]) == _shape(state[key]):
            plan.add(
                key,
                "loaded",
                "as is",
                _shape(state[key]),
                value=ckpt[key],
                sources=(key,),
                original=original,
            )
            loaded += 1
        elif key not in ckpt and key.endswith(".num_batches_tracked"):
            plan.add(key, "initialized", "not in the checkpoint (older format); keeps its init", ())
        elif key not in ckpt:
            missing.append(key)
        else:
            mismatched.append(key)
    if (missing or mismatched) and (strict or loaded == 0):
        raise _backbone_mismatch(model, checkpoint, ckpt, keys, missing, mismatched, state, strict)
    for key in missing:
        plan.add(key, "initialized", "not in the checkpoint; keeps its init", _shape(state[key]))
    for key in mismatched:
        detail = f"checkpoint shape {_shape(ckpt[key])} does not fit; keeps its init"
        plan.add(key, "initialized", detail, _shape(state[key]))


def _plan_head(
    plan: _Plan,
    keys: list[str],
    state: Mapping[str, torch.Tensor],
    ckpt: Mapping[str, torch.Tensor],
    original: Mapping[str, str],
) -> None:
    def mismatch(theirs: tuple[int, ...], ours: tuple[int, ...]) -> str:
        return (
            f"head re-initialised: the checkpoint's is {theirs}, the model's {ours} (num_classes "
            f"{theirs[0] if theirs else '?'} -> {ours[0] if ours else '?'}); keeps the model's "
            "fresh init"
        )

    _plan_direct(plan, keys, state, ckpt, original, reason="head", mismatch=mismatch)


def _plan_stem(
    plan: _Plan,
    stem: list[str],
    block: list[str],
    state: Mapping[str, torch.Tensor],
    ckpt: Mapping[str, torch.Tensor],
    original: Mapping[str, str],
    stem_init: str,
    model: nn.Module,
    attrs: dict[str, Any],
    layout: Layout | None,
) -> None:
    if layout is None:
        return
    ckpt_stem = [k for k in ckpt if k.startswith(layout.stem_prefix)]
    same = set(ckpt_stem) <= set(stem) and all(
        _shape(ckpt[k]) == _shape(state[k]) if k in ckpt else k.endswith(".num_batches_tracked")
        for k in stem
    )
    if not ckpt_stem:
        reason = "the checkpoint has no stem tensors; keeps its init"
    elif same and stem_init == "transfer":
        _plan_direct(plan, stem, state, ckpt, original, reason="")
        return
    elif stem_init == "random":
        reason = "stem_init='random': keeps its init"
    else:
        try:
            result = transfer_stem(
                model,
                ckpt,
                stem_prefix=layout.stem_prefix,
                block_prefix=layout.block_prefix if block else None,
            )
        except NoTransfer as err:
            reason = f"no stem transfer ({err}); keeps its init"
            attrs["stem_transfer_failed"] = str(err)
            warnings.warn(
                f"the checkpoint's stem could not be transferred to this model's stem ({err}); "
                "the stem keeps its random init (see model.weights_report)",
                UserWarning,
                stacklevel=3,
            )
        else:
            _plan_transfer(plan, result, state, original, attrs)
            return
    for key in stem:
        detail = reason
        if key in ckpt and not reason.startswith("the checkpoint has no"):
            detail = f"{reason} (the checkpoint's {_shape(ckpt[key])} is not used)"
        plan.add(key, "initialized", detail, _shape(state[key]))
    _plan_direct(plan, block, state, ckpt, original, reason="depends on the stem width")


def _plan_direct(
    plan: _Plan,
    keys: list[str],
    state: Mapping[str, torch.Tensor],
    ckpt: Mapping[str, torch.Tensor],
    original: Mapping[str, str],
    *,
    reason: str,
    mismatch: Callable[[tuple[int, ...], tuple[int, ...]], str] | None = None,
) -> None:
    """Load what fits as is; the rest keeps its init with ``reason`` (or ``mismatch(theirs, ours)``)."""
    for key in keys:
        shape = _shape(state[key])
        if key in ckpt and _shape(ckpt[key]) == shape:
            plan.add(
                key, "loaded", "as is", shape, value=ckpt[key], sources=(key,), original=original
            )
        elif key in ckpt:
            theirs = _shape(ckpt[key])
            detail = (
                mismatch(theirs, shape)
                if mismatch is not None
                else f"{reason}: the checkpoint's {theirs} does not fit; keeps its init"
            )
            plan.add(key, "initialized", detail, shape)
        elif key.endswith(".num_batches_tracked"):
            plan.add(
                key, "initialized", "not in the checkpoint (older format); keeps its init", shape
            )
        else:
            plan.add(key, "initialized", f"{reason}: not in the checkpoint; keeps its init", shape)


def _plan_transfer(
    plan: _Plan,
    result: StemTransfer,
    state: Mapping[str, torch.Tensor],
    original: Mapping[str, str],
    attrs: dict[str, Any],
) -> None:
    attrs["stem_transfer"] = "+".join(result.rules) or None
    attrs.update(result.metrics)
    for key, item in result.items.items():
        shape = _shape(state[key])
        if not item.from_checkpoint:
            action: Action = "initialized"
        elif item.sources == (key,) and not item.notes:
            action = "loaded"
        else:
            action = "transferred"
        detail = "; ".join(item.notes) or "as is"
        plan.add(
            key, action, detail, shape, value=item.tensor, sources=item.sources, original=original
        )


def _backbone_mismatch(
    model: nn.Module,
    checkpoint: Checkpoint,
    ckpt: Mapping[str, torch.Tensor],
    body: list[str],
    missing: list[str],
    mismatched: list[str],
    state: Mapping[str, torch.Tensor],
    strict: bool,
) -> ValueError:
    name = getattr(model, "backbone_name", None) or type(model).__name__
    parts = []
    if missing:
        parts.append(
            f"{len(missing)} of its {len(body)} backbone tensors are missing from the checkpoint "
            f"(e.g. {', '.join(missing[:3])})"
        )
    if mismatched:
        key = mismatched[0]
        parts.append(
            f"{len(mismatched)} have other shapes (e.g. {key}: checkpoint {_shape(ckpt[key])}, "
            f"model {_shape(state[key])})"
        )
    matches = guess_backbones(ckpt)
    if name in matches:
        guess = (
            f" The checkpoint matches {name!r} at its default size: build the model with the "
            "checkpoint's widths and layers."
        )
    elif matches:
        guess = f" The checkpoint matches backbone {' / '.join(map(repr, matches))}; load it there."
    else:
        guess = " It matches no registered backbone at its default size."
    hint = " Pass strict_backbone=False to load only the tensors that fit." if strict else ""
    return ValueError(
        f"checkpoint {checkpoint.origin} does not fit backbone {name!r}: "
        + "; ".join(parts)
        + "."
        + guess
        + hint
    )


def guess_backbones(ckpt: Mapping[str, torch.Tensor]) -> list[str]:
    """Registered backbones (native stem, default size) whose tensors match ``ckpt``'s.

    The stem, the first block and the head (as each backbone's layout declares them) are left out
    of the comparison, so a checkpoint with another stem or class count still matches. Models are
    built on the meta device (no memory).
    """
    from stemlab.backbones.registry import BACKBONES

    def body(shapes: Mapping[str, tuple[int, ...]], layout: Layout) -> dict[str, tuple[int, ...]]:
        skip = (layout.stem_prefix, layout.block_prefix, layout.head_prefix)
        return {
            k: s
            for k, s in shapes.items()
            if not k.startswith(skip) and not k.endswith(".num_batches_tracked")
        }

    shapes = {k: _shape(v) for k, v in ckpt.items()}
    matches = []
    for entry in BACKBONES:
        if entry.layout is None:
            continue
        try:
            with torch.device("meta"):
                candidate = build_backbone(entry.name)
        except Exception:  # a plugin backbone that cannot be built on meta: not a candidate
            continue
        expected = body({k: _shape(v) for k, v in candidate.state_dict().items()}, entry.layout)
        if expected and expected == body(shapes, entry.layout):
            matches.append(entry.name)
    return matches
