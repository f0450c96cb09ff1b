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
    from stemlab.study import load_study, run_study
    from stemlab.study.executors import default_workers
    from stemlab.study.runner import check_device_name

    device = check_device_name(args.device)  # before the study file runs any code
    study = load_study(args.path)
    command = "stemlab study run " + shlex.join(
        [
            str(args.path),
            *(["--quick"] if args.quick else []),
            *(["--out", str(args.out)] if args.out else []),
        ]
    )
    drawn: dict[str, Any] = {}

    def draw(run: Any) -> None:
        from stemlab.report import render_report

        drawn.update(render_report(run.out_dir, command=command))

    try:
        run = run_study(
            study,
            out_dir=args.out,
            quick=args.quick,
            executor=args.executor,
            workers=default_workers(device) if args.workers == "auto" else args.workers,
            threads=args.threads,
            resume=not args.no_resume,
            device=device,
            progress=not args.quiet,
            wait=args.wait,
            command=command,
            study_file=args.path,
            force=args.force,
            after=draw,
        )
    except KeyboardInterrupt:
        print(
            "stemlab: interrupted; finished cells are saved, run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    if not args.quiet:
        print(
            f"{run.total} cells: {run.skipped} already done, {run.ran} run now "
            f"({run.seconds:.0f} s), {run.failed} failed"
            + (f", {run.diverged} diverged" if run.diverged else "")
        )
        print(f"report: {drawn['html']}")
    return 1 if run.failed else 0


def _report_guard(out: Path, store: Any, manifest: dict[str, Any] | None, force: bool) -> None:
    """Refuse to replace a report with a poorer one (no cells, or fewer than it was drawn from)."""
    finished = sum(
        1 for r in map(store.read, store.stored_keys()) if r is not None and r["status"] == "ok"
    )
    drawn_from = int((manifest or {}).get("cells", {}).get("ok", 0) or 0)
    page = out / "index.html"
    if finished == 0 and (page.exists() or drawn_from):
        raise CLIError(
            f"report: {out} has no finished cells in {store.root} (a fresh clone does not carry "
            f"them); redrawing would replace its report of {drawn_from} cell(s) with an empty "
            "one; rerun the study (stemlab study run) to recompute them"
        )
    if finished < drawn_from and not force:
        raise CLIError(
            f"report: {out} holds {finished} finished cell(s) but its report was drawn from "
            f"{drawn_from}; redrawing would lose {drawn_from - finished}: rerun the study, or "
            "pass --force to redraw from what is there"
        )


def _run_report(args: argparse.Namespace) -> int:
    """Rebuild the tables from the cell records (never from the CSVs), then render the report."""
    from stemlab.study import CellStore, Study, build_tables, write_tables
    from stemlab.study.lock import StudyLock
    from stemlab.study.manifest import cell_counts, read_manifest, rebuild_manifest, write_manifest
    from stemlab.study.runner import check_output_folder, tables_from_cells
    from stemlab.study.spec import Cell

    out = Path(args.dir)
    if not out.is_dir():
        raise CLIError(f"report: {out} is not a folder")
    if not (out / "manifest.json").exists() and not (out / "cells").is_dir():
        raise CLIError(f"report: {out} is not a study folder (no manifest.json, no cells/)")
    check_output_folder(out, hint="copy the folder somewhere writable and report there")
    with StudyLock(out, command="stemlab report " + shlex.quote(str(out)), wait=args.wait):
        store = CellStore(out / "cells")
        manifest = read_manifest(out)
        _report_guard(out, store, manifest, args.force)
        if manifest is None:
            manifest = rebuild_manifest(out)
            warnings.warn(
                f"{out / 'manifest.json'} is missing: rebuilt from the cells", stacklevel=1
            )
        if manifest["config"]:
            study = Study(**manifest["config"])
            tables = tables_from_cells(study, out)
            total: int | None = study.grid_size()
        else:
            warnings.warn(
                f"the study's config could not be recovered (damaged manifest, and the cells in "
                f"{store.root} define no one study): the report shows the stored cells as they are",
                stacklevel=1,
            )
            records = [r for r in map(store.read, store.stored_keys()) if r is not None]
            tables = build_tables([Cell(r["kind"], r["config"]) for r in records], store)
            write_tables(tables, out / "tables")
            total = None
        manifest["cells"] = cell_counts(tables["cells"], total=total)
        write_manifest(out, manifest)
        from stemlab.report import render_report

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
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default reports/NAME, or reports/NAME-quick with --quick)",
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
    run.add_argument(
        "--force",
        action="store_true",
        help="allow a --quick run into the folder of a full run (its report is replaced)",
    )
    run.set_defaults(handler=_run_study)
    _add_plan_parser(commands)


def add_report_parser(subparsers: Any) -> None:
    """``stemlab report DIR``: rebuild tables from the cells, re-render figures and the report."""
    parser = subparsers.add_parser(
        "report", help="rebuild a study's tables from its cells and re-render its report"
    )
    parser.add_argument("dir", help="study output folder, e.g. reports/stem_ablation")
    parser.add_argument(
        "--wait", action="store_true", help="if a driver is running on the folder, wait for it"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="redraw even when fewer cells are stored than the report was drawn from",
    )
    parser.set_defaults(handler=_run_report)
