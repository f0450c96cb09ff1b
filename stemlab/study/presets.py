"""Ready-made pieces of study configs: the CPU-scale SyntheticMotion benchmark the studies share.

On ``MOTION_DATA`` with ``MOTION_TRAINING`` (a fixed budget of 3 epochs of 1024 clips), a CPU-scaled
R(2+1)D (``CPU_RESNET``) with a temporal stem reaches well above chance while the frame-wise ``r2d``
stem stays near chance (25 %); see ``reports/stem_ablation``. Copy and change them freely: they are plain dicts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CPU_RESNET", "MOTION_DATA", "MOTION_QUICK", "MOTION_TRAINING"]

CPU_RESNET: dict[str, Any] = {"widths": [16, 32, 64, 128], "layers": [1, 1, 1, 1]}
"""Video ResNet scaled for CPU studies: stages 16/32/64/128 wide, one block each."""

MOTION_DATA: dict[str, Any] = {
    "dataset": "synthetic_motion",
    "task": "motion",
    "num_classes": 4,
    "train_samples": 1024,
    "val_samples": 192,
    "clip_len": 8,
    "size": 32,
    "speed": [0.75, 1.5],
    "noise": 0.3,
    "seed": 0,
}
"""SyntheticMotion 'motion': 4 directions, 8 frames of 32x32, 0.75-1.5 px/frame, noise 0.3; 1024
training and 192 validation clips per replicate seed."""

MOTION_TRAINING: dict[str, Any] = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "warmup_epochs": 0.5}
"""AdamW at 3e-3, half an epoch of warm-up, cosine decay, 3 epochs."""

MOTION_QUICK: dict[str, Any] = {
    "seeds": [0],
    "data": {"train_samples": 384, "val_samples": 96},
    "training": {"epochs": 2},
    "profile": {"input": [1, 3, 8, 56, 56]},
    "latency_runs": 1,
}
"""``quick`` overrides for the motion studies: one seed, fewer clips and epochs, a small profile."""
