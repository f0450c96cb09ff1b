"""Study specifications: what a study script declares, and the grid of cells it expands to."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from stemlab._validation import check_choice, check_positive_float, check_positive_int

__all__ = ["PROBES", "Cell", "Study", "config_hash"]

PROBES = ("flops", "latency", "activations", "grad_cam", "filters")
DATASETS = ("synthetic_motion", "synthetic_frames", "video_folder")


def _plain(value: Any) -> Any:
    """Tuples -> lists, mappings -> dicts with str keys: the JSON form a config is hashed in."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"study configs hold JSON-like literals only (numbers, strings, lists, dicts), got "
        f"{type(value).__name__} {value!r}"
    )


def config_hash(config: Mapping[str, Any]) -> str:
    """A 16-hex-digit content hash of a JSON-like config (key order and tuple/list do not matter)."""
    text = json.dumps(_plain(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One unit of work: a training cell (backbone x stem x seed) or a profiling cell (x stem).

    Attributes:
        kind: ``"train"`` or ``"profile"``.
        config: the JSON-like config the cell runs from; its hash names the cell.
    """

    kind: str
    config: dict[str, Any]

    @property
    def key(self) -> str:
        """Content hash of the config."""
        return config_hash(self.config)

    @property
    def label(self) -> str:
        """Short human-readable name."""
        c = self.config
        seed = f" seed={c['seed']}" if "seed" in c else ""
        return f"{self.kind}:{c['backbone']}/{c['stem']}{seed}"


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class Study:
    """A stem study: the grid backbones x stems x seeds, trained and probed the same way.

    Args:
        name: output folder name (``reports/<name>/``); a Python identifier.
        backbones: backbone name -> kwargs for ``create_model`` (the CPU-scaled training models).
        stems: stem specs (``"wide"``, ``"basic:width=32"``), or ``"native"`` for each backbone's
            own stem.
        seeds: training seeds; each (backbone, stem) is trained once per seed.
        data: dataset config: ``{"dataset": "synthetic_motion" | "synthetic_frames" |
            "video_folder", "train_samples": int, "val_samples": int, ...options}``.
        training: keyword arguments of :class:`stemlab.train.TrainConfig`.
        probes: which probes run on each trained model (see :data:`PROBES`).
        profile: ``None`` or ``{"backbone": name, "input": [N, C, T, H, W], "kwargs": {...}}``:
            every stem is also profiled (FLOPs, params, latency, activation shapes) on this model at
            this input size (typically the full-size backbone); ``"backbone": "*"`` profiles every
            backbone of the study.
        latency_runs: timed runs per latency measurement.
        stem_width_multiplier: scales the width of every stem in the training cells (rounded, at
            least 1), keeping the stems' width ratios (``wide`` stays twice ``basic``); profiling
            cells use the stems as specified.
        quick: overrides applied by ``--quick`` (same keys as above; dicts merge).
        description: one paragraph for the report.
        findings: ``None`` or the names of the stems that a report's findings compare against
            the frame-wise baseline: ``{"baseline": "r2d", "temporal": ["basic", ...]}``.
    """

    name: str
    backbones: Mapping[str, Mapping[str, Any]]
    stems: Sequence[str]
    seeds: Sequence[int]
    data: Mapping[str, Any]
    training: Mapping[str, Any]
    probes: Sequence[str] = PROBES
    profile: Mapping[str, Any] | None = None
    latency_runs: int = 5
    stem_width_multiplier: float = 1.0
    quick: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    findings: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Study name must be a Python identifier, got {self.name!r}")
        if not isinstance(self.backbones, Mapping) or not self.backbones:
            raise ValueError("Study backbones must be a non-empty mapping of name -> kwargs")
        if isinstance(self.stems, str) or not self.stems:
            raise ValueError(
                f"Study stems must be a non-empty list of stem specs, got {self.stems!r}"
            )
        if isinstance(self.seeds, (str, int)) or not self.seeds:
            raise ValueError(f"Study seeds must be a non-empty list of ints, got {self.seeds!r}")
        for seed in self.seeds:
            check_positive_int("seeds[...]", seed, allow_zero=True)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"Study seeds repeat: {list(self.seeds)}")
        if self.profile is not None and not {"backbone", "input"} <= set(self.profile):
            raise ValueError(
                f"Study profile needs 'backbone' and 'input', got {dict(self.profile)}"
            )
        if len(set(self.stems)) != len(self.stems):
            raise ValueError(f"Study stems repeat: {list(self.stems)}")
        dataset = self.data.get("dataset") if isinstance(self.data, Mapping) else None
        check_choice("data['dataset']", dataset, DATASETS)
        for probe in self.probes:
            check_choice("probes", probe, PROBES)
        check_positive_int("latency_runs", self.latency_runs)
        check_positive_float("stem_width_multiplier", self.stem_width_multiplier)
        allowed = {f.name for f in fields(self)} - {"name", "quick"}
        unknown = sorted(set(self.quick) - allowed)
        if unknown:
            raise ValueError(
                f"Study quick overrides unknown fields {unknown}; allowed: {sorted(allowed)}"
            )
        _plain(self.data), _plain(self.training), _plain(dict(self.backbones))
        if self.profile is not None:
            _plain(self.profile)

    def quick_variant(self) -> Study:
        """The study with its ``quick`` overrides applied."""
        changes: dict[str, Any] = {}
        for key, value in self.quick.items():
            current = getattr(self, key)
            if isinstance(value, Mapping) and isinstance(current, Mapping):
                changes[key] = _merge(current, value)
            else:
                changes[key] = value
        return replace(self, quick={}, **changes)

    def cells(self) -> list[Cell]:
        """Training cells (backbone x stem x seed) then profiling cells (one per stem)."""
        cells = []
        for backbone, kwargs in self.backbones.items():
            for stem in self.stems:
                for seed in self.seeds:
                    cells.append(
                        Cell(
                            "train",
                            _plain(
                                {
                                    "kind": "train",
                                    "study": self.name,
                                    "backbone": backbone,
                                    "backbone_kwargs": kwargs,
                                    "stem": stem,
                                    "stem_width_multiplier": self.stem_width_multiplier,
                                    "seed": seed,
                                    "data": self.data,
                                    "training": self.training,
                                    "probes": list(self.probes),
                                }
                            ),
                        )
                    )
        if self.profile is not None:
            names = (
                list(self.backbones)
                if self.profile["backbone"] == "*"
                else [self.profile["backbone"]]
            )
            for backbone, stem in ((b, s) for b in names for s in self.stems):
                cells.append(
                    Cell(
                        "profile",
                        _plain(
                            {
                                "kind": "profile",
                                "study": self.name,
                                "backbone": backbone,
                                "backbone_kwargs": self.profile.get("kwargs", {}),
                                "stem": stem,
                                "input": self.profile["input"],
                                "latency_runs": self.latency_runs,
                                "num_classes": self.profile.get("num_classes", 400),
                            }
                        ),
                    )
                )
        return cells

    def to_config(self) -> dict[str, Any]:
        """The study as a JSON-like dict (for the manifest)."""
        return _plain({f.name: getattr(self, f.name) for f in fields(self)})
