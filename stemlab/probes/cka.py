"""Linear CKA between layers of two models (Kornblith et al. 2019), accumulated over mini-batches.

Centred kernel alignment compares two representations of the same samples through their Gram
matrices ``K = X X^T`` and ``L = Y Y^T``::

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) * HSIC(L, L))

It is invariant to orthogonal transforms and isotropic scaling of either representation, so it
tells whether two layers carry the same information regardless of how the channels are arranged.

Over a data set, :func:`cka` uses the minibatch estimator of Nguyen, Raghu & Kornblith (2021)::

    CKA = mean_b HSIC_1(K_b, L_b) / sqrt(mean_b HSIC_1(K_b, K_b) * mean_b HSIC_1(L_b, L_b))

with ``HSIC_1`` the unbiased estimator of Song et al. (2012). Only running sums are kept, so memory
does not grow with the number of batches. :func:`gram_matrices` returns the per-batch Gram matrices
instead (small: batch x batch per layer), so CKA between two models can be computed later from
stored Grams with :func:`cka_from_grams`; :func:`cka` is built on the same two pieces.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from stemlab._modes import preserved_modes
from stemlab._validation import check_positive_int
from stemlab.probes._modules import check_model, first_tensor, model_device, module_names_hint
from stemlab.probes._plots import new_figure
from stemlab.probes.contract import (
    CellContext,
    FigureSpec,
    ProbeOutput,
    StudyProbe,
    StudyView,
    register_probe,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CKA_COLUMNS",
    "LEARNED_ALPHA",
    "MIN_UNBIASED_SAMPLES",
    "CkaReference",
    "arm_learned",
    "cka",
    "cka_from_grams",
    "cka_matrix",
    "cka_reference",
    "default_cka_layers",
    "gram_matrices",
    "hsic",
    "layer_roles",
    "linear_cka",
]

MIN_UNBIASED_SAMPLES = 4
"""The unbiased HSIC estimator divides by ``n (n - 3)``: it needs at least 4 samples."""

LayerSpec = Sequence[str] | tuple[Sequence[str], Sequence[str]] | None


# --- shared by the filter-channel probes -------------------------------------------------------


def _iter_batches(
    data: Any, *, max_batches: int | None, argument: str = "data"
) -> Iterator[tuple[torch.Tensor, Any]]:
    """Yield ``(input, label_or_None)`` for each batch of ``data``, at most ``max_batches``.

    A batch is a tuple/list whose first element is the input tensor (the second, when present, is
    the label), or a bare input tensor. A tensor ``data`` is one batch.
    """
    if max_batches is not None:
        check_positive_int("max_batches", max_batches)
    if isinstance(data, torch.Tensor):
        data = [data]
    elif isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        raise TypeError(
            f"{argument} must be an iterable of batches (e.g. a DataLoader), got the dataset "
            f"{type(data).__name__}: wrap it in torch.utils.data.DataLoader(..., batch_size=...)"
        )
    if not isinstance(data, Iterable):
        raise TypeError(
            f"{argument} must be an iterable of batches (clip, label, ...), got {type(data).__name__}"
        )
    for index, batch in enumerate(data):
        if max_batches is not None and index >= max_batches:
            return
        if isinstance(batch, torch.Tensor):
            x, label = batch, None
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
            x, label = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            raise TypeError(
                f"{argument}: batch {index} must be a tensor or a tuple/list whose first element "
                f"is the input tensor, got {type(batch).__name__}"
            )
        if x.ndim < 2:
            raise ValueError(
                f"{argument}: batch {index} input must have a batch dimension, got shape "
                f"{tuple(x.shape)}"
            )
        yield x, label


@contextmanager
def _evaluating(*models: nn.Module) -> Iterator[None]:
    """Eval mode and no_grad inside; every module's own train/eval flag restored afterwards."""
    with preserved_modes(*models), torch.no_grad():
        for model in models:
            model.eval()
        yield


def _resolve_layer(model: nn.Module, name: Any, *, argument: str = "layer") -> nn.Module:
    if not isinstance(name, str):
        raise TypeError(f"{argument} must be a module name (str), got {type(name).__name__}")
    modules = dict(model.named_modules())
    if not name or name not in modules:
        raise ValueError(
            f"{argument}={name!r}: the model has no such module." + module_names_hint(model, name)
        )
    return modules[name]


def _per_sample(output: torch.Tensor, batch: int, folded: bool, name: str) -> torch.Tensor:
    """``(N, ...)`` or time-folded ``(N*T, ...)`` -> ``(N, features)``."""
    if output.shape[0] != batch and not (folded and output.shape[0] % batch == 0):
        raise ValueError(
            f"layer {name!r} output has batch {output.shape[0]}, which is not the input batch "
            f"{batch} (or a multiple of it for a time-folded layer)"
        )
    return output.reshape(batch, -1)


def _is_folded(model: nn.Module, name: str) -> bool:
    for entry in getattr(model, "feature_info", None) or ():
        if entry.get("module") == name:
            if entry.get("time_folded"):
                return True
            break
    return bool(getattr(model, "time_folded", False)) and name != "stem"


# --- HSIC and linear CKA -----------------------------------------------------------------------


def _as_matrix(value: Any, argument: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{argument} must be a numeric array, got {type(value).__name__}") from exc
    if matrix.ndim != 2:
        raise ValueError(
            f"{argument} must be a 2-D feature matrix (samples, features), got shape {matrix.shape}"
        )
    return matrix


def _check_grams(k: np.ndarray, l: np.ndarray, *, unbiased: bool) -> int:  # noqa: E741
    n = k.shape[0]
    if k.shape != (n, n) or l.shape != (n, n):
        raise ValueError(
            f"Gram matrices must be square with the same size, got {k.shape} and {l.shape}"
        )
    needed = MIN_UNBIASED_SAMPLES if unbiased else 2
    if n < needed:
        raise ValueError(
            f"{'unbiased ' if unbiased else ''}HSIC needs at least {needed} samples, got {n}"
        )
    return n


def hsic(k: Any, l: Any, *, unbiased: bool = False) -> float:  # noqa: E741
    """HSIC of two Gram matrices (not normalised: only ratios of HSIC values are meaningful).

    Biased: ``tr(H K H L) / (n - 1)^2`` with the centring matrix ``H = I - 11^T / n``.
    Unbiased (Song et al. 2012), with ``K~``, ``L~`` the Grams with zeroed diagonals::

        [tr(K~ L~) + 1^T K~ 1 * 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) * 1^T K~ L~ 1] / (n (n-3))

    Args:
        k: ``(n, n)`` Gram matrix.
        l: ``(n, n)`` Gram matrix of the same samples.
        unbiased: use the unbiased estimator (needs ``n >= 4``).

    Returns:
        The HSIC estimate as a float (computed in float64).

    Raises:
        ValueError: non-square or mismatched matrices, or too few samples.
    """
    k = _as_matrix(k, "k")
    l = _as_matrix(l, "l")  # noqa: E741
    _check_grams(k, l, unbiased=unbiased)
    return _hsic_unbiased(k, l) if unbiased else _hsic_biased(k, l)


def _hsic_biased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    n = k.shape[0]
    kc = k - k.mean(axis=0, keepdims=True)
    kc = kc - kc.mean(axis=1, keepdims=True)
    lc = l - l.mean(axis=0, keepdims=True)
    lc = lc - lc.mean(axis=1, keepdims=True)
    return float(np.sum(kc * lc) / (n - 1) ** 2)


class _Zeroed:
    """A Gram with zeroed diagonal and the sums the unbiased estimator reuses for every pair."""

    __slots__ = ("matrix", "row_sums", "total")

    def __init__(self, gram: np.ndarray) -> None:
        self.matrix = gram.copy()
        np.fill_diagonal(self.matrix, 0.0)
        self.row_sums = self.matrix.sum(axis=1)
        self.total = float(self.row_sums.sum())


def _hsic_unbiased_zeroed(a: _Zeroed, b: _Zeroed) -> float:
    n = a.matrix.shape[0]
    trace = float(np.sum(a.matrix * b.matrix))  # tr(A B) for symmetric A, B
    middle = a.total * b.total / ((n - 1) * (n - 2))
    last = 2.0 / (n - 2) * float(a.row_sums @ b.row_sums)
    return (trace + middle - last) / (n * (n - 3))


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    return _hsic_unbiased_zeroed(_Zeroed(k), _Zeroed(l))


def _ratio(cross: float, self_a: float, self_b: float) -> float:
    denominator = self_a * self_b
    if not denominator > 0.0:  # a constant representation (or a negative unbiased estimate)
        return math.nan
    return cross / math.sqrt(denominator)


def linear_cka(x: Any, y: Any, *, unbiased: bool = False) -> float:
    """Linear CKA of two feature matrices of the same samples (Kornblith et al. 2019).

    Args:
        x: ``(N, D1)`` features (numpy array, tensor or nested sequence).
        y: ``(N, D2)`` features of the same ``N`` samples.
        unbiased: use the unbiased HSIC estimator (Song et al. 2012; needs ``N >= 4``), which
            removes the bias of the plain estimator towards 1 when ``D`` is large next to ``N``.

    Returns:
        CKA as a float, computed in float64: 1 for representations equal up to an orthogonal
        transform and isotropic scaling; NaN when either representation is constant.

    Raises:
        TypeError: non-numeric input.
        ValueError: not 2-D, different numbers of samples, or too few samples (2; 4 if unbiased).
    """
    x = _as_matrix(x, "x")
    y = _as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same samples (same N), got shapes {x.shape} and {y.shape}"
        )
    k, l = x @ x.T, y @ y.T  # noqa: E741
    _check_grams(k, l, unbiased=unbiased)
    if unbiased:
        zk, zl = _Zeroed(k), _Zeroed(l)
        return _ratio(
            _hsic_unbiased_zeroed(zk, zl),
            _hsic_unbiased_zeroed(zk, zk),
            _hsic_unbiased_zeroed(zl, zl),
        )
    return _ratio(_hsic_biased(k, l), _hsic_biased(k, k), _hsic_biased(l, l))


# --- Gram matrices of model layers -------------------------------------------------------------


def default_cka_layers(model: nn.Module) -> list[str]:
    """The stem output and each stage: the ``module`` names of ``model.feature_info``.

    Raises:
        ValueError: if the model has no ``feature_info`` (pass ``layers`` explicitly then).
    """
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(
            f"{type(model).__name__} has no feature_info to take default layers from; "
            "pass layers=[...] with module names"
        )
    return [entry["module"] for entry in info]


class _GramRecorder:
    """Forward hooks that turn each layer's output into a float64 Gram matrix on the spot.

    The Gram is computed inside the hook, before any later in-place op can change the output,
    and only the ``(N, N)`` matrix is kept.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], device: torch.device | None):
        self.model = model
        self.layers = list(layers)
        self.device = device
        self.modules = {name: _resolve_layer(model, name, argument="layers") for name in layers}
        self.folded = {name: _is_folded(model, name) for name in layers}
        self.batch = 0
        self.active = (
            False  # the same model may be hooked by two recorders (cka of a model with itself)
        )
        self.grams: dict[str, np.ndarray] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> _GramRecorder:
        try:
            for name, module in self.modules.items():
                self.handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self.active:
                return
            if name in self.grams:
                raise ValueError(
                    f"layer {name!r} ran more than once in one forward pass; CKA needs a layer "
                    "that runs once per input (pick its parent module)"
                )
            tensor = first_tensor(output)
            if tensor is None:
                raise ValueError(f"layer {name!r} returned no tensor")
            features = _per_sample(tensor.detach(), self.batch, self.folded[name], name)
            features = features.to(device=self.device or features.device, dtype=torch.float64)
            self.grams[name] = (features @ features.T).cpu().numpy()

        return hook

    def run(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        self.batch = x.shape[0]
        self.grams = {}
        self.active = True
        try:
            self.model(x.to(model_device(self.model)))
        finally:
            self.active = False
        missing = [name for name in self.layers if name not in self.grams]
        if missing:
            raise ValueError(f"layers {missing} did not run in the model's forward pass")
        grams, self.grams = self.grams, {}
        return grams


def _layer_lists(
    model_a: nn.Module, model_b: nn.Module, layers: Any
) -> tuple[list[str], list[str]]:
    if layers is None:
        return default_cka_layers(model_a), default_cka_layers(model_b)
    if isinstance(layers, str):
        raise TypeError(
            f"layers must be a list of module names or a pair (layers_a, layers_b), got the "
            f"string {layers!r}; write [{layers!r}]"
        )
    items = list(layers)
    if len(items) == 2 and all(isinstance(i, (list, tuple)) for i in items):
        layers_a, layers_b = list(items[0]), list(items[1])
    else:
        layers_a, layers_b = items, list(items)
    for argument, names in (("layers", layers_a), ("layers", layers_b)):
        if not names:
            raise ValueError(f"{argument} must name at least one module")
        if not all(isinstance(n, str) for n in names):
            raise TypeError(f"{argument} must hold module names (str), got {names!r}")
    return layers_a, layers_b


def _torch_device(device: Any) -> torch.device | None:
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a torch device") from exc


def gram_matrices(
    model: nn.Module,
    data: Iterable[Any],
    *,
    layers: Sequence[str] | None = None,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, list[np.ndarray]]:
    """Per-batch linear Gram matrices ``K_b = X_b X_b^T`` of each layer's flattened output.

    Features of a sample are its layer output flattened (time-folded outputs of recurrent
    backbones, ``(N*T, ...)``, are regrouped per clip). Runs in eval mode under ``no_grad``; the
    model's modes are restored and its hooks removed.

    Args:
        model: the model.
        data: iterable of batches ``(clip, label, ...)`` (the first element is the input).
        layers: module names; ``None`` = the stem output and each stage (``feature_info``).
        max_batches: use at most this many batches.
        device: where the float64 Grams are computed (default: where the layer output is).

    Returns:
        ``{layer: [gram of batch 0, gram of batch 1, ...]}``, float64 ``(N_b, N_b)`` arrays.

    Raises:
        TypeError / ValueError: bad model, data, layer names or ``max_batches``.
    """
    check_model(model)
    names = default_cka_layers(model) if layers is None else _layer_lists(model, model, layers)[0]
    grams: dict[str, list[np.ndarray]] = {name: [] for name in names}
    with _evaluating(model), _GramRecorder(model, names, _torch_device(device)) as recorder:
        for x, _ in _iter_batches(data, max_batches=max_batches):
            for name, gram in recorder.run(x).items():
                grams[name].append(gram)
    return grams


class _MinibatchCKA:
    """Running sums of unbiased HSIC over batches: O(layers_a x layers_b) floats of state."""

    def __init__(self, layers_a: Sequence[str], layers_b: Sequence[str]) -> None:
        self.layers_a, self.layers_b = list(layers_a), list(layers_b)
        self.cross = np.zeros((len(self.layers_a), len(self.layers_b)))
        self.self_a = np.zeros(len(self.layers_a))
        self.self_b = np.zeros(len(self.layers_b))
        self.batches = 0
        self.samples = 0
        self.skipped = 0

    def update(self, grams_a: Mapping[str, np.ndarray], grams_b: Mapping[str, np.ndarray]) -> None:
        n = grams_a[self.layers_a[0]].shape[0]
        for grams in (grams_a, grams_b):
            for name, gram in grams.items():
                if gram.shape != (n, n):
                    raise ValueError(
                        f"batch {self.batches + self.skipped}: Gram of {name!r} has shape "
                        f"{gram.shape}, expected ({n}, {n}) (the same samples for every layer)"
                    )
        if n < MIN_UNBIASED_SAMPLES:
            self.skipped += 1
            return
        zeroed_a = [_Zeroed(grams_a[name]) for name in self.layers_a]
        zeroed_b = [_Zeroed(grams_b[name]) for name in self.layers_b]
        for i, za in enumerate(zeroed_a):
            self.self_a[i] += _hsic_unbiased_zeroed(za, za)
            for j, zb in enumerate(zeroed_b):
                self.cross[i, j] += _hsic_unbiased_zeroed(za, zb)
        for j, zb in enumerate(zeroed_b):
            self.self_b[j] += _hsic_unbiased_zeroed(zb, zb)
        self.batches += 1
        self.samples += n

    def table(self) -> pd.DataFrame:
        if self.skipped:
            warnings.warn(
                f"cka: skipped {self.skipped} batch(es) with fewer than {MIN_UNBIASED_SAMPLES} "
                "samples (the unbiased HSIC estimator needs 4)",
                RuntimeWarning,
                stacklevel=3,
            )
        if not self.batches:
            raise ValueError(
                f"cka needs at least one batch of {MIN_UNBIASED_SAMPLES} or more samples, "
                f"got {self.skipped} smaller batch(es) and no other"
            )
        rows = [
            {
                "layer_a": a,
                "layer_b": b,
                "cka": _ratio(self.cross[i, j], self.self_a[i], self.self_b[j]),
            }
            for i, a in enumerate(self.layers_a)
            for j, b in enumerate(self.layers_b)
        ]
        frame = pd.DataFrame(rows, columns=["layer_a", "layer_b", "cka"])
        frame.attrs.update(
            {"batches": self.batches, "samples": self.samples, "skipped_batches": self.skipped}
        )
        return frame


def cka_from_grams(
    grams_a: Mapping[str, Sequence[np.ndarray]], grams_b: Mapping[str, Sequence[np.ndarray]]
) -> pd.DataFrame:
    """Minibatch CKA between every layer of ``grams_a`` and every layer of ``grams_b``.

    The Grams must come from the same batches in the same order (e.g. a study's fixed probe
    batches): batch ``b`` of every layer holds the same samples.

    Args:
        grams_a: ``{layer: [K_0, K_1, ...]}`` as returned by :func:`gram_matrices`.
        grams_b: the same for the other model.

    Returns:
        DataFrame ``layer_a, layer_b, cka`` (the full matrix, ``grams_a`` order outer); ``.attrs``
        holds ``batches``, ``samples`` and ``skipped_batches`` (batches under 4 samples).

    Raises:
        ValueError: empty input, different numbers of batches, or mismatched batch sizes.
    """
    for argument, grams in (("grams_a", grams_a), ("grams_b", grams_b)):
        if not isinstance(grams, Mapping) or not grams:
            raise ValueError(f"{argument} must be a non-empty dict {{layer: [gram, ...]}}")
    counts = {len(v) for v in (*grams_a.values(), *grams_b.values())}
    if len(counts) != 1:
        raise ValueError(
            f"every layer of grams_a and grams_b must hold the same number of batches, got "
            f"{sorted(counts)}"
        )
    accumulator = _MinibatchCKA(list(grams_a), list(grams_b))
    for index in range(counts.pop()):
        accumulator.update(
            {k: _as_matrix(v[index], f"grams_a[{k!r}][{index}]") for k, v in grams_a.items()},
            {k: _as_matrix(v[index], f"grams_b[{k!r}][{index}]") for k, v in grams_b.items()},
        )
    return accumulator.table()


def cka(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Iterable[Any],
    *,
    layers: LayerSpec = None,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Minibatch linear CKA between layers of two models on the same data (Nguyen et al. 2021).

    Each batch goes through both models; each layer's Gram matrix is reduced at once to unbiased
    HSIC values added to running sums, so memory stays flat in the number of batches. Batches
    under 4 samples are skipped with a warning. Both models run in eval mode under ``no_grad``;
    their modes are restored and hooks removed.

    Args:
        model_a: the first model.
        model_b: the second model (the same input layout).
        data: iterable of batches ``(clip, label, ...)``; iterated once.
        layers: ``None`` = each model's stem output and stages (``feature_info``); a list of
            module names used for both models; or a pair ``(layers_a, layers_b)``.
        max_batches: use at most this many batches.
        device: where the float64 Grams are computed (default: where each layer output is).

    Returns:
        DataFrame ``layer_a, layer_b, cka``: one row per pair (full matrix, ``layers_a`` outer).
        ``.attrs``: ``batches``, ``samples``, ``skipped_batches``.

    Raises:
        TypeError / ValueError: bad models, data, layer names or ``max_batches``; no batch of
            at least 4 samples.
    """
    check_model(model_a, argument="model_a")
    check_model(model_b, argument="model_b")
    layers_a, layers_b = _layer_lists(model_a, model_b, layers)
    gram_device = _torch_device(device)
    accumulator = _MinibatchCKA(layers_a, layers_b)
    with (
        _evaluating(model_a, model_b),
        _GramRecorder(model_a, layers_a, gram_device) as recorder_a,
        _GramRecorder(model_b, layers_b, gram_device) as recorder_b,
    ):
        for x, _ in _iter_batches(data, max_batches=max_batches):
            accumulator.update(recorder_a.run(x), recorder_b.run(x))
    return accumulator.table()


# Study integration: how this probe runs in a study cell and what it adds to the report.

_PREFIXES = {"trained": "cka.gram.", "init": "cka.init_gram."}
"""Where a cell's stored Grams of each state live (``cka.gram.<layer>``, ``cka.init_gram.<layer>``)."""

CKA_COLUMNS = (
    "backbone",
    "stem",
    "reference",
    "comparison",
    "state",
    "seed",
    "seed_b",
    "layer",
    "cka",
)
"""Columns of the combined ``cka`` table (one row per model pair and layer role)."""

LEARNED_ALPHA = 0.05
"""Level of the test that the CKA reference arm learned (test top-1 above chance)."""


def _cka_run(context: CellContext) -> ProbeOutput:
    data = context.batch_list("probe_samples", 128)
    arrays: dict[str, np.ndarray] = {}
    for prefix, model in (("gram", context.model), ("init_gram", context.init_model)):
        if model is None:
            continue
        grams = gram_matrices(model, data)
        arrays.update({f"{prefix}.{layer}": np.stack(values) for layer, values in grams.items()})
        arrays["layers"] = np.array(list(grams), dtype=str)  # network order of the layers
    return ProbeOutput(arrays=arrays)


def _cell_grams(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, list[np.ndarray]]:
    """A cell's stored Grams of one state, ``{layer: [gram per batch]}`` in network order."""
    order = arrays.get("cka.layers")
    names = (
        [str(n) for n in order]
        if order is not None
        else sorted(n.removeprefix(prefix) for n in arrays if n.startswith(prefix))
    )
    return {name: list(arrays[f"{prefix}{name}"]) for name in names if f"{prefix}{name}" in arrays}


def layer_roles(layers: Sequence[str]) -> list[str]:
    """The role of each CKA layer: ``"stem output"`` for the first, then the stage names."""
    return ["stem output" if i == 0 else name for i, name in enumerate(layers)]


class _RoleGrams:
    """One model's Grams by layer role, reduced once for the unbiased HSIC of every pair."""

    def __init__(self, grams: Mapping[str, Sequence[np.ndarray]]) -> None:
        self.zeroed: dict[str, list[_Zeroed]] = {}
        self.shapes: dict[str, list[tuple[int, ...]]] = {}
        self.own: dict[str, float] = {}
        for role, name in zip(layer_roles(list(grams)), grams):
            batches = [np.asarray(g, dtype=np.float64) for g in grams[name]]
            kept = [_Zeroed(g) for g in batches if g.shape[0] >= MIN_UNBIASED_SAMPLES]
            self.zeroed[role] = kept
            self.shapes[role] = [g.shape for g in batches]
            self.own[role] = sum(_hsic_unbiased_zeroed(z, z) for z in kept)

    def cka(self, other: _RoleGrams) -> dict[str, float]:
        """Minibatch CKA with ``other`` at every role both have (the :func:`cka_from_grams` value).

        Raises:
            ValueError: the two hold different batches at a role.
        """
        values = {}
        for role, mine in self.zeroed.items():
            if role not in other.zeroed:
                continue
            if self.shapes[role] != other.shapes[role]:
                raise ValueError(
                    f"CKA at {role!r}: the models' Grams come from different batches "
                    f"({self.shapes[role]} vs {other.shapes[role]})"
                )
            cross = sum(_hsic_unbiased_zeroed(a, b) for a, b in zip(mine, other.zeroed[role]))
            values[role] = _ratio(cross, self.own[role], other.own[role])
        return values


def _cka_combine(view: StudyView) -> dict[str, pd.DataFrame]:
    trained = view.trained()
    if trained.empty:
        return {}
    rows: list[dict[str, Any]] = []
    for backbone, cells in trained.groupby("backbone", sort=False):
        models: dict[tuple[str, int], dict[str, _RoleGrams]] = {}
        for cell in cells.itertuples():
            arrays = view.arrays(cell.key)
            for state, prefix in _PREFIXES.items():
                grams = _cell_grams(arrays, prefix)
                if grams:
                    models.setdefault((cell.stem, int(cell.seed)), {})[state] = _RoleGrams(grams)
        stems = list(dict.fromkeys(stem for stem, _ in models))
        seeds = sorted({seed for _, seed in models})
        base = {"backbone": backbone}
        for state in _PREFIXES:
            for seed in seeds:  # seed-paired: stem A's and stem B's models of the same seed
                present = [s for s in stems if state in models.get((s, seed), {})]
                for a, b in itertools.combinations(present, 2):
                    values = models[(a, seed)][state].cka(models[(b, seed)][state])
                    for layer, value in values.items():
                        for stem, reference in ((a, b), (b, a)):  # both orders: rows by stem
                            rows.append(
                                {
                                    **base,
                                    "stem": stem,
                                    "reference": reference,
                                    "comparison": "stem_pair",
                                    "state": state,
                                    "seed": seed,
                                    "seed_b": seed,
                                    "layer": layer,
                                    "cka": value,
                                }
                            )
            for stem in stems:  # the seed-to-seed floor: the same stem, two seeds
                own = [s for s in seeds if state in models.get((stem, s), {})]
                for s1, s2 in itertools.combinations(own, 2):
                    values = models[(stem, s1)][state].cka(models[(stem, s2)][state])
                    for layer, value in values.items():
                        rows.append(
                            {
                                **base,
                                "stem": stem,
                                "reference": stem,
                                "comparison": "same_stem_other_seed",
                                "state": state,
                                "seed": s1,
                                "seed_b": s2,
                                "layer": layer,
                                "cka": value,
                            }
                        )
    table = pd.DataFrame(rows, columns=list(CKA_COLUMNS))
    return {"cka": table, "cka_matrix": cka_matrix(table)}


def cka_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """The stem x stem CKA matrix per backbone, state and layer from a combined ``cka`` table.

    Off-diagonal entries (``kind="stem_pair"``): CKA between the two stems' models of the same
    seed, over seeds; diagonal entries (``kind="seed_floor"``): CKA between two seeds of the same
    stem, over seed pairs.

    Args:
        table: rows with the columns :data:`CKA_COLUMNS`.

    Returns:
        DataFrame ``backbone, state, layer, stem_a, stem_b, kind, cka_mean, cka_min, cka_max,
        n`` (``n``: seeds, or seed pairs on the diagonal).
    """
    columns = ["backbone", "state", "layer", "stem_a", "stem_b", "kind"]
    stats = ["cka_mean", "cka_min", "cka_max", "n"]
    if table.empty:
        return pd.DataFrame(columns=columns + stats)
    kind = table["comparison"].map({"stem_pair": "stem_pair", "same_stem_other_seed": "seed_floor"})
    frame = table.assign(stem_a=table["stem"], stem_b=table["reference"], kind=kind)
    frame = frame[frame["kind"].notna()]
    grouped = frame.groupby(columns, sort=False)["cka"]
    out = grouped.agg(cka_mean="mean", cka_min="min", cka_max="max", n="count").reset_index()
    return out[columns + stats]


# --- which arm CKA is measured against ----------------------------------------------------------


@dataclass(frozen=True)
class CkaReference:
    """The arm a backbone's CKA findings compare every stem with, and why.

    Attributes:
        stem: the reference stem; ``None`` when no arm's learning is shown (CKA against any
            of them would be uninformative).
        requested: the study's baseline stem.
        learned: stem -> whether its test top-1 is above chance by the test (None: untestable).
        text: stem -> the test top-1, chance and test result, for sentences.
    """

    stem: str | None
    requested: str | None
    learned: dict[str, bool | None]
    text: dict[str, str]


def _chance(view: StudyView, rows: pd.DataFrame) -> float | None:
    for column, transform in (("chance", float), ("num_classes", lambda v: 1.0 / float(v))):
        if column in rows and pd.to_numeric(rows[column], errors="coerce").notna().any():
            return transform(pd.to_numeric(rows[column], errors="coerce").dropna().iloc[0])
    classes = (view.config.get("data") or {}).get("num_classes")
    return 1.0 / float(classes) if classes else None


def _split(rows: pd.DataFrame) -> str:
    """The split ``top1`` was scored on: ``"test"``, or ``"validation"`` in studies without one."""
    if "top1_split" in rows and (rows["top1_split"] == "validation").all():
        return "validation"
    return "test"


def _scored_clips(view: StudyView, rows: pd.DataFrame) -> list[int] | None:
    """The clips each row's ``top1`` was scored on (``test_clips``, else the config's count)."""
    for column in ("test_clips", "test_samples"):
        if column in rows:
            counts = pd.to_numeric(rows[column], errors="coerce")
            if counts.notna().all() and (counts > 0).all():
                return [int(c) for c in counts]
    data = view.config.get("data") or {}
    count = data.get("val_samples" if _split(rows) == "validation" else "test_samples")
    if isinstance(count, (int, float)) and not isinstance(count, bool) and count > 0:
        return [int(count)] * len(rows)
    return None


def arm_learned(
    top1: Sequence[float],
    chance: float,
    clips: int | Sequence[int] | None,
    *,
    alpha: float = LEARNED_ALPHA,
    split: str = "test",
) -> tuple[bool | None, str]:
    """Whether an arm's top-1 is above chance by a tested margin.

    With the number of scored clips known, every seed's model must beat chance in a one-sided
    exact binomial test (``round(top1 * clips)`` correct of ``clips``; intersection-union, so
    the claim "every seed's model learned" holds at ``alpha``): CKA is seed-paired, so each
    seed's reference model must have learned. Otherwise a one-sided one-sample t-test over seeds
    of ``top1 - chance > 0``.

    Args:
        top1: each seed's top-1 (fraction).
        chance: 1 / number of classes.
        clips: clips each seed was scored on (one count for all, or one per seed), or None.
        alpha: the level.
        split: the split's name, for the description.

    Returns:
        ``(learned, description)``; ``learned`` is None when no test is possible (one seed and
        no clip count, or seeds with no spread).

    Raises:
        ValueError: per-seed clip counts that do not match ``top1``.
    """
    from scipy import stats

    values = np.asarray([float(v) for v in top1], dtype=float)
    counts = None
    if clips is not None and not isinstance(clips, (int, np.integer)):
        counts = [int(c) for c in clips]
        if len(counts) != len(values):
            raise ValueError(
                f"clips must hold one count per top1 value ({len(values)}), got {len(counts)}"
            )
    elif clips:
        counts = [int(clips)] * len(values)
    finite = np.isfinite(values)
    values = values[finite]
    n = len(values)
    if n == 0:
        return None, "no finished seed"
    plural = "s" if n != 1 else ""
    if counts:
        counts = [c for c, keep in zip(counts, finite) if keep]
        p = [
            stats.binomtest(round(float(v) * c), c, chance, alternative="greater").pvalue
            for v, c in zip(values, counts)
        ]
        worst = float(max(p))
        sizes = f"{counts[0]}" if len(set(counts)) == 1 else f"{min(counts)}-{max(counts)}"
        return worst < alpha, (
            f"one-sided exact binomial test per seed on {sizes} {split} clips, largest p "
            f"{worst:.2g} over {n} seed{plural}"
        )
    margin = values - chance
    if n < 2:
        return None, f"one seed and no {split} clip count: no test possible"
    if np.ptp(margin) <= 1e-12 * max(1.0, float(np.abs(margin).max())):
        return None, f"the {n} seeds have the same top-1: no t-test possible without a clip count"
    p = float(stats.ttest_1samp(margin, 0.0, alternative="greater").pvalue)
    return p < alpha, f"one-sided one-sample t over {n} seeds of top-1 - chance, p {p:.2g}"


def cka_reference(view: StudyView, backbone: str) -> CkaReference:
    """The arm the CKA findings of ``backbone`` use as reference.

    The study's baseline if its test top-1 is above chance by :func:`arm_learned`; else the
    best-learning arm (highest mean test top-1) if it passes; else none.

    Args:
        view: the study (``top1`` and ``chance`` or ``num_classes`` in its cells).
        backbone: the backbone.

    Returns:
        A :class:`CkaReference`.
    """
    requested = view.baseline
    cells = view.trained()
    cells = cells[cells["backbone"] == backbone] if not cells.empty else cells
    chance = _chance(view, cells) if not cells.empty else None
    if cells.empty or "top1" not in cells or chance is None:
        return CkaReference(requested, requested, {}, {})
    split = _split(cells)
    means = cells.groupby("stem", sort=False)["top1"].mean()
    learned: dict[str, bool | None] = {}
    text: dict[str, str] = {}

    def check(stem: str) -> bool:
        rows = cells[cells["stem"] == stem]
        learned[stem], how = arm_learned(
            rows["top1"], chance, _scored_clips(view, rows), split=split
        )
        text[stem] = (
            f"mean {split} top-1 {100 * means[stem]:.1f}% vs chance {100 * chance:.1f}%; {how}"
        )
        return bool(learned[stem])

    if requested in means.index and check(requested):
        return CkaReference(requested, requested, learned, text)
    best = str(means.idxmax())
    if best != requested and check(best):
        return CkaReference(best, requested, learned, text)
    return CkaReference(None, requested, learned, text)


def _reference_line(reference: CkaReference, where: str) -> str | None:
    requested = reference.requested
    if requested is None or not reference.text:
        return (
            f"CKA{where}: whether the reference `{requested}` learned could not be tested (no "
            "top-1 and chance level in the cells)."
            if requested is not None
            else None
        )
    if reference.stem == requested:
        return f"CKA reference{where} `{requested}` learned ({reference.text[requested]})."
    lead = f"CKA against `{requested}`{where} is uninformative: its top-1 is not above chance by "
    lead += f"a tested margin ({reference.text.get(requested, 'not in the cells')})"
    if reference.stem is not None:
        return (
            f"{lead}. The CKA findings use the best-learning arm `{reference.stem}` as the "
            f"reference instead ({reference.text[reference.stem]})."
        )
    best = [s for s in reference.text if s != requested]
    tail = f"; nor is the best-learning arm `{best[0]}` ({reference.text[best[0]]})" if best else ""
    return (
        f"{lead}{tail}. No arm is shown to have learned, so no CKA comparison here says how far a "
        "stem change reaches."
    )


def _floor_stats(floor: pd.DataFrame, stem: str, layers: list[str]) -> pd.DataFrame:
    rows = floor[floor["stem"] == stem].groupby("layer")["cka"]
    return rows.agg(["mean", "min", "max"]).reindex(layers)


def _state(table: pd.DataFrame, state: str) -> pd.DataFrame:
    if "state" not in table:
        return table if state == "trained" else table.iloc[:0]
    return table[table["state"] == state]


def _parts(table: pd.DataFrame, backbone: str, reference: str) -> dict[str, pd.DataFrame]:
    """The reference's rows of one backbone: versus (trained / init) and the trained floors."""
    table = table[table["backbone"] == backbone] if "backbone" in table else table
    pairs = table[(table["comparison"] == "stem_pair") & (table["reference"] == reference)]
    floor = table[table["comparison"] == "same_stem_other_seed"]
    return {
        "versus": _state(pairs, "trained"),
        "versus_init": _state(pairs, "init"),
        "floor": _state(floor, "trained"),
    }


def _backbones(view: StudyView, table: pd.DataFrame) -> list[str]:
    if "backbone" in table and table["backbone"].notna().any():
        return list(dict.fromkeys(table["backbone"].dropna()))
    trained = view.trained()
    return list(dict.fromkeys(trained["backbone"])) if not trained.empty else [""]


def _figure_name(view: StudyView, base: str, backbone: str) -> str:
    from stemlab.probes._plots import slug

    return base if view.single_backbone() else f"{base}_{slug(backbone)}"


def _by_stage_figure(
    view: StudyView, parts: dict[str, pd.DataFrame], reference: str, backbone: str
) -> FigureSpec | None:
    versus, versus_init, floor = parts["versus"], parts["versus_init"], parts["floor"]
    if versus.empty:
        return None
    layers = list(dict.fromkeys(versus["layer"]))
    stems = list(dict.fromkeys(versus["stem"]))
    x = np.arange(len(layers))
    where = "" if view.single_backbone() else f" on {backbone}"

    def make() -> Figure:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        columns = min(3, len(stems))
        rows = -(-len(stems) // columns)
        figure = new_figure(3.6 * columns + 0.4, 2.9 * rows + 0.8)
        axes = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
        base = _floor_stats(floor, reference, layers)
        for ax, stem in zip(axes.flat, stems):
            if base["mean"].notna().any():
                ax.fill_between(x, base["min"], base["max"], color="gray", alpha=0.25, lw=0)
                ax.plot(x, base["mean"], color="gray", ls="--", lw=1.2)
            own = _floor_stats(floor, stem, layers)
            if own["mean"].notna().any():
                ax.fill_between(x, own["min"], own["max"], color="C0", alpha=0.15, lw=0)
                ax.plot(x, own["mean"], color="C0", ls=":", lw=1.5)
            untrained = versus_init[versus_init["stem"] == stem].groupby("layer")["cka"].mean()
            if not untrained.empty:
                ax.plot(x, untrained.reindex(layers), color="black", ls="-.", lw=1, marker="x")
            stats = versus[versus["stem"] == stem].groupby("layer")["cka"]
            stats = stats.agg(["mean", "min", "max"]).reindex(layers)
            ax.errorbar(
                x,
                stats["mean"],
                yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                color="C3",
                marker="o",
                ms=4,
                capsize=3,
            )
            ax.set_title(f"{stem} vs {reference}", fontsize=9)
            ax.set_ylim(-0.1, 1.05)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xticks(x, layers, rotation=30, ha="right", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel("linear CKA (probe clips)", fontsize=8)
        for ax in list(axes.flat)[len(stems) :]:
            ax.set_visible(False)
        handles = [
            Line2D([], [], color="C3", marker="o", label=f"stem vs {reference}, same seed"),
            Line2D([], [], color="black", ls="-.", marker="x", label="same pair before training"),
            Patch(color="C0", alpha=0.3, label="stem vs itself, other seed (floor)"),
            Patch(color="gray", alpha=0.4, label=f"{reference} vs itself, other seed (floor)"),
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
        figure.suptitle(
            f"How far down does changing the stem reach{where}? (reference stem: {reference})",
            fontsize=10,
        )
        return figure

    seeds = int(versus["seed"].nunique())
    return FigureSpec(
        _figure_name(view, "cka_by_stage", backbone),
        "Minibatch linear CKA (unbiased HSIC, Nguyen et al. 2021) between each stem's trained "
        f"model and the `{reference}` model of the same seed, per layer (red: mean over {seeds} "
        "seeds, bars min..max; black dash-dot: the same two models before training). Floors: CKA "
        f"between two seeds of the same stem (blue: that stem, grey: `{reference}`; line mean, "
        "band min..max). A stem change reaches a layer where the red points sit below both "
        "floors.",
        make,
    )


def _matrix_figure(
    view: StudyView, table: pd.DataFrame, backbone: str, reference: str | None
) -> FigureSpec | None:
    rows = table[table["backbone"] == backbone] if "backbone" in table else table
    if rows.empty or not (rows["comparison"] == "stem_pair").any():
        return None
    matrix = cka_matrix(rows)
    stems = list(dict.fromkeys(rows["stem"]))
    layers = list(dict.fromkeys(rows["layer"]))
    seeds = int(rows.loc[rows["comparison"] == "stem_pair", "seed"].nunique())
    where = "" if view.single_backbone() else f" on {backbone}"
    from stemlab.probes.figures_channels import plot_cka_matrix

    return FigureSpec(
        _figure_name(view, "cka_matrix", backbone),
        "Stem x stem linear CKA per layer role (probe clips): off the diagonal, CKA between the "
        f"two stems' models of the same seed, mean over {seeds} seeds; on the diagonal (red "
        "outline), the seed-to-seed floor: two seeds of the same stem, mean over seed pairs. Top "
        "row: trained models; bottom row: the same models before training (what the "
        "architectures alone give)."
        + (f" Bold: the CKA reference `{reference}`." if reference else ""),
        lambda: plot_cka_matrix(
            matrix,
            stems=stems,
            layers=layers,
            title=f"Stem x stem CKA{where}, seed-paired",
            reference=reference,
        ),
    )


def _cka_figures(view: StudyView) -> list[FigureSpec]:
    table = view.tables.get("cka")
    if table is None or table.empty or "reference" not in table:
        return []
    specs = []
    for backbone in _backbones(view, table):
        reference = cka_reference(view, backbone).stem
        if reference is not None:
            spec = _by_stage_figure(view, _parts(table, backbone, reference), reference, backbone)
            if spec is not None:
                specs.append(spec)
        spec = _matrix_figure(view, table, backbone, reference)
        if spec is not None:
            specs.append(spec)
    return specs


def _welch_below(view: StudyView, ours: np.ndarray, noise: np.ndarray) -> pd.Series:
    long = pd.DataFrame(
        {
            "arm": ["floor"] * len(noise) + ["stem"] * len(ours),
            "pair": [f"f{i}" for i in range(len(noise))] + [f"s{i}" for i in range(len(ours))],
            "value": np.r_[noise, ours],
        }
    )
    return view.compare(long, metric="value", by="arm", baseline="floor", pair_by="pair").iloc[0]


def _reach_lines(
    view: StudyView, parts: dict[str, pd.DataFrame], reference: str, where: str
) -> list[str]:
    versus, versus_init, floor = parts["versus"], parts["versus_init"], parts["floor"]
    if versus.empty or floor.empty:
        return []
    layers = list(dict.fromkeys(versus["layer"]))
    stems = list(dict.fromkeys(versus["stem"]))
    level = 0.05 / len(stems)  # Bonferroni over stems; within a stem a fixed sequence of layers
    n = int(versus["seed"].nunique())
    parts_text, quiet = [], []
    for stem in stems:
        group = versus[versus["stem"] == stem]
        reached: list[tuple[str, list[pd.Series], float]] = []
        for layer in layers:  # from the stem output down; stop at the first layer not reached
            ours = group.loc[group["layer"] == layer, "cka"].to_numpy()
            at_layer = floor[floor["layer"] == layer]
            own = at_layer.loc[at_layer["stem"] == stem, "cka"].to_numpy()
            base = at_layer.loc[at_layer["stem"] == reference, "cka"].to_numpy()
            if len(ours) < 2 or len(own) < 2 or len(base) < 2:
                break
            rows = [_welch_below(view, ours, own), _welch_below(view, ours, base)]
            # intersection-union: below both floors only if each one-sided claim holds
            p = max(r["p_value"] for r in rows) if all(r["diff"] < 0 for r in rows) else 1.0
            if not p <= level:
                break
            reached.append((layer, rows, p))
        if not reached:
            quiet.append(stem)
            continue
        layer, (own, base), p = reached[-1]
        untrained = versus_init[(versus_init["stem"] == stem) & (versus_init["layer"] == layer)]
        before = f", before training {untrained['cka'].mean():.2f}" if not untrained.empty else ""
        parts_text.append(
            f"`{stem}` down to {layer} ({', '.join(h[0] for h in reached)}; at {layer} CKA "
            f"{own['mean_b']:.2f}{before}, against floors {own['mean_a']:.2f} ({stem}) and "
            f"{base['mean_a']:.2f} ({reference}), p {p:.2g})"
        )
    lines = []
    if parts_text:
        lines.append(
            f"CKA{where} to the `{reference}` model of the same seed is below both seed-to-seed "
            f"floors (the stem's own and `{reference}`'s) for: {'; '.join(parts_text)}. Welch t "
            "against each floor (intersection-union), layers tested in order from the stem "
            f"output, Bonferroni over {len(stems)} stems, n={n} seeds."
        )
    if quiet:
        lines.append(
            f"CKA{where}: for {', '.join(f'`{s}`' for s in quiet)} not even the stem output is "
            f"below both floors at n={n}."
        )
    return lines


def _matrix_line(table: pd.DataFrame, backbone: str, where: str) -> str | None:
    rows = table[table["backbone"] == backbone] if "backbone" in table else table
    pairs = rows[rows["comparison"] == "stem_pair"]
    if pairs.empty:
        return None
    floor = rows[rows["comparison"] == "same_stem_other_seed"]
    layers = list(dict.fromkeys(pairs["layer"]))
    count = len({frozenset(pair) for pair in zip(pairs["stem"], pairs["reference"])})
    values = []
    for layer in layers:
        trained = _state(pairs, "trained")
        init = _state(pairs, "init")
        floors = _state(floor, "trained")
        part = [trained.loc[trained["layer"] == layer, "cka"].mean()]
        part.append(init.loc[init["layer"] == layer, "cka"].mean())
        part.append(floors.loc[floors["layer"] == layer, "cka"].mean())
        values.append(f"{layer} " + " / ".join("-" if np.isnan(v) else f"{v:.2f}" for v in part))
    return (
        f"Seed-paired stem x stem CKA{where}, mean over the {count} stem pair"
        f"{'s' if count != 1 else ''} and their seeds "
        "(trained / the same pairs before training / seed-to-seed floor, mean over stems): "
        + "; ".join(values)
        + ". Before training the CKA is what the architectures alone give; a trained pair above "
        "it is one training made alike."
    )


def _cka_findings(view: StudyView) -> list[str]:
    table = view.tables.get("cka")
    if table is None or table.empty or view.compare is None or "reference" not in table:
        return []
    lines: list[str] = []
    for backbone in _backbones(view, table):
        where = "" if view.single_backbone() else f" on `{backbone}`"
        reference = cka_reference(view, backbone)
        line = _reference_line(reference, where)
        if line:
            lines.append(line)
        if reference.stem is not None:
            lines += _reach_lines(
                view, _parts(table, backbone, reference.stem), reference.stem, where
            )
        line = _matrix_line(table, backbone, where)
        if line:
            lines.append(line)
    return lines


def _cka_check(config: Mapping[str, Any]) -> None:
    """Before the first cell: the probe batch must hold at least 4 clips (unbiased HSIC)."""
    samples = int(dict(config.get("probe_options") or {}).get("probe_samples", 128))
    data = config.get("data") or {}
    val = data.get("val_samples")
    clips = min(samples, int(val)) if isinstance(val, int) else samples
    if clips < MIN_UNBIASED_SAMPLES:
        raise ValueError(
            f"probe 'cka' needs at least {MIN_UNBIASED_SAMPLES} probe clips, but the study "
            f"gives {clips} (probe_options['probe_samples']={samples}, data['val_samples']="
            f"{val}); raise them or drop 'cka' from probes"
        )


register_probe(
    StudyProbe(
        name="cka",
        description="Gram matrices on the probe clips; CKA between stems and seeds (report)",
        run=_cka_run,
        needs=frozenset({"data"}),
        combine=_cka_combine,
        figures=_cka_figures,
        findings=_cka_findings,
        tables=("cka", "cka_matrix"),
        order=83,
        check=_cka_check,
    )
)
