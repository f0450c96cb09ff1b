"""Datasets a study config can name: ``synthetic_motion``, ``synthetic_frames``, ``video_folder``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

__all__ = [
    "MiddleFrame",
    "Splits",
    "build_datasets",
    "build_probe_set",
    "build_splits",
    "first_batch",
]

# Validation clips come from a different stream of the same generator than training clips.
_VAL_SEED_OFFSET = 1_000_003
# The probe set is a third stream: the same clips for every replicate seed.
_PROBE_SEED_OFFSET = 2_000_029
# Test clips: a fourth stream, never seen by training or selection.
_TEST_SEED_OFFSET = 3_000_017


class Splits(NamedTuple):
    """A replicate's disjoint splits: train, validation (selection only), test (reports)."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    num_classes: int


class MiddleFrame(Dataset):
    """Image view of a clip dataset: ``(clip[3,T,H,W], label, mask[T,H,W])`` -> its middle frame.

    Args:
        clips: a dataset returning ``(clip, label)`` or ``(clip, label, mask)``.
    """

    def __init__(self, clips: Dataset) -> None:
        self.clips = clips
        self.classes = getattr(clips, "classes", None)

    def __len__(self) -> int:
        return len(self.clips)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        sample = self.clips[index]
        clip, label = sample[0], sample[1]
        middle = clip.shape[1] // 2
        if len(sample) > 2:
            return clip[:, middle], label, sample[2][middle]
        return clip[:, middle], label


def build_datasets(config: Mapping[str, Any]) -> tuple[Dataset, Dataset, int]:
    """Training set, validation set and number of classes for a study's ``data`` config.

    See :func:`build_splits`, which also gives the test split.
    """
    splits = build_splits(config)
    return splits.train, splits.val, splits.num_classes


def build_splits(config: Mapping[str, Any]) -> Splits:
    """Training, validation and test sets and the number of classes of a ``data`` config.

    Synthetic data draws each split from its own stream of the data seed, so the splits share no
    clip; ``test_samples`` (synthetic) or ``test_split`` (a split file, video folders) adds the
    test split (``None`` without it).

    Args:
        config: ``{"dataset": ..., "train_samples": int, "val_samples": int, "seed": int, ...}``;
            the remaining keys go to the dataset class. ``video_folder`` takes ``root`` and
            ``train_split`` / ``val_split`` (split files) instead of sample counts.

    Raises:
        ValueError: unknown dataset or missing keys.
    """
    from stemlab.data import SyntheticMotion, VideoFolder, check_disjoint_splits

    options = dict(config)
    dataset = options.pop("dataset")
    if dataset in ("synthetic_motion", "synthetic_frames"):
        try:
            train_samples = options.pop("train_samples")
            val_samples = options.pop("val_samples")
        except KeyError as exc:
            raise ValueError(f"data config for {dataset!r} needs {exc.args[0]!r}") from None
        test_samples = options.pop("test_samples", None)
        seed = options.pop("seed", 0)
        train = SyntheticMotion(train_samples, seed=seed, **options)
        val = SyntheticMotion(val_samples, seed=seed + _VAL_SEED_OFFSET, **options)
        test = (
            SyntheticMotion(test_samples, seed=seed + _TEST_SEED_OFFSET, **options)
            if test_samples is not None
            else None
        )
        num_classes = len(train.classes)
        if dataset == "synthetic_frames":
            frames = MiddleFrame(test) if test is not None else None
            return Splits(MiddleFrame(train), MiddleFrame(val), frames, num_classes)
        return Splits(train, val, test, num_classes)
    if dataset == "video_folder":
        root = options.pop("root", None)
        if root is None:
            raise ValueError("data config for 'video_folder' needs 'root' (the dataset folder)")
        train_split = options.pop("train_split", None)
        val_split = options.pop("val_split", None)
        test_split = options.pop("test_split", None)
        if train_split is None or val_split is None:
            raise ValueError(
                "data config for 'video_folder' needs 'train_split' and 'val_split' (split "
                "files listing each video once): a study never validates on its training videos"
            )
        if str(train_split) == str(val_split):
            raise ValueError(
                f"train_split and val_split are the same file ({train_split}): a study never "
                "validates on its training videos"
            )
        seed = options.pop("sampling_seed", options.pop("seed", 0))
        train = VideoFolder(root, split_file=train_split, seed=seed, **options)
        val = VideoFolder(
            root,
            split_file=val_split,
            sampling="uniform",
            **{k: v for k, v in options.items() if k != "sampling"},
        )
        _check_same_classes(train, val)
        check_disjoint_splits(train, val)
        test = None
        if test_split is not None:
            if str(test_split) in (str(train_split), str(val_split)):
                raise ValueError(
                    f"test_split {test_split} is also the training or validation split: the "
                    "test split must hold videos neither training nor selection has seen"
                )
            test = VideoFolder(
                root,
                split_file=test_split,
                sampling="uniform",
                **{k: v for k, v in options.items() if k != "sampling"},
            )
            _check_same_classes(train, test)
            _check_disjoint(train, val, test)
        return Splits(train, val, test, len(train.classes))
    raise ValueError(f"unknown dataset {dataset!r}")


def _check_disjoint(train: Any, val: Any, test: Any) -> None:
    """Refuse a test split sharing a video with the training or validation split."""
    from pathlib import Path

    def files(dataset: Any) -> set[Path]:
        return {Path(path).resolve() for path, _ in getattr(dataset, "samples", [])}

    shared = files(test) & (files(train) | files(val))
    if shared:
        example = sorted(shared)[0]
        raise ValueError(
            f"the test split shares {len(shared)} video(s) with the training or validation "
            f"split (e.g. {example}); the test split must be disjoint from both"
        )


def _check_same_classes(train: Any, val: Any) -> None:
    if list(train.classes) != list(val.classes):
        raise ValueError(
            f"training and validation splits have different classes: "
            f"{sorted(set(train.classes) ^ set(val.classes))} appear in only one of them"
        )


def build_probe_set(config: Mapping[str, Any]) -> Dataset:
    """The clips every cell of a study probes: the same for every stem and replicate seed.

    Synthetic datasets draw them from their own stream of the study's base data seed; a video
    folder uses its validation split (centre clips).
    """
    options = dict(config)
    if options.get("dataset") in ("synthetic_motion", "synthetic_frames"):
        options["seed"] = int(options.get("seed", 0)) + _PROBE_SEED_OFFSET - _VAL_SEED_OFFSET
        options.pop("test_samples", None)
        return build_splits(options).val
    options.pop("sampling_seed", None)
    return build_splits(options).val


def first_batch(
    dataset: Dataset, size: int, *, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Samples ``start .. start + size`` stacked: ``(inputs, labels, masks or None)``."""
    stop = min(start + size, len(dataset))  # type: ignore[arg-type]
    samples = [dataset[i] for i in range(start, stop)]
    inputs = torch.stack([s[0] for s in samples])
    labels = torch.as_tensor([int(s[1]) for s in samples])
    masks = torch.stack([torch.as_tensor(s[2]) for s in samples]) if len(samples[0]) > 2 else None
    return inputs, labels, masks
