"""The default study: seven stems on a CPU-scaled R(2+1)D trained on SyntheticMotion 'motion'.

Run: ``stemlab study run studies/stem_ablation.py [--quick]`` (writes ``reports/stem_ablation/``;
``--quick`` writes ``reports/stem_ablation-quick/``).

On the 'motion' task the object is pink-noise texture with the background's statistics, so no
single frame shows the class: it exists only in how the texture moves. Stems with a temporal
extent see that motion at full resolution; the frame-wise ``r2d`` stem leaves it to the later
(2+1)D stages at half resolution.

Fairness: every stem is tuned on its own. The learning rate is selected per stem on validation
clips (two stages: a sweep over three rates on selection seed 100, then the five reported seeds at
each stem's selected rate); every reported accuracy is on 1024 test clips no selection read.
Seeds are paired replicates (each seed: its own data sample and initial weights, shared by every
stem), so each stem is compared with ``r2d`` by a paired test over the five seeds, Holm-adjusted
over the six comparisons with simultaneous intervals. Budgets: test accuracy after 1, 2 and 4
epochs of the same run. Weight and activation probes are also read on each untrained model.
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
    name="stem_ablation",
    description=(
        "Seven stems (basic, r2d, r2plus1d, wide, large_kernel, channel_attention, c3d) swapped into "
        "the same CPU-scaled R(2+1)D (stages 8/16/32/64, one block each; stem widths scaled by "
        "1/8 so that wide stays twice basic), each trained at its own learning rate (selected on "
        "validation from 3e-3, 1e-2, 3e-2 on a separate selection seed) for 4 epochs of 768 clips "
        "of SyntheticMotion 'motion' (4 motion directions, 8 frames of 32x32, pink 1/f textures "
        "independent per colour channel, noise 0.1), with five paired seeds (each seed: its own "
        "data sample and initial weights, shared by all stems) and 1024 test clips per seed; "
        "the same stems at full width are profiled on r2plus1d_18 at 1x3x16x112x112. Every stem is "
        "compared with the frame-wise r2d stem."
    ),
    backbones={"r2plus1d_18": CPU_RESNET},
    stems=["r2d", "basic", "r2plus1d", "wide", "large_kernel", "channel_attention", "c3d"],
    baseline="r2d",
    comparisons="baseline",
    seeds=[0, 1, 2, 3, 4],
    stem_width_multiplier=0.125,
    data=MOTION_DATA,
    training=MOTION_TRAINING,
    sweep=MOTION_SWEEP,
    budgets=MOTION_BUDGETS,
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
    probe_options={"probe_samples": 64, "ablation_samples": 32},
    profile={"backbone": "r2plus1d_18", "input": [1, 3, 16, 112, 112], "num_classes": 400},
    latency_runs=5,
    quick={**MOTION_QUICK, "probe_options": {"probe_samples": 32, "ablation_samples": 16}},
)
