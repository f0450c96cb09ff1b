"""Checks a study script runs before any cell: are its dataset and checkpoint where it expects?

Each returns ``None`` when the input is there, else one sentence saying where it is expected and
how to build or fetch it; the study raises :class:`stemlab.errors.StudyFileError` with them, so
``stemlab study run`` exits 2 with that message before any cell.
"""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = ["checkpoint_problem", "split_folder_problem"]


def split_folder_problem(
    root: Path, split: int, *, name: str, env: str, prepare: str, unpack: str
) -> str | None:
    """A class-per-folder dataset with ``trainlist0N.txt`` / ``testlist0N.txt`` at ``root``.

    Args:
        root: where the dataset is expected.
        split: the split number N.
        name: the dataset's name for the message (``"UCF101"``).
        env: the environment variable that sets ``root``.
        prepare: the ``stemlab.data`` call that builds the layout (``'prepare_ucf101(...)'``).
        unpack: what to unpack first, as a sentence fragment.

    Returns:
        ``None`` if the folder has class folders and both split files, else the message.
    """
    splits = [root / f"trainlist0{split}.txt", root / f"testlist0{split}.txt"]
    has_classes = root.is_dir() and any(
        p.is_dir() and not p.name.startswith(".") for p in root.iterdir()
    )
    if has_classes and all(p.is_file() for p in splits):
        return None
    function = prepare.split("(", 1)[0]
    shell = "python -c " + shlex.quote(f"from stemlab.data import {function}; {prepare}")
    return (
        f"{name} is not at {root} ({env}): it needs a folder per class and {splits[0].name}, "
        f"{splits[1].name}. {unpack}, then run stemlab.data.{prepare}, i.e. `{shell}`."
    )


def checkpoint_problem(weights: str, *, backbone: str) -> str | None:
    """A torchvision checkpoint in the torch hub cache (stemlab never downloads it).

    Returns:
        ``None`` if the file is there, else where it is expected, its URL and a ``curl`` line.
    """
    from stemlab.weights import resolve_torchvision_weights, torchvision_weights_path

    resolved = resolve_torchvision_weights(weights, backbone=backbone)
    path = torchvision_weights_path(resolved)
    if path.is_file():
        return None
    return (
        f"The checkpoint {type(resolved).__name__}.{resolved.name} is not at {path} "
        f"(TORCH_HOME); fetch it from {resolved.url}, e.g. "
        f"`curl -L --create-dirs -o {shlex.quote(str(path))} {resolved.url}`."
    )
