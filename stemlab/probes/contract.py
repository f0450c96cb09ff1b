"""The probe contract: how a probe runs inside a study cell and what it adds to the report.

A probe module declares one :class:`StudyProbe` and registers it with :func:`register_probe`.
The study layer runs the registered probes a cell asks for and stores what they return; the
report layer asks each probe for its cross-cell tables, figures and findings. Nothing outside the
probe's module names its metrics, so adding a probe is its module plus its test::

             study cell                                   report
    model, probe batch, data  --run-->  ProbeOutput   --combine/figures/findings-->
                                 (metrics, rows, arrays)     (StudyView: summary, tables,
                                                              cells, arrays, compare)

This module sits in the probes layer: it imports nothing from ``stemlab.study`` or
``stemlab.report``; the report hands in what findings need (``StudyView.compare``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CellContext",
    "FigureSpec",
    "ProbeOutput",
    "StudyProbe",
    "StudyView",
    "SummaryColumn",
    "get_probe",
    "probe_names",
    "register_probe",
]

Source = Literal["trained", "profile"]


@dataclass(frozen=True)
class SummaryColumn:
    """A column a probe adds to the study summary (one row per backbone x stem).

    Attributes:
        name: column name; also the cell metric it is made from.
        description: one sentence for the report's legend (what, on which model, which unit).
        source: ``"trained"`` (mean over the seeds of the training cells) or ``"profile"``
            (the full-size profiling cell's value).
    """

    name: str
    description: str
    source: Source = "trained"


@dataclass
class CellContext:
    """What a probe sees inside one study cell.

    Attributes:
        kind: ``"trained"`` (a trained CPU-scale model) or ``"profile"`` (a full-size model at
            the profiling input, random weights).
        model: the model, in eval mode, on ``device``; probes must leave it as they found it.
        inputs: the probe batch (trained: the first validation clips; profile: the random input).
        labels: labels of ``inputs`` (trained cells only).
        masks: object masks of ``inputs`` where the dataset has them.
        batches: a callable returning an iterable of validation batches ``(clip, label, ...)``
            (trained cells only); the same clips, in the same order, for every stem and seed.
        config: the cell's config.
        options: study-level options (``gradcam_layer``, ``latency_runs``, ``num_classes``...).
        device: where the model lives.
        init_model: trained cells: the same arm and seed's model before training (a copy taken
            after initialisation, eval mode, on ``device``), so weight and activation probes can
            report ``<metric>_init`` beside ``<metric>``; ``None`` in profile cells.
    """

    kind: Source
    model: nn.Module
    inputs: torch.Tensor
    config: Mapping[str, Any]
    device: torch.device
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    batches: Callable[[], Iterable[Sequence[Any]]] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    init_model: nn.Module | None = None

    def batch_list(self, option: str, default: int) -> list[Sequence[Any]]:
        """The first probe batches holding ``options[option]`` clips (else ``default``)."""
        limit = int(self.options.get(option, default))
        taken: list[Sequence[Any]] = []
        count = 0
        for batch in self.batches() if self.batches is not None else ():
            if count >= limit:
                break
            taken.append(batch)
            count += len(batch[0])
        return taken


@dataclass
class ProbeOutput:
    """What a probe returns from a cell.

    Attributes:
        metrics: scalars for the cell's row (and the summary, where declared).
        tables: table name -> rows (dicts) for ``tables/<name>.csv``.
        arrays: name -> array, stored in the cell's ``.npz`` (keep them small).
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class FigureSpec:
    """A figure the report draws: file name (no extension), caption, and a maker."""

    name: str
    caption: str
    make: Callable[[], Figure]


@dataclass
class StudyView:
    """Everything a probe's ``combine``, ``figures`` and ``findings`` may read.

    Attributes:
        config: the study config (``Study.to_config()``).
        cells: one row per cell: key, kind, status, backbone, stem, seed (int) and its metrics.
        summary: one row per (backbone, stem) with every declared summary column.
        tables: every table by name (probe rows and combined tables).
        arrays: ``key -> {name: array}`` reader of a cell's stored arrays.
        compare: :func:`stemlab.report.compare` (handed in by the report layer).
        baseline: the study's reference stem.
        holm: :func:`stemlab.report.holm`, Holm-adjusted p-values of a family of tests.
    """

    config: Mapping[str, Any]
    cells: pd.DataFrame
    summary: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    arrays: Callable[[str], dict[str, np.ndarray]]
    compare: Callable[..., pd.DataFrame] | None = None
    baseline: str | None = None
    holm: Callable[[Sequence[float]], np.ndarray] | None = None

    def trained(self) -> pd.DataFrame:
        """Finished training cells."""
        cells = self.cells
        if cells.empty:
            return cells
        return cells[(cells["kind"] == "train") & (cells["status"] == "ok")]

    def first_seed_cells(self) -> pd.DataFrame:
        """The finished training cell with the smallest seed of each (backbone, stem)."""
        trained = self.trained()
        if trained.empty:
            return trained
        return trained.sort_values("seed", kind="stable").drop_duplicates(["backbone", "stem"])

    def single_backbone(self) -> bool:
        """Whether the study trains one backbone (labels then name only the stem)."""
        return self.cells.empty or self.cells["backbone"].nunique() == 1

    def label(self, backbone: str, stem: str) -> str:
        """``stem``, or ``backbone/stem`` when the study has several backbones."""
        return stem if self.single_backbone() else f"{backbone}/{stem}"

    def against_baseline(
        self, metric: str, what: str, *, digits: int = 2, cells: pd.DataFrame | None = None
    ) -> list[str]:
        """Sentences comparing ``metric`` of every stem with the baseline stem's (paired by seed).

        Each significant difference is stated with its 95% interval and Holm-adjusted p; the
        others are named "not distinguishable". One sentence group per backbone.

        Args:
            metric: a column of the finished training cells (or of ``cells``).
            what: how the sentence names the metric.
            digits: decimals of the numbers.
            cells: per-seed rows (backbone, stem, seed, metric); default: the training cells.
        """
        cells = self.trained() if cells is None else cells
        if cells.empty or metric not in cells or self.compare is None or self.baseline is None:
            return []
        lines = []
        for backbone, rows in cells.dropna(subset=[metric]).groupby("backbone", sort=False):
            if self.baseline not in set(rows["stem"]) or rows["stem"].nunique() < 2:
                continue
            table = self.compare(rows, metric=metric, by="stem", baseline=self.baseline)
            n = int(table["n_b"].min())
            where = "" if self.single_backbone() else f" on `{backbone}`"
            differ = [
                f"{r.b} {r.diff:+.{digits}f} (95% CI {r.ci_low:+.{digits}f} to "
                f"{r.ci_high:+.{digits}f}, p_adj {r.p_adjusted:.2g})"
                for r in table.itertuples()
                if r.significant
            ]
            same = [f"`{r.b}`" for r in table.itertuples() if not r.significant]
            text = f"{what}{where}: `{self.baseline}` {table['mean_a'].iloc[0]:.{digits}f}; "
            if differ:
                text += f"differs (Holm over {len(table)}) for " + "; ".join(differ)
            if same:
                text += (". " if differ else "") + (
                    f"not distinguishable at n={n} for {', '.join(same)}"
                )
            lines.append(text + ".")
        return lines

    def profile_text(self) -> str:
        """Which model and input the profiling cells measured (``"r2plus1d_18 at 1x3x16x112x112,
        random weights"``), for captions and findings."""
        profile = self.config.get("profile") or {}
        if not profile:
            return "the training model"
        shape = "x".join(str(s) for s in profile.get("input", []))
        backbone = "each backbone" if profile.get("backbone") == "*" else profile.get("backbone")
        return f"{backbone} at {shape}, random weights"

    def labels(self, rows: pd.DataFrame) -> list[str]:
        """:meth:`label` of every row of a table with ``backbone`` and ``stem`` columns."""
        return [self.label(b, s) for b, s in zip(rows["backbone"], rows["stem"])]


@dataclass(frozen=True)
class StudyProbe:
    """A probe's declaration.

    Attributes:
        name: the name studies list in ``probes=``.
        description: one line for ``stemlab list`` and the report.
        runs_on: ``"trained"`` and/or ``"profile"`` cells.
        needs: what :attr:`run` reads from the context beyond the model and probe batch:
            ``"labels"``, ``"masks"``, ``"data"`` (the validation batches).
        run: ``CellContext -> ProbeOutput``.
        tables: names of the tables its rows go to.
        summary: the summary columns it provides.
        combine: ``StudyView -> {table: DataFrame}``: cross-cell tables built from stored results.
        figures: ``StudyView -> [FigureSpec]``.
        findings: ``StudyView -> [sentence]``: what its numbers support, with intervals.
        order: position in reports (lower first).
        options: the ``probe_options`` keys it reads (a study setting any other is warned).
        check: ``study config -> None``, raising ``ValueError`` for a requirement the study
            does not meet; run before the study's first cell.
    """

    name: str
    description: str
    run: Callable[[CellContext], ProbeOutput]
    runs_on: frozenset[str] = frozenset({"trained"})
    needs: frozenset[str] = frozenset()
    tables: tuple[str, ...] = ()
    summary: tuple[SummaryColumn, ...] = ()
    combine: Callable[[StudyView], dict[str, pd.DataFrame]] | None = None
    figures: Callable[[StudyView], list[FigureSpec]] | None = None
    findings: Callable[[StudyView], list[str]] | None = None
    order: int = 50
    options: tuple[str, ...] = ()
    check: Callable[[Mapping[str, Any]], None] | None = None


_PROBES: dict[str, StudyProbe] = {}


def register_probe(probe: StudyProbe) -> StudyProbe:
    """Register ``probe`` under its name and return it.

    Raises:
        TypeError: if ``probe`` is not a :class:`StudyProbe`.
        ValueError: if the name is taken or ``runs_on`` / ``needs`` name unknown things.
    """
    if not isinstance(probe, StudyProbe):
        raise TypeError(f"probe must be a StudyProbe, got {type(probe).__name__}")
    known = _PROBES.get(probe.name)
    if known is not None and known.run.__module__ != probe.run.__module__:
        # the same module imported again (a reload) replaces its own declaration
        raise ValueError(
            f"a probe named {probe.name!r} is already registered by {known.run.__module__}"
        )
    unknown = set(probe.runs_on) - {"trained", "profile"}
    if unknown or not probe.runs_on:
        raise ValueError(
            f"probe {probe.name!r}: runs_on must be a non-empty subset of "
            f"{{'trained', 'profile'}}, got {sorted(probe.runs_on)}"
        )
    unknown = set(probe.needs) - {"labels", "masks", "data"}
    if unknown:
        raise ValueError(
            f"probe {probe.name!r}: needs {sorted(unknown)} unknown; allowed: labels, masks, data"
        )
    _PROBES[probe.name] = probe
    return probe


def _load_builtin() -> None:
    """Import every module of :mod:`stemlab.probes`: each registers the probe it declares.

    So a new probe is its module alone; nothing else lists it.
    """
    import importlib
    import pkgutil

    import stemlab.probes as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name != "contract":
            importlib.import_module(f"{package.__name__}.{info.name}")


def probe_names(runs_on: Source | None = None) -> list[str]:
    """Registered probe names in report order (optionally only those for one kind of cell)."""
    _load_builtin()
    probes = sorted(_PROBES.values(), key=lambda p: (p.order, p.name))
    return [p.name for p in probes if runs_on is None or runs_on in p.runs_on]


def get_probe(name: str) -> StudyProbe:
    """The registered probe called ``name``.

    Raises:
        ValueError: unknown name (with close matches).
    """
    from stemlab._validation import check_choice

    _load_builtin()
    check_choice("probe", name, sorted(_PROBES))
    return _PROBES[name]


def iter_probes(names: Iterable[str]) -> Iterator[StudyProbe]:
    """The probes called ``names``, in report order."""
    probes = [get_probe(n) for n in names]
    yield from sorted(probes, key=lambda p: (p.order, p.name))
