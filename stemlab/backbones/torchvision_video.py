"""torchvision's modern video models as backbones that take any stem: S3D, MViT v1/v2, Swin3D.

With their native stems they are torchvision's ``s3d``, ``mvit_v1_b``, ``mvit_v2_s`` and
``swin3d_t/s/b`` tensor for tensor: the same modules (torchvision's own blocks), state-dict keys and
forward, so torchvision's checkpoints load strictly and give the same logits. Differences:

- S3D's stem is ``features.0`` (a stem by the stem contract); ``features.2``, the 1x1x1 conv after
  the first pool, takes the stem's width. Widths scale by ``width_multiplier`` and the three
  inception groups keep ``inception_blocks`` blocks each. Feature maps smaller than the final
  (2, 7, 7) average pool are averaged whole instead of failing.
- MViT's and Swin3D's patch embeddings (``conv_proj``, ``patch_embed``) are the stem slot. A stem
  of another width or stride enters through :class:`TokenStem`, a stem-to-tokens adapter: a conv
  with kernel = stride = (native stride / stem stride) projecting to the embedding width, so the
  token grid (and MViT's position embeddings) stay as they were. Where the stem's stride does not
  divide the native one, the model is built for the stem's own token grid (MViT's position
  embeddings sized for it; :func:`interpolate_mvit_positions` resizes a checkpoint's).
- Depth, width and heads scale by kwargs (``depths``, ``embed_dim``, ``num_heads``, and for MViT
  ``spatial_size`` / ``temporal_size``, the input it is built for).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.video.mvit import MSBlockConfig
from torchvision.models.video.mvit import MViT as _TorchvisionMViT
from torchvision.models.video.s3d import SepInceptionBlock3D, TemporalSeparableConv
from torchvision.models.video.swin_transformer import SwinTransformer3d
from torchvision.ops.misc import Conv3dNormActivation

from stemlab._validation import check_int_tuple, check_positive_int
from stemlab.backbones.base import (
    Backbone,
    check_dropout,
    check_num_classes,
    stage_depths,
)
from stemlab.backbones.layout import Layout
from stemlab.backbones.registry import register_backbone
from stemlab.stems.base import check_stem

__all__ = [
    "S3D",
    "MViT",
    "Swin3d",
    "TokenStem",
    "interpolate_mvit_positions",
    "mvit_block_setting",
    "mvit_v1_b",
    "mvit_v2_s",
    "s3d",
    "swin3d_b",
    "swin3d_s",
    "swin3d_t",
]

_TemporalSeparableConv = TemporalSeparableConv  # torchvision's type of the native S3D stem

# S3D's inception blocks (Inception-v1 widths): (branch0, branch1 mid, branch1, branch2 mid,
# branch2, branch3) in three groups separated by max-pools
_S3D_GROUPS: tuple[tuple[tuple[int, ...], ...], ...] = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),
    (
        (192, 96, 208, 16, 48, 64),
        (160, 112, 224, 24, 64, 64),
        (128, 128, 256, 24, 64, 64),
        (112, 144, 288, 32, 64, 64),
        (256, 160, 320, 32, 128, 128),
    ),
    ((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)),
)
_S3D_POOL = (2, 7, 7)


class S3D(Backbone):
    """S3D (Xie et al. 2018): separable 3-D inception network; ``features.0`` is the stem.

    Args:
        stem: a video stem.
        num_classes: classifier size.
        dropout: dropout before the 1x1x1 classifier conv.
        width_multiplier: scales every width after the stem.
        inception_blocks: blocks kept in each of the three inception groups (at most 2, 5, 2).
    """

    def __init__(
        self,
        *,
        stem: nn.Module,
        num_classes: int = 400,
        dropout: float = 0.2,
        width_multiplier: float = 1.0,
        inception_blocks: Sequence[int] = (2, 5, 2),
    ) -> None:
        super().__init__()
        check_stem(stem)
        if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)):
            raise TypeError(f"width_multiplier must be a number, got {width_multiplier!r}")
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be > 0, got {width_multiplier!r}")
        blocks = stage_depths(inception_blocks, num_stages=3)
        limits = tuple(len(g) for g in _S3D_GROUPS)
        if any(b > limit for b, limit in zip(blocks, limits)):
            raise ValueError(f"inception_blocks must be at most {limits} per group, got {blocks}")

        def w(c: int) -> int:
            return max(1, round(c * width_multiplier))

        norm = partial(nn.BatchNorm3d, eps=0.001, momentum=0.001)
        layers: list[nn.Module] = [
            stem,
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            Conv3dNormActivation(
                stem.out_channels, w(64), kernel_size=1, stride=1, norm_layer=norm
            ),
            TemporalSeparableConv(w(64), w(192), 3, 1, 1, norm),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        ]
        t, h = stem.stride[0], stem.stride[1]
        info = [
            {"module": "features.0", "num_chs": stem.out_channels, "reduction": stem.stride},
            {"module": "features.3", "num_chs": w(192), "reduction": (t, 2 * h, 2 * h)},
        ]
        inplanes = w(192)
        pools = (
            nn.MaxPool3d(kernel_size=(3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1)),
            nn.MaxPool3d(kernel_size=(2, 2, 2), stride=(2, 2, 2), padding=(0, 0, 0)),
        )
        reduction = (t, 4 * h, 4 * h)
        for group, (rows, kept) in enumerate(zip(_S3D_GROUPS, blocks)):
            if group:
                layers.append(pools[group - 1])
                reduction = tuple(2 * r for r in reduction)
            for row in rows[:kept]:
                b0, b1m, b1, b2m, b2, b3 = (w(c) for c in row)
                layers.append(SepInceptionBlock3D(inplanes, b0, b1m, b1, b2m, b2, b3, norm))
                inplanes = b0 + b1 + b2 + b3
            info.append(
                {
                    "module": f"features.{len(layers) - 1}",
                    "num_chs": inplanes,
                    "reduction": reduction,
                }
            )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AvgPool3d(kernel_size=_S3D_POOL, stride=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=check_dropout(dropout)),
            nn.Conv3d(inplanes, check_num_classes(num_classes), kernel_size=1, stride=1, bias=True),
        )
        self.feature_info = info

    @property
    def stem(self) -> nn.Module:
        """The stem (``features.0``)."""
        return self.features[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.features(x)
        if all(s >= k for s, k in zip(x.shape[2:], _S3D_POOL)):
            x = self.avgpool(x)
        else:  # a map smaller than the pool: average what there is
            x = F.avg_pool3d(x, tuple(min(s, k) for s, k in zip(x.shape[2:], _S3D_POOL)), 1)
        x = self.classifier(x)
        return torch.mean(x, dim=(2, 3, 4))


class TokenStem(nn.Module):
    """A stem followed by a projection to a transformer's embedding width and patch stride.

    ::

        x -> stem (N, C, T', H', W') -> Conv3d(C -> width, kernel = stride = ratio) -> tokens

    ``ratio`` is ``stride / stem.stride`` per dimension, so the token grid is the native one.

    Args:
        stem: a video stem whose stride divides ``stride``.
        width: the embedding width.
        stride: the transformer's patch stride ``(t, h, w)``.

    Raises:
        ValueError: a stem stride that does not divide ``stride``.
    """

    def __init__(self, stem: nn.Module, *, width: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        check_stem(stem)
        if len(stem.stride) != 3 or any(n % s for n, s in zip(stride, stem.stride)):
            raise ValueError(
                f"stem stride {tuple(stem.stride)} does not divide the patch stride {stride}"
            )
        ratio = tuple(n // s for n, s in zip(stride, stem.stride))
        self.stem = stem
        self.proj = nn.Conv3d(stem.out_channels, width, kernel_size=ratio, stride=ratio)
        self.in_channels, self.out_channels, self.stride = stem.in_channels, width, tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x))


def _tokens(stem: nn.Module, width: int, native: tuple[int, int, int]) -> nn.Module:
    """The stem as it is when it already gives ``width`` channels at ``native`` stride or where
    the strides do not divide (the caller then builds for the stem's grid); else a TokenStem."""
    check_stem(stem)
    if len(stem.stride) != 3:
        raise TypeError(f"transformer backbones take video stems, got stride {stem.stride}")
    if stem.out_channels == width and tuple(stem.stride) == native:
        return stem
    if any(n % s for n, s in zip(native, stem.stride)):
        if stem.out_channels == width:
            return stem
        return TokenStem(stem, width=width, stride=tuple(stem.stride))
    return TokenStem(stem, width=width, stride=native)


def mvit_block_setting(
    version: int,
    *,
    depths: Sequence[int] = (1, 2, 11, 2),
    embed_dim: int = 96,
    num_heads: int = 1,
    kv_stride: int = 8,
) -> list[MSBlockConfig]:
    """MViT's per-block configuration (Table 1 of the papers), as torchvision's builders set it.

    Widths and heads double from stage to stage; the first block of stages 2-4 pools queries by
    (1, 2, 2) and the key/value stride shrinks by 2 per stage from ``(1, kv_stride, kv_stride)``.
    v1 widens in the last block of a stage, v2 in the first block of the next (with a query
    kernel everywhere).

    Raises:
        ValueError / TypeError: a version other than 1 or 2, or malformed options.
    """
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    depths = stage_depths(depths, num_stages=4)
    check_positive_int("embed_dim", embed_dim)
    check_positive_int("num_heads", num_heads)
    check_positive_int("kv_stride", kv_stride)
    dims = [embed_dim * 2**s for s in range(4)]
    settings = []
    for s, depth in enumerate(depths):
        kv = [1, max(1, kv_stride // 2**s), max(1, kv_stride // 2**s)]
        for j in range(depth):
            pool = j == 0 and s > 0
            if version == 2:
                cin = dims[s - 1] if pool else dims[s]
                cout = dims[s]
                kernel_q, stride_q = [3, 3, 3], [1, 2, 2] if pool else [1, 1, 1]
            else:
                cin = dims[s]
                cout = dims[s + 1] if j == depth - 1 and s < 3 else dims[s]
                kernel_q, stride_q = ([3, 3, 3], [1, 2, 2]) if pool else ([], [])
            settings.append(
                MSBlockConfig(
                    num_heads=num_heads * 2**s,
                    input_channels=cin,
                    output_channels=cout,
                    kernel_q=kernel_q,
                    kernel_kv=[3, 3, 3],
                    stride_q=stride_q,
                    stride_kv=kv,
                )
            )
    return settings


class MViT(Backbone):
    """Multiscale Vision Transformer (v1: Fan et al. 2021; v2: Li et al. 2022); ``conv_proj`` is the stem.

    Args:
        stem: a video stem (native: ``mvit_patch``).
        version: 1 or 2.
        num_classes: classifier size.
        depths: blocks per stage.
        embed_dim: width of the first stage (doubling per stage).
        num_heads: heads of the first stage (doubling per stage).
        spatial_size: input ``(H, W)`` the position embeddings are built for.
        temporal_size: input ``T``.
        dropout: dropout before the head.
        stochastic_depth_prob: the last block's stochastic depth (linear in depth).
    """

    _NATIVE_STRIDE = (2, 4, 4)

    def __init__(
        self,
        *,
        stem: nn.Module,
        version: int,
        num_classes: int = 400,
        depths: Sequence[int] = (1, 2, 11, 2),
        embed_dim: int = 96,
        num_heads: int = 1,
        spatial_size: Sequence[int] = (224, 224),
        temporal_size: int = 16,
        dropout: float = 0.5,
        stochastic_depth_prob: float = 0.2,
    ) -> None:
        super().__init__()
        setting = mvit_block_setting(
            version, depths=depths, embed_dim=embed_dim, num_heads=num_heads
        )
        spatial = check_int_tuple("spatial_size", tuple(spatial_size), 2)
        check_positive_int("temporal_size", temporal_size)
        tokens = _tokens(stem, embed_dim, self._NATIVE_STRIDE)
        model = _TorchvisionMViT(
            spatial_size=spatial,
            temporal_size=temporal_size,
            block_setting=setting,
            residual_pool=version == 2,
            residual_with_cls_embed=False,
            rel_pos_embed=version == 2,
            proj_after_attn=version == 2,
            dropout=check_dropout(dropout),
            stochastic_depth_prob=stochastic_depth_prob,
            num_classes=check_num_classes(num_classes),
            patch_embed_stride=tuple(tokens.stride),
        )
        # the stem goes in after torchvision's init loop, which would re-initialise its layers
        self.conv_proj = tokens
        self.pos_encoding = model.pos_encoding
        self.blocks = model.blocks
        self.norm = model.norm
        self.head = model.head
        self.version = version
        self.input_size = (temporal_size, *spatial)
        grid = tuple(s // r for s, r in zip(self.input_size, tokens.stride))
        self.token_grid = grid
        info = [{"module": "conv_proj", "num_chs": embed_dim, "reduction": tuple(tokens.stride)}]
        end = -1
        reduction = tuple(tokens.stride)
        for s, depth in enumerate(stage_depths(depths, num_stages=4)):
            end += depth
            if s:
                reduction = (reduction[0], 2 * reduction[1], 2 * reduction[2])
            info.append(
                {
                    "module": f"blocks.{end}",
                    "num_chs": setting[end].output_channels,
                    "reduction": reduction,
                    "tokens": True,
                }
            )
        self.feature_info = info

    @property
    def stem(self) -> nn.Module:
        """The stem (``conv_proj``, or the stem inside its :class:`TokenStem`)."""
        return self.conv_proj.stem if isinstance(self.conv_proj, TokenStem) else self.conv_proj

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"this MViT was built for (T, H, W) = {self.input_size} (its position "
                f"embeddings), got input shape {tuple(x.shape)}; build it with "
                "spatial_size=(H, W), temporal_size=T"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = self.pos_encoding(x)
        thw = (self.pos_encoding.temporal_size, *self.pos_encoding.spatial_size)
        for block in self.blocks:
            x, thw = block(x, thw)
        x = self.norm(x)
        return self.head(x[:, 0])


def interpolate_mvit_positions(
    state: dict[str, torch.Tensor], grid: Sequence[int], *, prefix: str = "pos_encoding."
) -> dict[str, torch.Tensor]:
    """A checkpoint's MViT-v1 position embeddings resized to the token grid ``(T', H', W')``.

    The spatial table ``(H*W, C)`` is resized bilinearly on its ``(H, W)`` grid (square grids
    assumed, as in torchvision's), the temporal table ``(T, C)`` linearly (``align_corners=False``).

    Args:
        state: the state dict (not modified).
        grid: the new token grid.
        prefix: the position encoding's prefix.

    Returns:
        A copy of ``state`` with resized ``spatial_pos`` and ``temporal_pos``.

    Raises:
        ValueError: the state has no position embeddings, or a non-square spatial table.
    """
    t, h, w = check_int_tuple("grid", tuple(grid), 3)
    spatial_key, temporal_key = prefix + "spatial_pos", prefix + "temporal_pos"
    if spatial_key not in state or temporal_key not in state:
        raise ValueError(
            f"no {spatial_key} / {temporal_key} in the state dict (MViT-v2 uses relative "
            "positions, sized by the model; only v1 has absolute tables)"
        )
    spatial, temporal = state[spatial_key], state[temporal_key]
    side = round(spatial.shape[0] ** 0.5)
    if side * side != spatial.shape[0]:
        raise ValueError(f"{spatial_key} has {spatial.shape[0]} positions, not a square grid")
    table = spatial.T.reshape(1, -1, side, side)
    table = F.interpolate(table, size=(h, w), mode="bilinear", align_corners=False)
    times = F.interpolate(temporal.T[None], size=t, mode="linear", align_corners=False)
    out = dict(state)
    out[spatial_key] = table.reshape(spatial.shape[1], h * w).T.contiguous()
    out[temporal_key] = times[0].T.contiguous()
    return out


class Swin3d(Backbone):
    """Video Swin Transformer (Liu et al. 2022); ``patch_embed`` is the stem.

    Args:
        stem: a video stem (native: ``swin_patch``).
        num_classes: classifier size.
        embed_dim: width of the first stage (doubling per stage).
        depths: blocks per stage.
        num_heads: heads per stage.
        window_size: attention window ``(t, h, w)``.
        stochastic_depth_prob: the last block's stochastic depth.
        dropout: dropout after the patch embedding and in the MLPs.
        attention_dropout: dropout on attention weights.
    """

    _NATIVE_STRIDE = (2, 4, 4)

    def __init__(
        self,
        *,
        stem: nn.Module,
        num_classes: int = 400,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: Sequence[int] = (8, 7, 7),
        stochastic_depth_prob: float = 0.1,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive_int("embed_dim", embed_dim)
        depths = check_int_tuple("depths", tuple(depths), len(tuple(depths)))
        heads = check_int_tuple("num_heads", tuple(num_heads), len(depths))
        window = check_int_tuple("window_size", tuple(window_size), 3)
        tokens = _tokens(stem, embed_dim, self._NATIVE_STRIDE)
        model = SwinTransformer3d(
            patch_size=list(self._NATIVE_STRIDE),
            embed_dim=embed_dim,
            depths=list(depths),
            num_heads=list(heads),
            window_size=list(window),
            stochastic_depth_prob=stochastic_depth_prob,
            dropout=check_dropout(dropout),
            attention_dropout=attention_dropout,
            num_classes=check_num_classes(num_classes),
        )
        self.patch_embed = tokens  # after torchvision's init loop (it re-initialises Linears)
        self.pos_drop = model.pos_drop
        self.features = model.features
        self.norm = model.norm
        self.avgpool = model.avgpool
        self.head = model.head
        info = [{"module": "patch_embed", "num_chs": embed_dim, "reduction": tuple(tokens.stride)}]
        reduction = tuple(tokens.stride)
        for s in range(len(depths)):
            if s:
                reduction = (reduction[0], 2 * reduction[1], 2 * reduction[2])
            info.append(
                {
                    "module": f"features.{2 * s}",
                    "num_chs": embed_dim * 2**s,
                    "reduction": reduction,
                    "tokens": True,
                }
            )
        self.feature_info = info

    @property
    def stem(self) -> nn.Module:
        """The stem (``patch_embed``, or the stem inside its :class:`TokenStem`)."""
        return (
            self.patch_embed.stem if isinstance(self.patch_embed, TokenStem) else self.patch_embed
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.patch_embed(x).permute(0, 2, 3, 4, 1)  # channels last: (N, T, H, W, C)
        x = self.pos_drop(x)
        x = self.features(x)
        x = self.norm(x).permute(0, 4, 1, 2, 3)
        return self.head(torch.flatten(self.avgpool(x), 1))


@register_backbone(
    "s3d",
    default_stem="s3d",
    layout=Layout(
        stem="features.0",
        first_block="features.2",
        head="classifier.1",
        torchvision_weights="S3D_Weights",
    ),
)
def s3d(
    *,
    stem: nn.Module,
    num_classes: int = 400,
    dropout: float = 0.2,
    width_multiplier: float = 1.0,
    inception_blocks: Sequence[int] = (2, 5, 2),
) -> S3D:
    """S3D (torchvision's s3d): separable 3-D inception blocks; features.0 is the stem."""
    return S3D(
        stem=stem,
        num_classes=num_classes,
        dropout=dropout,
        width_multiplier=width_multiplier,
        inception_blocks=inception_blocks,
    )


def _mvit_layout(weights: str) -> Layout:
    return Layout(
        stem="conv_proj", first_block="blocks.0", head="head.1", torchvision_weights=weights
    )


def _mvit_builder(name: str, version: int, weights: str, doc: str):
    def builder(
        *,
        stem: nn.Module,
        num_classes: int = 400,
        depths: Sequence[int] = (1, 2, 11, 2),
        embed_dim: int = 96,
        num_heads: int = 1,
        spatial_size: Sequence[int] = (224, 224),
        temporal_size: int = 16,
        dropout: float = 0.5,
        stochastic_depth_prob: float = 0.2,
    ) -> MViT:
        return MViT(
            stem=stem,
            version=version,
            num_classes=num_classes,
            depths=depths,
            embed_dim=embed_dim,
            num_heads=num_heads,
            spatial_size=spatial_size,
            temporal_size=temporal_size,
            dropout=dropout,
            stochastic_depth_prob=stochastic_depth_prob,
        )

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return register_backbone(name, default_stem="mvit_patch", layout=_mvit_layout(weights))(builder)


mvit_v1_b = _mvit_builder(
    "mvit_v1_b", 1, "MViT_V1_B_Weights", "MViT-v1-B (torchvision's mvit_v1_b): absolute positions."
)
mvit_v2_s = _mvit_builder(
    "mvit_v2_s", 2, "MViT_V2_S_Weights", "MViT-v2-S (torchvision's mvit_v2_s): relative positions."
)

_SWINS = {
    "swin3d_t": (96, (2, 2, 6, 2), (3, 6, 12, 24), "Swin3D_T_Weights"),
    "swin3d_s": (96, (2, 2, 18, 2), (3, 6, 12, 24), "Swin3D_S_Weights"),
    "swin3d_b": (128, (2, 2, 18, 2), (4, 8, 16, 32), "Swin3D_B_Weights"),
}


def _swin_builder(name: str):
    embed, depths0, heads0, weights = _SWINS[name]

    def builder(
        *,
        stem: nn.Module,
        num_classes: int = 400,
        embed_dim: int = embed,
        depths: Sequence[int] = depths0,
        num_heads: Sequence[int] = heads0,
        window_size: Sequence[int] = (8, 7, 7),
        stochastic_depth_prob: float = 0.1,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> Swin3d:
        return Swin3d(
            stem=stem,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            stochastic_depth_prob=stochastic_depth_prob,
            dropout=dropout,
            attention_dropout=attention_dropout,
        )

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (
        f"Video Swin {name[-1].upper()} (torchvision's {name}); patch_embed is the stem."
    )
    layout = Layout(
        stem="patch_embed", first_block="features.0.0", head="head", torchvision_weights=weights
    )
    return register_backbone(name, default_stem=f"swin_patch:width={embed}", layout=layout)(builder)


swin3d_t = _swin_builder("swin3d_t")
swin3d_s = _swin_builder("swin3d_s")
swin3d_b = _swin_builder("swin3d_b")
