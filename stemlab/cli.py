"""The ``stemlab`` command: ``list``, ``inspect``, ``filters`` (and subcommands added by plugins).

Each subcommand is an ``add_parser(subparsers)`` function that adds its parser and sets
``handler`` (``Namespace -> int``) as a default. Modules in :data:`SUBCOMMAND_MODULES` are imported
when the parser is built; they add their subcommands with :func:`register_subcommand`::

    from stemlab.cli import register_subcommand

    @register_subcommand
    def add_study_parser(subparsers):
        parser = subparsers.add_parser("study", help="run a study")
        parser.set_defaults(handler=run_study)

User mistakes (unknown names, bad values, missing files) end with a one-line message on stderr
and exit status 2; set ``STEMLAB_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import torch

__all__ = ["SUBCOMMAND_MODULES", "CLIError", "main", "parse_shape", "register_subcommand"]

AddParser = Callable[[Any], None]

SUBCOMMAND_MODULES: list[str] = ["stemlab.cli_study"]
"""Modules imported before the parser is built, so that their subcommands register."""

_ADD_PARSERS: list[AddParser] = []
_FORMATS = ("table", "csv", "json", "markdown")
_DEFAULT_INPUT = {"video": "1x3x16x112x112", "image": "1x3x224x224"}
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, KeyError)


class CLIError(Exception):
    """A user mistake: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{self.prog}: {message} (see '{self.prog} --help')")


def register_subcommand(add_parser: AddParser) -> AddParser:
    """Decorator: add a subcommand; ``add_parser(subparsers)`` adds a parser with a ``handler``."""
    if add_parser not in _ADD_PARSERS:
        _ADD_PARSERS.append(add_parser)
    return add_parser


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1x3x16x112x112"`` into ``(1, 3, 16, 112, 112)``.

    Raises:
        CLIError: if the text is not 4 or 5 positive integers joined by ``x``.
    """
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) not in (4, 5) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise CLIError(
            f"--input {text!r}: expected N x C x [T x] H x W positive integers, "
            "e.g. 1x3x16x112x112 (video) or 1x3x224x224 (image)"
        )
    return tuple(int(p) for p in parts)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: CUDA is not available on this machine")
    return torch.device(name)


def _build_model(args: argparse.Namespace) -> torch.nn.Module:
    import stemlab

    model = stemlab.create_model(args.backbone, stem=args.stem, num_classes=args.num_classes)
    if args.weights is not None:
        load_weights = getattr(stemlab, "load_weights", None)
        if load_weights is None:
            raise CLIError("--weights: this stemlab version cannot load weights yet")
        report = load_weights(model, args.weights)
        counts = report["action"].value_counts().to_dict()
        summary = ", ".join(f"{count} {action}" for action, count in counts.items())
        print(f"weights {args.weights}: {summary}", file=sys.stderr)
    return model


def _format_number(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return "" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)


def _markdown(frame: pd.DataFrame) -> str:
    cells = [[_format_number(v) for v in row] for row in frame.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = [
        "| " + " | ".join(str(c) for c in frame.columns) + " |",
        "|" + "|".join("---:" if n else ":---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _render(frame: pd.DataFrame, fmt: str, totals: dict[str, Any] | None = None) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return json.dumps(records, indent=2, default=str)  # NaN -> null: strict JSON
    if totals is not None:
        frame = pd.concat([frame, pd.DataFrame([totals])], ignore_index=True)
    if fmt == "markdown":
        return _markdown(frame)
    return frame.to_string(index=False, formatters={c: _format_number for c in frame.columns})


def _run_list(args: argparse.Namespace) -> int:
    from stemlab.backbones import BACKBONES
    from stemlab.stems import STEMS

    rows = [
        {
            "registry": "stem",
            "name": e.name,
            "kind": e.kind,
            "default_stem": "",
            "description": e.description,
        }
        for e in STEMS
    ] + [
        {
            "registry": "backbone",
            "name": e.name,
            "kind": e.kind,
            "default_stem": e.default_stem or "",
            "description": e.description,
        }
        for e in BACKBONES
    ]
    frame = pd.DataFrame(rows)
    print(_render(frame, args.format))
    return 0


def _shape_text(shape: Any) -> str:
    return "x".join(str(s) for s in shape) if isinstance(shape, tuple) else ""


def _run_inspect(args: argparse.Namespace) -> int:
    from stemlab import probes
    from stemlab.backbones import BACKBONES

    kind = BACKBONES.entry(args.backbone).kind
    shape = parse_shape(args.input or _DEFAULT_INPUT[kind])
    device = _device(args.device)
    model = _build_model(args).to(device).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    flops = probes.flops_table(model, x)
    with (
        torch.no_grad(),
        probes.record_activations(
            model, lambda name, module: bool(name), stats=args.stats
        ) as recorder,
    ):
        output = model(x)
    recorded = recorder.table().drop_duplicates("module").set_index("module")
    rows = flops[flops["module"] != ""][["module", "type", "params", "flops"]].copy()
    rows.insert(2, "output_shape", [_shape_text(recorded["shape"].get(m)) for m in rows["module"]])
    stat_columns = list(probes.STAT_COLUMNS) if args.stats else []
    for column in stat_columns:
        rows[column] = [float(recorded[column].get(m, math.nan)) for m in rows["module"]]
    whole = flops.iloc[0]
    totals = {
        "module": "total",
        "type": whole["type"],
        "output_shape": _shape_text(tuple(output.shape)),
        "params": int(whole["params"]),
        "flops": int(whole["flops"]),
        **{c: math.nan for c in stat_columns},
    }
    print(_render(rows.reset_index(drop=True), args.format, totals))
    return 0


def _run_filters(args: argparse.Namespace) -> int:
    from stemlab import probes
    from stemlab.report.figures import plot_filter_grid

    model = _build_model(args)
    filters = probes.first_layer_filters(model)
    title = f"{args.backbone} stem={args.stem or 'native'}: first-layer filters"
    plot_filter_grid(filters, title=title, out=args.out)
    duplicates = int(filters.table.query("kernel == 'conv'")["near_duplicate"].sum())
    print(
        f"wrote {args.out}: {filters.module} {tuple(filters.weight.shape)}"
        + (f", composed {tuple(filters.effective.shape)}" if filters.effective is not None else "")
        + f", {duplicates} near-duplicate filters"
    )
    return 0


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backbone", help="registered backbone (see 'stemlab list')")
    parser.add_argument("--stem", default=None, help="stem name or spec, e.g. 'wide:width=96'")
    parser.add_argument("--weights", default=None, metavar="PATH", help="checkpoint to load")
    parser.add_argument("--num-classes", type=int, default=400, help="classifier size")


@register_subcommand
def _add_list_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("list", help="list stems and backbones")
    parser.add_argument("--format", choices=_FORMATS, default="table")
    parser.set_defaults(handler=_run_list)


@register_subcommand
def _add_inspect_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect", help="per-module output shape, params and FLOPs (fvcore, 1 FMA = 1 flop)"
    )
    _add_model_arguments(parser)
    parser.add_argument(
        "--input",
        default=None,
        help="input shape, default 1x3x16x112x112 for video backbones, 1x3x224x224 for image ones",
    )
    parser.add_argument("--format", choices=_FORMATS, default="table")
    parser.add_argument("--stats", action="store_true", help="add activation statistics columns")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.set_defaults(handler=_run_inspect)


@register_subcommand
def _add_filters_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("filters", help="plot the stem's first-layer filters")
    _add_model_arguments(parser)
    parser.add_argument("--out", required=True, metavar="FILE.png", help="figure to write")
    parser.set_defaults(handler=_run_filters)


def build_parser() -> argparse.ArgumentParser:
    """The ``stemlab`` parser with every registered subcommand."""
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module)
    parser = _Parser(prog="stemlab", description="Stem ablation and analysis for video CNNs.")
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for add_parser in _ADD_PARSERS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stemlab`` command.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 for user mistakes.
    """
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "out", None) is not None:
            args.out = Path(args.out)
        return int(args.handler(args))
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except CLIError as exc:
        message = str(exc)
    except _USER_ERRORS as exc:
        if os.environ.get("STEMLAB_DEBUG"):
            raise
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    print(f"stemlab: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    # Under ``python -m stemlab.cli`` this file is ``__main__``; plugins register with the
    # importable ``stemlab.cli``, so run that module's main.
    from stemlab.cli import main as _main

    sys.exit(_main())
