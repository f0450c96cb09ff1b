"""The UCF101 transfer study's five stems on Kinetics-400 r3d_18, fine-tuned on HMDB51 split 1.

Run: ``stemlab study run studies/hmdb51_transfer.py`` (writes ``reports/hmdb51_transfer/``).

The same design as ``studies/ucf101_transfer.py`` (read its docstring for the choice of r3d_18
and of the five stems: native, wide, large_kernel, channel_attention, r2plus1d from SVD) on
HMDB51 (51 classes, 3570 training / 1530 test videos in split 1, 30 fps, hence a frame stride
of 2 as for UCF101's 25 fps).

Inputs (environment variables):

- ``STEMLAB_HMDB51``: the class-per-folder HMDB51 (``<class>/*.avi``) with the
  ``trainlist01.txt`` / ``testlist01.txt`` that :func:`stemlab.data.prepare_hmdb51` writes;
  default ``~/data/hmdb51``.
- ``TORCH_HOME``: the torch cache; the checkpoint must be at
  ``$TORCH_HOME/hub/checkpoints/r3d_18-b3b3357e.pth`` (default ``~/.cache/torch``). stemlab
  never downloads it.

Without either, the study stops before any cell with one message saying where each is expected
and how to build or fetch it (``stemlab study run`` exits with status 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stemlab.errors import StudyFileError
from stemlab.study import Study
from stemlab.study.inputs import checkpoint_problem, split_folder_problem

BACKBONE = "r3d_18"
WEIGHTS = "KINETICS400_V1"
SPLIT = 1


def _hmdb51_root() -> Path:
    return Path(os.environ.get("STEMLAB_HMDB51", "~/data/hmdb51")).expanduser()


def _missing_inputs(root: Path) -> list[str]:
    """One sentence per missing input: where it is expected and how to get it."""
    problems = [
        split_folder_problem(
            root,
            SPLIT,
            name="HMDB51",
            env="STEMLAB_HMDB51",
            prepare=f'prepare_hmdb51("testTrainMulti_7030_splits", {json.dumps(str(root))})',
            unpack=f"Unpack hmdb51_org.rar and each class archive in it into {root} (<class>/*.avi) and test_train_splits.rar (testTrainMulti_7030_splits/)",
        ),
        checkpoint_problem(WEIGHTS, backbone=BACKBONE),
    ]
    return [p for p in problems if p is not None]


HMDB51 = _hmdb51_root()
_problems = _missing_inputs(HMDB51)
if _problems:
    raise StudyFileError("hmdb51_transfer cannot start. " + " ".join(_problems))

STUDY = Study(
    name="hmdb51_transfer",
    description=(
        "Five stems on torchvision's Kinetics-400 r3d_18 (R3D_18_Weights.KINETICS400_V1), each "
        "starting from the pretrained weights through stemlab's transfer rules (native; wide, "
        "Net2Wider; large_kernel (5,11,11), zero-padded; channel_attention, identity gate; "
        "r2plus1d, rank-22 SVD factorisation), fine-tuned on HMDB51 split 1 (16 frames at stride "
        "2, 112x112) for 8 epochs with SGD (head learning rate x10) and three seeds."
    ),
    backbones={BACKBONE: {}},
    stems=["native", "wide", "large_kernel", "channel_attention", "r2plus1d"],
    seeds=[0, 1, 2],
    weights=WEIGHTS,
    stem_init="transfer",
    head_lr_multiplier=10.0,
    data={
        "dataset": "video_folder",
        "root": str(HMDB51),
        "train_split": str(HMDB51 / f"trainlist0{SPLIT}.txt"),
        "val_split": str(HMDB51 / f"testlist0{SPLIT}.txt"),
        "clip_len": 16,
        "frame_stride": 2,
        "size": 112,
        "sampling": "random",
        "progress": False,
    },
    training={
        "epochs": 8,
        "batch_size": 32,
        "optimizer": "sgd",
        "lr": 0.005,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "warmup_epochs": 1.0,
        "schedule": "cosine",
        "drop_last": True,
        "num_workers": 8,
    },
    probes=["flops", "activations", "grad_cam", "filters"],
    profile={"backbone": BACKBONE, "input": [1, 3, 16, 112, 112], "num_classes": 51},
    latency_runs=5,
    baseline="native",
    quick={"seeds": [0], "training": {"epochs": 1}},
)
