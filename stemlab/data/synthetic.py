"""SyntheticMotion: a procedural video benchmark with object masks, generated on the fly.

On the ``"motion"`` task the object is drawn with texture of exactly the background's
statistics, so every single frame is stationary noise; the object (and the class, its motion)
exists only in how the texture moves from frame to frame. On ``"appearance"`` the object is visible
and its shape is the class while its motion is random. ``"both"`` combines the two.

Textures (``texture=``): ``"pink"`` (default) draws object and background as independent
Gaussian fields with a ``1/f**texture_exponent`` amplitude spectrum (natural images have about
1), one independent field per colour channel, so the clips have colour and spatial structure for
first-layer filters to learn; ``"white"`` is the earlier +-1 random-dot texture shared by the
three channels (one grey image times per-channel gains), kept to reproduce earlier studies.
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

__all__ = ["MOTIONS", "SHAPES", "TASKS", "TEXTURES", "SyntheticMotion", "pink_filter"]

TASKS = ("motion", "appearance", "both")
TEXTURES = ("pink", "white")
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


_FILTERS: dict[tuple[int, int, float], torch.Tensor] = {}


def pink_filter(shape: tuple[int, int], exponent: float) -> torch.Tensor:
    """The ``rfft2`` filter that turns unit white noise into a unit-variance ``1/f**exponent`` field.

    Amplitude ``f ** -exponent`` at spatial frequency ``f`` (cycles per pixel), 0 at DC, scaled so
    the periodic field ``irfft2(rfft2(z) * filter)`` of white ``z`` has variance exactly 1 per
    pixel: its power spectrum falls as ``f ** (-2 * exponent)``. Cached per shape and exponent.

    Args:
        shape: ``(height, width)`` of the field.
        exponent: amplitude exponent, >= 0 (0 = white noise without its mean).

    Returns:
        float32 tensor ``(height, width // 2 + 1)`` (shared: do not modify).
    """
    key = (int(shape[0]), int(shape[1]), float(exponent))
    cached = _FILTERS.get(key)
    if cached is not None:
        return cached
    height, width = key[:2]
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fy * fy + fx * fx)
    radius[0, 0] = 1.0
    amplitude = radius ** -key[2]
    amplitude[0, 0] = 0.0
    # Variance of the field = mean over the full (two-sided) spectrum of amplitude**2; the rfft
    # half-plane counts its columns 1 .. ceil(width/2)-1 twice (their mirror images).
    weight = np.full(fx.shape, 2.0)
    weight[0, 0] = 1.0
    if width % 2 == 0:
        weight[0, -1] = 1.0
    variance = float((amplitude**2 * weight).sum()) / (height * width)
    result = torch.from_numpy((amplitude / math.sqrt(variance)).astype(np.float32))
    _FILTERS[key] = result
    return result


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
        is texture with the background's statistics, so no single frame reveals it.
        ``"appearance"``: the class is the object's shape, the first ``num_classes`` of
        :data:`SHAPES`; the object is visible (``object_contrast``) and its motion is random.
        ``"both"``: visible object; ``label = shape_index * num_classes + motion_index`` with
        ``num_classes ** 2`` classes in all (``.num_classes``).

    With ``texture="pink"`` a single frame shows the object's outline (where two independent
    smooth fields meet) but not its motion: position (uniform on the torus), orientation
    (uniform), shape (random) and texture are distributed alike for the translation and
    rotation classes. For ``expand`` / ``contract`` (``num_classes`` >= 7) the outline's size in
    the first and last frames leans towards the class.

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
        dot_size: side in pixels of a texture cell (1 = the finest texture).
        distractors: number of visible blobs moving in random directions (not in the mask).
        object_contrast: brightness offset of the object against the background; ``None`` means
            0 (texture-matched, invisible per frame) on ``"motion"`` and 0.8 otherwise; the same
            offset on every colour channel.
        texture: ``"pink"`` (1/f Gaussian fields, independent per colour channel, fresh noise
            per channel; the frame is a torus the object wraps around, starting anywhere on it:
            a smooth texture shows the seam of the object's outline in one frame, so the
            object's position in a frame must not tell its direction) or ``"white"`` (+-1 dots shared by the channels, the earlier behaviour:
            a fixed seed gives the clips it gave before this option existed).
        texture_exponent: amplitude-spectrum exponent of ``"pink"`` textures (amplitude
            ``f ** -texture_exponent``, power ``f ** (-2 * texture_exponent)``); 1 is the
            natural-image value, 0 white noise. Ignored for ``"white"``.

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
        texture: str = "pink",
        texture_exponent: float = 1.0,
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
        self.texture = check_choice("texture", texture, TEXTURES)
        self.texture_exponent = check_positive_float(
            "texture_exponent", texture_exponent, allow_zero=True
        )
        if self.texture_exponent > 4.0:
            raise ValueError(f"texture_exponent must be in [0, 4], got {texture_exponent!r}")
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
            f"num_classes={self.num_classes}, texture={self.texture!r})"
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

        if self.texture == "pink":
            return self._render_pink(rng, shape, motion)
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

    def _render_pink(
        self, rng: np.random.Generator, shape: str, motion: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`render` with independent 1/f textures per colour channel."""
        height, width = self.size
        # torch's vectorised sampler and FFT, seeded from the clip's generator, draw the fields
        # and the noise (three channels at about the cost of numpy's one).
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        background, texture = self._pink(generator)
        clip = np.empty((3, self.clip_len, height, width), dtype=np.float32)
        clip[:] = background[:, None]
        for _ in range(self.distractors):
            path = self._path(
                rng, "right", 0.12 * rng.uniform(0.7, 1.3), random_direction=True, wrap=True
            )
            inside, _ = self._place(path, "disk", wrap=True)
            level = rng.choice((-1.0, 1.0)) * max(self.object_contrast, 0.8)
            where = np.nonzero(inside)
            clip[:, where[0], where[1], where[2]] = level + 0.3 * background[:, where[1], where[2]]

        radius_fraction = rng.uniform(*self.object_size)
        path = self._path(rng, motion, radius_fraction, random_direction=False, wrap=True)
        inside, (qx, qy) = self._place(path, shape, wrap=True)
        # The object's own field, pinned to object coordinates (it moves, rotates and scales
        # with the object), on the background's grid and filter, read periodically: the same
        # spectrum and marginals as the background. A cell is dot_size pixels at the largest scale.
        cell = self.dot_size / float(path["scale"].max())
        where = np.nonzero(inside)
        ix = np.floor(qx[inside] / cell).astype(np.int64) % width
        iy = np.floor(qy[inside] / cell).astype(np.int64) % height
        offset = rng.choice((-1.0, 1.0)) * self.object_contrast
        # texture cells are dot_size pixels of the field: index the field at the cell's corner
        d = self.dot_size
        clip[:, where[0], where[1], where[2]] = (
            texture[:, (iy * d) % height, (ix * d) % width] + offset
        )
        if self.noise > 0:
            clip += self.noise * torch.randn(clip.shape, generator=generator).numpy()
        clip *= rng.uniform(0.8, 1.2, size=(3, 1, 1, 1)).astype(np.float32)
        return clip, inside.astype(np.float32)

    def _pink(self, generator: torch.Generator) -> np.ndarray:
        """Two sets (background, object) of three independent unit-variance 1/f fields,
        ``(2, 3, H, W)``, in cells of ``dot_size`` pixels."""
        height, width = self.size
        d = self.dot_size
        small = (-(-height // d), -(-width // d))
        white = torch.randn((2, 3, *small), generator=generator)
        spectrum = torch.fft.rfft2(white) * pink_filter(small, self.texture_exponent)
        field = torch.fft.irfft2(spectrum, s=small).numpy()
        if d == 1:
            return field
        return np.repeat(np.repeat(field, d, axis=2), d, axis=3)[..., :height, :width]

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
        wrap: bool = False,
    ) -> dict[str, Any]:
        """Per-frame centre, angle and scale of an object following ``motion``; with ``wrap``
        the frame is a torus and the start is uniform over it (else the object stays in view)."""
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
            if wrap:
                start = rng.uniform(0.0, extent)
                centre.append((start + velocity[axis] * (t - t[0])) % extent)
                continue
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
        self, path: dict[str, Any], shape: str, *, wrap: bool = False
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Mask ``[T, H, W]`` of ``shape`` along ``path`` and the object coordinates (pixels);
        with ``wrap`` the frame is a torus (offsets taken to the nearest copy of the centre)."""
        height, width = self.size
        x = np.arange(width, dtype=np.float32)[None, None, :] + 0.5
        y = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
        dx = x - path["cx"].astype(np.float32)[:, None, None]
        dy = y - path["cy"].astype(np.float32)[:, None, None]
        if wrap:
            dx = (dx + width / 2) % width - width / 2
            dy = (dy + height / 2) % height - height / 2
        cos = (np.cos(path["angle"]) / path["scale"]).astype(np.float32)[:, None, None]
        sin = (np.sin(path["angle"]) / path["scale"]).astype(np.float32)[:, None, None]
        qx = cos * dx + sin * dy
        qy = cos * dy - sin * dx
        inv_radius = np.float32(1.0 / path["radius"])
        return _shape_mask(shape, qx * inv_radius, qy * inv_radius), (qx, qy)
