"""Study specifications: what a study script declares, and the grid of cells it expands to."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from stemlab._validation import check_choice, check_positive_float, check_positive_int

__all__ = ["PROBES", "PROFILE_PROBES", "Cell", "Study", "config_hash"]

PROBES = ("flops", "activations", "grad_cam", "filters")
"""Probes a study runs on its trained models unless it lists others."""
PROFILE_PROBES = ("flops", "activations", "latency", "memory")
"""Probes run on every full-size profiling model."""
STEM_INITS = ("transfer", "random")
COMPARISONS = ("baseline", "all_pairs")
SWEEP_KEYS = ("lr", "weight_decay", "samples", "seeds", "sample_seed")
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


MAX_SEED = 2**32 - 1
"""Largest study seed: seeds feed numpy and torch generators after offsets (data, layers)."""


def _check_seeds_and_stems(seeds: Sequence[int], stems: Sequence[str]) -> None:
    """Seeds within :data:`MAX_SEED`; no stem listed twice under two spellings."""
    import re

    from stemlab.spec import format_stem_spec, parse_stem_spec

    for index, seed in enumerate(seeds):
        if seed > MAX_SEED:
            raise ValueError(
                f"Study seeds[{index}]={seed} is too large; allowed: 0 to {MAX_SEED} (2**32 - 1)"
            )
    seen: dict[str, int] = {}
    files: dict[str, int] = {}
    for index, stem in enumerate(stems):
        if not isinstance(stem, str):
            raise TypeError(f"Study stems[{index}] must be a stem spec string, got {stem!r}")
        same = stem if stem == "native" else format_stem_spec(*parse_stem_spec(stem))
        file = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_")  # as figure file names spell it
        for known, what in ((seen.get(same), "is the same stem as"), (files.get(file), "")):
            if known is not None:
                raise ValueError(
                    f"Study stems[{index}]={stem!r} "
                    + (what or "would write the same figure files as")
                    + f" stems[{known}]={stems[known]!r}; list each stem once"
                )
        seen[same], files[file] = index, index


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
        baseline: the reference stem: findings compare every other stem with it (paired by
            seed) and CKA measures each stem's distance from it; default: the first stem.
        gradcam_layer: the layer Grad-CAM explains; default: the deepest stage whose maps are at
            least 8x8 at the study's input.
        probe_options: options handed to the probes (``probe_samples``, ``ablation_samples``...).
        profile_probes: probes run on the full-size profiling models.
        weights: ``None`` (train from scratch), a checkpoint path or torchvision weights name for
            every backbone, or a mapping backbone -> source.
        stem_init: ``"transfer"`` (adapt the checkpoint's stem weights to other stems where the
            maths allows) or ``"random"``.
        freeze: ``None``/``"none"``, ``"backbone"`` (train the head only) or a list of module or
            stage names kept fixed during training.
        head_lr_multiplier: learning-rate factor of the classifier (10 for new heads on
            pretrained backbones, as in C3D fine-tuning).
        findings: deprecated spelling of ``baseline``: ``{"baseline": "r2d"}``.
        sweep: ``None`` (train every arm at ``training``'s lr and weight decay) or per-arm
            tuning: ``{"lr": [...] | ["log", lo, hi], "weight_decay": [...] | ["log", lo, hi],
            "samples": N, "seeds": [...], "sample_seed": int}``. Every arm (backbone x stem)
            trains at the same hyperparameter samples (a grid of the lists, or ``samples``
            draws, log-uniform over ranges) on the sweep ``seeds`` (default: the study's seeds);
            each arm's setting is the sample with the highest mean validation top-1 (ties: lower
            validation loss, then the earlier sample), and the reported cells (every study
            seed) train at it. Needs a test split (``data["test_samples"]`` or
            ``data["test_split"]``): selection reads validation only, reports read test only.
        budgets: training budgets in epochs reported from one run (default: the training
            config's epochs); the run trains ``max(budgets)`` epochs (the learning-rate
            schedule spans all of them) and evaluates validation and test after each budget.
        comparisons: the one multiplicity family of every accuracy finding: ``"baseline"``
            (every arm against the reference) or ``"all_pairs"``.
    """

    name: str
    backbones: Mapping[str, Mapping[str, Any]]
    stems: Sequence[str]
    seeds: Sequence[int]
    data: Mapping[str, Any]
    training: Mapping[str, Any]
    probes: Sequence[str] = PROBES
    profile: Mapping[str, Any] | None = None
    latency_runs: int = 10
    stem_width_multiplier: float = 1.0
    quick: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    baseline: str | None = None
    gradcam_layer: str | None = None
    probe_options: Mapping[str, Any] = field(default_factory=dict)
    profile_probes: Sequence[str] = PROFILE_PROBES
    weights: str | Mapping[str, str] | None = None
    stem_init: str = "transfer"
    freeze: str | Sequence[str] | None = None
    head_lr_multiplier: float | None = None
    findings: Mapping[str, Any] | None = None
    sweep: Mapping[str, Any] | None = None
    budgets: Sequence[int] | None = None
    comparisons: str = "baseline"

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
        from stemlab.probes.contract import probe_names

        for probe in self.probes:
            check_choice("probes", probe, probe_names("trained"))
        for probe in self.profile_probes:
            check_choice("profile_probes", probe, probe_names("profile"))
        if self.baseline is not None:
            check_choice("baseline", self.baseline, list(self.stems))
        check_choice("stem_init", self.stem_init, STEM_INITS)
        if self.head_lr_multiplier is not None:
            check_positive_float("head_lr_multiplier", self.head_lr_multiplier)
        if self.weights is not None and not isinstance(self.weights, (str, Mapping)):
            raise TypeError(
                "Study weights must be None, a path / torchvision weights name, or a mapping "
                f"backbone -> source, got {type(self.weights).__name__}"
            )
        if isinstance(self.weights, Mapping):
            unknown = sorted(set(self.weights) - set(self.backbones))
            if unknown:
                raise ValueError(
                    f"Study weights name backbones not in the study: {unknown}; "
                    f"the study's backbones: {sorted(self.backbones)}"
                )
        check_positive_int("latency_runs", self.latency_runs)
        check_positive_float("stem_width_multiplier", self.stem_width_multiplier)
        allowed = {f.name for f in fields(self)} - {"name", "quick"}
        unknown = sorted(set(self.quick) - allowed)
        if unknown:
            raise ValueError(
                f"Study quick overrides unknown fields {unknown}; allowed: {sorted(allowed)}"
            )
        check_choice("comparisons", self.comparisons, COMPARISONS)
        if self.budgets is not None:
            if isinstance(self.budgets, (str, int)) or not self.budgets:
                raise ValueError(
                    f"Study budgets must be a non-empty list of epochs, got {self.budgets!r}"
                )
            for budget in self.budgets:
                check_positive_int("budgets[...]", budget)
            if sorted(set(self.budgets)) != list(self.budgets):
                raise ValueError(
                    f"Study budgets must be increasing epochs without repeats, got "
                    f"{list(self.budgets)}"
                )
        if self.sweep is not None:
            from stemlab.study.selection import check_sweep

            check_sweep(self.sweep, self.data)
        _plain(self.data), _plain(self.training), _plain(dict(self.backbones))
        _plain(self.probe_options), _plain(self.weights), _plain(self.freeze)
        if self.profile is not None:
            _plain(self.profile)
        _check_seeds_and_stems(self.seeds, self.stems)

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

    @property
    def reference_stem(self) -> str:
        """The stem every other stem is compared with (``baseline``, else the first stem)."""
        if self.baseline is not None:
            return self.baseline
        legacy = (self.findings or {}).get("baseline")
        if legacy is not None and legacy in self.stems:
            return str(legacy)
        return str(self.stems[0])

    def _train_options(self) -> dict[str, Any]:
        """Options of the training cells that only appear when set (old cells keep their keys)."""
        options: dict[str, Any] = {}
        probe_options = dict(self.probe_options)
        if self.gradcam_layer is not None:
            probe_options["gradcam_layer"] = self.gradcam_layer
        if probe_options:
            options["probe_options"] = probe_options
        if self.weights is not None:
            options["weights"] = self.weights
            options["stem_init"] = self.stem_init
        if self.freeze is not None and self.freeze != "none":
            options["freeze"] = self.freeze
        if self.head_lr_multiplier is not None:
            options["head_lr_multiplier"] = self.head_lr_multiplier
        return options

    @property
    def arms(self) -> list[tuple[str, str]]:
        """``(backbone, stem)`` of every arm, in the study's order."""
        return [(backbone, stem) for backbone in self.backbones for stem in self.stems]

    @property
    def epochs(self) -> int:
        """Epochs each training run lasts (the largest budget)."""
        if self.budgets is not None:
            return int(max(self.budgets))
        return int(self.training.get("epochs", 10))

    def budget_epochs(self) -> list[int]:
        """The epochs at which validation and test are reported."""
        return [int(b) for b in self.budgets] if self.budgets is not None else [self.epochs]

    def _run_config(
        self, kind: str, backbone: str, stem: str, seed: int, training: Mapping[str, Any]
    ) -> dict[str, Any]:
        config: dict[str, Any] = {
            "kind": kind,
            "study": self.name,
            "backbone": backbone,
            "backbone_kwargs": self.backbones[backbone],
            "stem": stem,
            "stem_width_multiplier": self.stem_width_multiplier,
            "seed": seed,
            "data": self.data,
            "training": training,
        }
        if self.budgets is not None:
            config["budgets"] = self.budget_epochs()
        return config

    def _training(self, setting: Mapping[str, Any] | None) -> dict[str, Any]:
        training = dict(self.training)
        if self.budgets is not None:
            training["epochs"] = self.epochs
        for name in ("lr", "weight_decay"):
            if setting is not None and setting.get(name) is not None:
                training[name] = float(setting[name])
        return training

    def sweep_cells(self) -> list[Cell]:
        """The tuning cells: every arm x sweep seed x hyperparameter sample (none without a sweep)."""
        if self.sweep is None:
            return []
        from stemlab.study.selection import sweep_samples, sweep_seeds

        cells = []
        samples = sweep_samples(self.sweep)
        for backbone, stem in self.arms:
            for seed in sweep_seeds(self.sweep, self.seeds):
                for index, setting in enumerate(samples):
                    config = self._run_config(
                        "sweep", backbone, stem, seed, self._training(setting)
                    )
                    config["sample"] = index
                    cells.append(Cell("sweep", _plain(config)))
        return cells

    def cells(
        self, selection: Mapping[tuple[str, str], Mapping[str, Any]] | None = None
    ) -> list[Cell]:
        """The grid: sweep cells, training cells (backbone x stem x seed), profiling cells.

        Args:
            selection: with a sweep, ``(backbone, stem) -> {"lr", "weight_decay", "sample"}``,
                each arm's selected setting (:func:`stemlab.study.selection.select`); arms
                without one get no training cells yet (their sweep is not finished).
                Without a sweep it is ignored.

        Returns:
            Sweep cells, then training cells, then profiling cells.
        """
        cells = self.sweep_cells()
        for backbone, stem in self.arms:
            setting: Mapping[str, Any] | None = None
            if self.sweep is not None:
                setting = (selection or {}).get((backbone, stem))
                if setting is None:
                    continue
            for seed in self.seeds:
                config = self._run_config("train", backbone, stem, seed, self._training(setting))
                config["probes"] = list(self.probes)
                config.update(self._train_options())
                if setting is not None:
                    config["selected_sample"] = int(setting["sample"])
                cells.append(Cell("train", _plain(config)))
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
                                "probes": list(self.profile_probes),
                            }
                        ),
                    )
                )
        return cells

    def grid_size(self) -> int:
        """How many cells the whole grid has (training cells counted before any selection)."""
        profiles = sum(1 for cell in self.cells() if cell.kind == "profile")
        return len(self.sweep_cells()) + len(self.arms) * len(self.seeds) + profiles

    def to_config(self) -> dict[str, Any]:
        """The study as a JSON-like dict (for the manifest)."""
        return _plain({f.name: getattr(self, f.name) for f in fields(self)})
