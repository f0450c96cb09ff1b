"""The R(2+1)D paper's family at CPU scale: f-R2D, rMC3, MC3, R3D and R(2+1)D, each with its own stem.

Run: ``stemlab study run studies/backbone_family.py [--quick]``.

Tran et al. (2018) report, on Kinetics (clip top-1), R2D 47.0 < R3D 49.8 < MC3 51.1 < R(2+1)D 53.2,
and argue that (a) temporal convolutions matter because the class lives in motion, and (b)
factorising a 3-D convolution into (2+1)D eases optimisation. This study tests both at CPU scale on
SyntheticMotion 'motion', where no single frame shows the object, so the class exists only in how
the texture moves. ``r2d_18`` is Tran et al.'s frame-wise f-R2D (2-D convolutions on every frame,
time pooled only at the end), not their R2D that folds time into the first layer's channels.

- (a) predicts f-R2D near chance (25%) and every model with a temporal convolution above it;
- (b) predicts that, at equal depth and budget, R(2+1)D reaches a higher accuracy than R3D, and a
  lower training loss at the same or lower validation loss (not merely a lower training loss,
  which memorising also gives).

Each backbone is tuned on its own (learning rate selected on validation, two stages as in the
default study), reported on 1024 test clips per seed, at budgets of 1, 2 and 4 epochs; seeds are
paired replicates (own data sample and initial weights, shared by the five backbones), all ten
pairs are one Holm family. Every backbone is also profiled at full size (1x3x16x112x112).
"""

from stemlab.study import Study
from stemlab.study.presets import (
    CPU_RESNET,
    MOTION_BUDGETS,
    MOTION_DATA,
    MOTION_QUICK,
    MOTION_SWEEP,
    MOTION_TRAINING,
)

STUDY = Study(
    name="backbone_family",
    description=(
        "Tran et al. (2018) compare 2-D, mixed, 3-D and (2+1)-D convolutions in ResNet-18 (Kinetics "
        "clip top-1: R2D 47.0 < R3D 49.8 < MC3 51.1 < R(2+1)D 53.2). This study repeats the "
        "comparison at CPU scale (stages 8/16/32/64, one block each; r2d_18 is their frame-wise "
        "f-R2D) on SyntheticMotion 'motion', where the class lives only in how the texture moves. "
        "Each backbone's learning rate is selected on validation (3e-3, 1e-2, 3e-2 on a separate "
        "selection seed); five paired seeds train at it for 4 epochs of 768 clips and are scored "
        "on 1024 test clips after 1, 2 and 4 epochs. Hypotheses: f-R2D stays near chance (the "
        "class needs time); R(2+1)D beats R3D at equal depth and budget. Every backbone is "
        "profiled at full size."
    ),
    backbones={
        "r2d_18": CPU_RESNET,
        "rmc3_18": CPU_RESNET,
        "mc3_18": CPU_RESNET,
        "r3d_18": CPU_RESNET,
        "r2plus1d_18": CPU_RESNET,
    },
    stems=["native"],
    comparisons="all_pairs",
    seeds=[0, 1, 2, 3, 4],
    stem_width_multiplier=0.125,
    data=MOTION_DATA,
    training=MOTION_TRAINING,
    sweep=MOTION_SWEEP,
    budgets=MOTION_BUDGETS,
    probes=["flops", "activations", "confusion", "grad_cam", "filters", "channel_usage"],
    profile={"backbone": "*", "input": [1, 3, 16, 112, 112], "num_classes": 400},
    latency_runs=5,
    quick=MOTION_QUICK,
)
