"""Stem width sweep: how parameters, FLOPs and accuracy follow the stem's width (16 ... 256).

Run: ``stemlab study run studies/width_sweep.py [--quick]``.
"""

from stemlab.study import Study

WIDTHS = (16, 32, 64, 128, 256)
CPU_BACKBONE = {"widths": [16, 32, 64, 128], "layers": [1, 1, 1, 1]}

STUDY = Study(
    name="width_sweep",
    description=(
        "The basic 3-D stem at widths 16 to 256 on a CPU-scaled R(2+1)D trained on SyntheticMotion "
        "'motion'; every width is also profiled on the full-size r2plus1d_18 at 1x3x16x112x112, "
        "where layer1 takes the stem's width through a 1x1x1 projection shortcut."
    ),
    backbones={"r2plus1d_18": CPU_BACKBONE},
    stems=[f"basic:width={w}" for w in WIDTHS],
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
    probes=["flops", "activations", "filters"],
    profile={"backbone": "r2plus1d_18", "input": [1, 3, 16, 112, 112], "num_classes": 400},
    latency_runs=3,
    quick={
        "seeds": [0],
        "data": {"train_samples": 128, "val_samples": 64},
        "training": {"epochs": 1},
        "profile": {"input": [1, 3, 8, 56, 56]},
        "latency_runs": 1,
    },
)
