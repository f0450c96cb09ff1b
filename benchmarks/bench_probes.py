"""Overhead of the probes, as ratios against baselines timed in the same process.

Targets (issue 3), r2plus1d_18 at 1x3x16x112x112 unless said otherwise:

* default ``record_activations``: <= 1.10x a bare forward; all leaf modules: <= 1.5x;
  peak memory <= 1.2x the bare forward's;
* ``flops_table``: <= 1.5x one forward;
* ``grad_cam``: <= 1.05x raw captum ``LayerGradCam`` on the same layer; ratio against the
  ``grad-cam`` package (pytorch-grad-cam, benchmark-only dependency) on a 2-D ResNet-18.

Each round runs every variant once, in a shuffled order; a ratio is reported from the medians
and from the minima of the wall times over the rounds, and from the medians of the process CPU
times. When other processes share the cores (the load average is printed) wall-time ratios
swing widely; with ``--threads 1`` the CPU-time ratio is the contention-free figure. Peak memory is the rise of the resident-set
high-water mark over the resting size, measured in a child process with glibc told to serve
every allocation above 64 KiB by mmap, so that freed tensors leave the RSS (Linux only).

Usage::

    python benchmarks/bench_probes.py [--repeats 9] [--input 1x3x16x112x112] [--threads N]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from captum.attr import LayerGradCam
from torch import nn

from stemlab import create_model, probes

_STATUS = Path("/proc/self/status")

Timings = dict[str, dict[str, list[float]]]


def time_variants(variants: dict[str, Callable[[], object]], repeats: int) -> Timings:
    """Wall and process CPU times (ms) of each variant over ``repeats`` shuffled rounds.

    Every variant runs once first as a warm-up.
    """
    for fn in variants.values():
        fn()
    order = list(variants)
    shuffle = random.Random(0).shuffle
    samples: Timings = {name: {"wall": [], "cpu": []} for name in variants}
    for _ in range(repeats):
        shuffle(order)
        for name in order:
            wall, cpu = time.perf_counter(), time.process_time()
            variants[name]()
            samples[name]["cpu"].append((time.process_time() - cpu) * 1e3)
            samples[name]["wall"].append((time.perf_counter() - wall) * 1e3)
    return samples


def ratio_line(label: str, times: Timings, name: str, base: str, target: str = "") -> str:
    wall, cpu = times[name]["wall"], times[name]["cpu"]
    base_wall, base_cpu = times[base]["wall"], times[base]["cpu"]
    median = statistics.median(wall) / statistics.median(base_wall)
    best = min(wall) / min(base_wall)
    cpu_ratio = statistics.median(cpu) / statistics.median(base_cpu)
    goal = f"  (target {target})" if target else ""
    return (
        f"{label:34s} {statistics.median(wall):9.1f} ms  ratio {median:.3f} median, "
        f"{best:.3f} min, {cpu_ratio:.3f} cpu{goal}"
    )


def _median(times: Timings, name: str) -> float:
    return statistics.median(times[name]["wall"])


def _leaves(name: str, module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def _bare(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def _recorded(model: nn.Module, x: torch.Tensor, modules: object) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad(), probes.record_activations(model, modules) as rec:
            model(x)
        rec.table()

    return run


def bench_activations(model: nn.Module, x: torch.Tensor, repeats: int) -> list[str]:
    times = time_variants(
        {
            "bare": _bare(model, x),
            "default": _recorded(model, x, None),
            "leaves": _recorded(model, x, _leaves),
        },
        repeats,
    )
    return [
        f"{'forward (no_grad)':34s} {_median(times, 'bare'):9.1f} ms",
        ratio_line("record_activations default", times, "default", "bare", "<= 1.10"),
        ratio_line("record_activations all leaves", times, "leaves", "bare", "<= 1.50"),
    ]


def bench_flops(model: nn.Module, x: torch.Tensor, repeats: int) -> list[str]:
    times = time_variants(
        {"bare": _bare(model, x), "flops": lambda: probes.flops_table(model, x)}, repeats
    )
    return [ratio_line("flops_table vs one forward", times, "flops", "bare", "<= 1.50")]


def bench_grad_cam(model: nn.Module, x: torch.Tensor, layer: str, repeats: int) -> list[str]:
    module = dict(model.named_modules())[layer]
    times = time_variants(
        {
            "captum": lambda: LayerGradCam(model, module).attribute(x, target=0),
            "standard": lambda: probes.grad_cam(model, x, 0, layer),
            "temporal": lambda: probes.grad_cam(model, x, 0, layer, mode="temporal"),
        },
        repeats,
    )
    return [
        f"{'captum LayerGradCam (' + layer + ')':34s} {_median(times, 'captum'):9.1f} ms",
        ratio_line("grad_cam standard vs captum", times, "standard", "captum", "<= 1.05"),
        ratio_line("grad_cam temporal vs captum", times, "temporal", "captum"),
    ]


def bench_grad_cam_package(repeats: int) -> list[str]:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        return ["grad-cam package not installed (pip install grad-cam): skipped"]
    model = create_model("resnet18", num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224)
    package = GradCAM(model=model, target_layers=[model.layer4])
    times = time_variants(
        {
            "package": lambda: package(input_tensor=x, targets=[ClassifierOutputTarget(0)]),
            "ours": lambda: probes.grad_cam(model, x, 0, "layer4"),
        },
        repeats,
    )
    return [
        f"{'pytorch-grad-cam (resnet18, 224)':34s} {_median(times, 'package'):9.1f} ms",
        ratio_line("grad_cam vs pytorch-grad-cam", times, "ours", "package"),
    ]


def _status_mib(field: str) -> float:
    return int(re.search(rf"{field}:\s+(\d+)", _STATUS.read_text()).group(1)) / 1024


def peak_rise_mib(fn: Callable[[], object], libc: ctypes.CDLL) -> float:
    """Rise of the resident-set high-water mark while ``fn`` runs, in MiB."""
    libc.malloc_trim(0)  # hand cached free memory back, so that reusing it shows as a rise
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM
    resting = _status_mib("VmRSS")
    fn()
    return _status_mib("VmHWM") - resting


def memory_child(shape: tuple[int, ...]) -> None:
    """Print ``name peak_MiB`` lines for the activation-recording variants (child process)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD fixed at 64 KiB: big frees unmap at once
    torch.manual_seed(0)
    model = create_model("r2plus1d_18").eval()
    x = torch.randn(shape)
    variants = {
        "bare": _bare(model, x),
        "default": _recorded(model, x, None),
        "leaves": _recorded(model, x, _leaves),
    }
    for fn in variants.values():
        fn()
    for name, fn in variants.items():
        print(name, statistics.median(peak_rise_mib(fn, libc) for _ in range(3)))


def bench_memory(shape: tuple[int, ...]) -> list[str]:
    if not _STATUS.exists() or not Path("/proc/self/clear_refs").exists():
        return ["peak memory: needs Linux /proc, skipped"]
    text = "x".join(str(s) for s in shape)
    result = subprocess.run(
        [sys.executable, __file__, "--memory-child", "--input", text],
        capture_output=True,
        text=True,
        check=True,
    )
    peaks = {
        name: float(value)
        for name, value in (line.split() for line in result.stdout.splitlines() if line.strip())
    }
    return [
        f"{'peak memory rise, bare forward':34s} {peaks['bare']:9.1f} MiB",
        f"{'peak memory rise, default':34s} {peaks['default']:9.1f} MiB  "
        f"ratio {peaks['default'] / peaks['bare']:.3f}  (target <= 1.20)",
        f"{'peak memory rise, all leaves':34s} {peaks['leaves']:9.1f} MiB  "
        f"ratio {peaks['leaves'] / peaks['bare']:.3f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--input", default="1x3x16x112x112")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.input.split("x"))
    if args.memory_child:
        memory_child(shape)
        return 0
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("r2plus1d_18").eval()
    x = torch.randn(shape)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, input {shape}, "
        f"repeats {args.repeats}, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    sections = [
        lambda: bench_activations(model, x, args.repeats),
        lambda: bench_flops(model, x, args.repeats),
        lambda: bench_grad_cam(model, x, "layer4", args.repeats),
        lambda: bench_grad_cam_package(args.repeats),
        lambda: bench_memory(shape),
    ]
    for section in sections:
        print("\n".join(section()), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
