"""VideoFolder: class-per-folder video datasets (UCF101, HMDB51, Kinetics layouts) read with PyAV."""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from stemlab._validation import check_choice, check_int_tuple, check_positive_int
from stemlab.data.decode import DecodeError, VideoInfo, probe_video, read_frames

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "VIDEO_EXTENSIONS",
    "UCF101Layout",
    "VideoFolder",
    "check_disjoint_splits",
    "prepare_hmdb51",
    "prepare_ucf101",
]

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
# The statistics torchvision's Kinetics-400 video models were trained with.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

_UCF101_NAME = re.compile(r"^v_(?P<cls>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$")


_SPLIT_LABEL = re.compile(r"^(?P<entry>.*\S)\s+-?\d+$")


def _split_line_entries(line: str) -> list[str]:
    """Spellings of one split line's video, as normalised posix paths, most literal first.

    The whole line (a file name may hold spaces) and, when it ends in a whitespace-separated
    integer (UCF101's class label), the line without it. An empty line has none.
    """
    text = line.strip().replace("\\", "/")
    if not text:
        return []
    spellings = [text]
    labelled = _SPLIT_LABEL.match(text)
    if labelled:
        spellings.append(labelled["entry"])
    return [posixpath.normpath(entry) for entry in spellings]


def _read_split_file(split_file: Path) -> list[str]:
    """Entries of a split file: every non-empty line without its trailing label, as posix paths."""
    return [
        spellings[-1]
        for spellings in map(_split_line_entries, split_file.read_text().splitlines())
        if spellings
    ]


class VideoFolder(Dataset):
    """Videos in ``root/<class>/**/<file>``; each item is one clip and the class index.

    Every file is probed once when the dataset is built (a progress bar shows it): files that are
    not videos, cannot be opened or yield no frame are left out and listed in ``.skipped`` as
    ``(path, reason)`` with one warning giving the count. A file that fails later, while a clip is
    decoded, is added to ``.skipped`` and replaced by the next readable sample (with a warning), so
    a pass over the data never stops on a bad file. Under DataLoader workers that late record stays
    in the worker's copy of the dataset; the warning still reaches the log. A class folder left
    with no readable video (after the split file, if any) is dropped from ``.classes`` with a
    warning naming it and listed in ``.empty_classes``; labels stay contiguous (``0..C-1`` over the
    remaining classes, in sorted order). A class with videos that the split file just does not
    list is kept, so that two splits of one root number their classes alike.

    Args:
        root: the folder holding one sub-folder per class (files directly in ``root`` are ignored).
        clip_len: frames per clip.
        size: output frame size, an int (square) or ``(height, width)``; frames are resized so that
            they cover it, then cropped (centre crop for ``"uniform"``, random crop for
            ``"random"``).
        frame_stride: distance in frames between consecutive clip frames.
        sampling: ``"uniform"`` takes the clip at the centre of the video (deterministic, for
            evaluation); ``"random"`` takes a random window and crop, drawn from
            ``(seed, index, epoch)`` (see :meth:`set_epoch`).
        split_file: keep only the videos listed in this file, one per line as a path relative to
            ``root`` (UCF101 ``trainlist01.txt`` style, a trailing integer label is ignored) or a
            bare file name (HMDB51 style); names may hold spaces. Listed files that do not exist
            go to ``.skipped``; a video listed twice (however spelled) is kept once, with a
            warning.
        transform: called on the final normalised clip ``[3, T, H, W]``.
        mean: per-channel mean subtracted from frames in [0, 1].
        std: per-channel standard deviation frames are divided by.
        seed: seed of the random clip and crop positions.
        probe: probe every file when the dataset is built (``False`` trusts the extensions and
            discovers unreadable files only while decoding).
        progress: show a progress bar while probing.

    A video whose frame size changes mid-stream is skipped when a clip of it is decoded (its
    name and both sizes are in the warning and in ``.skipped``); it is not resized.

    Attributes:
        classes: the class names, label ``i`` is ``classes[i]`` (store them with results: a
            renamed folder would relabel the videos).
        samples: ``(path, label)`` of every kept video.
        split_file: the split file given, or ``None``.

    Raises:
        FileNotFoundError: if ``root`` (or ``split_file``) does not exist.
        ValueError: if one video (the same file, resolved) is claimed by two class folders,
            e.g. a class folder linked to the root.
        TypeError, ValueError: on invalid arguments.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        clip_len: int,
        size: int | Sequence[int],
        frame_stride: int = 1,
        sampling: str = "uniform",
        split_file: str | os.PathLike[str] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mean: Sequence[float] = KINETICS_MEAN,
        std: Sequence[float] = KINETICS_STD,
        seed: int = 0,
        probe: bool = True,
        progress: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root={os.fspath(root)!r} is not a directory")
        self.clip_len = check_positive_int("clip_len", clip_len)
        self.size: tuple[int, int] = check_int_tuple("size", size, 2)  # type: ignore[assignment]
        self.frame_stride = check_positive_int("frame_stride", frame_stride)
        self.sampling = check_choice("sampling", sampling, ("uniform", "random"))
        self.seed = check_positive_int("seed", seed, allow_zero=True)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.transform = transform
        self.mean = self._channel_stats("mean", mean)
        self.std = self._channel_stats("std", std)
        if bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {tuple(std)!r}")
        self.epoch = 0

        self.classes = sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.skipped: list[tuple[str, str]] = []
        self.split_file = Path(split_file) if split_file is not None else None
        candidates = self._find_files()
        self._check_one_class_per_video(candidates)
        with_videos = {y for p, y in candidates if p.lower().endswith(VIDEO_EXTENSIONS)}
        if split_file is not None:
            candidates = self._apply_split(candidates, Path(split_file))
        candidates = self._keep_videos(candidates)
        # A class the split file does not list keeps its label (two splits of a root agree).
        unlisted = with_videos - {y for _, y in candidates}

        self.samples: list[tuple[str, int]] = []
        self._info: list[VideoInfo | None] = []
        for path, label in tqdm(
            candidates, desc="probing videos", unit="file", disable=not (probe and progress)
        ):
            info = None
            if probe:
                try:
                    info = probe_video(path)
                except DecodeError as error:
                    self.skipped.append((path, str(error)))
                    continue
            self.samples.append((path, label))
            self._info.append(info)
        if self.skipped:
            warnings.warn(
                f"VideoFolder skipped {len(self.skipped)} file(s) under {os.fspath(self.root)!r} "
                "(unreadable, corrupt, not a video or missing); see .skipped for the reasons",
                stacklevel=2,
            )
        self.empty_classes: list[str] = self._drop_empty_classes(keep=unlisted)
        if self.empty_classes:
            warnings.warn(
                f"VideoFolder dropped {len(self.empty_classes)} class folder(s) under "
                f"{os.fspath(self.root)!r} with no readable video"
                f"{' in ' + Path(split_file).name if split_file is not None else ''}: "
                f"{', '.join(self.empty_classes)}; labels are renumbered over the "
                f"{len(self.classes)} remaining classes (see .empty_classes)",
                stacklevel=2,
            )

    def _drop_empty_classes(self, *, keep: set[int]) -> list[str]:
        """Drop classes without a sample (except ``keep``), renumber labels; return dropped names."""
        used = sorted({label for _, label in self.samples} | keep)
        if len(used) == len(self.classes):
            return []
        kept = set(used)
        empty = [name for index, name in enumerate(self.classes) if index not in kept]
        new_label = {old: new for new, old in enumerate(used)}
        self.classes = [self.classes[old] for old in used]
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.samples = [(path, new_label[label]) for path, label in self.samples]
        return empty

    @staticmethod
    def _channel_stats(argument: str, value: Sequence[float]) -> torch.Tensor:
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            raise ValueError(f"{argument} must be 3 numbers (one per RGB channel), got {value!r}")
        return torch.tensor([float(v) for v in value]).view(3, 1, 1, 1)

    def _find_files(self) -> list[tuple[str, int]]:
        """Every file under a class folder, hidden ones excepted, in a stable order."""
        found = []
        for name in self.classes:
            for directory, subdirs, files in os.walk(self.root / name):
                subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
                for file_name in sorted(files):
                    if not file_name.startswith("."):
                        found.append((os.path.join(directory, file_name), self.class_to_idx[name]))
        return found

    def _check_one_class_per_video(self, candidates: list[tuple[str, int]]) -> None:
        claimed: dict[str, tuple[str, int]] = {}
        for path, label in candidates:
            if not path.lower().endswith(VIDEO_EXTENSIONS):
                continue
            real = os.path.realpath(path)
            first = claimed.setdefault(real, (path, label))
            if first[1] != label:
                raise ValueError(
                    f"root={os.fspath(self.root)!r}: the video {real!r} is claimed by class "
                    f"{self.classes[first[1]]!r} (as {first[0]!r}) and class "
                    f"{self.classes[label]!r} (as {path!r}); a video must belong to one class "
                    "folder (is a class folder a link to the root or to another class?)"
                )

    def _keep_videos(self, candidates: list[tuple[str, int]]) -> list[tuple[str, int]]:
        kept = []
        for path, label in candidates:
            if path.lower().endswith(VIDEO_EXTENSIONS):
                kept.append((path, label))
            else:
                suffix = Path(path).suffix or "(none)"
                self.skipped.append((path, f"not a video file (extension {suffix})"))
        return kept

    def _apply_split(
        self, candidates: list[tuple[str, int]], split_file: Path
    ) -> list[tuple[str, int]]:
        if not split_file.is_file():
            raise FileNotFoundError(f"split_file={os.fspath(split_file)!r} does not exist")
        by_relative = {Path(p).relative_to(self.root).as_posix(): (p, y) for p, y in candidates}
        by_name = {Path(p).name: (p, y) for p, y in candidates}
        kept: list[tuple[str, int]] = []
        listed: set[str] = set()
        repeated: list[str] = []
        for line in split_file.read_text().splitlines():
            spellings = _split_line_entries(line)
            if not spellings:
                continue
            match = None
            for entry in spellings:
                match = by_relative.get(entry) if "/" in entry else by_name.get(entry)
                if match is not None:
                    break
            if match is None:
                reason = f"listed in {split_file.name} but not found"
                self.skipped.append((os.fspath(self.root / spellings[-1]), reason))
                continue
            real = os.path.realpath(match[0])
            if real in listed:
                repeated.append(entry)
                continue
            listed.add(real)
            kept.append(match)
        if repeated:
            shown = ", ".join(repr(entry) for entry in repeated[:3])
            more = f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
            warnings.warn(
                f"split_file={os.fspath(split_file)!r} lists {len(repeated)} video(s) again "
                f"({shown}{more}); each video is kept once",
                stacklevel=3,
            )
        return kept

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={os.fspath(self.root)!r}, samples={len(self.samples)}, "
            f"classes={len(self.classes)}, skipped={len(self.skipped)}, clip_len={self.clip_len}, "
            f"size={self.size}, sampling={self.sampling!r})"
        )

    @property
    def targets(self) -> list[int]:
        """Every sample's label."""
        return [label for _, label in self.samples]

    def set_epoch(self, epoch: int) -> None:
        """Draw new random clip positions: ``"random"`` sampling depends on ``(seed, index, epoch)``."""
        self.epoch = check_positive_int("epoch", epoch, allow_zero=True)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not len(self.samples):
            raise IndexError("VideoFolder is empty")
        if index < 0:
            index += len(self.samples)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        tried = 0
        while tried < len(self.samples):
            path, label = self.samples[index]
            try:
                return self._load(index), label
            except DecodeError as error:
                self.skipped.append((path, str(error)))
                warnings.warn(
                    f"VideoFolder: cannot decode {path!r} ({error}); using the next sample",
                    stacklevel=2,
                )
            index = (index + 1) % len(self.samples)
            tried += 1
        raise RuntimeError(f"no readable video in {os.fspath(self.root)!r}")

    def _load(self, index: int) -> torch.Tensor:
        path, _ = self.samples[index]
        info = self._info[index]
        if info is None:
            info = probe_video(path)
            self._info[index] = info
        rng = np.random.default_rng((self.seed, index, self.epoch))
        span = (self.clip_len - 1) * self.frame_stride + 1
        room = max(info.num_frames - span, 0)
        start = int(rng.integers(0, room + 1)) if self.sampling == "random" else room // 2
        indices = [
            min(start + k * self.frame_stride, info.num_frames - 1) for k in range(self.clip_len)
        ]
        frames = read_frames(path, indices, fps=info.fps)
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)  # T, 3, H, W
        clip = self._resize_crop(clip, rng)
        clip = clip.permute(1, 0, 2, 3).sub_(self.mean).div_(self.std)  # 3, T, H, W
        if self.transform is not None:
            clip = self.transform(clip)
        return clip.contiguous()

    def _resize_crop(self, clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        out_h, out_w = self.size
        height, width = clip.shape[-2:]
        scale = max(out_h / height, out_w / width)
        new_h, new_w = max(out_h, round(height * scale)), max(out_w, round(width * scale))
        if (new_h, new_w) != (height, width):
            clip = F.interpolate(
                clip, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True
            )
        if self.sampling == "random":
            top = int(rng.integers(0, new_h - out_h + 1))
            left = int(rng.integers(0, new_w - out_w + 1))
        else:
            top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
        return clip[..., top : top + out_h, left : left + out_w]


def check_disjoint_splits(train: VideoFolder, val: VideoFolder) -> None:
    """Refuse a validation split that shares a video with the training split.

    Videos are compared by resolved path, so ``./train.txt`` and ``train.txt``, or two lists
    naming one file by its folder path and by its bare name, are caught.

    Args:
        train: the training split.
        val: the validation split.

    Raises:
        ValueError: naming both split files, how many videos they share and a few of them.
    """
    train_videos = {os.path.realpath(path) for path, _ in train.samples}
    shared = [path for path, _ in val.samples if os.path.realpath(path) in train_videos]
    if not shared:
        return
    shown = ", ".join(repr(os.path.relpath(path, val.root)) for path in shared[:3])
    more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
    raise ValueError(
        f"val_split={_split_name(val)} shares {len(shared)} of its {len(val.samples)} videos "
        f"with train_split={_split_name(train)} ({shown}{more}): the validation split must not "
        "hold training videos"
    )


def _split_name(folder: VideoFolder) -> str:
    split = folder.split_file
    return repr(os.fspath(split)) if split is not None else f"None (all of {folder.root})"


@dataclass
class UCF101Layout:
    """What :func:`prepare_ucf101` built."""

    root: Path
    classes: list[str]
    num_videos: int
    split_files: dict[str, Path] = field(default_factory=dict)
    unmatched: list[Path] = field(default_factory=list)


def prepare_ucf101(
    flat_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    split_dir: str | os.PathLike[str] | None = None,
    link: str = "symlink",
    progress: bool = True,
) -> UCF101Layout:
    """Turn UCF101's ``v_<Class>_gXX_cXX.avi`` files into a class-per-folder layout with its splits.

    With ``split_dir`` (the official ``ucfTrainTestlist`` folder) the class folder of each video is
    taken from the split files, which also fixes the one class whose file names are spelled
    differently (``v_HandStandPushups_*`` belongs to ``HandstandPushups``); the split files are
    copied into ``out_dir`` so ``VideoFolder(out_dir, split_file=out_dir / "trainlist01.txt")``
    works. Existing destination files are kept, so the call can be repeated.

    Args:
        flat_dir: the folder with every ``.avi`` file, directly or in sub-folders (the official
            ``UCF-101/<Class>/`` archive layout works as it is).
        out_dir: where to build ``out_dir/<Class>/v_*.avi``.
        split_dir: optional folder with ``trainlist0N.txt`` / ``testlist0N.txt`` / ``classInd.txt``.
        link: ``"symlink"``, ``"hardlink"``, ``"copy"`` or ``"move"``.
        progress: show a progress bar.

    Returns:
        A :class:`UCF101Layout` with the classes, the number of videos placed, the copied split
        files and the files whose names do not follow the UCF101 pattern (left in place).

    Raises:
        FileNotFoundError: if ``flat_dir`` or ``split_dir`` does not exist.
        ValueError: on an unknown ``link`` mode.
    """
    check_choice("link", link, ("symlink", "hardlink", "copy", "move"))
    flat = Path(flat_dir)
    if not flat.is_dir():
        raise FileNotFoundError(f"flat_dir={os.fspath(flat_dir)!r} is not a directory")
    out = Path(out_dir)
    folder_of: dict[str, str] = {}
    split_files: dict[str, Path] = {}
    if split_dir is not None:
        splits = Path(split_dir)
        if not splits.is_dir():
            raise FileNotFoundError(f"split_dir={os.fspath(split_dir)!r} is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        for split_file in sorted(splits.glob("*.txt")):
            target = out / split_file.name
            shutil.copyfile(split_file, target)
            split_files[split_file.stem] = target
            if split_file.name.startswith(("trainlist", "testlist")):
                for entry in _read_split_file(split_file):
                    if "/" in entry:
                        folder, name = entry.rsplit("/", 1)
                        folder_of[name] = folder

    placed, unmatched, classes = 0, [], set()
    inside_out = out.resolve()
    files = sorted(
        p
        for p in flat.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and not p.parent.resolve().is_relative_to(inside_out)
    )
    for path in tqdm(files, desc="arranging UCF101", unit="file", disable=not progress):
        match = _UCF101_NAME.match(path.name)
        if match is None:
            unmatched.append(path)
            continue
        folder = folder_of.get(path.name, match.group("cls"))
        classes.add(folder)
        destination = out / folder / path.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        placed += 1
        if destination.exists() or destination.is_symlink():
            continue
        if link == "symlink":
            destination.symlink_to(path.resolve())
        elif link == "hardlink":
            os.link(path, destination)
        elif link == "copy":
            shutil.copy2(path, destination)
        else:
            shutil.move(os.fspath(path), destination)
    if unmatched:
        warnings.warn(
            f"prepare_ucf101: {len(unmatched)} file(s) in {os.fspath(flat)!r} do not match "
            "v_<Class>_gXX_cXX.avi and were left out",
            stacklevel=2,
        )
    return UCF101Layout(out, sorted(classes), placed, split_files, unmatched)


_HMDB51_SPLIT = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[1-9])\.txt$")
_HMDB51_ROLES = {"1": "trainlist", "2": "testlist"}  # "0": not used by that split


def prepare_hmdb51(
    split_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> dict[str, Path]:
    """Turn HMDB51's per-class split files into UCF101-style ``trainlist0N`` / ``testlist0N``.

    HMDB51 ships one file per class and split, ``<class>_test_split<N>.txt``, whose lines are
    ``<video>.avi <role>`` (1: training, 2: testing, 0: not used). This writes
    ``out_dir/trainlist0N.txt`` and ``out_dir/testlist0N.txt`` with ``<class>/<video>.avi`` lines,
    so ``VideoFolder(out_dir, split_file=out_dir / "trainlist01.txt")`` reads split N of a
    class-per-folder HMDB51 (``out_dir/<class>/*.avi``, as the unpacked class archives give).

    Args:
        split_dir: the folder with the ``*_test_split<N>.txt`` files (``testTrainMulti_7030_splits``).
        out_dir: the class-per-folder HMDB51 root; the split lists are written there.

    Returns:
        ``{"trainlist01": path, "testlist01": path, ...}`` for every split found.

    Raises:
        FileNotFoundError: if ``split_dir`` does not exist.
        ValueError: if ``split_dir`` holds no HMDB51 split file, or a line has another role.
    """
    splits = Path(split_dir)
    if not splits.is_dir():
        raise FileNotFoundError(f"split_dir={os.fspath(split_dir)!r} is not a directory")
    lists: dict[str, list[str]] = {}
    for split_file in sorted(splits.iterdir()):
        match = _HMDB51_SPLIT.match(split_file.name)
        if match is None or not split_file.is_file():
            continue
        for number, line in enumerate(split_file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ValueError(
                    f"{split_file.name} line {number}: expected '<video>.avi 0|1|2', got {line!r}"
                )
            if fields[1] in _HMDB51_ROLES:
                name = f"{_HMDB51_ROLES[fields[1]]}0{match['split']}"
                lists.setdefault(name, []).append(f"{match['cls']}/{fields[0]}")
    if not lists:
        raise ValueError(
            f"split_dir={os.fspath(split_dir)!r} holds no HMDB51 split file "
            "(<class>_test_split<N>.txt)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, entries in sorted(lists.items()):
        written[name] = out / f"{name}.txt"
        written[name].write_text("\n".join(entries) + "\n")
    return written
