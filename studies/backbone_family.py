"""The R(2+1)D paper's family at CPU scale: R2D, rMC3, MC3, R3D and R(2+1)D, each with its own stem.

Run: ``stemlab study run studies/backbone_family.py [--quick]``.

Tran et al. (2018) report, on Kinetics (clip top-1), R2D 47.0 < R3D 49.8 < MC3 51.1 < R(2+1)D 53.2,
and argue that (a) temporal convolutions matter because the class lives in motion, and (b)
factorising a 3-D convolution into (2+1)D eases optimisation. This study tests both at CPU scale on
SyntheticMotion 'motion', where no single frame shows the object, so the class exists only in how
the texture moves:

- (a) predicts R2D (2-D convolutions only, time pooled at the end) at chance (25%) and every model
  with a temporal convolution above it;
- (b) predicts that, at equal depth and a fixed short budget (3 epochs), R(2+1)D reaches a lower
  training loss and a higher accuracy than R3D.

Each backbone keeps its native stem (``r2d`` for R2D and rMC3, ``basic`` for R3D and MC3,
``r2plus1d`` for R(2+1)D); seeds are paired replicates (own data sample and initial weights, shared
by the five backbones). Every backbone is also profiled at full size (1x3x16x112x112).
"""

from stemlab.study import Study
from stemlab.study.presets import CPU_RESNET, MOTION_DATA, MOTION_QUICK, MOTION_TRAINING

STUDY = Study(
    name="backbone_family",
    description=(
        "Tran et al. (2018) compare 2-D, mixed, 3-D and (2+1)-D convolutions in ResNet-18 (Kinetics "
        "clip top-1: R2D 47.0 < R3D 49.8 < MC3 51.1 < R(2+1)D 53.2). This study repeats the "
        "comparison at CPU scale (stages 16/32/64/128, one block each) on SyntheticMotion 'motion', "
        "where the class lives only in how the texture moves, with a fixed budget of 3 epochs of "
        "1024 clips and three paired seeds. Hypotheses: R2D stays at chance (the class needs "
        "time); R(2+1)D optimises further than R3D in the same budget (lower training loss, higher "
        "accuracy). Every backbone is profiled at full size."
    ),
    backbones={
        "r2d_18": CPU_RESNET,
        "rmc3_18": CPU_RESNET,
        "mc3_18": CPU_RESNET,
        "r3d_18": CPU_RESNET,
        "r2plus1d_18": CPU_RESNET,
    },
    stems=["native"],
    seeds=[0, 1, 2],
    stem_width_multiplier=0.5,
    data=MOTION_DATA,
    training=MOTION_TRAINING,
    probes=["flops", "activations", "confusion", "grad_cam", "filters", "channel_usage"],
    profile={"backbone": "*", "input": [1, 3, 16, 112, 112], "num_classes": 400},
    latency_runs=1,
    quick=MOTION_QUICK,
)
