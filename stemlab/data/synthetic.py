"""SyntheticMotion: a procedural video benchmark with object masks, generated on the fly.

On the ``"motion"`` task the object is drawn with random-dot texture of exactly the background's
statistics, so every single frame is stationary noise; the object (and the class, its motion)
exists only in how the dots move from frame to frame. On ``"appearance"`` the object is visible and
its shape is the class while its motion is random. ``"both"`` combines the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stemlab._validation import (
    check_choice,
    check_int_tuple,
    check_positive_float,
    check_positive_int,
)

__all__ = ["MOTIONS", "SHAPES", "TASKS", "SyntheticMotion"]

TASKS = ("motion", "appearance", "both")
MOTIONS = ("right", "left", "down", "up", "rotate_cw", "rotate_ccw", "expand", "contract")
SHAPES = ("disk", "square", "triangle", "plus", "ring", "star", "bar", "crescent")

# Unit vectors of the translation classes in image coordinates (x right, y down).
_DIRECTIONS = {"right": (1.0, 0.0), "left": (-1.0, 0.0), "down": (0.0, 1.0), "up": (0.0, -1.0)}


def _shape_mask(shape: str, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Inside-test of a unit-radius shape at object coordinates ``(ux, uy)``."""
    r2 = ux * ux + uy * uy
    if shape == "disk":
        return r2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(ux), np.abs(uy)) <= 0.85
    if shape == "triangle":
        inside = uy <= 0.6
        for angle in (math.radians(-30.0), math.radians(210.0)):
            inside &= ux * math.cos(angle) + uy * math.sin(angle) <= 0.6
        return inside
    if shape == "plus":
        ax, ay = np.abs(ux), np.abs(uy)
        return ((ax <= 0.33) & (ay <= 1.0)) | ((ay <= 0.33) & (ax <= 1.0))
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.3)
    if shape == "star":
        phi = np.arctan2(uy, ux)
        return np.sqrt(r2) <= 0.55 + 0.45 * np.cos(5.0 * phi) ** 2
    if shape == "bar":
        return (np.abs(ux) <= 1.0) & (np.abs(uy) <= 0.35)
    if shape == "crescent":
        return (r2 <= 1.0) & ((ux - 0.45) ** 2 + uy * uy > 0.55)
    raise AssertionError(f"no mask for shape {shape!r}")  # unreachable: SHAPES is closed


def _as_range(argument: str, value: float | Sequence[float]) -> tuple[float, float]:
    """Normalise a number or a ``(low, high)`` pair of non-negative numbers to a range."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{argument} must be a number or a (low, high) pair, got {value!r}")
        low = check_positive_float(argument, value[0], allow_zero=True)
        high = check_positive_float(argument, value[1], allow_zero=True)
        if low > high:
            raise ValueError(f"{argument} must have low <= high, got {value!r}")
        return low, high
    number = check_positive_float(argument, value, allow_zero=True)
    return number, number


class SyntheticMotion(Dataset):
    """Procedural clips of one textured object moving over a textured, noisy background.

    Every sample is rendered on demand from a generator seeded with ``(seed, index)``, so a dataset
    is fully described by its arguments and no file is read or written. Labels are balanced:
    ``label = index % num_classes``.

    Tasks:
        ``"motion"``: the class is the object's motion, the first ``num_classes`` of
        :data:`MOTIONS` (right, left, down, up, rotate_cw, rotate_ccw, expand, contract). The object
        is random-dot texture with the background's statistics, so no single frame reveals it.
        ``"appearance"``: the class is the object's shape, the first ``num_classes`` of
        :data:`SHAPES`; the object is visible (``object_contrast``) and its motion is random.
        ``"both"``: visible object; ``label = shape_index * num_classes + motion_index`` with
        ``num_classes ** 2`` classes in all (``.num_classes``).

    Args:
        num_samples: number of clips.
        task: ``"motion"``, ``"appearance"`` or ``"both"``.
        clip_len: frames per clip (>= 2 unless ``task="appearance"``).
        size: frame size, an int or ``(height, width)``.
        seed: dataset seed; use different seeds for training and validation sets.
        num_classes: classes per factor (2-8).
        speed: object speed in pixels per frame (rim speed for rotation and scaling), a number or
            a ``(low, high)`` range sampled per clip.
        object_size: object radius as a fraction of the shorter frame side, number or range.
        noise: standard deviation of the fresh Gaussian noise added to every frame.
        dot_size: side in pixels of a texture dot (1 = the finest texture).
        distractors: number of visible blobs moving in random directions (not in the mask).
        object_contrast: brightness offset of the object against the background; ``None`` means
            0 (texture-matched, invisible per frame) on ``"motion"`` and 0.8 otherwise.

    Returns (per item):
        ``(clip, label, mask)``: float32 clip ``[3, T, H, W]`` (roughly zero mean, unit scale),
        int label, float32 object mask ``[T, H, W]`` with values 0 or 1.

    Raises:
        ValueError, TypeError: on arguments out of range, naming the argument.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        task: str = "motion",
        clip_len: int = 8,
        size: int | Sequence[int] = 64,
        seed: int = 0,
        num_classes: int = 4,
        speed: float | Sequence[float] = (1.0, 2.0),
        object_size: float | Sequence[float] = (0.25, 0.35),
        noise: float = 0.6,
        dot_size: int = 1,
        distractors: int = 0,
        object_contrast: float | None = None,
    ) -> None:
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.task = check_choice("task", task, TASKS)
        self.clip_len = check_positive_int("clip_len", clip_len)
        if task != "appearance" and clip_len < 2:
            raise ValueError(f"clip_len must be >= 2 for task={task!r} (motion needs frames)")
        self.size: tuple[int, int] = check_int_tuple("size", size, 2)  # type: ignore[assignment]
        if min(self.size) < 8:
            raise ValueError(f"size must be at least 8 pixels per side, got {size!r}")
        self.seed = check_positive_int("seed", seed, allow_zero=True)
        check_positive_int("num_classes", num_classes)
        upper = len(MOTIONS) if task == "motion" else len(SHAPES)
        if task == "both":
            upper = min(len(MOTIONS), len(SHAPES))
        if not 2 <= num_classes <= upper:
            raise ValueError(
                f"num_classes must be in [2, {upper}] for task={task!r}, got {num_classes}"
            )
        self.classes_per_factor = num_classes
        self.speed = _as_range("speed", speed)
        self.object_size = _as_range("object_size", object_size)
        if not 0.0 < self.object_size[0] <= self.object_size[1] <= 0.5:
            raise ValueError(f"object_size must lie in (0, 0.5], got {object_size!r}")
        self.noise = check_positive_float("noise", noise, allow_zero=True)
        self.dot_size = check_positive_int("dot_size", dot_size)
        self.distractors = check_positive_int("distractors", distractors, allow_zero=True)
        if object_contrast is None:
            object_contrast = 0.0 if task == "motion" else 0.8
        self.object_contrast = check_positive_float(
            "object_contrast", object_contrast, allow_zero=True
        )
        if task == "motion":
            self.classes = list(MOTIONS[:num_classes])
        elif task == "appearance":
            self.classes = list(SHAPES[:num_classes])
        else:
            self.classes = [f"{s}/{m}" for s in SHAPES[:num_classes] for m in MOTIONS[:num_classes]]
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, task={self.task!r}, "
            f"clip_len={self.clip_len}, size={self.size}, seed={self.seed}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def targets(self) -> list[int]:
        """Every sample's label, without rendering."""
        return [i % self.num_classes for i in range(self.num_samples)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__} {index!r}")
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        label = int(index) % self.num_classes
        clip, mask = self.render(int(index))
        return torch.from_numpy(clip), label, torch.from_numpy(mask)

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Render sample ``index`` as numpy arrays ``(clip [3,T,H,W], mask [T,H,W])``."""
        rng = np.random.default_rng((self.seed, index))
        label = index % self.num_classes
        k = self.classes_per_factor
        if self.task == "motion":
            shape, motion = SHAPES[rng.integers(len(SHAPES))], MOTIONS[label]
        elif self.task == "appearance":
            shape, motion = SHAPES[label], MOTIONS[rng.integers(len(MOTIONS))]
        else:
            shape, motion = SHAPES[label // k], MOTIONS[label % k]

        height, width = self.size
        frames = self.clip_len
        background = self._texture(rng, (height, width))
        gray = np.empty((frames, height, width), dtype=np.float32)
        gray[:] = background
        for _ in range(self.distractors):
            path = self._path(rng, "right", 0.12 * rng.uniform(0.7, 1.3), random_direction=True)
            inside, _ = self._place(path, "disk")
            level = rng.choice((-1.0, 1.0)) * max(self.object_contrast, 0.8)
            gray[inside] = level + 0.3 * background[np.nonzero(inside)[1:]]

        radius_fraction = rng.uniform(*self.object_size)
        path = self._path(rng, motion, radius_fraction, random_direction=False)
        inside, (qx, qy) = self._place(path, shape)
        # Texture cells no larger than 1/sqrt(2) pixel map injectively onto the pixel grid under
        # any rotation and scale, so 1-pixel dots stay independent and match the background.
        cell = self.dot_size / float(path["scale"].max())
        if self.dot_size == 1:
            cell /= math.sqrt(2.0)
        half = math.ceil(path["radius"] * 1.6 / cell) + 2
        texture = self._texture(rng, (2 * half, 2 * half), cells=True)
        ix = np.clip(np.floor(qx[inside] / cell).astype(np.int64) + half, 0, 2 * half - 1)
        iy = np.clip(np.floor(qy[inside] / cell).astype(np.int64) + half, 0, 2 * half - 1)
        offset = rng.choice((-1.0, 1.0)) * self.object_contrast
        gray[inside] = texture[iy, ix] + offset

        if self.noise > 0:
            gray += self.noise * rng.standard_normal(gray.shape, dtype=np.float32)
        gains = rng.uniform(0.8, 1.2, size=(3, 1, 1, 1)).astype(np.float32)
        return gray[None] * gains, inside.astype(np.float32)

    def _texture(
        self, rng: np.random.Generator, shape: tuple[int, int], *, cells: bool = False
    ) -> np.ndarray:
        """Random +-1 dots; with ``cells=False`` each dot covers ``dot_size`` pixels a side."""
        if cells or self.dot_size == 1:
            return rng.integers(0, 2, size=shape, dtype=np.int8).astype(np.float32) * 2 - 1
        d = self.dot_size
        small = self._texture(rng, (-(-shape[0] // d), -(-shape[1] // d)), cells=True)
        return np.repeat(np.repeat(small, d, axis=0), d, axis=1)[: shape[0], : shape[1]]

    def _path(
        self,
        rng: np.random.Generator,
        motion: str,
        radius_fraction: float,
        *,
        random_direction: bool,
    ) -> dict[str, Any]:
        """Per-frame centre, angle and scale of an object following ``motion``."""
        height, width = self.size
        frames = self.clip_len
        radius = radius_fraction * min(height, width)
        speed = rng.uniform(*self.speed)
        t = np.arange(frames, dtype=np.float64) - (frames - 1) / 2
        angle0 = rng.uniform(0.0, 2.0 * math.pi)
        velocity = np.zeros(2)
        omega = kappa = 0.0
        if random_direction:
            velocity = speed * np.array([math.cos(angle0), math.sin(angle0)])
        elif motion in _DIRECTIONS:
            velocity = speed * np.array(_DIRECTIONS[motion])
        elif motion in ("rotate_cw", "rotate_ccw"):
            omega = (speed if motion == "rotate_cw" else -speed) / radius
        else:
            kappa = (speed if motion == "expand" else -speed) / radius
        scale = np.exp(kappa * t)
        reach = radius * scale.max() + np.abs(velocity) * t.max()
        centre = []
        for axis, extent in enumerate((width, height)):
            slack = max(0.0, extent / 2 - reach[axis])
            centre.append(extent / 2 + rng.uniform(-slack, slack) + velocity[axis] * t)
        return {
            "cx": centre[0],
            "cy": centre[1],
            "angle": angle0 + omega * t,
            "scale": scale,
            "radius": radius,
        }

    def _place(
        self, path: dict[str, Any], shape: str
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Mask ``[T, H, W]`` of ``shape`` along ``path`` and the object coordinates (pixels)."""
        height, width = self.size
        x = np.arange(width, dtype=np.float32)[None, None, :] + 0.5
        y = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
        dx = x - path["cx"].astype(np.float32)[:, None, None]
        dy = y - path["cy"].astype(np.float32)[:, None, None]
        cos = (np.cos(path["angle"]) / path["scale"]).astype(np.float32)[:, None, None]
        sin = (np.sin(path["angle"]) / path["scale"]).astype(np.float32)[:, None, None]
        qx = cos * dx + sin * dy
        qy = cos * dy - sin * dx
        inv_radius = np.float32(1.0 / path["radius"])
        return _shape_mask(shape, qx * inv_radius, qy * inv_radius), (qx, qy)
