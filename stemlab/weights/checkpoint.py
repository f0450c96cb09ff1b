"""Reading checkpoints safely: local files or torchvision weight names, unwrapped and unprefixed.

Files are verified first (every zip member against its CRC-32, so flipped or truncated bytes are a
clear error, not garbage weights) and then read with ``torch.load(weights_only=True)`` only, so a
pickle that would run code is refused before anything in it executes. Nothing is ever downloaded:
torchvision weight names resolve to the torch hub cache and a missing file is an error that says
where to put it.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models._api import WeightsEnum

from stemlab._validation import unknown_name_error
from stemlab.backbones.layout import torchvision_weights_enum
from stemlab.backbones.registry import BACKBONES

__all__ = [
    "WRAPPER_KEYS",
    "Checkpoint",
    "UnsafeCheckpointError",
    "WeightsSource",
    "load_checkpoint_file",
    "read_checkpoint",
    "resolve_torchvision_weights",
    "torchvision_weights_enums",
    "torchvision_weights_path",
    "verify_checkpoint_file",
]

WeightsSource = str | os.PathLike[str] | Mapping[str, torch.Tensor]


def torchvision_weights_enums() -> dict[str, type[WeightsEnum]]:
    """Backbone -> torchvision weights enum, from each backbone's declared ``Layout``.

    These backbones load torchvision weights by name (``"DEFAULT"``, ``"KINETICS400_V1"``...).
    """
    return {
        entry.name: torchvision_weights_enum(entry.layout.torchvision_weights)
        for entry in BACKBONES
        if entry.layout is not None and entry.layout.torchvision_weights is not None
    }


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
    enums = torchvision_weights_enums()
    if match["enum"] is not None:
        by_enum = {enum.__name__: enum for enum in enums.values()}
        if match["enum"] not in by_enum:
            raise unknown_name_error("torchvision weights enum", match["enum"], by_enum)
        enum = by_enum[match["enum"]]
    elif backbone is None:
        raise ValueError(
            f"weights={name!r} is a torchvision weights name, which needs a model from "
            "stemlab.create_model (it records .backbone_name); for other models pass a checkpoint "
            "path or a full name such as 'R3D_18_Weights.KINETICS400_V1'"
        )
    elif backbone not in enums:
        raise ValueError(
            f"backbone {backbone!r} has no torchvision weights (weights={name!r}); pass a local "
            f"checkpoint path instead. Backbones with torchvision weights: "
            + ", ".join(sorted(enums))
        )
    else:
        enum = enums[backbone]
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


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (torch.save), an empty one
_PICKLE_MAGIC = b"\x80"  # pickle protocol >= 2: torch's legacy format, or a plain pickle
_CRC_OPTION = "torch.serialization.set_crc32_options(False)"


def _describe_start(head: bytes) -> str:
    shown = head[:8].hex(" ")
    return f"it starts with bytes {shown}" if head else "it is empty"


def _zip_damage(path: Path, size: int) -> str | None:
    """What is wrong with the zip archive at ``path``, or ``None`` when every member checks out."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if not members:
                return "an empty zip archive, not a checkpoint"
            written = [m for m in members if m.file_size > 0]
            if written and all(m.CRC == 0 for m in written):
                warnings.warn(
                    f"{path} was written without checksums ({_CRC_OPTION}); its tensor data "
                    "cannot be verified before loading",
                    stacklevel=3,
                )
                return None
            bad = archive.testzip()
            if bad is None:
                return None
            try:
                with archive.open(bad) as member:
                    while member.read(1 << 20):
                        pass
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
                if "CRC" in str(err):
                    return f"CRC mismatch in member {bad!r}: its bytes changed after it was written"
                return f"damaged member {bad!r} ({err})"
            return f"damaged member {bad!r}"
    except zipfile.BadZipFile as err:
        if str(err) == "File is not a zip file":  # no end-of-archive record: the tail is missing
            return (
                f"truncated: the zip archive ends without its central directory ({size} bytes); "
                "the write was cut short or the copy is incomplete"
            )
        return f"a damaged zip archive ({size} bytes; {err})"
    except (OSError, EOFError, zlib.error) as err:
        return f"a damaged zip archive ({size} bytes; {type(err).__name__}: {err})"


def verify_checkpoint_file(path: str | os.PathLike[str]) -> str:
    """Check that ``path`` is an undamaged PyTorch checkpoint, without unpickling anything.

    A zip checkpoint (what ``torch.save`` writes) must open as an archive and every member must
    match its CRC-32. A legacy (non-zip) torch file carries no checksum; it is accepted here and
    then only loads if ``torch.load(weights_only=True)`` can read it.

    Args:
        path: the file.

    Returns:
        ``"zip"`` or ``"legacy"``.

    Raises:
        FileNotFoundError: no file at ``path``.
        IsADirectoryError: ``path`` is a directory.
        ValueError: naming ``path`` and what is wrong: empty, truncated, CRC mismatch in a member,
            not a checkpoint at all, or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; pass a checkpoint file")
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint file at {path}") from None
    except OSError as err:
        raise ValueError(f"cannot read checkpoint {path}: {err.strerror or err}") from err
    if size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): nothing was ever written to it")
    if head.startswith(_ZIP_MAGIC):
        damage = _zip_damage(path, size)
        if damage is not None:
            raise ValueError(f"checkpoint {path} is unreadable: {damage}")
        return "zip"
    if head.startswith(_PICKLE_MAGIC):
        return "legacy"
    raise ValueError(
        f"{path} is not a PyTorch checkpoint: neither a zip archive written by torch.save nor a "
        f"legacy torch pickle ({_describe_start(head)}, {size} bytes)"
    )


def load_checkpoint_file(path: str | os.PathLike[str]) -> object:
    """Verify ``path`` (:func:`verify_checkpoint_file`), then ``torch.load`` it on the CPU.

    Only ``torch.load(weights_only=True)`` is used, so a pickle that would run code is refused
    before anything in it executes.

    Args:
        path: the checkpoint file.

    Returns:
        Whatever the file holds (tensors, containers of tensors and plain values).

    Raises:
        FileNotFoundError, IsADirectoryError: no file at ``path``.
        UnsafeCheckpointError: a file ``torch.load(weights_only=True)`` refuses.
        ValueError: a damaged, truncated, empty or foreign file, naming ``path``.
    """
    path = Path(path)
    kind = verify_checkpoint_file(path)
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
    except Exception as err:  # whatever torch fails with, the file is unusable
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        if kind == "legacy":
            raise ValueError(
                f"checkpoint {path} is unreadable: a legacy (non-zip) file, which has no checksum "
                f"to verify, and torch could not read it; damaged or truncated? "
                f"({type(err).__name__}: {detail})"
            ) from err
        raise ValueError(
            f"{path} is not a PyTorch checkpoint: a zip archive with intact members that "
            f"torch.load cannot read ({type(err).__name__}: {detail})"
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
        ValueError: an unknown weights name; a file that is empty, truncated, damaged (CRC
            mismatch) or not a checkpoint (the message names the file and what is wrong); or one
            without a state dict.
        TypeError: a source of another type.
    """
    if isinstance(source, Mapping):
        origin = "<state dict>"
        raw: object = source
    elif isinstance(source, (str, os.PathLike)):
        path = _resolve_path(source, backbone=backbone)
        origin = str(path)
        raw = load_checkpoint_file(path)
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
