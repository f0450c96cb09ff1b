"""Run one cell: train and probe a (backbone, stem, seed), or profile a stem at full size."""

from __future__ import annotations

import math
import platform
import time
import traceback
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from stemlab.study.spec import config_hash

__all__ = ["package_versions", "run_cell"]

PROBE_BATCH = 8


def package_versions() -> dict[str, str]:
    """Versions of Python, stemlab and the libraries whose numbers a result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("stemlab", "torch", "torchvision", "fvcore", "captum", "numpy", "pandas"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-safe dicts (NaN -> None, tuples -> strings)."""
    rows = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            elif isinstance(value, (np.integer, np.floating)):
                value = value.item()
            elif isinstance(value, (tuple, list)):
                value = str(tuple(value))
            clean[str(key)] = value
        rows.append(clean)
    return rows


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
        "versions", "result": {...}, "arrays": {name: np.ndarray}}``.
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
        "result": {},
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


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _train_cell(config: Mapping[str, Any], device: str, record: dict[str, Any]) -> None:
    from stemlab.models import create_model
    from stemlab.study.datasets import build_datasets, first_batch
    from stemlab.train import TrainConfig, fit

    seed = int(config["seed"])
    train_set, val_set, num_classes = build_datasets(config["data"])
    torch.manual_seed(seed)
    stem = _scaled_stem(config["backbone"], _stem(config), config.get("stem_width_multiplier", 1.0))
    model = create_model(
        config["backbone"], stem=stem, num_classes=num_classes, **config["backbone_kwargs"]
    )
    train_config = TrainConfig(
        **{**config["training"], "seed": seed, "device": device, "progress": False}
    )
    outcome = fit(model, train_set, config=train_config, val_data=val_set)
    result = record["result"]
    result["epochs"] = _records(outcome.history)
    result["train_status"] = outcome.status
    if outcome.status != "completed":
        raise RuntimeError(f"training {outcome.status}: {outcome.error}")
    final = outcome.history.iloc[-1]
    metrics: dict[str, Any] = {
        "top1": float(final["val_top1"]),
        "top5": float(final["val_top5"]) if "val_top5" in final else None,
        "train_seconds": float(outcome.history["seconds"].sum()),
        "train_params": sum(p.numel() for p in model.parameters()),
        "train_stem_width": model.stem.out_channels,
        "num_classes": num_classes,
    }
    result["metrics"] = metrics
    model = model.to(_resolve_device(device)).eval()
    inputs, labels, masks = first_batch(val_set, PROBE_BATCH)
    _probe_trained(model, config["probes"], inputs, labels, masks, record)


def _probe_trained(
    model: torch.nn.Module,
    probes: list[str],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor | None,
    record: dict[str, Any],
) -> None:
    from stemlab import probes as P

    result, metrics, arrays = record["result"], record["result"]["metrics"], record["arrays"]
    device = next(model.parameters()).device
    if "activations" in probes:
        with torch.no_grad(), P.record_activations(model) as recorder:
            model(inputs.to(device))
        table = recorder.table()
        result["activations"] = _records(table)
        stem_rows = table[table["module"] == "stem"]
        metrics["dead_channel_fraction"] = float(stem_rows["dead_channel_fraction"].iloc[0])
    if "flops" in probes:
        table = P.flops_table(model, inputs[:1].to(device))
        metrics["train_gflops"] = float(table.loc[table["module"] == "", "flops"].iloc[0]) / 1e9
    if "grad_cam" in probes:
        cam = P.grad_cam(model, inputs.to(device), labels.to(device), layer=_last_stage(model))
        cam = cam.detach().cpu()
        if masks is not None:
            mask = masks.to(cam.dtype).reshape(cam.shape)
            mass = cam.flatten(1).sum(1)
            # an all-zero map (no positive evidence) has no distribution to score
            scored = mass > 0
            on_object = (cam * mask).flatten(1).sum(1)[scored] / mass[scored]
            metrics["gradcam_on_object"] = float(on_object.mean()) if scored.any() else None
            metrics["object_area"] = float(mask.flatten(1).mean(1).mean())
            arrays["gradcam_mask"] = masks[:2].numpy().astype(np.uint8)
        arrays["gradcam_cam"] = cam[:2].numpy().astype(np.float16)
        arrays["gradcam_input"] = inputs[:2].numpy().astype(np.float16)
        arrays["gradcam_labels"] = labels[:2].numpy()
    if "filters" in probes:
        filters = P.first_layer_filters(model)
        result["filters"] = _records(filters.table)
        arrays["filters"] = filters.weight.numpy().astype(np.float32)
        if filters.effective is not None:
            arrays["filters_effective"] = filters.effective.numpy().astype(np.float32)
        conv_rows = filters.table[filters.table["kernel"] == "conv"]
        if "temporal_energy_fraction" in conv_rows:
            metrics["filter_temporal_energy"] = float(conv_rows["temporal_energy_fraction"].mean())


def _last_stage(model: torch.nn.Module) -> str:
    return [info["module"] for info in model.feature_info][-1]


def _profile_cell(config: Mapping[str, Any], device: str, record: dict[str, Any]) -> None:
    from stemlab import probes as P
    from stemlab.models import create_model

    torch.manual_seed(0)
    model = create_model(
        config["backbone"],
        stem=_stem(config),
        num_classes=config.get("num_classes", 400),
        **config["backbone_kwargs"],
    )
    model = model.to(_resolve_device(device)).eval()
    x = torch.randn(tuple(config["input"]), generator=torch.Generator().manual_seed(0))
    flops = P.flops_table(model, x)
    total = flops[flops["module"] == ""].iloc[0]
    with torch.no_grad(), P.record_activations(model) as recorder:
        model(x.to(next(model.parameters()).device))
    timing = P.latency(model, x, runs=int(config["latency_runs"]), warmup=1, progress=False)
    result = record["result"]
    result["flops"] = _records(flops)
    result["activations"] = _records(recorder.table())
    result["latency"] = _records(timing)
    result["metrics"] = {
        "params": int(total["params"]),
        "gflops": float(total["flops"]) / 1e9,
        "gflops_conv_linear": float(total["flops_conv"] + total["flops_linear"]) / 1e9,
        "stem_params": int(sum(p.numel() for p in model.stem.parameters())),
        "stem_gflops": float(flops.loc[flops["module"] == "stem", "flops"].iloc[0]) / 1e9,
        "unsupported_ops": str(total.get("unsupported_ops", "")),
    }
    median = timing.set_index("pass")["median_ms"]
    result["metrics"]["latency_ms"] = float(median["forward"])
    result["metrics"]["latency_fwd_bwd_ms"] = float(median["forward_backward"])
