"""The ``stemlab`` command: ``list``, ``inspect``, ``filters``, ``study run`` and ``report``.

Each subcommand is an ``add_parser(subparsers)`` function that adds its parser and sets
``handler`` (``Namespace -> int``) as a default; :func:`build_parser` lists them all, the study
subcommands imported from :mod:`stemlab.cli_study`.

User mistakes end with a one-line message on stderr and exit status 2: stemlab's own errors
(:class:`~stemlab.errors.StemlabError`, which includes the ``TypeError`` of its argument checks),
``ValueError`` and the file errors of paths the user gave. Any other exception (``KeyError``,
``IndexError``, ``AttributeError``, a plain ``TypeError``, ...) is a bug and keeps its
traceback. Set ``STEMLAB_DEBUG=1`` to get the traceback of user mistakes too. Warnings are shown
as one ``stemlab: warning: ...`` line each.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from stemlab._cli_common import CLIError, Parser
from stemlab.cli_study import add_report_parser, add_study_parser
from stemlab.errors import StemlabError

if TYPE_CHECKING:
    import pandas as pd
    import torch

# numpy, pandas and torch are imported inside the handlers that need them, so that ``--help``,
# ``list`` and argument errors do not wait for torch.

__all__ = ["USER_ERRORS", "CLIError", "build_parser", "main", "parse_shape"]

_FORMATS = ("table", "csv", "json", "markdown")
MAX_INPUT_VALUES = 2**27
"""Largest ``--input`` (N*C*T*H*W values: 512 MiB of float32); beyond it the allocator fails."""
_DEFAULT_INPUT = {"video": "1x3x16x112x112", "image": "1x3x224x224"}
_LAYOUT = {"video": "N x C x T x H x W", "image": "N x C x H x W"}
USER_ERRORS: tuple[type[BaseException], ...] = (
    StemlabError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
"""What the CLI reports as a user mistake (one line, exit 2); anything else is a bug."""


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
    shape = tuple(int(p) for p in parts)
    values = math.prod(shape)
    if values > MAX_INPUT_VALUES:
        raise CLIError(
            f"--input {text!r} holds {values:,} values; at most {MAX_INPUT_VALUES:,} (512 MiB of "
            "float32) are allowed: a small batch is enough, e.g. 1x3x16x112x112"
        )
    return shape


def _num_classes(text: str) -> int:
    """argparse type of ``--num-classes``: an int in ``[1, MAX_CLASSES]``."""
    from stemlab._validation import MAX_CLASSES

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CLASSES:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [1, {MAX_CLASSES}], got {text!r}"
        ) from None
    return value


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator failure (CPU or CUDA)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text.lower())
    )


def _check_input_shape(backbone: str, kind: str, text: str, shape: tuple[int, ...]) -> None:
    rank = 5 if kind == "video" else 4
    if len(shape) != rank:
        raise CLIError(
            f"inspect --input {text} has {len(shape)} dims; {backbone} takes {_LAYOUT[kind]} "
            f"(e.g. {_DEFAULT_INPUT[kind]})"
        )


def _build_model(args: argparse.Namespace) -> torch.nn.Module:
    import stemlab

    try:
        model = stemlab.create_model(args.backbone, stem=args.stem, num_classes=args.num_classes)
    except TypeError as exc:
        # a plain TypeError while building from the user's stem spec is a value of the wrong type
        # in that spec (e.g. pool=3); stemlab's own checks raise StemlabTypeError already
        if isinstance(exc, StemlabError) or not (args.stem and ":" in args.stem):
            raise
        raise CLIError(f"--stem {args.stem}: {exc}") from exc
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
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return "" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)


def _markdown(frame: pd.DataFrame) -> str:
    import pandas as pd

    cells = [[_format_number(v) for v in row] for row in frame.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = [
        "| " + " | ".join(str(c) for c in frame.columns) + " |",
        "|" + "|".join("---:" if n else ":---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _render(frame: pd.DataFrame, fmt: str, totals: dict[str, Any] | None = None) -> str:
    import pandas as pd

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
    import pandas as pd

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
    import torch

    from stemlab import probes
    from stemlab.backbones import BACKBONES
    from stemlab.device import resolve_device

    kind = BACKBONES.entry(args.backbone).kind
    text = args.input or _DEFAULT_INPUT[kind]
    shape = parse_shape(text)
    _check_input_shape(args.backbone, kind, text, shape)
    device = resolve_device(args.device)
    model = _build_model(args).to(device).eval()
    if shape[1] != model.stem.in_channels:
        raise CLIError(
            f"inspect --input {text} has C={shape[1]}; {args.backbone} with stem "
            f"{args.stem or 'native'} takes C={model.stem.in_channels} (the second number)"
        )
    try:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
        flops = probes.flops_table(model, x)
        with (
            torch.no_grad(),
            probes.record_activations(
                model, lambda name, module: bool(name), stats=args.stats
            ) as recorder,
        ):
            output = model(x)
    except (RuntimeError, MemoryError) as exc:
        if not _out_of_memory(exc):
            raise
        raise CLIError(
            f"inspect --input {text}: {args.backbone}'s activations at this size do not fit in "
            f"{device.type.upper()} memory; use a smaller batch or clip, e.g. {_DEFAULT_INPUT[kind]}"
        ) from None
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

    out = _figure_path(args.out, f"{args.backbone}-{args.stem or 'native'}-filters")
    model = _build_model(args)
    if args.weights is None:
        warnings.warn(
            "no --weights given: these are the filters of an untrained model (random init)",
            stacklevel=1,
        )
    filters = probes.first_layer_filters(model)
    title = f"{args.backbone} stem={args.stem or 'native'}: first-layer filters"
    plot_filter_grid(filters, title=title, out=out)
    duplicates = int(filters.table.query("kernel == 'conv'")["near_duplicate"].sum())
    print(
        f"wrote {out}: {filters.module} {tuple(filters.weight.shape)}"
        + (f", composed {tuple(filters.effective.shape)}" if filters.effective is not None else "")
        + f", {duplicates} near-duplicate filters"
    )
    return 0


def _figure_path(out: Path, name: str) -> Path:
    """Where a figure goes: ``out`` itself, ``out/<name>.png`` for a folder, ``.png`` if no suffix."""
    if out.is_dir():
        return out / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    return out if out.suffix else out.with_suffix(".png")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backbone", help="registered backbone (see 'stemlab list')")
    parser.add_argument("--stem", default=None, help="stem name or spec, e.g. 'wide:width=96'")
    parser.add_argument("--weights", default=None, metavar="PATH", help="checkpoint to load")
    parser.add_argument(
        "--num-classes", type=_num_classes, default=400, help="classifier size (1 to 100000)"
    )


def _add_list_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("list", help="list stems and backbones")
    parser.add_argument("--format", choices=_FORMATS, default="table")
    parser.set_defaults(handler=_run_list)


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
    parser.add_argument(
        "--device", default="auto", help="auto (default), cpu, cuda or cuda:N; checked first"
    )
    parser.set_defaults(handler=_run_inspect)


def _add_filters_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("filters", help="plot the stem's first-layer filters")
    _add_model_arguments(parser)
    parser.add_argument(
        "--out",
        required=True,
        metavar="FILE.png",
        help="figure to write; a folder gets <backbone>-<stem>-filters.png",
    )
    parser.set_defaults(handler=_run_filters)


_CHANNELS_INPUT = {"video": "8x3x8x32x32", "image": "8x3x32x32"}


def _channel_batches(args: argparse.Namespace, kind: str) -> tuple[Any, str]:
    """Labelled batches for ``channels --data`` and a description of them.

    Refuses (CLIError) an untrained model (no ``--weights``) and a classifier whose
    ``--num-classes`` is not the data's: either way the ablation would score noise.
    """
    text = args.input or _CHANNELS_INPUT[kind]
    shape = parse_shape(text)
    if len(shape) != (5 if kind == "video" else 4) or shape[1] != 3:
        raise CLIError(
            f"channels --input {text}: {args.backbone} takes {_LAYOUT[kind]} batches of RGB "
            f"clips, e.g. {_CHANNELS_INPUT[kind]}"
        )
    root = Path(args.data)
    if args.data != "synthetic_motion" and not root.is_dir():
        raise CLIError(
            f"--data {args.data}: expected 'synthetic_motion' or a folder with one "
            "sub-folder of videos per class"
        )
    if args.weights is None:
        raise CLIError(
            f"channels --data {args.data} needs --weights: without them the model is untrained "
            f"(random init, --num-classes {args.num_classes}), so every ablation drop would "
            "measure noise around chance, not what a stem channel contributes; pass --weights "
            "of a model trained on this data, or leave out --data for the weight-usage table"
        )
    from torch.utils.data import DataLoader, Subset

    from stemlab.data import SyntheticMotion, VideoFolder

    batch, frames, size = shape[0], (shape[2] if kind == "video" else 1), shape[-2:]
    if args.data == "synthetic_motion":
        # a single frame shows no motion, so image backbones get the appearance task
        task = "motion" if kind == "video" else "appearance"
        dataset: Any = SyntheticMotion(
            args.samples, task=task, clip_len=frames, size=size, seed=args.seed
        )
        source = f"{args.samples} synthetic_motion ({task}) clips"
        classes = len(dataset.classes)
    else:
        folder = VideoFolder(root, clip_len=frames, size=size, seed=args.seed, progress=False)
        dataset = Subset(folder, range(min(args.samples, len(folder))))
        source = f"{len(dataset)} clips of {root}"
        classes = len(folder.classes)
    if classes != args.num_classes:
        raise CLIError(
            f"channels --num-classes {args.num_classes}: the data ({source}) has {classes} "
            f"classes and the ablation scores the model's predictions against them; use "
            f"--num-classes {classes} with --weights of a model trained on these classes"
        )
    loader = DataLoader(dataset, batch_size=batch, shuffle=False)
    if kind == "video":
        return loader, source
    return ((clip[:, :, clip.shape[2] // 2], label, *rest) for clip, label, *rest in loader), source


def _run_channels(args: argparse.Namespace) -> int:
    from stemlab.backbones import BACKBONES
    from stemlab.device import resolve_device
    from stemlab.probes.channel_ablation import channel_ablation
    from stemlab.probes.channel_usage import channel_usage

    kind = BACKBONES.entry(args.backbone).kind
    device = resolve_device(args.device)
    data = _channel_batches(args, kind) if args.data is not None else None
    model = _build_model(args).to(device)
    if args.weights is None:
        warnings.warn(
            "no --weights given: the usage table describes an untrained model (random init)",
            stacklevel=1,
        )
    usage = channel_usage(model)
    stage = usage.attrs["first_block"].split(".")[0]
    count = usage.attrs["channels_for_90pct"]
    lines = [
        f"{count} of {len(usage)} channels carry 90% of {stage}'s input weight"
        if count is not None
        else f"{stage} gives every stem channel zero weight"
    ]
    table = usage
    if data is not None:
        batches, source = data
        ablation = channel_ablation(model, batches, layer="stem", metric=args.metric)
        table = usage.merge(ablation[["channel", "ablated", "drop"]], on="channel")
        top = ablation.loc[ablation["drop"].idxmax()]
        lines.append(
            f"{args.metric} {ablation['baseline'].iloc[0]:.4g} on {source}; zeroing stem channel "
            f"{int(top['channel'])} changes it most (drop {top['drop']:.4g})"
        )
    print(_render(table, args.format))
    summary = sys.stdout if args.format in ("table", "markdown") else sys.stderr
    for line in lines:
        print(line, file=summary)
    return 0


def _add_channels_parser(subparsers: Any) -> None:
    from stemlab._cli_common import positive_int

    parser = subparsers.add_parser(
        "channels",
        help="how layer1 reads each stem channel (weight usage) and, with --data, ablation drops",
    )
    _add_model_arguments(parser)
    parser.add_argument(
        "--data",
        default=None,
        metavar="synthetic_motion|FOLDER",
        help="also zero each stem channel and measure the metric on this data (needs "
        "--weights of a model trained on it, with its --num-classes)",
    )
    parser.add_argument("--samples", type=positive_int, default=32, help="clips to evaluate")
    parser.add_argument(
        "--input",
        default=None,
        help="batch shape N x C x [T x] H x W of the data, default 8x3x8x32x32 (video), "
        "8x3x32x32 (image)",
    )
    parser.add_argument("--metric", choices=("accuracy", "loss"), default="accuracy")
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--format", choices=_FORMATS, default="table")
    parser.add_argument(
        "--device", default="auto", help="auto (default), cpu, cuda or cuda:N; checked first"
    )
    parser.set_defaults(handler=_run_channels)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    _add_list_parser,
    _add_inspect_parser,
    _add_filters_parser,
    _add_channels_parser,
    add_study_parser,
    add_report_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``stemlab`` parser with every subcommand."""
    parser = Parser(prog="stemlab", description="Stem ablation and analysis for video CNNs.")
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"stemlab: warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stemlab`` command.

    Args:
        argv: arguments without the program name; ``None`` for ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 for user mistakes.
    """
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            args = build_parser().parse_args(argv)
            if getattr(args, "out", None) is not None:
                args.out = Path(args.out)
            return int(args.handler(args))
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except USER_ERRORS as exc:
        if os.environ.get("STEMLAB_DEBUG") and not isinstance(exc, CLIError):
            raise
        message = str(exc)
    print(f"stemlab: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
