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

__all__ = ["common_random_init", "package_versions", "replicate_data", "run_cell"]

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
        ``{"key", "kind", "config", "status": "ok" | "failed", "error", "traceback", "seconds",
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
        else:
            _profile_cell(config, device, record)
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
    from stemlab.train.freeze import resolve_head

    found = resolve_head(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} declares no classifier head to compare")
    head = found[1]
    captured: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    was_training = model.training
    try:
        model.eval()
        model(inputs)
    finally:
        handle.remove()
        model.train(was_training)
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


def _train_cell(config: Mapping[str, Any], device: str, record: dict[str, Any]) -> None:
    from stemlab.models import create_model
    from stemlab.probes.contract import CellContext
    from stemlab.study.datasets import build_datasets, build_probe_set, first_batch
    from stemlab.train import TrainConfig, fit

    seed = int(config["seed"])
    target = _device(device)
    train_set, val_set, num_classes = build_datasets(replicate_data(config["data"], seed))
    probe_set = build_probe_set(config["data"])
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
    result, metrics = record["result"], record["result"]["metrics"]
    inputs, labels, masks = first_batch(probe_set, PROBE_BATCH)
    if weights is not None:
        metrics.update(_weight_counts(model))
        if config["stem"] != "native":
            metrics.update(_survival(config, model, inputs, num_classes))
    training = dict(config["training"])
    for option in ("freeze", "head_lr_multiplier"):
        if config.get(option) is not None:
            training[option] = config[option]
    train_config = TrainConfig(**{**training, "seed": seed, "device": device, "progress": False})
    init_model = copy.deepcopy(model)
    outcome = fit(model, train_set, config=train_config, val_data=val_set)
    result["epochs"] = records(outcome.history)
    result["train_status"] = outcome.status
    if outcome.status != "completed":
        raise RuntimeError(f"training {outcome.status}: {outcome.error}")
    final = outcome.history.iloc[-1]
    metrics.update(
        {
            "top1": float(final["val_top1"]),
            "top5": float(final["val_top5"]) if "val_top5" in final else None,
            "train_loss": float(final["train_loss"]),
            "val_loss": float(final["val_loss"]) if "val_loss" in final else None,
            "train_seconds": float(outcome.history["seconds"].sum()),
            "train_params": sum(p.numel() for p in model.parameters()),
            "train_stem_width": model.stem.out_channels,
            "num_classes": num_classes,
        }
    )
    model = model.to(target).eval()
    options = dict(config.get("probe_options", {}))
    options.setdefault("num_classes", num_classes)
    options.setdefault("class_names", list(getattr(val_set, "classes", []) or []))
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
