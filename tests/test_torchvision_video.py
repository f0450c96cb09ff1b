"""torchvision's S3D, MViT v1/v2 and Swin3D as stemlab backbones: parity, stems, scaling."""

from __future__ import annotations

import pytest
import torch
import torchvision
from small_models import randomized
from torch import nn
from torchvision.models.video import mvit as tv_mvit

import stemlab
from stemlab.backbones.torchvision_video import (
    TokenStem,
    interpolate_mvit_positions,
    mvit_block_setting,
)

TV = torchvision.models.video


def _parity(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> float:
    """Strict load of torchvision's (randomised) weights; max |logit difference|."""
    randomized(theirs, seed=5).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    assert a.abs().max() > 0.1  # logits large enough for the comparison to mean something
    return float((a - b).abs().max())


def test_s3d_is_torchvision_tensor_for_tensor() -> None:
    torch.manual_seed(0)
    theirs = TV.s3d()
    ours = stemlab.create_model("s3d")
    x = torch.randn(1, 3, 16, 224, 224, generator=torch.Generator().manual_seed(0))
    assert _parity(ours, theirs, x) == 0.0
    assert isinstance(ours.stem, stemlab.stems.Stem) and ours.stem is ours.features[0]


def test_swin3d_t_is_torchvision_tensor_for_tensor() -> None:
    torch.manual_seed(0)
    theirs = TV.swin3d_t()
    ours = stemlab.create_model("swin3d_t")
    x = torch.randn(1, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    assert _parity(ours, theirs, x) == 0.0


@pytest.mark.parametrize("name", ["swin3d_s", "swin3d_b"])
def test_swin3d_s_b_have_torchvision_keys_and_shapes(name: str) -> None:
    with torch.device("meta"):
        theirs = getattr(TV, name)().state_dict()
        ours = stemlab.create_model(name).state_dict()
    assert [(k, tuple(v.shape)) for k, v in ours.items()] == [
        (k, tuple(v.shape)) for k, v in theirs.items()
    ]


def _block_signature(model: nn.Module) -> list[tuple]:
    """Each MViT block's configuration, read from its modules."""
    rows = []
    for block in model.blocks:
        attn = block.attn

        def geometry(pool):
            return None if pool is None else (pool.pool.kernel_size, pool.pool.stride)

        rows.append(
            (
                attn.num_heads,
                attn.qkv.in_features,
                attn.qkv.out_features // 3,
                geometry(attn.pool_q),
                geometry(attn.pool_k),
                block.pool_skip is not None,
            )
        )
    return rows


@pytest.mark.parametrize(("name", "version"), [("mvit_v1_b", 1), ("mvit_v2_s", 2)])
def test_mvit_is_torchvision_tensor_for_tensor(name: str, version: int) -> None:
    # full size: torchvision's own builder; same keys, shapes and per-block configuration
    with torch.device("meta"):
        full_theirs = getattr(TV, name)()
        full_ours = stemlab.create_model(name)
    assert [(k, tuple(v.shape)) for k, v in full_ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in full_theirs.state_dict().items()
    ]
    assert _block_signature(full_ours) == _block_signature(full_theirs)
    # logits: torchvision's MViT class at a CPU-sized input (v1's position tables are sized by it)
    torch.manual_seed(0)
    theirs = tv_mvit._mvit(
        mvit_block_setting(version),
        stochastic_depth_prob=0.2,
        weights=None,
        progress=False,
        spatial_size=(64, 64),
        temporal_size=4,
        residual_pool=version == 2,
        residual_with_cls_embed=False,
        rel_pos_embed=version == 2,
        proj_after_attn=version == 2,
    )
    ours = stemlab.create_model(name, spatial_size=(64, 64), temporal_size=4)
    x = torch.randn(1, 3, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    assert _parity(ours, theirs, x) == 0.0


def test_mvit_refuses_an_input_it_was_not_built_for() -> None:
    model = stemlab.create_model(
        "mvit_v2_s",
        depths=(1, 1, 1, 1),
        embed_dim=8,
        num_heads=1,
        spatial_size=(32, 32),
        temporal_size=4,
    )
    with pytest.raises(ValueError, match=r"built for \(T, H, W\) = \(4, 32, 32\).*spatial_size"):
        model(torch.randn(1, 3, 8, 32, 32))


SMALL = {
    "s3d": {"width_multiplier": 0.125, "inception_blocks": (1, 1, 1)},
    "mvit_v2_s": {
        "depths": (1, 1, 1, 1),
        "embed_dim": 8,
        "num_heads": 1,
        "spatial_size": (32, 32),
        "temporal_size": 8,
    },
    "mvit_v1_b": {
        "depths": (1, 1, 1, 1),
        "embed_dim": 8,
        "num_heads": 1,
        "spatial_size": (32, 32),
        "temporal_size": 8,
    },
    "swin3d_t": {"embed_dim": 8, "depths": (1, 1), "num_heads": (1, 2), "window_size": (2, 4, 4)},
}


@pytest.mark.parametrize("backbone", list(SMALL))
@pytest.mark.parametrize(
    "stem",
    [
        "tubelet",
        "xiao",
        "basic:width=16",
        "r2plus1d:width=8",
        "s3d:width=8",
        "swin_patch:width=8",
        "mvit_patch:width=8",
    ],
)
def test_any_video_stem_swaps_in(backbone: str, stem: str) -> None:
    model = stemlab.create_model(backbone, stem=stem, num_classes=5, **SMALL[backbone]).eval()
    # S3D pools by 32 in space after a (2, 4, 4) stem: it needs a larger frame
    x = torch.randn(2, 3, 8, 64, 64) if backbone == "s3d" else torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    a = stemlab.anatomy(model)
    if backbone == "s3d":
        assert model.features[2][0].in_channels == model.stem.out_channels
        return
    slot = model.get_submodule(a.stem)
    width = SMALL[backbone]["embed_dim"]
    # the adapter projects to the embedding width at the native patch stride (2, 4, 4)
    assert slot.out_channels == width and tuple(slot.stride) == (2, 4, 4)
    if model.stem.out_channels != width or tuple(model.stem.stride) != (2, 4, 4):
        assert isinstance(slot, TokenStem)
        assert slot.proj.kernel_size == tuple(n // s for n, s in zip((2, 4, 4), model.stem.stride))


def test_a_stem_whose_stride_does_not_divide_builds_mvit_for_its_own_token_grid() -> None:
    stem = stemlab.create_stem("tubelet", width=8, patch_size=(2, 8, 8))
    model = stemlab.create_model("mvit_v1_b", stem=stem, num_classes=3, **SMALL["mvit_v1_b"])
    assert model.token_grid == (4, 4, 4)
    # v1's absolute tables follow the grid: 4 x 4 spatial positions, 4 temporal
    assert model.pos_encoding.spatial_pos.shape == (16, 8)
    assert model.pos_encoding.temporal_pos.shape == (4, 8)
    assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 3)


def test_mvit_position_tables_interpolate_to_a_new_grid() -> None:
    spatial = torch.arange(4.0).reshape(4, 1).repeat(1, 2)  # 2 x 2 grid, 2 channels
    temporal = torch.tensor([[0.0, 10.0], [2.0, 12.0]])
    out = interpolate_mvit_positions(
        {"pos_encoding.spatial_pos": spatial, "pos_encoding.temporal_pos": temporal, "x": 1},
        (4, 4, 4),
    )
    assert out["pos_encoding.spatial_pos"].shape == (16, 2)
    assert out["pos_encoding.temporal_pos"].shape == (4, 2)
    # linear, align_corners=False: the end samples repeat the edge value, the middle interpolates
    torch.testing.assert_close(
        out["pos_encoding.temporal_pos"][:, 0], torch.tensor([0.0, 0.5, 1.5, 2.0])
    )
    grid = out["pos_encoding.spatial_pos"][:, 0].reshape(4, 4)
    torch.testing.assert_close(grid[0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert out["x"] == 1
    with pytest.raises(ValueError, match="relative positions"):
        interpolate_mvit_positions({}, (1, 2, 2))


def test_the_channel_attention_gate_survives_transformer_builders() -> None:
    for backbone in ("swin3d_t", "mvit_v2_s"):
        model = stemlab.create_model(
            backbone, stem="channel_attention:width=16", num_classes=3, **SMALL[backbone]
        )
        gate = model.stem[-1]
        assert torch.count_nonzero(gate.fc2.weight) == 0


def test_mvit_block_setting_validates() -> None:
    with pytest.raises(ValueError, match="version must be 1 or 2"):
        mvit_block_setting(3)
    cfg = mvit_block_setting(2, depths=(1, 1, 1, 1), embed_dim=8, num_heads=2)
    assert [c.output_channels for c in cfg] == [8, 16, 32, 64]
    assert [c.num_heads for c in cfg] == [2, 4, 8, 16]
