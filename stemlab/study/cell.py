"""Run one cell: train and probe a (backbone, stem, seed), or profile a stem at full size.

Seeds are replicates of a paired design. Seed ``s`` gives every stem the same training and
validation sample (drawn from the data seed shifted by ``s``) and, where shapes allow, the same
initial weights of the layers after the stem (each layer is drawn from a generator seeded by
``(s, layer name)``), so that two stems compared at one seed differ only in the stem. Probes run
on a probe set that is the same for every stem and seed, so their outputs can be compared across
cells.
"""

from __future__ import annotations

import copy
import hashlib
import math
import platform
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from stemlab.study.spec import config_hash

__all__ = ["CellDiverged", "common_random_init", "package_versions", "replicate_data", "run_cell"]

PROBE_BATCH = 32
"""Clips in the probe batch (Grad-CAM, activation statistics)."""

_REPLICATE_STRIDE = 7919  # data seed step between replicates; their streams never overlap


def package_versions() -> dict[str, str]:
    """Versions of Python, stemlab and the libraries whose numbers a result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in (
        "stemlab",
        "torch",
        "torchvision",
        "fvcore",
        "captum",
        "numpy",
        "pandas",
        "scipy",
    ):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def records(frame: pd.DataFrame | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts (NaN -> None, numpy scalars -> Python, tuples -> strings)."""
    rows = frame.to_dict(orient="records") if isinstance(frame, pd.DataFrame) else frame
    clean_rows = []
    for row in rows:
        clean = {}
        for key, value in row.items():
            if isinstance(value, (np.integer, np.floating, np.bool_)):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            elif isinstance(value, (tuple, list)):
                value = str(tuple(value))
            clean[str(key)] = value
        clean_rows.append(clean)
    return clean_rows


def replicate_data(data: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The data config of replicate ``seed``: its own sample, shared by every stem of that seed."""
    data = dict(data)
    if data.get("dataset") in ("synthetic_motion", "synthetic_frames"):
        data["seed"] = int(data.get("seed", 0)) + _REPLICATE_STRIDE * int(seed)
    else:
        data["sampling_seed"] = int(seed)
    return data


_REDRAWN = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNNBase, nn.modules.batchnorm._NormBase)


def _derived_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def common_random_init(model: nn.Module, seed: int, *, skip: tuple[str, ...] = ("stem",)) -> int:
    """Redraw the weights of every layer outside ``skip`` from a generator seeded by its name.

    Layers keep their initialisation scheme (convolutions Kaiming-normal, fan-out; linear layers
    normal with std 0.01; norms 1 and 0; recurrent layers PyTorch's default), but the draw
    depends only on ``(seed, layer name)``: two models that share a layer's name and shape get
    the same initial weights there, whatever stem precedes it.

    Args:
        model: the model, changed in place.
        seed: the replicate's seed.
        skip: name prefixes left as they are (the stem).

    Returns:
        Number of layers redrawn.
    """
    from stemlab._init import init_conv_bn_linear

    count = 0
    for name, module in model.named_modules():
        if any(name == p or name.startswith(p + ".") for p in skip):
            continue
        if not isinstance(module, _REDRAWN):
            continue
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_derived_seed(seed, name))
            if isinstance(module, nn.RNNBase):
                module.reset_parameters()
            else:
                init_conv_bn_linear(module)
        count += 1
    return count


def run_cell(
    config: Mapping[str, Any], *, threads: int = 1, device: str = "auto"
) -> dict[str, Any]:
    """Run the cell described by ``config`` and return its record; never raises for cell errors.

    Args:
        config: a cell config from :meth:`stemlab.study.Study.cells`.
        threads: torch intra-op threads for this cell.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        ``{"key", "kind", "config", "status": "ok" | "failed" | "diverged", "error", "traceback", "seconds",
        "versions", "result": {"metrics", "epochs", "tables", "probe_seconds"}, "arrays"}``.
    """
    start = time.perf_counter()
    record: dict[str, Any] = {
        "key": config_hash(config),
        "kind": config["kind"],
        "config": dict(config),
        "status": "ok",
        "error": None,
        "traceback": None,
        "versions": package_versions(),
        "threads": threads,
        "result": {"metrics": {}, "tables": {}, "probe_seconds": {}},
        "arrays": {},
    }
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if config["kind"] == "train":
            _train_cell(config, device, record)
        elif config["kind"] == "sweep":
            _sweep_cell(config, device, record)
        else:
            _profile_cell(config, device, record)
    except CellDiverged as exc:
        record["status"] = "diverged"
        record["error"] = str(exc)
    except Exception as exc:
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    finally:
        torch.set_num_threads(previous_threads)
    record["seconds"] = time.perf_counter() - start
    return record


def _stem(config: Mapping[str, Any]) -> str | None:
    """The cell's stem spec; ``"native"`` means the backbone's own stem."""
    return None if config["stem"] == "native" else config["stem"]


def _scaled_stem(backbone: str, spec: str | None, multiplier: float) -> str | None:
    """``spec`` with its width scaled by ``multiplier`` (the native stem when ``spec`` is None)."""
    from stemlab.backbones import BACKBONES
    from stemlab.spec import format_stem_spec, parse_stem_spec
    from stemlab.stems import create_stem

    if multiplier == 1.0:
        return spec
    name, kwargs = parse_stem_spec(
        spec if spec is not None else BACKBONES.entry(backbone).default_stem
    )
    width = create_stem(name, **kwargs).out_channels
    return format_stem_spec(name, {**kwargs, "width": max(1, round(width * multiplier))})


def _device(device: str) -> torch.device:
    from stemlab.device import resolve_device

    return resolve_device(device)


def _weights_source(config: Mapping[str, Any]) -> Any:
    weights = config.get("weights")
    if isinstance(weights, Mapping):
        return weights.get(config["backbone"])
    return weights


@torch.no_grad()
def _head_inputs(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The features the classifier reads (its input), for ``inputs``."""
    from stemlab._modes import preserved_modes
    from stemlab.train.freeze import resolve_head

    found = resolve_head(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} declares no classifier head to compare")
    head = found[1]
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    try:
        with preserved_modes(model):
            model.eval()
            model(inputs)
    finally:
        handle.remove()
    return captured[0].flatten(1).double()


def _survival(
    config: Mapping[str, Any], model: nn.Module, inputs: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    """How much of the pretrained function survives the stem change, before fine-tuning.

    Compares the features the classifier reads (the pooled last stage) of the transferred model
    with those of the backbone with its native stem and the same weights, on the probe clips.
    """
    from stemlab.models import create_model

    native = create_model(
        config["backbone"],
        stem=_scaled_stem(config["backbone"], None, config.get("stem_width_multiplier", 1.0)),
        num_classes=num_classes,
        weights=_weights_source(config),
        **config["backbone_kwargs"],
    )
    a = _head_inputs(native, inputs)
    b = _head_inputs(model, inputs)
    rel = float((b - a).norm() / a.norm().clamp_min(1e-12))
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())
    return {"transfer_feature_rel_error": rel, "transfer_feature_cosine": cosine}


def _weight_counts(model: nn.Module) -> dict[str, Any]:
    report = getattr(model, "weights_report", None)
    if report is None or len(report) == 0:
        return {}
    counts = report["action"].value_counts()
    metrics: dict[str, Any] = {
        f"weights_{action}": int(counts.get(action, 0))
        for action in ("loaded", "transferred", "initialized")
    }
    # only the (2+1)D factorisation is inexact; the load records its error with the report
    error = report.attrs.get("svd_relative_error")
    metrics["transfer_error"] = float(error) if error is not None else None
    return metrics


class _Batches:
    """Re-iterable fixed probe batches (CPU tensors)."""

    def __init__(self, dataset: Any, size: int, batch_size: int) -> None:
        self.dataset, self.size, self.batch_size = dataset, size, batch_size

    def __call__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        from stemlab.study.datasets import first_batch

        n = min(self.size, len(self.dataset))
        for start in range(0, n, self.batch_size):
            clip, label, _ = first_batch(self.dataset, min(self.batch_size, n - start), start=start)
            yield (clip, label)


class CellDiverged(RuntimeError):
    """Training stopped on a non-finite quantity: the cell is recorded as ``diverged``."""


def _build_model(config: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The cell's model, initialised for its seed (layers after the stem shared across stems)."""
    from stemlab.models import create_model

    seed = int(config["seed"])
    weights = _weights_source(config)
    torch.manual_seed(seed)
    stem = _scaled_stem(config["backbone"], _stem(config), config.get("stem_width_multiplier", 1.0))
    model = create_model(
        config["backbone"],
        stem=stem,
        num_classes=num_classes,
        weights=weights,
        stem_init=config.get("stem_init", "transfer"),
        **config["backbone_kwargs"],
    )
    if weights is None:
        layout = getattr(model, "layout", None)
        common_random_init(model, seed, skip=(getattr(layout, "stem", "stem"),))
    return model


def _budgets(config: Mapping[str, Any]) -> list[int]:
    return [int(b) for b in config.get("budgets", [config["training"].get("epochs", 10)])]


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _fit(
    config: Mapping[str, Any],
    model: nn.Module,
    splits: Any,
    device: str,
    record: dict[str, Any],
) -> dict[str, Any]:
    """Train the cell's model, scoring the test split after each budget; fill the record.

    Returns:
        The metrics of the final budget (validation and test, with the training loss).

    Raises:
        CellDiverged: training met a non-finite loss, weight or score.
        RuntimeError: training failed.
    """
    from stemlab.train import TrainConfig, fit
    from stemlab.train.evaluate import evaluate

    seed = int(config["seed"])
    budgets = _budgets(config)
    training = dict(config["training"])
    for option in ("freeze", "head_lr_multiplier"):
        if config.get(option) is not None:
            training[option] = config[option]
    if training.get("checkpoint_dir") is not None:  # one folder per cell, never shared
        training["checkpoint_dir"] = f"{training['checkpoint_dir']}/{record['key']}"
    train_config = TrainConfig(**{**training, "seed": seed, "device": device, "progress": False})
    scores: dict[int, dict[str, float]] = {}

    def score(epoch: int, trained: nn.Module) -> None:
        if epoch in budgets and splits.test is not None:
            scores[epoch] = evaluate(
                trained,
                splits.test,
                batch_size=max(train_config.batch_size, 64),
                device=train_config.device,
                num_workers=train_config.num_workers,
            )

    outcome = fit(model, splits.train, config=train_config, val_data=splits.val, on_epoch=score)
    result = record["result"]
    result["epochs"] = records(outcome.history)
    result["train_status"] = outcome.status
    result["metrics"].update({f"train_{key}": value for key, value in outcome.settings.items()})
    if outcome.status == "diverged":
        raise CellDiverged(f"training diverged: {outcome.error}")
    if outcome.status != "completed":
        raise RuntimeError(f"training {outcome.status}: {outcome.error}")
    history = outcome.history.set_index("epoch")
    rows = []
    for epoch in budgets:
        row = history.loc[epoch]
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(row["train_loss"]),
            "val_top1": float(row["val_top1"]),
            "val_loss": float(row["val_loss"]),
        }
        if epoch in scores:
            entry.update(
                test_top1=float(scores[epoch]["top1"]),
                test_top5=float(scores[epoch]["top5"]),
                test_loss=float(scores[epoch]["loss"]),
            )
        for name, value in entry.items():
            if name != "epoch" and not math.isfinite(value):
                raise CellDiverged(f"training diverged: epoch {epoch}: {name} is {value}")
        rows.append(entry)
    result["budgets"] = rows
    final = rows[-1]
    test = splits.test is not None
    return {
        "top1": final["test_top1"] if test else final["val_top1"],
        "top5": final["test_top5"] if test else _finite(history.loc[budgets[-1], "val_top5"]),
        "top1_split": "test" if test else "validation",
        "test_loss": final.get("test_loss"),
        "val_top1": final["val_top1"],
        "val_loss": final["val_loss"],
        "train_loss": final["train_loss"],
        "test_clips": len(splits.test) if test else None,
        "lr": float(train_config.lr),
        "weight_decay": float(train_config.weight_decay),
        "epochs_trained": int(budgets[-1]),
        "train_seconds": float(outcome.history["seconds"].sum()),
    }


def _sweep_cell(config: Mapping[str, Any], device: str, record: dict[str, Any]) -> None:
    """One tuning run: train at the sample's setting, score validation and test; no probes."""
    from stemlab.study.datasets import build_splits

    splits = build_splits(replicate_data(config["data"], int(config["seed"])))
    model = _build_model(config, splits.num_classes)
    metrics = _fit(config, model, splits, device, record)
    metrics.update(num_classes=splits.num_classes, chance=1.0 / splits.num_classes)
    record["result"]["metrics"].update(metrics)


def _train_cell(config: Mapping[str, Any], device: str, record: dict[str, Any]) -> None:
    from stemlab.probes.contract import CellContext
    from stemlab.study.datasets import build_probe_set, build_splits, first_batch

    seed = int(config["seed"])
    target = _device(device)
    splits = build_splits(replicate_data(config["data"], seed))
    num_classes = splits.num_classes
    probe_set = build_probe_set(config["data"])
    model = _build_model(config, num_classes)
    result, metrics = record["result"], record["result"]["metrics"]
    inputs, labels, masks = first_batch(probe_set, PROBE_BATCH)
    if _weights_source(config) is not None:
        metrics.update(_weight_counts(model))
        if config["stem"] != "native":
            metrics.update(_survival(config, model, inputs, num_classes))
    init_model = copy.deepcopy(model)
    metrics.update(_fit(config, model, splits, device, record))
    class_names = list(getattr(splits.val, "classes", []) or [])
    metrics.update(
        {
            "train_params": sum(p.numel() for p in model.parameters()),
            "train_stem_width": model.stem.out_channels,
            "num_classes": num_classes,
            "chance": 1.0 / num_classes,
        }
    )
    result["class_names"] = class_names
    model = model.to(target).eval()
    options = dict(config.get("probe_options", {}))
    options.setdefault("num_classes", num_classes)
    options.setdefault("class_names", class_names)
    context = CellContext(
        kind="trained",
        model=model,
        inputs=inputs,
        labels=labels,
        masks=masks,
        batches=_Batches(probe_set, int(options.get("probe_samples", 128)), 32),
        config=config,
        options=options,
        device=target,
        init_model=init_model.to(target).eval(),
    )
    _run_probes(config["probes"], context, record)


def _run_probes(names: list[str], context: Any, record: dict[str, Any]) -> None:
    from stemlab.probes.contract import iter_probes

    result = record["result"]
    for probe in iter_probes(names):
        if context.kind not in probe.runs_on:
            continue
        start = time.perf_counter()
        output = probe.run(context)
        result["probe_seconds"][probe.name] = round(time.perf_counter() - start, 3)
        result["metrics"].update(output.metrics)
        for table, rows in output.tables.items():
            result["tables"].setdefault(table, []).extend(records(rows))
        for name, array in output.arrays.items():
            record["arrays"][f"{probe.name}.{name}"] = array


def _profile_cell(config: Mapping[str, Any], device: str, record: dict[str, Any]) -> None:
    from stemlab.models import create_model
    from stemlab.probes.contract import CellContext

    torch.manual_seed(0)
    target = _device(device)
    model = create_model(
        config["backbone"],
        stem=_stem(config),
        num_classes=config.get("num_classes", 400),
        **config["backbone_kwargs"],
    )
    model = model.to(target).eval()
    x = torch.randn(tuple(config["input"]), generator=torch.Generator().manual_seed(0))
    context = CellContext(
        kind="profile",
        model=model,
        inputs=x,
        config=config,
        options={"latency_runs": int(config["latency_runs"])},
        device=target,
    )
    _run_probes(config["probes"], context, record)
