"""The R(2+1)D paper's family at CPU scale: R2D, R3D, MC3, rMC3 and R(2+1)D, each with its own stem.

Run: ``stemlab study run studies/backbone_family.py [--quick]``. Each backbone keeps its native stem
(``r2d`` for R2D and rMC3, ``basic`` for R3D and MC3, ``r2plus1d`` for R(2+1)D), and every backbone is
profiled at full size.
"""

from stemlab.study import Study
from stemlab.study.presets import CPU_RESNET, MOTION_DATA, MOTION_QUICK, MOTION_TRAINING

STUDY = Study(
    name="backbone_family",
    description=(
        "Tran et al. (2018) compare 2-D, 3-D, mixed and (2+1)-D convolutions in ResNet-18. This study "
        "repeats the comparison at CPU scale on SyntheticMotion 'motion', where the class lives only in "
        "how the texture moves, and profiles every backbone at full size."
    ),
    backbones={
        "r2d_18": CPU_RESNET,
        "rmc3_18": CPU_RESNET,
        "mc3_18": CPU_RESNET,
        "r3d_18": CPU_RESNET,
        "r2plus1d_18": CPU_RESNET,
    },
    stems=["native"],
    seeds=[0, 1],
    data=MOTION_DATA,
    training=MOTION_TRAINING,
    probes=["flops", "activations", "grad_cam", "filters"],
    profile={"backbone": "*", "input": [1, 3, 16, 112, 112], "num_classes": 400},
    latency_runs=2,
    quick=MOTION_QUICK,
)
