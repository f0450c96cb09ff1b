"""SyntheticMotion: shapes, determinism, motion geometry, and single frames carrying no class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stemlab.data import MOTIONS, SHAPES, SyntheticMotion


@pytest.mark.parametrize(
    ("task", "num_classes", "total"), [("motion", 4, 4), ("appearance", 6, 6), ("both", 3, 9)]
)
def test_item_layout(task: str, num_classes: int, total: int) -> None:
    ds = SyntheticMotion(12, task=task, clip_len=5, size=(24, 32), num_classes=num_classes)
    clip, label, mask = ds[7]
    assert clip.shape == (3, 5, 24, 32) and clip.dtype == torch.float32
    assert mask.shape == (5, 24, 32) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (mask.flatten(1).sum(1) > 0).all(), "the object is in view in every frame"
    assert label == 7 % total
    assert ds.num_classes == total == len(ds.classes)
    assert ds.targets == [i % total for i in range(12)]


def test_class_names() -> None:
    assert SyntheticMotion(4, num_classes=8).classes == list(MOTIONS)
    assert SyntheticMotion(4, task="appearance", num_classes=8).classes == list(SHAPES)
    both = SyntheticMotion(4, task="both", num_classes=2)
    assert both.classes == ["disk/right", "disk/left", "square/right", "square/left"]


def test_deterministic_per_seed_and_index() -> None:
    ds = SyntheticMotion(10, size=16, clip_len=3, seed=3)
    first = ds[4]
    ds[2]  # rendering another index in between changes nothing
    again = SyntheticMotion(10, size=16, clip_len=3, seed=3)[4]
    assert torch.equal(first[0], again[0]) and torch.equal(first[2], again[2])
    other_seed = SyntheticMotion(10, size=16, clip_len=3, seed=4)[4]
    assert not torch.equal(first[0], other_seed[0])
    assert not torch.equal(ds[4][0], ds[8][0])  # same label, different clip


def test_negative_index_and_bounds() -> None:
    ds = SyntheticMotion(5, size=16, clip_len=2)
    assert torch.equal(ds[-1][0], ds[4][0])
    with pytest.raises(IndexError):
        ds[5]


def _centroids(mask: torch.Tensor) -> torch.Tensor:
    _, h, w = mask.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    area = mask.flatten(1).sum(1)
    return torch.stack(
        [(mask * xs).flatten(1).sum(1) / area, (mask * ys).flatten(1).sum(1) / area], 1
    )


@pytest.mark.parametrize(
    ("motion", "step"), [("right", (2, 0)), ("left", (-2, 0)), ("down", (0, 2)), ("up", (0, -2))]
)
def test_translation_moves_mask_and_texture(motion: str, step: tuple[int, int]) -> None:
    ds = SyntheticMotion(8, clip_len=4, size=48, num_classes=4, speed=2.0, noise=0.0)
    index = MOTIONS.index(motion)
    clip, label, mask = ds[index]
    assert ds.classes[label] == motion
    moves = _centroids(mask).diff(dim=0)
    torch.testing.assert_close(
        moves, torch.tensor([step] * 3, dtype=torch.float32), atol=0.35, rtol=0
    )
    # The dots travel with the object: inside the object, frame t+1 is frame t shifted by `step`.
    dx, dy = step
    inner = mask[:-1].bool() & torch.roll(mask[1:], shifts=(-dy, -dx), dims=(1, 2)).bool()
    shifted = torch.roll(clip[0, 1:], shifts=(-dy, -dx), dims=(1, 2))
    assert inner.sum() > 100
    assert torch.equal(shifted[inner], clip[0, :-1][inner])


def test_rotation_and_scale_geometry() -> None:
    ds = SyntheticMotion(8, clip_len=6, size=48, num_classes=8, speed=1.5, noise=0.0)
    areas = {MOTIONS[i]: ds[i][2].flatten(1).sum(1) for i in range(4, 8)}
    assert (areas["expand"].diff() > 0).all()
    assert (areas["contract"].diff() < 0).all()
    for rotation in ("rotate_cw", "rotate_ccw"):
        # Rotation keeps the area (up to pixelisation) and the centroid.
        area = areas[rotation]
        assert float((area.max() - area.min()) / area.mean()) < 0.08
        rotating_mask = ds[MOTIONS.index(rotation)][2]
        assert float(_centroids(rotating_mask).std(0).max()) < 1.0


def test_motion_frames_are_texture_matched() -> None:
    """Without noise every pixel of a "motion" frame is a +-1 dot (times the channel gain)."""
    ds = SyntheticMotion(8, size=32, clip_len=4, num_classes=8, noise=0.0)
    for index in range(8):
        clip, _, mask = ds[index]
        for channel in clip:
            gain = channel.abs().max()
            assert torch.allclose(channel.abs(), gain.expand_as(channel))
            inside, outside = channel[mask.bool()], channel[~mask.bool()]
            assert abs(float(inside.mean() - outside.mean())) < 0.25 * float(gain)


def test_appearance_object_is_visible() -> None:
    ds = SyntheticMotion(8, task="appearance", size=32, clip_len=2, noise=0.0, object_contrast=0.8)
    for index in range(8):
        clip, _, mask = ds[index]
        gain = clip[0].abs().max() / 1.8  # object dots are +-1 shifted by +-0.8
        contrast = clip[0][mask.bool()].mean() - clip[0][~mask.bool()].mean()
        assert abs(float(contrast / gain)) == pytest.approx(0.8, abs=0.2)


def test_distractors_are_visible_and_under_the_object() -> None:
    busy = SyntheticMotion(4, size=32, clip_len=3, num_classes=4, distractors=3, noise=0.0)
    for index in range(4):
        clip, _, mask = busy[index]
        level = clip[0].abs() / clip[0].abs().max()
        # Distractors (0.8 +- 0.3 dots) are the only pixels whose magnitude is not that of a dot.
        off_dot = ~torch.isclose(level, torch.full_like(level, float(level[mask.bool()][0])))
        assert off_dot.any()
        assert not (off_dot & mask.bool()).any(), "the object is drawn over the distractors"


def test_dataloader_batches() -> None:
    loader = DataLoader(SyntheticMotion(6, size=16, clip_len=3), batch_size=4)
    clips, labels, masks = next(iter(loader))
    assert clips.shape == (4, 3, 3, 16, 16) and masks.shape == (4, 3, 16, 16)
    assert labels.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"task": "motoin"}, ValueError, "motion"),
        ({"num_classes": 9}, ValueError, "num_classes"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"clip_len": 1}, ValueError, "clip_len"),
        ({"size": 4}, ValueError, "size"),
        ({"size": (16, 16, 16)}, ValueError, "size"),
        ({"speed": (2.0, 1.0)}, ValueError, "speed"),
        ({"object_size": 0.7}, ValueError, "object_size"),
        ({"noise": -1.0}, ValueError, "noise"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"distractors": "2"}, TypeError, "distractors"),
    ],
)
def test_invalid_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SyntheticMotion(4, **kwargs)


def _ridge_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Accuracy of a linear (ridge, one-vs-all) classifier fitted in closed form."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
    targets = np.eye(int(train_y.max()) + 1)[train_y]
    weights = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ targets)
    return float(((b @ weights).argmax(1) == test_y).mean())


def _shift_products(x: np.ndarray, y: np.ndarray, reach: int = 2) -> np.ndarray:
    """Mean of x * shift(y) over the frame for every shift up to ``reach`` pixels: [N, (2r+1)^2]."""
    out = []
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            out.append((x * np.roll(y, (dy, dx), axis=(-2, -1))).mean(axis=(-2, -1)))
    return np.stack(out, axis=-1)


def test_single_frame_linear_probe_is_at_chance() -> None:
    """No single frame of "motion" tells the class; the frame pair does (positive control).

    The probe sees the pixels and the frame's spatial autocorrelation at small shifts; the control
    gets the same shift products computed between consecutive frames.
    """
    n_train, n_test = 900, 600
    kwargs = {
        "task": "motion",
        "clip_len": 4,
        "size": 16,
        "num_classes": 4,
        "speed": 1.0,
        "noise": 0.0,
    }
    train = SyntheticMotion(n_train, seed=11, **kwargs)
    test = SyntheticMotion(n_test, seed=12, **kwargs)

    def features(ds: SyntheticMotion, pair: bool) -> tuple[np.ndarray, np.ndarray]:
        rows, labels = [], []
        for index in range(len(ds)):
            clip, label, _ = ds[index]
            gray = clip.mean(0).numpy()
            frame = gray[1]
            if pair:
                rows.append(_shift_products(gray[2], gray[1]))
            else:
                rows.append(np.concatenate([frame.ravel(), _shift_products(frame, frame)]))
            labels.append(label)
        return np.asarray(rows), np.asarray(labels)

    chance = 1 / 4
    margin = 3 * np.sqrt(chance * (1 - chance) / n_test)  # three binomial standard errors
    single = _ridge_probe(*features(train, False), *features(test, False))
    assert single < chance + margin, f"single-frame probe accuracy {single:.3f}"
    pair = _ridge_probe(*features(train, True), *features(test, True))
    assert pair > 0.9, f"frame-pair probe accuracy {pair:.3f}"
