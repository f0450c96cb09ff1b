"""Cost of the filter-channel probes (issue 10): cka memory vs batches, probe time vs evaluation.

(a) ``cka`` memory over 2, 8 and 32 batches: each count runs in a child process that reports the
rise of the resident-set high-water mark (``VmHWM``) over its resting size after building the
models, with glibc told to serve every allocation above 64 KiB by mmap so that freed tensors
leave the RSS (Linux only), and the ``tracemalloc`` peak (numpy/Python allocations: the running
HSIC sums and the per-batch zero-diagonal Grams). Flat memory = ratio ~1.0 against 2 batches.

(b) Wall and process CPU time of each probe on one small model, as a ratio to one evaluation
pass (``no_grad`` forward over the same clips): ``cka`` (model vs a second model), the
``channel_ablation`` table of the stem, the ``ablation_curve`` (importance and random order,
importance table given), ``channel_usage`` and ``channel_redundancy`` of the stem. A channel
ablation needs ``C + 1`` forward passes per batch for ``C`` stem channels, a curve ``2C + 1``.

Model: r2plus1d_18 with widths (16, 32, 64, 128), layers (1, 1, 1, 1), stem ``basic:width=32``;
input batches 16x3x8x32x32; 256 clips.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_channels.py [--clips 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from stemlab import create_model
from stemlab.probes.channel_ablation import ablation_curve, channel_ablation
from stemlab.probes.channel_redundancy import channel_redundancy
from stemlab.probes.channel_usage import channel_usage
from stemlab.probes.cka import cka

_STATUS = Path("/proc/self/status")
MODEL_KWARGS = {
    "stem": "basic:width=32",
    "widths": (16, 32, 64, 128),
    "layers": (1, 1, 1, 1),
    "num_classes": 4,
}
BATCH = (16, 3, 8, 32, 32)


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in {_STATUS}")


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("r2plus1d_18", **MODEL_KWARGS).eval()


def _batches(count: int, seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches made on the fly, so the data themselves take no memory across batches."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        x = torch.randn(BATCH, generator=generator)
        yield x, torch.randint(0, 4, (BATCH[0],), generator=generator)


def child_cka_memory(count: int) -> None:
    """Print ``rss_rise_kib tracemalloc_peak_bytes`` of one cka call over ``count`` batches."""
    model_a, model_b = _model(0), _model(1)
    resting = _status_kib("VmRSS")
    tracemalloc.start()
    cka(model_a, model_b, _batches(count))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(_status_kib("VmHWM") - resting, peak)


def cka_memory(counts: list[int]) -> None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    results = {}
    for count in counts:
        out = subprocess.run(
            [sys.executable, __file__, "--child-cka", str(count)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split()
        results[count] = (int(out[0]), int(out[1]))
    base_rss, base_traced = results[counts[0]]
    print(f"(a) cka peak memory, batches of {'x'.join(map(str, BATCH))}, 5x5 layers")
    print(f"{'batches':>8} {'RSS rise MiB':>13} {'ratio':>6} {'tracemalloc kB':>15} {'ratio':>6}")
    for count, (rss, traced) in results.items():
        print(
            f"{count:>8} {rss / 1024:>13.1f} {rss / base_rss:>6.2f} {traced / 1000:>15.1f} "
            f"{traced / base_traced:>6.2f}"
        )


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def probe_times(clips: int, repeats: int) -> None:
    model, other = _model(0), _model(1)
    data = list(_batches(clips // BATCH[0], seed=1))

    def evaluate() -> None:
        with torch.no_grad():
            for x, _ in data:
                model(x)

    importance = channel_ablation(model, data, metric="loss")
    probes: dict[str, tuple[Callable[[], object], int]] = {
        "evaluation pass": (evaluate, repeats),
        "cka (vs 2nd model)": (lambda: cka(model, other, data), repeats),
        "channel_ablation": (lambda: channel_ablation(model, data, metric="loss"), 1),
        "ablation_curve": (
            lambda: ablation_curve(model, data, metric="loss", importance=importance),
            1,
        ),
        "channel_usage": (lambda: channel_usage(model), repeats),
        "channel_redundancy": (lambda: channel_redundancy(model, data), repeats),
    }
    evaluate()  # warm-up
    times = {name: _time(fn, n) for name, (fn, n) in probes.items()}
    base_wall, base_cpu = times["evaluation pass"]
    print(
        f"\n(b) probe time vs one evaluation pass: {clips} clips in batches of "
        f"{'x'.join(map(str, BATCH))}, {torch.get_num_threads()} thread(s), "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'probe':<22} {'wall s':>8} {'x eval':>7} {'cpu s':>8} {'x eval':>7}")
    for name, (wall, cpu) in times.items():
        print(
            f"{name:<22} {wall:>8.2f} {wall / base_wall:>7.2f} {cpu:>8.2f} {cpu / base_cpu:>7.2f}"
        )
    stem_channels = importance.attrs["num_channels"]
    print(
        f"(stem channels C = {stem_channels}: ablation = C + 1 = {stem_channels + 1} forwards per "
        f"batch, curve = 2C + 1 = {2 * stem_channels + 1})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="2,8,32", help="cka batch counts for (a)")
    parser.add_argument("--child-cka", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_cka is not None:
        child_cka_memory(args.child_cka)
        return
    cka_memory([int(c) for c in args.batches.split(",")])
    probe_times(args.clips, args.repeats)


if __name__ == "__main__":
    main()
