"""Reading checkpoints safely: local files or torchvision weight names, unwrapped and unprefixed.

Files are read with ``torch.load(weights_only=True)`` only, so a pickle that would run code is
refused before anything in it executes. Nothing is ever downloaded: torchvision weight names resolve
to the torch hub cache and a missing file is an error that says where to put it.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import ResNet18_Weights
from torchvision.models._api import WeightsEnum
from torchvision.models.video import MC3_18_Weights, R2Plus1D_18_Weights, R3D_18_Weights

from stemlab._validation import unknown_name_error

__all__ = [
    "TORCHVISION_WEIGHTS",
    "WRAPPER_KEYS",
    "Checkpoint",
    "UnsafeCheckpointError",
    "WeightsSource",
    "read_checkpoint",
    "resolve_torchvision_weights",
    "torchvision_weights_path",
]

WeightsSource = str | os.PathLike[str] | Mapping[str, torch.Tensor]

TORCHVISION_WEIGHTS: dict[str, type[WeightsEnum]] = {
    "mc3_18": MC3_18_Weights,
    "r2plus1d_18": R2Plus1D_18_Weights,
    "r3d_18": R3D_18_Weights,
    "resnet18": ResNet18_Weights,
}
"""Backbones whose torchvision weights load by name (``"DEFAULT"``, ``"KINETICS400_V1"``...)."""

WRAPPER_KEYS: tuple[str, ...] = (
    "state_dict",
    "model_state_dict",
    "model_state",
    "model",
    "net",
    "network",
    "module",
    "ema",
    "model_ema",
)
"""Keys under which training scripts commonly nest the state dict, tried in this order."""

_STRIP_EVERYWHERE = "module."  # added by DataParallel / DistributedDataParallel, per key
_STRIP_IF_SHARED = "model."  # added by wrappers such as Lightning modules, on every key
_WEIGHTS_NAME = re.compile(r"(?:(?P<enum>\w+_Weights)\.)?(?P<member>[A-Z][A-Z0-9_]*)")


class UnsafeCheckpointError(ValueError):
    """A file that ``torch.load(weights_only=True)`` refuses: not plain tensors and containers."""


@dataclass(frozen=True)
class Checkpoint:
    """A state dict read from a checkpoint, and how it was found.

    Attributes:
        state: tensor name -> tensor (on CPU), after unwrapping and prefix stripping.
        origin: the file path, or ``"<state dict>"`` for a mapping given directly.
        wrapper: the nested keys the state dict was found under (``"state_dict"``), or ``None``.
        stripped_prefixes: the key prefixes removed (``"module."``, ``"model."``).
        ignored: entries next to the tensors that are not tensors, ``name -> type name``.
    """

    state: dict[str, torch.Tensor]
    origin: str
    wrapper: str | None = None
    stripped_prefixes: tuple[str, ...] = ()
    ignored: Mapping[str, str] | None = None


def resolve_torchvision_weights(name: str, *, backbone: str | None) -> WeightsEnum:
    """The torchvision weights enum member for ``name`` on ``backbone``.

    Args:
        name: a member name (``"DEFAULT"``, ``"KINETICS400_V1"``, ``"IMAGENET1K_V1"``) or a full
            name (``"R3D_18_Weights.KINETICS400_V1"``).
        backbone: the registered backbone name; may be ``None`` for a full name.

    Returns:
        The enum member (``DEFAULT`` resolves to the member it aliases).

    Raises:
        ValueError: a backbone without torchvision weights, or an unknown name (with suggestions).
    """
    match = _WEIGHTS_NAME.fullmatch(name)
    if match is None:
        raise ValueError(
            f"weights={name!r} is not a torchvision weights name such as 'DEFAULT' or "
            "'KINETICS400_V1'"
        )
    if match["enum"] is not None:
        by_enum = {enum.__name__: enum for enum in TORCHVISION_WEIGHTS.values()}
        if match["enum"] not in by_enum:
            raise unknown_name_error("torchvision weights enum", match["enum"], by_enum)
        enum = by_enum[match["enum"]]
    elif backbone is None:
        raise ValueError(
            f"weights={name!r} is a torchvision weights name, which needs a model from "
            "stemlab.create_model (it records .backbone_name); for other models pass a checkpoint "
            "path or a full name such as 'R3D_18_Weights.KINETICS400_V1'"
        )
    elif backbone not in TORCHVISION_WEIGHTS:
        raise ValueError(
            f"backbone {backbone!r} has no torchvision weights (weights={name!r}); pass a local "
            f"checkpoint path instead. Backbones with torchvision weights: "
            + ", ".join(sorted(TORCHVISION_WEIGHTS))
        )
    else:
        enum = TORCHVISION_WEIGHTS[backbone]
    if match["member"] not in enum.__members__:
        raise unknown_name_error(f"{enum.__name__} weights", match["member"], enum.__members__)
    return enum[match["member"]]


def torchvision_weights_path(weights: WeightsEnum) -> Path:
    """Where torchvision keeps ``weights`` in the torch hub cache (the file may be absent)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _resolve_path(source: str | os.PathLike[str], *, backbone: str | None) -> Path:
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if isinstance(source, str) and _WEIGHTS_NAME.fullmatch(source):
        weights = resolve_torchvision_weights(source, backbone=backbone)
        path = torchvision_weights_path(weights)
        if not path.is_file():
            full = f"{type(weights).__name__}.{weights.name}"
            raise FileNotFoundError(
                f"torchvision weights {full} are not in the torch hub cache: expected {path} "
                f"(from {weights.url}). stemlab never downloads weights; fetch the file by hand, "
                f"e.g. `curl -L --create-dirs -o {path} {weights.url}`, or point TORCH_HOME at a "
                "cache that has it"
            )
        return path
    if path.is_dir():
        raise IsADirectoryError(f"weights={str(source)!r} is a directory; pass a checkpoint file")
    raise FileNotFoundError(
        f"no checkpoint file at {path} (weights={str(source)!r}); pass an existing file or a "
        "torchvision weights name (upper case) such as 'DEFAULT' or 'KINETICS400_V1'"
    )


def _load_file(path: Path) -> object:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next(
            (line for line in lines if line.startswith(("Trying to load", "Unsupported"))),
            lines[0] if lines else type(err).__name__,
        )
        raise UnsafeCheckpointError(
            f"refused to load {path}: it is not a plain tensor checkpoint, so "
            f"torch.load(weights_only=True) stopped before running anything in it ({reason}). "
            "If you trust the file, load it yourself with torch.load(path, weights_only=False) "
            "and pass the state dict to stemlab.load_weights"
        ) from err
    except (EOFError, KeyError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"{path} is not a PyTorch checkpoint ({type(err).__name__}: {err})"
        ) from err


def _unwrap(obj: object, *, origin: str) -> tuple[dict[str, torch.Tensor], str | None, dict]:
    trail: list[str] = []
    while isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is not None and not tensors:
            trail.append(wrapper)
            obj = obj[wrapper]
            continue
        if tensors:
            bad = [k for k in tensors if not isinstance(k, str)]
            if bad:
                raise ValueError(f"{origin}: state dict keys must be strings, got {bad[:3]!r}")
            ignored = {
                str(k): type(v).__name__ for k, v in obj.items() if not isinstance(v, torch.Tensor)
            }
            return tensors, ".".join(trail) or None, ignored
        break
    where = f" under {'.'.join(trail)!r}" if trail else ""
    if isinstance(obj, Mapping):
        found = f"a dict{where} with keys {sorted(map(str, obj))[:10]}"
    else:
        found = f"a {type(obj).__name__}{where}"
    raise ValueError(
        f"{origin} holds no state dict: found {found}; expected a dict of tensors, or one nested "
        f"under one of {', '.join(map(repr, WRAPPER_KEYS))}"
    )


def _strip_prefixes(
    state: dict[str, torch.Tensor], *, origin: str
) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    stripped: list[str] = []
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new = key
        while new.startswith(_STRIP_EVERYWHERE):
            new = new[len(_STRIP_EVERYWHERE) :]
        if new in renamed:
            raise ValueError(
                f"{origin}: keys {key!r} and {new!r} collide once the {_STRIP_EVERYWHERE!r} "
                "prefix is removed"
            )
        renamed[new] = tensor
    if len(renamed) and any(k != n for k, n in zip(state, renamed)):
        stripped.append(_STRIP_EVERYWHERE)
    if renamed and all(k.startswith(_STRIP_IF_SHARED) for k in renamed):
        renamed = {k[len(_STRIP_IF_SHARED) :]: v for k, v in renamed.items()}
        stripped.append(_STRIP_IF_SHARED)
    return renamed, tuple(stripped)


def read_checkpoint(source: WeightsSource, *, backbone: str | None = None) -> Checkpoint:
    """Read a state dict from a file, a torchvision weights name, or a mapping.

    Args:
        source: a checkpoint path (a plain state dict, or a dict holding one under a key of
            :data:`WRAPPER_KEYS`), a torchvision weights name resolved from the torch hub cache, or a
            state dict mapping.
        backbone: the registered backbone name, needed to resolve short torchvision names.

    Returns:
        The :class:`Checkpoint`, its tensors on CPU with ``"module."`` prefixes (and a ``"model."``
        prefix shared by every key) removed.

    Raises:
        FileNotFoundError: a missing file; for torchvision names the message gives the expected
            path and the URL to fetch by hand.
        UnsafeCheckpointError: a file ``torch.load(weights_only=True)`` refuses (never executed).
        ValueError: an unknown weights name, a file that is not a checkpoint, or one without a
            state dict.
        TypeError: a source of another type.
    """
    if isinstance(source, Mapping):
        origin = "<state dict>"
        raw: object = source
    elif isinstance(source, (str, os.PathLike)):
        path = _resolve_path(source, backbone=backbone)
        origin = str(path)
        raw = _load_file(path)
    else:
        raise TypeError(
            "weights must be a checkpoint path, a torchvision weights name or a state dict "
            f"mapping, got {type(source).__name__}"
        )
    tensors, wrapper, ignored = _unwrap(raw, origin=origin)
    state, stripped = _strip_prefixes(tensors, origin=origin)
    state = {k: v.detach().to("cpu") for k, v in state.items()}
    return Checkpoint(
        state=state, origin=origin, wrapper=wrapper, stripped_prefixes=stripped, ignored=ignored
    )
