"""Recurrent video backbones: a per-frame 2-D encoder vectorised over frames, then a recurrent head.

The stem runs on the clip (image stems frame-wise through :class:`~stemlab.stems.base.FrameWise`),
then frames are folded into the batch, ``(N, C, T, H, W) -> (N*T, C, H, W)``, so the 2-D stages run
once on all frames; no Python loop over time except inside the ConvLSTM recurrence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from stemlab._init import init_conv_bn_linear
from stemlab._validation import check_choice, check_positive_int
from stemlab.backbones.base import (
    Backbone,
    check_dropout,
    check_num_classes,
    stage_depths,
    stage_widths,
)
from stemlab.backbones.layout import Layout
from stemlab.backbones.registry import register_backbone
from stemlab.backbones.resnet2d import make_image_stages
from stemlab.stems.base import check_stem

__all__ = [
    "FRAME_RNNS",
    "ConvLSTM",
    "ConvLSTMCell",
    "ConvLSTMNet",
    "FrameRNN",
    "cnn_gru",
    "cnn_lstm",
    "conv_lstm",
    "frame_rnn",
]


class _FrameEncoder(Backbone):
    """Stem + 2-D stages on time-folded frames; shared by :class:`FrameRNN` and :class:`ConvLSTMNet`."""

    time_folded = True

    def _build_encoder(self, stem: nn.Module, widths: Sequence[int], layers: Sequence[int]) -> None:
        check_stem(stem)
        if len(stem.stride) != 3:
            raise TypeError("recurrent backbones take video stems; wrap image stems in FrameWise")
        self.stem = stem
        self.num_stages = len(widths)
        self.feature_info = [
            {"module": "stem", "num_chs": stem.out_channels, "reduction": stem.stride}
        ]
        self.feature_info += make_image_stages(
            self,
            in_channels=stem.out_channels,
            stem_reduction=stem.stride,
            widths=widths,
            layers=layers,
            time_folded=True,
        )

    def encode_frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, H, W) -> (N, T', C', h, w)``: stem, fold time into the batch, 2-D stages."""
        x = self.stem(x)
        n, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(n * t, c, h, w)
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return x.reshape(n, t, *x.shape[1:])

    def feature_lengths(
        self, lengths: torch.Tensor | Sequence[int] | None, x: torch.Tensor, steps: int
    ) -> torch.Tensor | None:
        """Valid feature steps per clip from valid input frames (``ceil(length / stem t-stride)``).

        Raises:
            TypeError / ValueError: ``lengths`` not integer, wrong shape, or outside ``[1, T]``.
        """
        if lengths is None:
            return None
        n, frames = x.shape[0], x.shape[2]
        lengths = torch.as_tensor(lengths)
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
        if lengths.shape != (n,):
            raise ValueError(
                f"lengths must have shape ({n},) (one per clip), got {tuple(lengths.shape)}"
            )
        if bool((lengths < 1).any()) or bool((lengths > frames).any()):
            raise ValueError(
                f"lengths must be in [1, {frames}] (the clip length), got {lengths.tolist()}"
            )
        stride = self.stem.stride[0]
        return torch.clamp((lengths.cpu() + stride - 1) // stride, 1, steps)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame feature maps ``(N, T', C', h, w)``."""
        return self.encode_frames(x)


class FrameRNN(_FrameEncoder):
    """stem -> 2-D stages on all frames -> spatial mean -> LSTM/GRU over time -> fc.

    ::

        clip -> stem -> fold T into N -> layer1..layerK -> avgpool -> (N, T', F) -> rnn -> h_last -> fc

    Args:
        stem: a video stem (an image stem wrapped in FrameWise, or a 3-D stem).
        widths: widths of the 2-D stages.
        layers: blocks per stage.
        rnn: ``"lstm"`` or ``"gru"``.
        hidden_size: recurrent width.
        num_layers: stacked recurrent layers.
        bidirectional: run the recurrence both ways and concatenate the final states.
        num_classes: size of the classifier.
        dropout: dropout before fc.
    """

    def __init__(
        self,
        *,
        stem: nn.Module,
        widths: Sequence[int],
        layers: Sequence[int],
        rnn: Literal["lstm", "gru"],
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self._build_encoder(stem, widths, layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        recurrent = nn.LSTM if rnn == "lstm" else nn.GRU
        self.rnn = recurrent(
            widths[-1],
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
        )
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size * self.directions, num_classes)
        init_conv_bn_linear(self.fc)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None
    ) -> torch.Tensor:
        self.check_input(x)
        frames = self.encode_frames(x)
        n, t = frames.shape[:2]
        sequence = self.avgpool(frames.flatten(0, 1)).flatten(1).reshape(n, t, -1)
        steps = self.feature_lengths(lengths, x, t)
        if steps is not None:
            sequence = pack_padded_sequence(sequence, steps, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(sequence)
        hidden = state[0] if isinstance(state, tuple) else state
        last = hidden[-self.directions :].transpose(0, 1).reshape(n, -1)
        return self.fc(self.dropout(last))


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell (Shi et al. 2015): the four gates from one conv over ``[x, h]``.

    Args:
        in_channels: channels of the input maps.
        hidden_channels: channels of the hidden and cell states.
        kernel_size: odd size of the gate convolution.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        check_positive_int("hidden_channels", hidden_channels)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the map size, got {kernel_size}")
        self.hidden_channels = hidden_channels
        self.conv = nn.Conv2d(
            in_channels + hidden_channels,
            4 * hidden_channels,
            kernel_size,
            padding=kernel_size // 2,
        )

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """Run a :class:`ConvLSTMCell` over ``(N, T, C, h, w)``; return the last valid hidden state."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size)

    def forward(self, x: torch.Tensor, steps: torch.Tensor | None = None) -> torch.Tensor:
        n, t, _, h, w = x.shape
        hidden = x.new_zeros(n, self.cell.hidden_channels, h, w)
        cell = torch.zeros_like(hidden)
        for step in range(t):
            new_hidden, new_cell = self.cell(x[:, step], (hidden, cell))
            if steps is None:
                hidden, cell = new_hidden, new_cell
            else:
                valid = (steps.to(x.device) > step).view(n, 1, 1, 1)
                hidden = torch.where(valid, new_hidden, hidden)
                cell = torch.where(valid, new_cell, cell)
        return hidden


class ConvLSTMNet(_FrameEncoder):
    """stem -> 2-D stages on all frames -> ConvLSTM over time -> global average pool -> fc.

    Args:
        stem: a video stem.
        widths: widths of the 2-D stages.
        layers: blocks per stage.
        hidden_channels: ConvLSTM state channels.
        kernel_size: ConvLSTM gate kernel.
        num_classes: size of the classifier.
        dropout: dropout before fc.
    """

    def __init__(
        self,
        *,
        stem: nn.Module,
        widths: Sequence[int],
        layers: Sequence[int],
        hidden_channels: int,
        kernel_size: int,
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self._build_encoder(stem, widths, layers)
        self.recurrent = ConvLSTM(widths[-1], hidden_channels, kernel_size)
        init_conv_bn_linear(self.recurrent, linear_std=None)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_channels, num_classes)
        init_conv_bn_linear(self.fc)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None
    ) -> torch.Tensor:
        self.check_input(x)
        frames = self.encode_frames(x)
        hidden = self.recurrent(frames, self.feature_lengths(lengths, x, frames.shape[1]))
        return self.fc(self.dropout(self.avgpool(hidden).flatten(1)))


FRAME_RNNS: dict[str, tuple[Literal["lstm", "gru"], str]] = {
    "cnn_lstm": (
        "lstm",
        "CNN+LSTM: ResNet-18 frame encoder (all frames at once) + LSTM; variable lengths supported.",
    ),
    "cnn_gru": (
        "gru",
        "CNN+GRU: ResNet-18 frame encoder (all frames at once) + GRU; variable lengths supported.",
    ),
}
"""Frame-encoder + RNN backbones: name -> (recurrent cell, description), fed to one builder."""

_FRAME_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def frame_rnn(
    rnn: Literal["lstm", "gru"],
    *,
    stem: nn.Module,
    num_classes: int = 400,
    widths: Sequence[int] = (64, 128, 256, 512),
    layers: Sequence[int] = (2, 2, 2, 2),
    width_multiplier: float = 1.0,
    hidden_size: int = 256,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
) -> FrameRNN:
    """A :class:`FrameRNN` with a ``"lstm"`` or ``"gru"`` head, options validated.

    Raises:
        ValueError / TypeError: invalid options, naming the argument.
    """
    num_stages = len(tuple(widths))
    check_num_classes(num_classes)
    check_positive_int("hidden_size", hidden_size)
    check_positive_int("num_layers", num_layers)
    check_dropout(dropout)
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional must be a bool, got {bidirectional!r}")
    return FrameRNN(
        stem=stem,
        widths=stage_widths(widths, width_multiplier, num_stages=num_stages),
        layers=stage_depths(layers, num_stages=num_stages),
        rnn=check_choice("rnn", rnn, ("lstm", "gru")),
        hidden_size=hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        num_classes=num_classes,
        dropout=dropout,
    )


def _register_frame_rnn(name: str) -> Callable[..., FrameRNN]:
    """Register the :data:`FRAME_RNNS` row ``name``."""
    rnn, description = FRAME_RNNS[name]

    def builder(
        *,
        stem: nn.Module,
        num_classes: int = 400,
        widths: Sequence[int] = (64, 128, 256, 512),
        layers: Sequence[int] = (2, 2, 2, 2),
        width_multiplier: float = 1.0,
        hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> FrameRNN:
        return frame_rnn(
            rnn,
            stem=stem,
            num_classes=num_classes,
            widths=widths,
            layers=layers,
            width_multiplier=width_multiplier,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
        )

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = description
    layout = Layout(first_block="layer1.0", head="fc", stages=_FRAME_STAGES, time_folded=True)
    return register_backbone(name, default_stem="resnet", layout=layout)(builder)


cnn_lstm = _register_frame_rnn("cnn_lstm")
cnn_gru = _register_frame_rnn("cnn_gru")


@register_backbone(
    "conv_lstm",
    default_stem="resnet",
    layout=Layout(
        first_block="layer1.0", head="fc", stages=("stem", "layer1", "layer2"), time_folded=True
    ),
)
def conv_lstm(
    *,
    stem: nn.Module,
    num_classes: int = 400,
    widths: Sequence[int] = (64, 128),
    layers: Sequence[int] = (2, 2),
    width_multiplier: float = 1.0,
    hidden_channels: int = 128,
    kernel_size: int = 3,
    dropout: float = 0.0,
) -> ConvLSTMNet:
    """ConvLSTM: 2-D stages on all frames, then a convolutional LSTM over the per-frame maps."""
    check_num_classes(num_classes)
    check_dropout(dropout)
    num_stages = len(tuple(widths))
    return ConvLSTMNet(
        stem=stem,
        widths=stage_widths(widths, width_multiplier, num_stages=num_stages),
        layers=stage_depths(layers, num_stages=num_stages),
        hidden_channels=hidden_channels,
        kernel_size=kernel_size,
        num_classes=num_classes,
        dropout=dropout,
    )
