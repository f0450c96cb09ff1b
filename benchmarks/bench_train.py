"""Benchmarks for issue 4: trainer overhead, SyntheticMotion speed, and the r2plus1d-vs-r2d gap.

Run from the repository root::

    python benchmarks/bench_train.py            # everything (about 10 minutes on 2 CPU cores)
    python benchmarks/bench_train.py --skip-accuracy

Prints three sections:

1. Trainer throughput: ``stemlab.train.fit`` against a minimal hand-written loop (same model
   initialisation, same SyntheticMotion data and DataLoader, same process, interleaved repeats;
   median ratio). Target: >= 0.95.
2. SyntheticMotion generation clips/s against what one training step consumes (clips/s of the
   step on pre-rendered tensors). Target: >= 10x.
3. Accuracy of a scaled-down r2plus1d_18 (widths 16-128, one block per stage) on the "motion"
   task with the ``r2plus1d`` stem against the frame-wise ``r2d`` stem, two seeds each, each run
   well under two minutes on a 2-core CPU. Chance is 1 / num_classes.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from stemlab.data import SyntheticMotion
from stemlab.models import create_model
from stemlab.train import TrainConfig, fit

# The benchmark's SyntheticMotion task and model: see the module docstring.
DATA = {"task": "motion", "num_classes": 4, "clip_len": 8, "size": 32, "noise": 0.6}
MODEL = {"widths": (16, 32, 64, 128), "layers": (1, 1, 1, 1)}


def small_model(stem: str, num_classes: int) -> torch.nn.Module:
    return create_model("r2plus1d_18", stem=stem, num_classes=num_classes, **MODEL)


def hand_loop(model: torch.nn.Module, loader: DataLoader, lr: float) -> float:
    """The minimal loop the trainer is measured against; returns clips/s."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    seen = 0
    start = time.perf_counter()
    for clips, labels, _ in loader:
        loss = F.cross_entropy(model(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += labels.numel()
    return seen / (time.perf_counter() - start)


def bench_trainer(repeats: int, clips: int, batch_size: int) -> dict[str, float]:
    data = SyntheticMotion(clips, seed=0, **DATA)
    template = small_model("r2plus1d", data.num_classes)
    config = TrainConfig(
        epochs=1, batch_size=batch_size, lr=1e-3, warmup_epochs=0, progress=False, device="cpu"
    )
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    hand_loop(copy.deepcopy(template), loader, 1e-3)  # warm-up: kernels, allocator
    hand, trainer = [], []
    for _ in range(repeats):
        hand.append(hand_loop(copy.deepcopy(template), loader, 1e-3))
        result = fit(copy.deepcopy(template), data, config=config)
        assert result.status == "completed", result.error
        trainer.append(float(result.history["clips_per_s"].iloc[0]))
    ratios = [t / h for t, h in zip(trainer, hand)]
    return {
        "hand_clips_per_s": statistics.median(hand),
        "trainer_clips_per_s": statistics.median(trainer),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def bench_generation(clips: int, batch_size: int) -> dict[str, float]:
    data = SyntheticMotion(clips, seed=0, **DATA)
    start = time.perf_counter()
    batch = [data[i] for i in range(clips)]
    generate = clips / (time.perf_counter() - start)

    model = small_model("r2plus1d", data.num_classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.stack([item[0] for item in batch[:batch_size]])
    y = torch.tensor([item[1] for item in batch[:batch_size]])
    steps, seen = 0, 0
    start = time.perf_counter()
    while steps < 3 or time.perf_counter() - start < 5.0:
        if steps == 1:  # the first step pays one-off costs
            start, seen = time.perf_counter(), 0
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        seen += batch_size if steps > 1 else 0
    consume = seen / (time.perf_counter() - start)
    return {
        "generate_clips_per_s": generate,
        "step_clips_per_s": consume,
        "ratio": generate / consume,
    }


def accuracy_run(stem: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    train = SyntheticMotion(args.train_clips, seed=1000 + seed, **DATA)
    val = SyntheticMotion(args.val_clips, seed=5000, **DATA)
    torch.manual_seed(seed)
    model = small_model(stem, train.num_classes)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=0.05,
        warmup_epochs=0.5,
        seed=seed,
        progress=False,
    )
    start = time.perf_counter()
    result = fit(model, train, config=config, val_data=val)
    return {
        "stem": stem,
        "seed": seed,
        "status": result.status,
        "val_top1": result.final.get("val_top1", float("nan")),
        "curve": [round(v, 3) for v in result.history["val_top1"]],
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-clips", type=int, default=2048)
    parser.add_argument("--val-clips", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--stems", default="r2plus1d,r2d")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument(
        "--data",
        default="{}",
        help='JSON overrides of the SyntheticMotion settings, e.g. {"noise": 0.5}',
    )
    args = parser.parse_args()
    DATA.update(json.loads(args.data))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, data {DATA}, model {MODEL}"
    )

    if not args.skip_speed:
        trainer = bench_trainer(args.repeats, clips=512, batch_size=16)
        print(
            f"\n[trainer] fit {trainer['trainer_clips_per_s']:.1f} clips/s vs hand loop "
            f"{trainer['hand_clips_per_s']:.1f} clips/s: ratio {trainer['ratio']:.3f} "
            f"(target >= 0.95; per repeat {', '.join(f'{r:.3f}' for r in trainer['ratios'])})"
        )
        generation = bench_generation(clips=512, batch_size=32)
        print(
            f"[data] SyntheticMotion {generation['generate_clips_per_s']:.0f} clips/s generated vs "
            f"{generation['step_clips_per_s']:.1f} clips/s consumed by a training step: "
            f"{generation['ratio']:.1f}x (target >= 10x)"
        )

    if not args.skip_accuracy:
        print(
            f"\n[accuracy] {DATA['task']} task, {DATA['num_classes']} classes (chance "
            f"{1 / DATA['num_classes']:.2f}); {args.train_clips} train / {args.val_clips} val "
            f"clips, {args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr}"
        )
        runs = []
        for stem in args.stems.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                run = accuracy_run(stem, seed, args)
                runs.append(run)
                print(
                    f"  {stem:>9} seed {seed}: val_top1 {run['val_top1']:.3f} "
                    f"(per epoch {run['curve']}) in {run['seconds']:.0f} s [{run['status']}]",
                    flush=True,
                )
        for stem in args.stems.split(","):
            accs = [r["val_top1"] for r in runs if r["stem"] == stem]
            print(f"  {stem:>9} mean val_top1 {statistics.mean(accs):.3f} over {len(accs)} seeds")


if __name__ == "__main__":
    main()
