"""``stemlab study run`` and ``stemlab report``: subcommands of the ``stemlab`` command."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from stemlab.cli import register_subcommand

__all__ = ["add_report_parser", "add_study_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _run_study(args: argparse.Namespace) -> int:
    from stemlab.report import render_report
    from stemlab.study import load_study, run_study

    study = load_study(args.path)
    try:
        run = run_study(
            study,
            out_dir=args.out,
            quick=args.quick,
            executor=args.executor,
            workers=args.workers,
            resume=not args.no_resume,
            device=args.device,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        print(
            "stemlab: interrupted; finished cells are saved, run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    command = "stemlab study run " + shlex.join(
        [
            str(args.path),
            *(["--quick"] if args.quick else []),
            *(["--out", str(args.out)] if args.out else []),
        ]
    )
    paths = render_report(run.out_dir, command=command)
    if not args.quiet:
        print(
            f"{run.total} cells: {run.skipped} already done, {run.ran} run now "
            f"({run.seconds:.0f} s), {run.failed} failed"
        )
        print(f"report: {paths['html']}")
    return 1 if run.failed else 0


def _run_report(args: argparse.Namespace) -> int:
    from stemlab.report import render_report

    paths = render_report(args.dir)
    print(f"report: {paths['html']}")
    return 0


@register_subcommand
def add_study_parser(subparsers: Any) -> None:
    """``stemlab study run PATH [--quick] [--out DIR] [--executor local|ray] [--workers N] ...``."""
    parser = subparsers.add_parser("study", help="run a study script")
    commands = parser.add_subparsers(dest="study_command", required=True, metavar="run")
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
        "--workers", type=_positive_int, default=1, metavar="N", help="cells in parallel"
    )
    run.add_argument("--no-resume", action="store_true", help="rerun cells that already finished")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument("--quiet", action="store_true", help="no progress bar or summary lines")
    run.set_defaults(handler=_run_study)


@register_subcommand
def add_report_parser(subparsers: Any) -> None:
    """``stemlab report DIR``: re-render figures, report.md and index.html from a study folder."""
    parser = subparsers.add_parser("report", help="re-render a study's report from its folder")
    parser.add_argument("dir", help="study output folder, e.g. reports/stem_ablation")
    parser.set_defaults(handler=_run_report)
