"""``stemlab study run`` and ``stemlab report``: subcommands of the ``stemlab`` command."""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

from stemlab._cli_common import CLIError, positive_int

__all__ = ["add_report_parser", "add_study_parser"]


def _run_study(args: argparse.Namespace) -> int:
    from stemlab.device import resolve_device
    from stemlab.report import render_report
    from stemlab.study import load_study, run_study
    from stemlab.study.executors import default_workers

    resolve_device(args.device)  # before the study file runs any code
    study = load_study(args.path)
    command = "stemlab study run " + shlex.join(
        [
            str(args.path),
            *(["--quick"] if args.quick else []),
            *(["--out", str(args.out)] if args.out else []),
        ]
    )
    try:
        run = run_study(
            study,
            out_dir=args.out,
            quick=args.quick,
            executor=args.executor,
            workers=default_workers(args.device) if args.workers == "auto" else args.workers,
            threads=args.threads,
            resume=not args.no_resume,
            device=args.device,
            progress=not args.quiet,
            wait=args.wait,
            command=command,
        )
    except KeyboardInterrupt:
        print(
            "stemlab: interrupted; finished cells are saved, run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    paths = render_report(run.out_dir, command=command)
    if not args.quiet:
        print(
            f"{run.total} cells: {run.skipped} already done, {run.ran} run now "
            f"({run.seconds:.0f} s), {run.failed} failed"
        )
        print(f"report: {paths['html']}")
    return 1 if run.failed else 0


def _run_report(args: argparse.Namespace) -> int:
    """Rebuild the tables from the cell records (never from the CSVs), then render the report."""
    from stemlab.report import render_report
    from stemlab.study import CellStore, Study, build_tables, write_tables
    from stemlab.study.manifest import cell_counts, read_manifest, rebuild_manifest, write_manifest
    from stemlab.study.runner import tables_from_cells
    from stemlab.study.spec import Cell

    out = Path(args.dir)
    if not out.is_dir():
        raise CLIError(f"report: {out} is not a folder")
    store = CellStore(out / "cells")
    manifest = read_manifest(out)
    if manifest is None:
        if not store.stored_keys():
            raise CLIError(f"report: {out} is not a study folder (no manifest.json, no cells/)")
        manifest = rebuild_manifest(out)
        warnings.warn(f"{out / 'manifest.json'} is missing: rebuilt from the cells", stacklevel=1)
    if manifest["config"]:
        tables = tables_from_cells(Study(**manifest["config"]), out)
    else:
        warnings.warn(
            f"the study's config could not be recovered (damaged manifest, and the cells in "
            f"{store.root} define no one study): the report shows the stored cells as they are",
            stacklevel=1,
        )
        records = [r for r in map(store.read, store.stored_keys()) if r is not None]
        tables = build_tables([Cell(r["kind"], r["config"]) for r in records], store)
        write_tables(tables, out / "tables")
    manifest["cells"] = cell_counts(tables["cells"])
    write_manifest(out, manifest)
    paths = render_report(out)
    print(f"report: {paths['html']}")
    return 0


def _plan_study(args: argparse.Namespace) -> int:
    """Print the seeds each non-significant accuracy comparison needs for 80% power."""
    import json

    import pandas as pd

    from stemlab.report.power import plan_table, plan_text

    out = Path(args.dir)
    cells_path, manifest_path = out / "tables" / "cells.csv", out / "manifest.json"
    for path in (cells_path, manifest_path):
        if not path.is_file():
            raise CLIError(f"plan: {path} not found (is {out} a finished study folder?)")
    try:
        config = json.loads(manifest_path.read_text()).get("config") or {}
    except json.JSONDecodeError as error:
        raise CLIError(f"plan: {manifest_path} is not valid JSON ({error})") from None
    baseline = config.get("baseline") or (config.get("findings") or {}).get("baseline")
    family = config.get("comparisons", "baseline")
    table = plan_table(pd.read_csv(cells_path), family=family, baseline=baseline, alpha=args.alpha)
    print(plan_text(table))
    return 0


def _add_plan_parser(commands: Any) -> None:
    plan = commands.add_parser(
        "plan",
        help="seeds each non-significant accuracy comparison needs for 80%% power",
        description="Read DIR/tables/cells.csv and DIR/manifest.json; for each comparison of "
        "the study's declared family that is not significant, print the observed difference, "
        "its sd and the seeds a paired t-test at the corrected level needs for 80%% power.",
    )
    plan.add_argument("dir", help="study output folder, e.g. reports/stem_ablation")
    plan.add_argument("--alpha", type=float, default=0.05, help="family-wise level (0.05)")
    plan.set_defaults(handler=_plan_study)


def _workers(text: str) -> int | str:
    return "auto" if text == "auto" else positive_int(text)


def add_study_parser(subparsers: Any) -> None:
    """``stemlab study run PATH [--quick] [--out DIR] [--executor local|ray] [--workers N] ...``."""
    parser = subparsers.add_parser("study", help="run a study script")
    commands = parser.add_subparsers(dest="study_command", required=True, metavar="run|plan")
    run = commands.add_parser(
        "run",
        help="run every cell of a study (finished cells are skipped) and write its report",
        description="Run a study script (a file defining STUDY = stemlab.study.Study(...)).",
    )
    run.add_argument("path", help="study script, e.g. studies/stem_ablation.py")
    run.add_argument("--quick", action="store_true", help="apply the study's quick overrides")
    run.add_argument(
        "--out", default=None, metavar="DIR", help="output folder (default reports/NAME)"
    )
    run.add_argument("--executor", choices=("local", "ray"), default="local")
    run.add_argument(
        "--workers",
        type=_workers,
        default="auto",
        metavar="N",
        help="cells in parallel; auto (default): one per CPU core on CPU, one on a GPU",
    )
    run.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="torch threads per training cell (default: the cores divided among the workers)",
    )
    run.add_argument("--no-resume", action="store_true", help="rerun cells that already finished")
    run.add_argument(
        "--device", default="auto", help="auto (default), cpu, cuda or cuda:N; checked first"
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="if another driver is running on the output folder, wait for it instead of exiting",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary lines")
    run.set_defaults(handler=_run_study)
    _add_plan_parser(commands)


def add_report_parser(subparsers: Any) -> None:
    """``stemlab report DIR``: rebuild tables from the cells, re-render figures and the report."""
    parser = subparsers.add_parser(
        "report", help="rebuild a study's tables from its cells and re-render its report"
    )
    parser.add_argument("dir", help="study output folder, e.g. reports/stem_ablation")
    parser.set_defaults(handler=_run_report)
