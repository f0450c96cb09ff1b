"""Check that a fresh run reproduces a committed report's accuracy tables.

Reruns training cells of a study from scratch (in a temporary folder, nothing reused) with the
threads the committed run used, and compares every metric of ``tables/cells.csv`` that describes
the trained model (top-1, losses, probe values) with the committed one.

Run: ``python benchmarks/check_reproduce.py [--study studies/stem_ablation.py] [--cells N]``
(``--cells 0``: every training cell, about as long as the study itself). Exit status 1 when a
value differs by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import pandas as pd

from stemlab.study import load_study
from stemlab.study.cell import run_cell

COMPARED = ("top1", "train_loss", "val_loss", "gradcam_on_object", "effective_rank", "probe_top1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/stem_ablation.py")
    parser.add_argument("--report", default=None, help="default reports/<study name>")
    parser.add_argument("--cells", type=int, default=2, help="training cells to rerun; 0 = all")
    parser.add_argument("--tolerance", type=float, default=0.0)
    args = parser.parse_args()
    study = load_study(args.study)
    report = Path(args.report or f"reports/{study.name}")
    committed = pd.read_csv(report / "tables" / "cells.csv").set_index("key")
    runs = json.loads((report / "manifest.json").read_text())["runs"]
    threads = runs[-1].get("threads") or 1
    cells = [c for c in study.cells() if c.kind == "train" and c.key in committed.index]
    cells = cells if args.cells == 0 else cells[: args.cells]
    if not cells:
        print(f"no training cell of {args.study} is in {report}/tables/cells.csv", file=sys.stderr)
        return 1
    worst = 0.0
    for cell in cells:
        start = time.perf_counter()
        record = run_cell(cell.config, threads=threads, device="cpu")
        metrics = record["result"]["metrics"]
        row = committed.loc[cell.key]
        diffs = {
            name: abs(float(metrics[name]) - float(row[name]))
            for name in COMPARED
            if name in metrics
            and name in row
            and metrics[name] is not None
            and not math.isnan(float(row[name]))
        }
        worst = max([worst, *diffs.values()])
        print(
            f"{cell.label}: top1 {metrics['top1']:.4f} (committed {row['top1']:.4f}); largest "
            f"difference {max(diffs.values()):.2g} over {len(diffs)} metrics "
            f"({time.perf_counter() - start:.0f} s, {threads} thread(s))"
        )
    print(f"largest difference over {len(cells)} cells: {worst:.2g} (tolerance {args.tolerance})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
