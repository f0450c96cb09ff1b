"""SyntheticMotion: shapes, determinism, motion geometry, and single frames carrying no class."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stemlab.data import MOTIONS, SHAPES, SyntheticMotion
from stemlab.data.synthetic import pink_filter


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


def _best_shift(before: torch.Tensor, after: torch.Tensor, reach: int = 4) -> tuple[int, int]:
    """The (dx, dy) roll of ``before`` that overlaps ``after`` most (periodic frame)."""
    scores = {
        (dx, dy): float((torch.roll(before, shifts=(dy, dx), dims=(0, 1)) * after).sum())
        for dx in range(-reach, reach + 1)
        for dy in range(-reach, reach + 1)
    }
    return max(scores, key=scores.get)


@pytest.mark.parametrize("texture", ["white", "pink"])
@pytest.mark.parametrize(
    ("motion", "step"), [("right", (2, 0)), ("left", (-2, 0)), ("down", (0, 2)), ("up", (0, -2))]
)
def test_translation_moves_mask_and_texture(
    motion: str, step: tuple[int, int], texture: str
) -> None:
    ds = SyntheticMotion(
        8, clip_len=4, size=48, num_classes=4, speed=2.0, noise=0.0, texture=texture
    )
    index = MOTIONS.index(motion)
    clip, label, mask = ds[index]
    assert ds.classes[label] == motion
    if texture == "white":  # the object stays in view, so its centroid moves by the step
        moves = _centroids(mask).diff(dim=0)
        torch.testing.assert_close(
            moves, torch.tensor([step] * 3, dtype=torch.float32), atol=0.35, rtol=0
        )
    else:  # on the torus the mask is the previous one rolled by the step
        assert [_best_shift(mask[t], mask[t + 1]) for t in range(3)] == [step] * 3
    # The dots travel with the object: inside the object, frame t+1 is frame t shifted by `step`.
    dx, dy = step
    inner = mask[:-1].bool() & torch.roll(mask[1:], shifts=(-dy, -dx), dims=(1, 2)).bool()
    shifted = torch.roll(clip[0, 1:], shifts=(-dy, -dx), dims=(1, 2))
    assert inner.sum() > 100
    assert torch.equal(shifted[inner], clip[0, :-1][inner])


def test_rotation_and_scale_geometry() -> None:
    ds = SyntheticMotion(
        8, clip_len=6, size=48, num_classes=8, speed=1.5, noise=0.0, texture="white"
    )
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
    ds = SyntheticMotion(8, size=32, clip_len=4, num_classes=8, noise=0.0, texture="white")
    for index in range(8):
        clip, _, mask = ds[index]
        for channel in clip:
            gain = channel.abs().max()
            assert torch.allclose(channel.abs(), gain.expand_as(channel))
            inside, outside = channel[mask.bool()], channel[~mask.bool()]
            assert abs(float(inside.mean() - outside.mean())) < 0.25 * float(gain)


def test_appearance_object_is_visible() -> None:
    ds = SyntheticMotion(
        8,
        task="appearance",
        size=32,
        clip_len=2,
        noise=0.0,
        object_contrast=0.8,
        texture="white",
    )
    for index in range(8):
        clip, _, mask = ds[index]
        gain = clip[0].abs().max() / 1.8  # object dots are +-1 shifted by +-0.8
        contrast = clip[0][mask.bool()].mean() - clip[0][~mask.bool()].mean()
        assert abs(float(contrast / gain)) == pytest.approx(0.8, abs=0.2)


def test_distractors_are_visible_and_under_the_object() -> None:
    busy = SyntheticMotion(
        4, size=32, clip_len=3, num_classes=4, distractors=3, noise=0.0, texture="white"
    )
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
        ({"texture": "pnik"}, ValueError, "pink"),
        ({"texture_exponent": -1.0}, ValueError, "texture_exponent"),
        ({"texture_exponent": 5.0}, ValueError, "texture_exponent"),
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


# The clips texture="white" gives are those of the code before the texture option existed:
# sha256 (first 16 hex digits) over samples 0-3 of (clip, mask) bytes, computed with that code.
_WHITE_REFERENCE = {
    "motion": (
        {"task": "motion", "clip_len": 4, "size": 16, "seed": 5, "num_classes": 4},
        "9623abb158e9f107",
    ),
    "appearance_dots": (
        {"task": "appearance", "clip_len": 3, "size": (16, 20), "seed": 2, "num_classes": 3,
         "dot_size": 2, "distractors": 1},
        "6f13e51e6d83afeb",
    ),
    "both": (
        {"task": "both", "clip_len": 3, "size": 16, "seed": 7, "num_classes": 2},
        "b6a35c19a8c2d0c6",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(_WHITE_REFERENCE))
def test_white_texture_reproduces_the_earlier_clips(case: str) -> None:
    kwargs, expected = _WHITE_REFERENCE[case]
    ds = SyntheticMotion(8, texture="white", **kwargs)
    digest = hashlib.sha256()
    for index in range(4):
        clip, mask = ds.render(index)
        digest.update(np.ascontiguousarray(clip).tobytes())
        digest.update(np.ascontiguousarray(mask).tobytes())
    assert digest.hexdigest()[:16] == expected


def test_pink_filter_is_unit_variance_and_one_over_f() -> None:
    filt = pink_filter((16, 12), 1.0).numpy().astype(float)
    fy, fx = np.fft.fftfreq(16)[:, None], np.fft.rfftfreq(12)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    assert filt[0, 0] == 0.0
    ratio = filt * radius  # amplitude * f is the constant scale
    assert np.allclose(ratio[radius > 0], ratio[0, 1], rtol=1e-5)
    # The variance of the periodic field is the mean of |filter|^2 over the two-sided spectrum.
    full = np.abs(np.fft.fft2(np.fft.irfft2(filt.astype(complex), s=(16, 12)))) ** 2
    assert full.mean() == pytest.approx(1.0, rel=1e-5)
    assert pink_filter((16, 12), 1.0) is pink_filter((16, 12), 1.0)  # cached


def _radial_slope(ds: SyntheticMotion, count: int) -> float:
    """Least-squares slope of log power against log frequency of the first frames (all
    channels), radially averaged in 12 log-spaced bands from 2 cycles per frame to 0.45."""
    size = ds.size[0]
    f = np.fft.fftfreq(size)
    radius = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    power = sum((np.abs(np.fft.fft2(ds.render(i)[0][:, 0])) ** 2).mean(0) for i in range(count))
    edges = np.geomspace(2 / size, 0.45, 12)
    band = np.digitize(radius, edges)
    xs, ys = [], []
    for b in range(1, len(edges)):
        chosen = band == b
        xs.append(np.log(radius[chosen].mean()))
        ys.append(np.log(power[chosen].mean()))
    return float(np.polyfit(xs, ys, 1)[0])


@pytest.mark.parametrize("exponent", [0.5, 1.0, 1.5])
def test_pink_power_spectrum_slope(exponent: float) -> None:
    ds = SyntheticMotion(12, size=64, clip_len=2, noise=0.0, texture_exponent=exponent)
    assert _radial_slope(ds, 12) == pytest.approx(-2 * exponent, abs=0.2)
    white = SyntheticMotion(12, size=64, clip_len=2, noise=0.0, texture="white")
    assert abs(_radial_slope(white, 12)) < 0.1


def test_pink_channels_are_independent_and_white_ones_are_not() -> None:
    def mean_abs_r(texture: str) -> float:
        ds = SyntheticMotion(40, size=32, clip_len=4, noise=0.0, texture=texture)
        values = []
        for index in range(len(ds)):
            clip = ds.render(index)[0].reshape(3, -1)
            r = np.corrcoef(clip)
            values.append(np.abs(r[np.triu_indices(3, 1)]).mean())
        return float(np.mean(values))

    assert mean_abs_r("pink") < 0.3
    assert mean_abs_r("white") == pytest.approx(1.0, abs=1e-5)  # one grey image times gains


def test_pink_object_pixels_match_background_pixels() -> None:
    """Pooled over clips, object and background pixels have the same mean, variance and
    neighbour correlation (noise 0, no gains: the raw fields)."""
    ds = SyntheticMotion(150, size=32, clip_len=2, noise=0.0, num_classes=4)
    stats = {True: [], False: []}
    for index in range(len(ds)):
        clip, mask = ds.render(index)
        frame, inside = clip[:, 0], mask[0].astype(bool)
        gains = frame.std(axis=(1, 2), keepdims=True)  # removes the clip's channel gains
        frame = frame / gains
        # horizontal neighbour pairs with both pixels on the same side of the outline
        both = inside[:, :-1] == inside[:, 1:]
        for side in (True, False):
            values = frame[:, inside == side]
            left = frame[:, :, :-1][:, both & (inside[:, :-1] == side)]
            right = frame[:, :, 1:][:, both & (inside[:, :-1] == side)]
            stats[side].append(
                [values.mean(), (values**2).mean(), (left * right).mean(), values.size]
            )
    pooled = {
        side: np.average(np.asarray(rows)[:, :3], axis=0, weights=np.asarray(rows)[:, 3])
        for side, rows in stats.items()
    }
    inside, outside = pooled[True], pooled[False]
    assert abs(inside[0] - outside[0]) < 0.05  # mean
    assert inside[1] == pytest.approx(outside[1], rel=0.08)  # second moment
    assert inside[2] == pytest.approx(outside[2], rel=0.08)  # lag-1 covariance


def _block_features(frame: np.ndarray) -> np.ndarray:
    """Per 8x8 block of a (3, 32, 32) frame: each channel's mean and std and the local gradient
    energy (which is high along an outline, where two independent smooth fields meet)."""
    gradient = np.zeros(frame.shape[1:])
    gradient[:, :-1] += (np.diff(frame, axis=2) ** 2).sum(0)
    gradient[:-1] += (np.diff(frame, axis=1) ** 2).sum(0)
    blocks = frame.reshape(3, 4, 8, 4, 8)
    return np.concatenate(
        [
            blocks.mean(axis=(2, 4)).ravel(),
            blocks.std(axis=(2, 4)).ravel(),
            gradient.reshape(4, 8, 4, 8).mean(axis=(1, 3)).ravel(),
        ]
    )


def test_pink_single_frame_shows_the_outline_but_not_the_class() -> None:
    """A linear read-out of block statistics of one frame finds the object (positive control:
    it predicts which blocks the mask covers) but not the class (translation classes; the
    frame is a torus, so where the object is says nothing about where it goes)."""
    kwargs = {"clip_len": 8, "size": 32, "num_classes": 4, "noise": 0.0}
    train = SyntheticMotion(600, seed=21, **kwargs)
    test = SyntheticMotion(400, seed=22, **kwargs)

    def features(ds: SyntheticMotion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, labels, covered = [], [], []
        for index in range(len(ds)):
            clip, mask = ds.render(index)
            rows.append(_block_features(clip[:, 0]))
            labels.append(index % ds.num_classes)
            covered.append(mask[0].reshape(4, 8, 4, 8).mean(axis=(1, 3)).ravel())
        return np.asarray(rows), np.asarray(labels), np.asarray(covered)

    train_x, train_y, train_cover = features(train)
    test_x, test_y, test_cover = features(test)
    chance = 1 / 4
    margin = 3 * np.sqrt(chance * (1 - chance) / len(test))
    accuracy = _ridge_probe(train_x, train_y, test_x, test_y)
    assert accuracy < chance + margin, f"single-frame accuracy {accuracy:.3f}"
    # The same features do see the object: they predict the block covered most (1 of 16; chance
    # 0.0625 plus three binomial standard errors at 400 clips is 0.099).
    located = _ridge_probe(train_x, train_cover.argmax(1), test_x, test_cover.argmax(1))
    assert located > 0.15, f"object location accuracy {located:.3f} (chance 1/16)"
