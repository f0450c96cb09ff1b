"""Executor settings for the default study: workers x threads per worker, same cells, same process.

Runs the same training cells of ``studies/stem_ablation.py`` (full size: 3 epochs of 1536 clips,
all its probes) with each setting and prints wall times and ratios against one worker using every
core (the baseline). The fastest setting on the machine is what ``stemlab study run`` picks by
default (``--workers auto``: one worker per core, one thread each).

Run: ``python benchmarks/bench_executor.py [--cells 4]`` on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from stemlab.study import load_study
from stemlab.study.executors import LocalExecutor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4, help="training cells per setting")
    parser.add_argument(
        "--study", default=str(Path(__file__).parents[1] / "studies/stem_ablation.py")
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    study = load_study(args.study)
    train = [c for c in study.cells() if c.kind == "train"]
    # one cell per stem of seed 0: the mix of stem costs the study has
    cells = [c for c in train if c.config["seed"] == 0][: args.cells]
    settings = [(1, cores)] + [(w, max(1, cores // w)) for w in range(2, cores + 1)]
    print(f"{len(cells)} training cells of {study.name}; {cores} cores")
    times = {}
    for workers, threads in settings:
        executor = LocalExecutor(workers=workers, device="cpu", threads=threads)
        records = []
        start = time.perf_counter()
        executor.run(cells, records.append)
        times[(workers, threads)] = time.perf_counter() - start
        failed = [r["error"] for r in records if r["status"] != "ok"]
        if failed:
            sys.exit(f"cells failed: {failed}")
        print(f"workers={workers} threads={threads}: {times[(workers, threads)]:.1f} s", flush=True)
    base = times[(1, cores)]
    print("\nratio of wall time to workers=1 threads=all (lower is faster):")
    for (workers, threads), seconds in times.items():
        print(f"  workers={workers} x threads={threads}: {seconds / base:.2f}")
    best = min(times, key=times.get)
    print(f"fastest: workers={best[0]} threads={best[1]}")


if __name__ == "__main__":
    main()
