"""Benchmark for issue 18: the CUDA path, as in-process ratios on one GPU.

Run from the repository root on a machine with a CUDA device::

    python benchmarks/bench_gpu.py
    python benchmarks/bench_gpu.py --batch-size 32 --steps 20 --no-compile

Without a CUDA device it says so and exits 0. On a GPU it times training steps of the full-size
r2plus1d_18 on random clips [N, 3, 16, 112, 112] (every ratio from the same process, variants
interleaved, median over the steps after a warm-up) and prints:

1. mixed precision (bf16 where supported, else fp16 with a GradScaler) against fp32;
2. channels_last_3d against the default layout (both under mixed precision);
3. torch.compile against eager (mixed precision, channels-last);
4. ``stemlab.train.fit`` (device auto: its CUDA path) against a hand-written loop with the same
   settings, on the same data;
5. the peak memory of one training step at each precision.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from stemlab.models import create_model
from stemlab.train import TrainConfig, fit

SHAPE = (3, 16, 112, 112)
CLASSES = 101


def make_step(
    model: torch.nn.Module, amp: torch.dtype | None, channels_last: bool
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One AdamW training step of ``model`` (changed in place) with the given settings."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        context = torch.autocast("cuda", dtype=amp) if amp is not None else contextlib.nullcontext()
        with context:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def timed(step: Callable[[torch.Tensor, torch.Tensor], None], x: Any, y: Any) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    step(x, y)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(
    variants: dict[str, Callable[[torch.Tensor, torch.Tensor], None]],
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    warmup: int,
) -> dict[str, float]:
    """Median seconds per step of each variant, run interleaved."""
    for step in variants.values():
        for _ in range(warmup):
            timed(step, x, y)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(steps):
        for name, step in variants.items():
            times[name].append(timed(step, x, y))
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory(step: Callable[[torch.Tensor, torch.Tensor], None], x: Any, y: Any) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step(x, y)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def hand_epoch(model: torch.nn.Module, loader: DataLoader, amp: torch.dtype | None) -> float:
    """Clips/s of a hand-written epoch with fit's settings on CUDA."""
    model.cuda().train().to(memory_format=torch.channels_last_3d)
    step = make_step(model, amp, channels_last=True)
    torch.cuda.synchronize()
    start, seen = time.perf_counter(), 0
    for x, y in loader:
        step(x.cuda(non_blocking=True), y.cuda(non_blocking=True))
        seen += len(y)
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip compile vs eager")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("No CUDA device is present: nothing to measure (bench_gpu.py needs a GPU).")
        return 0
    torch.backends.cudnn.benchmark = True
    amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    amp_name = "bf16" if amp is torch.bfloat16 else "fp16 + GradScaler"
    print(f"device: {torch.cuda.get_device_name()}; mixed precision: {amp_name}")
    torch.manual_seed(0)
    template = create_model("r2plus1d_18", num_classes=CLASSES).cuda().train()
    x = torch.randn(args.batch_size, *SHAPE, device="cuda")
    y = torch.randint(0, CLASSES, (args.batch_size,), device="cuda")

    def fresh() -> torch.nn.Module:
        return copy.deepcopy(template)

    variants = {
        "fp32": make_step(fresh(), None, channels_last=False),
        "amp": make_step(fresh(), amp, channels_last=False),
        "amp_cl": make_step(fresh(), amp, channels_last=True),
    }
    seconds = compare(variants, x, y, args.steps, args.warmup)
    per_clip = {k: args.batch_size / v for k, v in seconds.items()}
    print(f"r2plus1d_18 training steps on [{args.batch_size}, {', '.join(map(str, SHAPE))}]:")
    for name, rate in per_clip.items():
        print(f"   {name:8s} {rate:8.1f} clips/s")
    print(f"1. mixed precision / fp32:        {seconds['fp32'] / seconds['amp']:.2f}x")
    print(f"2. channels_last_3d / contiguous: {seconds['amp'] / seconds['amp_cl']:.2f}x")
    if not args.no_compile:
        compiled_model = fresh()
        eager = make_step(compiled_model, amp, channels_last=True)
        compiled = make_step(torch.compile(copy.deepcopy(compiled_model)), amp, channels_last=True)
        try:
            both = compare({"eager": eager, "compiled": compiled}, x, y, args.steps, args.warmup)
            print(f"3. compiled / eager:              {both['eager'] / both['compiled']:.2f}x")
        except Exception as exc:
            print(f"3. compiled / eager:              torch.compile failed ({exc!r:.200})")
    else:
        print("3. compiled / eager:              skipped (--no-compile)")

    clips = args.batch_size * (args.steps + args.warmup)
    data = TensorDataset(torch.randn(clips, *SHAPE), torch.randint(0, CLASSES, (clips,)))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, pin_memory=True)
    hand_epoch(fresh(), loader, amp)  # warm-up
    hand = hand_epoch(fresh(), loader, amp)
    config = TrainConfig(
        epochs=1, batch_size=args.batch_size, warmup_epochs=0, progress=False, device="auto"
    )
    result = fit(fresh(), data, config=config)
    if result.status != "completed":
        print(f"4. trainer / hand-written loop:   fit {result.status}: {result.error}")
    else:
        trainer = float(result.history["clips_per_s"].iloc[0])
        print(
            f"4. trainer / hand-written loop:   {trainer / hand:.2f}x "
            f"({trainer:.1f} vs {hand:.1f} clips/s; fit settings {result.settings})"
        )
    for name, step in variants.items():
        print(f"5. peak memory, {name:8s}        {peak_memory(step, x, y):.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
