"""The R(2+1)D paper's family at CPU scale: R2D, R3D, MC3, rMC3 and R(2+1)D, each with its own stem.

Run: ``stemlab study run studies/backbone_family.py [--quick]``. Each backbone keeps its native stem
(``r2d`` for R2D and rMC3, ``basic`` for R3D and MC3, ``r2plus1d`` for R(2+1)D), and every backbone is
profiled at full size.
"""

from stemlab.study import Study

CPU_BACKBONE = {"widths": [16, 32, 64, 128], "layers": [1, 1, 1, 1]}

STUDY = Study(
    name="backbone_family",
    description=(
        "Tran et al. (2018) compare 2-D, 3-D, mixed and (2+1)-D convolutions in ResNet-18. This study "
        "repeats the comparison at CPU scale on SyntheticMotion 'motion', where the class lives only in "
        "how the texture moves, and profiles every backbone at full size."
    ),
    backbones={
        "r2d_18": CPU_BACKBONE,
        "rmc3_18": CPU_BACKBONE,
        "mc3_18": CPU_BACKBONE,
        "r3d_18": CPU_BACKBONE,
        "r2plus1d_18": CPU_BACKBONE,
    },
    stems=["native"],
    seeds=[0, 1],
    data={
        "dataset": "synthetic_motion",
        "task": "motion",
        "train_samples": 768,
        "val_samples": 256,
        "clip_len": 8,
        "size": 48,
        "seed": 0,
    },
    training={"epochs": 6, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 1},
    probes=["flops", "activations", "grad_cam", "filters"],
    profile={"backbone": "*", "input": [1, 3, 16, 112, 112], "num_classes": 400},
    latency_runs=3,
    quick={
        "seeds": [0],
        "data": {"train_samples": 128, "val_samples": 64},
        "training": {"epochs": 1},
        "profile": {"input": [1, 3, 8, 56, 56]},
        "latency_runs": 1,
    },
)
