"""The default study: seven stems on a CPU-scaled R(2+1)D trained on SyntheticMotion 'motion'.

Run: ``stemlab study run studies/stem_ablation.py [--quick]`` (writes ``reports/stem_ablation/``).

On the 'motion' task the object is random-dot texture with the background's statistics, so no
single frame shows it: the class (its motion direction) exists only across frames. Stems with a
temporal extent see that motion at full resolution; the frame-wise ``r2d`` stem leaves it to the
later (2+1)D stages at half resolution. Seeds are paired replicates: seed ``s`` draws its own
training and validation sample and initial weights, shared by every stem, so each comparison with
the ``r2d`` baseline is a paired t-test over seeds (Holm-adjusted). The channel probes run on a
fixed set of 96 probe clips, the same for every stem and seed, so CKA between any two trained
models is defined. Every stem is also profiled on the full-size r2plus1d_18 at 1x3x16x112x112.
"""

from stemlab.study import Study
from stemlab.study.presets import CPU_RESNET, MOTION_DATA, MOTION_QUICK, MOTION_TRAINING

STUDY = Study(
    name="stem_ablation",
    description=(
        "Seven stems (basic, r2d, r2plus1d, wide, large_kernel, channel_attention, c3d) swapped into "
        "the same CPU-scaled R(2+1)D (stages 16/32/64/128, one block each; stem widths scaled by "
        "1/2 so that wide stays twice basic) and trained for a fixed budget (3 epochs of 1024 clips) "
        "on SyntheticMotion 'motion' (4 motion directions, 8 frames of 32x32, 0.75-1.5 px/frame, "
        "noise 0.3) with three paired seeds (each seed: its own data sample and initial weights, "
        "shared by all stems); the same stems at full width are profiled on r2plus1d_18 at "
        "1x3x16x112x112. The budget is part of the result: given enough epochs the frame-wise r2d "
        "stem also learns the task (its later (2+1)D stages see time), so the comparison measures "
        "how fast each stem makes motion usable. Every stem is compared with r2d."
    ),
    backbones={"r2plus1d_18": CPU_RESNET},
    stems=["r2d", "basic", "r2plus1d", "wide", "large_kernel", "channel_attention", "c3d"],
    baseline="r2d",
    seeds=[0, 1, 2],
    stem_width_multiplier=0.5,
    data=MOTION_DATA,
    training=MOTION_TRAINING,
    probes=[
        "flops",
        "activations",
        "confusion",
        "grad_cam",
        "filters",
        "channel_usage",
        "channel_redundancy",
        "channel_ablation",
        "cka",
    ],
    probe_options={"probe_samples": 96, "ablation_samples": 32},
    profile={"backbone": "r2plus1d_18", "input": [1, 3, 16, 112, 112], "num_classes": 400},
    latency_runs=1,
    quick={**MOTION_QUICK, "probe_options": {"probe_samples": 64, "ablation_samples": 16}},
)
