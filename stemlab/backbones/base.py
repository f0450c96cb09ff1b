"""What every backbone shares: the stem slot, input validation and the ``feature_info`` contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from stemlab._validation import check_int_tuple, check_positive_float, check_positive_int
from stemlab.backbones.layout import Stage

__all__ = ["Backbone", "stage_widths"]

_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Backbone(nn.Module):
    """Base class of stemlab's backbones.

    Subclasses set ``self.stem`` (a module with ``in_channels``, ``out_channels``, ``stride``),
    ``input_rank`` (5 for clips, 4 for images) and their stages: ``stage_records``, one
    :class:`~stemlab.backbones.layout.Stage` per stage (``stemlab.anatomy`` reads them). Assigning
    ``feature_info`` (one dict per stage with ``module``, ``num_chs``, ``reduction``) sets them;
    reading it gives a fresh list of dicts, a thin view for timm-style code. ``time_folded`` is
    True where the stages run on frames folded into the batch.
    """

    input_rank: int = 5
    time_folded: bool = False
    stage_records: tuple[Stage, ...] = ()

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """The stages as timm-style dicts (a copy: assign to change them)."""
        return [stage.as_feature_info() for stage in self.stage_records]

    @feature_info.setter
    def feature_info(self, entries: Sequence[dict[str, Any]]) -> None:
        self.stage_records = tuple(Stage.from_feature_info(entry) for entry in entries)

    @property
    def in_channels(self) -> int:
        """Input channels the stem expects."""
        return self.stem.in_channels

    def check_input(self, x: Any) -> None:
        """Raise if ``x`` is not a tensor of the layout this model takes.

        Raises:
            TypeError: if ``x`` is not a tensor.
            ValueError: wrong rank, channel count, dtype (float32, float16 or bfloat16), or an
                empty batch; the message names what is expected.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _INPUT_DTYPES:
            # a model converted with .double() takes the dtype of its own parameters
            own = next((p.dtype for p in self.parameters() if p.is_floating_point()), None)
            if x.dtype != own:
                raise ValueError(
                    f"{type(self).__name__} takes float32, float16 or bfloat16 input, got dtype "
                    f"{str(x.dtype).removeprefix('torch.')}"
                    + ("; scale uint8 pixels to floats first" if x.dtype == torch.uint8 else "")
                )
        layout = "(N, C, T, H, W) video clip" if self.input_rank == 5 else "(N, C, H, W) image"
        if x.dim() != self.input_rank:
            hint = ""
            if self.input_rank == 5 and x.dim() == 4:
                hint = "; for a single clip add the batch dimension with x.unsqueeze(0)"
            raise ValueError(
                f"{type(self).__name__} expects a {self.input_rank}-D {layout} with "
                f"C={self.in_channels}, got shape {_shape(x)}{hint}"
            )
        if x.shape[0] == 0:
            raise ValueError(
                f"{type(self).__name__} got an empty batch (N=0), shape {_shape(x)}; "
                "pass at least one sample"
            )
        if x.shape[1] != self.in_channels:
            hint = ""
            if self.input_rank == 5 and x.shape[2] == self.in_channels:
                hint = "; the clip looks like (N, T, C, H, W): use x.transpose(1, 2)"
            raise ValueError(
                f"{type(self).__name__} expects a {layout} with C={self.in_channels} channels "
                f"in dim 1, got shape {_shape(x)}{hint}"
            )


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    """``x.shape`` as plain ints (under a jit trace its entries are tensors)."""
    return tuple(int(size) for size in x.shape)


def stage_widths(
    widths: Sequence[int], width_multiplier: float, *, num_stages: int
) -> tuple[int, ...]:
    """Stage widths after the multiplier (rounded, at least 1).

    Raises:
        TypeError / ValueError: malformed ``widths`` or a non-positive multiplier.
    """
    base = check_int_tuple(
        "widths", tuple(widths) if isinstance(widths, list) else widths, num_stages
    )
    multiplier = check_positive_float("width_multiplier", width_multiplier)
    return tuple(max(1, round(w * multiplier)) for w in base)


def stage_depths(layers: Sequence[int], *, num_stages: int) -> tuple[int, ...]:
    """Blocks per stage, validated."""
    depths = check_int_tuple(
        "layers", tuple(layers) if isinstance(layers, list) else layers, num_stages
    )
    return depths


def check_num_classes(num_classes: int) -> int:
    """Validate ``num_classes``."""
    return check_positive_int("num_classes", num_classes)


def check_dropout(dropout: float) -> float:
    """Validate a dropout probability in [0, 1)."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(f"dropout must be a number, got {type(dropout).__name__} {dropout!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)
