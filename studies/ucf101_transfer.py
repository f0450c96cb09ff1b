"""Stems on a Kinetics-400 video ResNet, fine-tuned on UCF101 split 1 (needs a GPU and the data).

Run: ``stemlab study run studies/ucf101_transfer.py`` (writes ``reports/ucf101_transfer/``).

What it asks: start from torchvision's Kinetics-400 ``r3d_18`` (``R3D_18_Weights.KINETICS400_V1``),
swap the stem, carry over what the maths allows, fine-tune every model the same way on UCF101
split 1 (101 classes, 9537 training / 3783 test videos) and compare. The summary's
``weights_*`` columns count the checkpoint tensors each model loaded, transferred and initialised,
and ``transfer_feature_rel_error`` / ``transfer_feature_cosine`` measure, before fine-tuning, how
much of the pretrained function survives the stem change (see the README section "Stem studies
from pretrained weights").

Why r3d_18 and not r2plus1d_18: the five arms are the native 3-D stem and four stems that
stemlab's transfer rules derive from it, each starting from the pretrained function:

- ``native``: the checkpoint's own stem (Conv3d 3->64, (3,7,7)), loaded as it is;
- ``wide``: 128 channels, Net2Wider (copies of the 64 filters, ``layer1.0`` reads them halved):
  exact;
- ``large_kernel``: (5,11,11), the (3,7,7) kernel zero-padded in the centre: exact;
- ``channel_attention``: the stem plus a squeeze-excitation gate initialised to the identity:
  exact;
- ``r2plus1d``: torchvision's R(2+1)D stem shape (1x7x7 conv to 45 channels, 3x1x1 conv to 64),
  from a rank-22 truncated SVD of the 3-D kernel (the (2+1)D factorisation; ``± pairs`` carry
  it through the middle ReLU), so it starts close to, not at, the 3-D stem; its
  ``transfer_error`` is the kernel's relative reconstruction error. ``r2plus1d:mid_width=294``
  would keep the full rank and be exact.

On ``r2plus1d_18``, whose native stem already is (2+1)D, the SVD arm does not exist and the
single-conv stems (``wide``, ``large_kernel``, ``channel_attention``) have no transfer from its
two-conv stem (they would start from random stem weights), so the comparison would mix transfer
with training from scratch.

Inputs (environment variables):

- ``STEMLAB_UCF101``: the UCF101 folder built by :func:`stemlab.data.prepare_ucf101` (a folder
  per class plus ``trainlist01.txt`` / ``testlist01.txt``); default ``~/data/ucf101``.
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


def _ucf101_root() -> Path:
    return Path(os.environ.get("STEMLAB_UCF101", "~/data/ucf101")).expanduser()


def _missing_inputs(root: Path) -> list[str]:
    """One sentence per missing input: where it is expected and how to get it."""
    problems = [
        split_folder_problem(
            root,
            SPLIT,
            name="UCF101",
            env="STEMLAB_UCF101",
            prepare=f'prepare_ucf101("UCF-101", {json.dumps(str(root))}, split_dir="ucfTrainTestlist")',
            unpack="Unpack UCF101.rar (UCF-101/) and UCF101TrainTestSplits-RecognitionTask.zip (ucfTrainTestlist/)",
        ),
        checkpoint_problem(WEIGHTS, backbone=BACKBONE),
    ]
    return [p for p in problems if p is not None]


UCF101 = _ucf101_root()
_problems = _missing_inputs(UCF101)
if _problems:
    raise StudyFileError("ucf101_transfer cannot start. " + " ".join(_problems))

STUDY = Study(
    name="ucf101_transfer",
    description=(
        "Five stems on torchvision's Kinetics-400 r3d_18 (R3D_18_Weights.KINETICS400_V1), each "
        "starting from the pretrained weights through stemlab's transfer rules (native; wide, "
        "Net2Wider; large_kernel (5,11,11), zero-padded; channel_attention, identity gate; "
        "r2plus1d, rank-22 SVD factorisation), fine-tuned on UCF101 split 1 (16 frames at stride "
        "2, 112x112) for 8 epochs with SGD (head learning rate x10) and three seeds. The "
        "transfer columns give how far each stem-changed model's features are from the native "
        "model's before fine-tuning."
    ),
    backbones={BACKBONE: {}},
    stems=["native", "wide", "large_kernel", "channel_attention", "r2plus1d"],
    seeds=[0, 1, 2],
    weights=WEIGHTS,
    stem_init="transfer",
    head_lr_multiplier=10.0,
    data={
        "dataset": "video_folder",
        "root": str(UCF101),
        "train_split": str(UCF101 / f"trainlist0{SPLIT}.txt"),
        "val_split": str(UCF101 / f"testlist0{SPLIT}.txt"),
        "clip_len": 16,
        "frame_stride": 2,  # 25 fps UCF101 at ~12.5 fps, near the 15 fps of the K400 training
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
    profile={"backbone": BACKBONE, "input": [1, 3, 16, 112, 112], "num_classes": 101},
    latency_runs=5,
    baseline="native",
    quick={"seeds": [0], "training": {"epochs": 1}},
)
