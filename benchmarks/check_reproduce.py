"""Check that a fresh run reproduces the committed copy of a report's cell tables.

Reruns training cells of a study from scratch (nothing reused) with the threads the committed run
used, and compares every metric of ``tables/cells.csv`` that describes the trained model (top-1,
losses, probe values) with the copy committed in git (``git show REV:reports/NAME/tables/...``),
never with the working tree's folder, which the main command overwrites. With a sweep, the
training cells are those of the committed selection (``tables/selection.csv``).

On the machine that made the committed run the numbers repeat exactly (tolerance 0); on another
CPU they do not (other kernels, chaotic training): there only the report's findings are expected
to hold, not single cells.

Run: ``python benchmarks/check_reproduce.py [--study studies/stem_ablation.py] [--cells N]
[--rev HEAD]`` (``--cells 0``: every training cell, about as long as the study itself). Exit
status 1 when a value differs by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
import sys
import time

import pandas as pd

from stemlab.study import load_study
from stemlab.study.cell import run_cell
from stemlab.study.selection import selection_table

COMPARED = (
    "top1",
    "val_top1",
    "train_loss",
    "val_loss",
    "test_loss",
    "gradcam_on_object",
    "effective_rank",
    "probe_top1",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="studies/stem_ablation.py")
    parser.add_argument("--report", default=None, help="default reports/<study name>")
    parser.add_argument("--cells", type=int, default=2, help="training cells to rerun; 0 = all")
    parser.add_argument("--tolerance", type=float, default=0.0)
    parser.add_argument("--rev", default="HEAD", help="git revision of the committed copy")
    args = parser.parse_args()
    study = load_study(args.study)
    report = args.report or f"reports/{study.name}"
    try:
        committed = pd.read_csv(io.StringIO(_committed(args.rev, f"{report}/tables/cells.csv")))
        manifest = json.loads(_committed(args.rev, f"{report}/manifest.json"))
        selection = None
        if study.sweep is not None:
            chosen = pd.read_csv(
                io.StringIO(_committed(args.rev, f"{report}/tables/selection.csv"))
            )
            selection = selection_table(chosen)
    except FileNotFoundError as exc:
        print(f"check_reproduce: {exc}", file=sys.stderr)
        return 2
    committed = committed.set_index("key")
    threads = manifest["runs"][-1].get("threads") or 1
    grid = study.cells(selection)
    cells = [c for c in grid if c.kind == "train" and c.key in committed.index]
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


def _committed(rev: str, path: str) -> str:
    """The text of ``path`` as committed at ``rev`` (never the working tree's copy)."""
    done = subprocess.run(
        ["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise FileNotFoundError(f"{path} is not committed at {rev}: {done.stderr.strip()}")
    return done.stdout


if __name__ == "__main__":
    sys.exit(main())
