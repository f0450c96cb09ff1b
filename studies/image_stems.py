"""2-D stems (resnet, deep, patchify) on a CPU-scaled ResNet-18 with an image task.

Run: ``stemlab study run studies/image_stems.py [--quick]``. The images are the middle frames of
SyntheticMotion 'appearance' clips: the class is the object's shape.
"""

from stemlab.study import Study

STUDY = Study(
    name="image_stems",
    description=(
        "Image stems on resnet18 (stages 16-128 wide, one block each) classifying the shape of a "
        "textured object on a textured, noisy background; each stem is also profiled on the "
        "full-size resnet18 at 1x3x224x224."
    ),
    backbones={"resnet18": {"widths": [16, 32, 64, 128], "layers": [1, 1, 1, 1]}},
    stems=["resnet:width=32", "deep:width=32", "patchify:width=32"],
    seeds=[0, 1],
    data={
        "dataset": "synthetic_frames",
        "task": "appearance",
        "train_samples": 1024,
        "val_samples": 256,
        "clip_len": 3,
        "size": 64,
        "num_classes": 6,
        "seed": 0,
    },
    training={"epochs": 6, "batch_size": 64, "lr": 3e-3, "warmup_epochs": 1},
    probes=["flops", "activations", "grad_cam", "filters"],
    profile={"backbone": "resnet18", "input": [1, 3, 224, 224], "num_classes": 1000},
    latency_runs=5,
    quick={
        "seeds": [0],
        "data": {"train_samples": 128, "val_samples": 64},
        "training": {"epochs": 1},
        "latency_runs": 1,
    },
)
