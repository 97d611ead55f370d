"""The model core: masking under control, tap layer rules, lazy attention, early stop, position
embeddings (against transformers' sin-cos builder as an independent reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maelens.errors import MaelensError
from maelens.model.config import ViTConfig
from maelens.model.posembed import resample_pos_embed, sincos_2d
from maelens.model.taps import Taps
from maelens.model.vit import VisionTransformer

CFG = ViTConfig(image_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_dim=64)
N = CFG.num_patches  # 16


@pytest.fixture(scope="module")
def model() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(CFG).eval()


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _keep(model, pixels, ratio, seed):
    gen = torch.Generator().manual_seed(seed)
    return model(pixels, mask_ratio=ratio, generator=gen).keep


# --------------------------------------------------------------------------- masking
def test_same_seed_same_mask_different_seed_different(model, pixels):
    assert torch.equal(_keep(model, pixels, 0.75, 7), _keep(model, pixels, 0.75, 7))
    assert not torch.equal(_keep(model, pixels, 0.75, 7), _keep(model, pixels, 0.75, 8))


def test_ratio_zero_keeps_every_patch_in_spatial_order(model, pixels):
    cap = model(pixels, mask_ratio=0.0)
    assert torch.equal(cap.keep, torch.arange(N).expand(2, -1))
    assert cap.final.shape == (2, N + 1, CFG.embed_dim)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75, 0.9])
def test_keep_count_follows_the_mae_fixed_count(model, pixels, ratio):
    keep = _keep(model, pixels, ratio, 3)
    assert keep.shape == (2, int(N * (1 - ratio)))
    assert torch.equal(keep, keep.sort(dim=1).values)  # ascending, never shuffled
    assert all(len(set(row.tolist())) == keep.shape[1] for row in keep)


def test_caller_keep_is_used_verbatim(model, pixels):
    keep = torch.tensor([[5, 2, 9], [0, 15, 7]])
    full = model(pixels, taps=Taps(hidden=[0]))
    cap = model(pixels, keep=keep, taps=Taps(hidden=[0]))
    assert torch.equal(cap.keep, keep)
    expected = torch.gather(full.hidden[0][:, 1:], 1, keep[..., None].expand(-1, -1, 32))
    torch.testing.assert_close(cap.hidden[0][:, 1:], expected)
    one_d = model(pixels, keep=torch.tensor([3, 1]))
    assert torch.equal(one_d.keep, torch.tensor([[3, 1], [3, 1]]))


def test_bad_keep_is_refused(model, pixels):
    with pytest.raises(MaelensError, match=r"\[0, 16\)"):
        model(pixels, keep=torch.tensor([[0, 16]] * 2))
    with pytest.raises(MaelensError, match="repeats"):
        model(pixels, keep=torch.tensor([[1, 1]] * 2))


# --------------------------------------------------------------------------- taps
def test_layer_rules():
    plan = Taps(hidden=None, attn=None, heads=2).resolve(3)
    assert plan.hidden == {0, 1, 2, 3} and plan.attn == {1, 2, 3} and plan.heads == {2, 3}
    assert Taps(hidden=1).resolve(3).hidden == {3}
    assert Taps(hidden=[-1, 0], attn=[-1, 1]).resolve(3).hidden == {0, 3}
    assert Taps(attn=[-1, 1]).resolve(3).attn == {1, 3}
    assert Taps(hidden=[], attn=()).resolve(3).attn == frozenset()


@pytest.mark.parametrize(
    ("taps", "valid"),
    [(Taps(hidden=[4]), "0..3"), (Taps(attn=[0]), "1..3"), (Taps(heads=[-4]), "1..3"),
     (Taps(hidden=5), "0..3")],
)
def test_out_of_range_layers_name_the_valid_range(model, pixels, taps, valid):
    with pytest.raises(MaelensError, match=valid):
        model(pixels, taps=taps)


def test_capture_holds_exactly_the_requested_layers(model, pixels):
    cap = model(pixels, taps=Taps(hidden=[0, -1], attn=[2], heads=1, final=False))
    assert set(cap.hidden) == {0, 3} and set(cap.attn) == {2} and set(cap.heads) == {3}
    assert cap.final is None and cap.logits is None


def test_untapped_attention_uses_the_fused_kernel(model, pixels, monkeypatch):
    calls = []
    fused = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    cap = model(pixels, taps=Taps(hidden=None, heads=None))
    assert len(calls) == CFG.depth and cap.attn == {}
    calls.clear()
    cap = model(pixels, taps=Taps(attn=[2]))
    assert len(calls) == CFG.depth - 1 and set(cap.attn) == {2}


def test_pass_stops_after_the_last_needed_block(model, pixels):
    ran = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
             for k, b in enumerate(model.blocks, start=1)]
    try:
        model(pixels, taps=Taps(hidden=[1], final=False))
        assert ran == [1]
        ran.clear()
        model(pixels, taps=Taps(attn=[2], final=False))
        assert ran == [1, 2]
        ran.clear()
        model(pixels, taps=Taps(hidden=[0], final=False))
        assert ran == []
        model(pixels)  # `final` needs every block
        assert ran == [1, 2, 3]
    finally:
        for hook in hooks:
            hook.remove()


def test_attention_rows_sum_to_one(model, pixels):
    cap = model(pixels, taps=Taps(attn=None), mask_ratio=0.5,
                generator=torch.Generator().manual_seed(0))
    for attn in cap.attn.values():
        assert attn.shape == (2, CFG.num_heads, 9, 9)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, CFG.num_heads, 9))


def test_heads_through_the_projection_give_the_attention_output(model, pixels):
    outputs = {}
    hooks = [b.attn.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o[0]))
             for k, b in enumerate(model.blocks, start=1)]
    try:
        cap = model(pixels, taps=Taps(hidden=None, attn=None, heads=None))
    finally:
        for hook in hooks:
            hook.remove()
    B, T, D = cap.hidden[0].shape
    for layer in range(1, CFG.depth + 1):
        heads = cap.heads[layer]
        assert heads.shape == (B, T, CFG.num_heads, CFG.head_dim)
        block = model.blocks[layer - 1]
        projected = block.attn.proj(heads.reshape(B, T, D))
        torch.testing.assert_close(projected, outputs[layer])
        # O = A.V recomputed from the block input: an independent check of the heads tap.
        v = block.attn.qkv(block.norm1(cap.hidden[layer - 1]))[..., 2 * D:]
        v = v.reshape(B, T, CFG.num_heads, CFG.head_dim).transpose(1, 2)
        torch.testing.assert_close(heads, (cap.attn[layer] @ v).transpose(1, 2))


def test_tapped_and_fused_paths_agree(model, pixels):
    plain = model(pixels, taps=Taps(hidden=None))
    tapped = model(pixels, taps=Taps(hidden=None, attn=None))
    for layer in plain.hidden:
        torch.testing.assert_close(plain.hidden[layer], tapped.hidden[layer],
                                   atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- position embeddings
@pytest.mark.parametrize(("dim", "grid"), [(64, (4, 4)), (32, (3, 5)), (768, (14, 14))])
def test_sincos_matches_transformers(dim, grid):
    from transformers.models.vit_mae.modeling_vit_mae import (
        build_2d_sinusoidal_position_embedding,
    )

    # transformers 5 builds [sin_h|cos_h|sin_w|cos_w] and rotates the halves to match the
    # published MAE weights (columns first); `get_2d_sincos_pos_embed` no longer exists there.
    ref = build_2d_sinusoidal_position_embedding(grid[0], grid[1], dim, cls_token=True)
    half = dim // 2
    ref = torch.cat([ref[..., half:], ref[..., :half]], dim=-1)[None]
    torch.testing.assert_close(sincos_2d(dim, grid), ref, atol=1e-6, rtol=0)


def test_resample_at_the_same_grid_is_identity():
    table = torch.randn(1, 17, 32)
    assert torch.equal(resample_pos_embed(table, (4, 4)), table)


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_forward_at_another_resolution(pos_embed):
    torch.manual_seed(0)
    model = VisionTransformer(CFG.replace(pos_embed=pos_embed)).eval()
    pixels = torch.randn(1, 3, 48, 48)
    cap = model(pixels, taps=Taps(hidden=[0]))
    assert cap.final.shape == (1, 37, CFG.embed_dim) and cap.grid == (6, 6)
    position = cap.hidden[0][:, 1:] - model.patch_embed(pixels)
    if pos_embed == "sincos":
        expected = sincos_2d(CFG.embed_dim, (6, 6))[:, 1:]
    else:  # bicubic with antialias=True, as timm's resample_abs_pos_embed
        grid = model.pos_embed[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(6, 6), mode="bicubic", antialias=True,
                             align_corners=False)
        expected = grid.permute(0, 2, 3, 1).reshape(1, 36, -1)
    torch.testing.assert_close(position, expected, atol=1e-5, rtol=1e-5)
