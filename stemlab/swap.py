"""``swap_stem``: give any ``nn.Module`` another stem, with the downstream widths and weights following.

::

    new = stemlab.swap_stem(my_model, "wide:width=96")            # my_model is left as it was
    new.weights_report                                             # what loaded, transferred, ...
    stemlab.anatomy(new).consumers                                 # the modules rebuilt for 96

The modules reading the stem's output are found by tracing the model with ``torch.fx`` (through
parameter-free layers, reshapes and residual additions), or taken from ``consumers=`` where the
graph does not trace. Each is rebuilt for the new width: convolutions, linear layers (a patch
embedding's projection included) and norms (which pass the width on to their own readers); an
identity shortcut that would add tensors of two widths gets a 1x1 projection. Weights then load from
the input model through :func:`stemlab.weights.load_weights`, whose stem rules (Net2Wider, kernel
padding, the identity gate, (2+1)D factorisation and 3-D composition) adapt the stem and its reader.
"""

from __future__ import annotations

import copy
import difflib
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from stemlab._anatomy import anatomy, module_width
from stemlab.backbones.layout import Layout
from stemlab.spec import parse_stem_spec
from stemlab.stems.registry import create_stem
from stemlab.weights.load import load_weights

__all__ = ["find_consumers", "swap_stem"]

_LEAVES = (_ConvNd, nn.Linear, _BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_ADDS = (operator.add, operator.iadd, torch.add, "add", "add_")
_JOINS = (torch.cat, torch.stack, torch.concat, "cat")


class _Tracer(fx.Tracer):
    """Keeps the stem and every conv / linear / norm (torch's or a subclass) as one call."""

    def __init__(self, leaf: str | None) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            qualname == self.leaf or isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)
        )


@dataclass
class _Readers:
    """What reads a tensor: modules to rebuild and residual additions it joins."""

    modules: list[str] = field(default_factory=list)
    residuals: list[str] = field(default_factory=list)


def _walk(root: nn.Module, graph: fx.Graph, start: fx.Node, prefix: str) -> _Readers:
    found = _Readers()
    queue, seen = [start], {start}
    while queue:
        node = queue.pop(0)
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            if user.op == "output":
                raise ValueError(
                    "the stem's output reaches the model's output without passing a layer that "
                    "reads its channels; nothing downstream can follow the new width"
                )
            if user.op == "call_module":
                module = root.get_submodule(user.target)
                has_params = any(True for _ in module.parameters(recurse=False)) or any(
                    True for _ in module.parameters()
                )
                if not has_params:
                    queue.append(user)
                    continue
                found.modules.append(prefix + user.target)
                if isinstance(module, _NORMS):
                    queue.append(user)  # a norm keeps the width: its readers change too
                continue
            if user.op in ("call_function", "call_method"):
                if user.op == "call_method" and user.target in ("size", "dim"):
                    continue
                if user.target is getattr or user.target in _JOINS:
                    if user.target in _JOINS:
                        raise ValueError(
                            "the stem's output is concatenated with other tensors "
                            f"({user.format_node()}); the widths after the join cannot be "
                            "followed automatically: pass consumers=[...]"
                        )
                    continue
                if user.target in _ADDS:
                    stack = user.meta.get("nn_module_stack") or {}
                    owner = list(stack)[-1] if stack else ""
                    found.residuals.append(prefix + owner)
                    continue  # the sum has the other branch's width, set by its own layers
                queue.append(user)
    return found


def _trace(module: nn.Module, leaf: str | None) -> fx.Graph:
    return _Tracer(leaf).trace(module)


def find_consumers(model: nn.Module, at: str) -> tuple[list[str], list[str]]:
    """The modules that read the output of the submodule ``at``, found by ``torch.fx`` tracing.

    Args:
        model: the model.
        at: dotted name of the module whose output is followed.

    Returns:
        ``(readers, residuals)``: dotted names of the conv / linear / norm layers reading the
        output (norms pass it on, so their readers are included), and of the modules inside
        which the output joins a residual addition.

    Raises:
        ValueError: the model does not trace (the message says to pass ``consumers=``), or the
            output is concatenated or returned without a reader.
    """
    try:
        graph = _trace(model, at)
    except Exception as err:
        raise ValueError(
            f"{type(model).__name__} does not trace with torch.fx ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else err!r}); declare the modules that read "
            f"the stem's output: swap_stem(..., consumers=['block.conv1', ...])"
        ) from None
    start = next((n for n in graph.nodes if n.op == "call_module" and n.target == at), None)
    if start is None:
        raise ValueError(
            f"{at!r} is never called in {type(model).__name__}'s traced forward; pass "
            "consumers=[...]"
        )
    readers = _walk(model, graph, start, "")
    if not readers.modules:
        raise ValueError(
            f"nothing in {type(model).__name__} reads the channels of {at!r}; pass consumers=[...]"
        )
    return readers.modules, readers.residuals


def _declared_readers(model: nn.Module, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Declared consumers: leaves as they are; containers traced with their input as the stem's."""
    modules: list[str] = []
    residuals: list[str] = []
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, _LEAVES):
            modules.append(name)
            continue
        try:
            graph = _trace(module, None)
        except Exception as err:
            raise ValueError(
                f"consumer {name!r} ({type(module).__name__}) does not trace with torch.fx "
                f"({type(err).__name__}); declare its layers instead ('{name}.conv1', ...)"
            ) from None
        start = next(n for n in graph.nodes if n.op == "placeholder")
        found = _walk(module, graph, start, name + ".")
        residuals += [r.rstrip(".") for r in found.residuals]
        modules += found.modules
    return modules, residuals


def _torch_class(module: nn.Module) -> type[nn.Module]:
    """The ``torch.nn`` class a layer derives from (subclasses such as torchvision's
    ``Conv3DSimple`` take other constructor arguments)."""
    return next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn.modules"))


def _rebuild(name: str, module: nn.Module, old: int, new: int) -> nn.Module:
    """``module`` built again to read ``new`` channels where it read ``old``."""
    ref = next(iter(module.parameters()), None)
    if isinstance(module, _ConvNd):
        if module.in_channels != old:
            raise ValueError(f"{name} reads {module.in_channels} channels, the stem gave {old}")
        if module.groups != 1:
            raise ValueError(
                f"{name} is a grouped conv ({module.groups} groups); rebuild it yourself"
            )
        rebuilt = _torch_class(module)(
            new,
            module.out_channels,
            kernel_size=module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    elif isinstance(module, nn.Linear):
        if module.in_features != old:
            raise ValueError(
                f"{name} reads {module.in_features} features, not the stem's {old} channels "
                "(a flattened map?); declare consumers= or rebuild it yourself"
            )
        rebuilt = nn.Linear(new, module.out_features, bias=module.bias is not None)
    elif isinstance(module, (_BatchNorm, _InstanceNorm)):
        rebuilt = _torch_class(module)(
            new,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
        )
    elif isinstance(module, nn.GroupNorm):
        if new % module.num_groups:
            raise ValueError(
                f"{name}: GroupNorm with {module.num_groups} groups cannot take {new} channels"
            )
        rebuilt = nn.GroupNorm(module.num_groups, new, eps=module.eps, affine=module.affine)
    elif isinstance(module, nn.LayerNorm):
        if tuple(module.normalized_shape) != (old,):
            raise ValueError(f"{name} normalises {tuple(module.normalized_shape)}, not ({old},)")
        rebuilt = nn.LayerNorm(new, eps=module.eps, elementwise_affine=module.elementwise_affine)
    else:
        raise TypeError(
            f"{name} ({type(module).__name__}) reads the stem's output, but only convs, linear "
            "layers and norms can be rebuilt for another width; declare its layers as consumers"
        )
    if ref is not None:
        rebuilt = rebuilt.to(device=ref.device, dtype=ref.dtype)
    return rebuilt.train(module.training)


def _projection(reader: nn.Module, old: int, new: int) -> nn.Sequential:
    """A 1x1 conv + norm taking ``new`` channels to the ``old`` an identity shortcut carried."""
    dims = reader.weight.dim() - 2 if isinstance(reader, _ConvNd) else 3
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    return nn.Sequential(conv(new, old, kernel_size=1, bias=False), norm(old))


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _resolve_at(model: nn.Module, at: str | None) -> tuple[str, Layout | None]:
    try:
        declared = anatomy(model)
    except ValueError:
        declared = None
    layout = None if declared is None else declared.layout
    if at is None:
        if declared is not None:
            return declared.stem, layout
        if isinstance(getattr(model, "stem", None), nn.Module):
            return "stem", layout
        raise ValueError(
            f"{type(model).__name__} declares no stem and has no child named 'stem'; pass "
            "at='dotted.name' of the module to replace"
        )
    if not isinstance(at, str):
        raise TypeError(f"at must be a dotted module name or None, got {type(at).__name__}")
    names = [n for n, _ in model.named_modules() if n]
    if at not in names:
        close = difflib.get_close_matches(at, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"at={at!r} is not a module of {type(model).__name__}{hint}")
    return at, layout


def _head(model: nn.Module, layout: Layout | None) -> str:
    if layout is not None:
        return layout.head
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [n for n, m in model.named_modules() if isinstance(m, _ConvNd)]
    return convs[-1]


def _common_parent(names: Sequence[str]) -> str:
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if len(names) == 1:
        return names[0]
    return ".".join(common)


def swap_stem(
    model: nn.Module,
    stem: nn.Module | str,
    *,
    at: str | None = None,
    consumers: Sequence[str] | None = None,
    transfer: bool = True,
) -> nn.Module:
    """A copy of ``model`` with ``stem`` in place of its stem, the readers rebuilt for its width.

    Args:
        model: any ``nn.Module`` (left untouched).
        stem: the new stem: a module (``out_channels`` declares its width; otherwise read from its
            last conv / norm) or a registered stem name or spec (``"wide:width=96"``).
        at: dotted name of the module to replace; default the declared stem
            (:func:`stemlab.anatomy`), else a child named ``stem``.
        consumers: dotted names of the modules reading the stem's output, for models that do not
            trace with ``torch.fx``; a container (a residual block) is traced on its own.
        transfer: adapt the old stem's weights (and its readers') to the new ones where the rules
            of :mod:`stemlab.weights.transfer` allow; ``False`` keeps the new stem's init. Every
            other tensor loads from ``model`` either way.

    Returns:
        The new model, with ``weights_report`` (DataFrame: key, action, detail, shape, source),
        ``layout`` (stem, first block, consumers, head) so that ``stemlab.anatomy`` resolves it,
        and ``swapped_consumers`` (the rebuilt modules).

    Raises:
        TypeError: arguments of the wrong type.
        ValueError: an unknown ``at``, a graph that does not trace (pass ``consumers=``), or a
            reader that cannot be rebuilt.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(stem, str):
        parse_stem_spec(stem)
        stem = create_stem(stem)
    if not isinstance(stem, nn.Module):
        raise TypeError(
            f"stem must be an nn.Module or a stem spec string, got {type(stem).__name__}"
        )
    if not isinstance(transfer, bool):
        raise TypeError(f"transfer must be a bool, got {transfer!r}")
    at, layout = _resolve_at(model, at)
    old_stem = model.get_submodule(at)
    old, new = module_width(old_stem), module_width(stem)
    if consumers is None and layout is not None:
        declared: Sequence[str] | None = layout.stem_consumers
    else:
        declared = consumers
    if declared is not None:
        if isinstance(declared, str) or not all(isinstance(c, str) for c in declared):
            raise TypeError(f"consumers must be a list of dotted module names, got {declared!r}")
        known = {n for n, _ in model.named_modules()}
        unknown = [c for c in declared if c not in known]
        if unknown:
            raise ValueError(f"consumers {unknown} are not modules of {type(model).__name__}")
        readers, residuals = _declared_readers(model, declared)
        names = list(declared)
    else:
        readers, residuals = find_consumers(model, at)
        names = readers

    swapped = copy.deepcopy(model)
    for attr in ("weights_report",):
        if attr in vars(swapped):
            delattr(swapped, attr)
    ref = next(iter(old_stem.parameters()), None)
    stem = copy.deepcopy(stem)
    if ref is not None:
        stem = stem.to(device=ref.device)
    _set(swapped, at, stem.train(old_stem.training))
    rebuilt: list[str] = []
    if new != old:
        for name in readers:
            _set(swapped, name, _rebuild(name, swapped.get_submodule(name), old, new))
            rebuilt.append(name)
        for owner in dict.fromkeys(residuals):
            block = swapped.get_submodule(owner) if owner else swapped
            if hasattr(block, "downsample") and block.downsample is None:
                reader = swapped.get_submodule(readers[0])
                block.downsample = _projection(reader, old, new)
                rebuilt.append(f"{owner}.downsample" if owner else "downsample")
            elif not hasattr(block, "downsample"):
                raise ValueError(
                    f"the stem's output joins a residual addition in {owner or 'the model'!r} "
                    f"without a projection; {old} -> {new} channels cannot be added: give the "
                    "block a 'downsample' shortcut or keep the stem width"
                )
    if declared is None:
        names = list(dict.fromkeys([*readers, *rebuilt]))
    first = _common_parent(names) or names[0]
    new_layout = Layout(
        stem=at,
        first_block=first,
        head=_head(model, layout),
        stages=() if layout is None else layout.stages,
        torchvision_weights=None if layout is None else layout.torchvision_weights,
        time_folded=False if layout is None else layout.time_folded,
        consumers=tuple(names) if len(names) > 1 else (),
        input_shape=None if layout is None else layout.input_shape,
    )
    swapped.layout = new_layout
    if hasattr(swapped, "backbone_name"):
        del swapped.backbone_name  # the registry entry no longer describes it
    if hasattr(swapped, "stem_spec"):
        swapped.stem_spec = type(stem).__name__
    if hasattr(swapped, "stage_records") and swapped.stage_records:
        records = list(swapped.stage_records)
        if records[0].module == at:
            records[0] = replace(records[0], width=new, stride=getattr(stem, "stride", None))
            swapped.stage_records = tuple(records)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    load_weights(
        swapped,
        state,
        stem_init="transfer" if transfer else "random",
        strict_backbone=False,
        layout=new_layout,
    )
    swapped.swapped_consumers = tuple(rebuilt)
    return swapped
