"""Ready-made pieces of study configs: the CPU-scale SyntheticMotion benchmark the studies share.

``MOTION_DATA`` is SyntheticMotion 'motion' with pink (1/f, per-colour-channel) textures, so first
layers have colour and spatial structure to learn; no single frame shows the class. Each replicate
seed draws its own training (768), validation (256, selection only) and test (1024, every reported
number) clips. ``MOTION_SWEEP`` tunes the learning rate of every arm on validation (two-stage: the
sweep trains on its own selection seed, then the study's seeds train at each arm's selected
rate), ``MOTION_BUDGETS`` reports test accuracy after 1, 2 and 4 epochs of one run. Copy and
change them freely: they are plain dicts.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CPU_RESNET",
    "MOTION_BUDGETS",
    "MOTION_DATA",
    "MOTION_QUICK",
    "MOTION_SWEEP",
    "MOTION_TRAINING",
]

CPU_RESNET: dict[str, Any] = {"widths": [8, 16, 32, 64], "layers": [1, 1, 1, 1]}
"""Video ResNet scaled for CPU studies: stages 8/16/32/64 wide, one block each (with stems at 1/8
of their width, ``stem_width_multiplier=0.125``: basic 8, wide 16 channels)."""

MOTION_DATA: dict[str, Any] = {
    "dataset": "synthetic_motion",
    "task": "motion",
    "num_classes": 4,
    "train_samples": 768,
    "val_samples": 256,
    "test_samples": 1024,
    "clip_len": 8,
    "size": 32,
    "speed": [0.75, 1.5],
    "object_size": [0.35, 0.45],
    "noise": 0.1,
    "texture": "pink",
    "texture_exponent": 1.0,
    "seed": 0,
}
"""SyntheticMotion 'motion': 4 directions, 8 frames of 32x32, 0.75-1.5 px/frame, object radius
0.35-0.45 of the frame, pink 1/f textures (independent per colour channel), noise 0.1; 768
training, 256 validation and 1024 test clips per replicate seed."""

MOTION_TRAINING: dict[str, Any] = {
    "epochs": 4,
    "batch_size": 16,
    "lr": 1e-2,
    "weight_decay": 0.05,
    "warmup_epochs": 0.5,
}
"""AdamW, weight decay 0.05, half an epoch of warm-up, cosine decay over 4 epochs; ``lr`` is
the rate used without a sweep."""

MOTION_SWEEP: dict[str, Any] = {"lr": [3e-3, 1e-2, 3e-2], "seeds": [100]}
"""Per-arm learning-rate tuning: three rates, trained on selection seed 100 (its own data sample
and initial weights, used by no reported cell), selected on validation top-1."""

MOTION_BUDGETS: list[int] = [1, 2, 4]
"""Epochs after which validation and test are scored (one run of 4 epochs)."""

MOTION_QUICK: dict[str, Any] = {
    "seeds": [0],
    "data": {"train_samples": 192, "val_samples": 96, "test_samples": 256},
    "training": {"epochs": 2},
    "budgets": [1, 2],
    "sweep": {"lr": [1e-2, 3e-2], "seeds": [100]},
    "profile": {"input": [1, 3, 8, 56, 56]},
    "latency_runs": 3,
}
"""``quick`` overrides for the motion studies: one seed, fewer clips, epochs and sweep samples, a
small profile."""
