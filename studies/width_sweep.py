"""Stem width sweep: how parameters, FLOPs and accuracy follow the stem's width (16 ... 256).

Run: ``stemlab study run studies/width_sweep.py [--quick]``.
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

WIDTHS = (16, 32, 64, 128, 256)
STUDY = Study(
    name="width_sweep",
    description=(
        "The basic 3-D stem at widths 16 to 256 on a CPU-scaled R(2+1)D trained for a fixed budget "
        "on SyntheticMotion 'motion' (stemlab.study.presets); every width is also profiled on the full-size r2plus1d_18 at 1x3x16x112x112, "
        "where layer1 takes the stem's width through a 1x1x1 projection shortcut."
    ),
    backbones={"r2plus1d_18": CPU_RESNET},
    stems=[f"basic:width={w}" for w in WIDTHS],
    seeds=[0, 1],
    data=MOTION_DATA,
    training=MOTION_TRAINING,
    sweep=MOTION_SWEEP,
    budgets=MOTION_BUDGETS,
    probes=["flops", "activations", "filters"],
    profile={"backbone": "r2plus1d_18", "input": [1, 3, 16, 112, 112], "num_classes": 400},
    latency_runs=3,
    quick=MOTION_QUICK,
)
