"""Attention rollout against a NumPy reference and known answers; occlusion against loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maelens.errors import MaelensError
from maelens.perturb.occlusion import (
    keep_after_drop,
    occlude_pixels,
    occlusion_count,
    random_patches,
    top_patches,
)
from maelens.perturb.rollout import attention_rollout, fuse_heads, patch_scores


def _random_attention(B: int = 3, H: int = 4, T: int = 10, L: int = 3,
                      seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(3 * torch.randn(B, H, T, T, generator=g), dim=-1) for _ in range(L)]


def _rollout_numpy(attentions: list[np.ndarray], fusion: str) -> np.ndarray:
    """Per image, per layer, written from the paper's recipe with explicit loops."""
    B, _, T, _ = attentions[0].shape
    out = np.zeros((B, T, T))
    for b in range(B):
        result = np.eye(T)
        for attn in attentions:
            fused = {"mean": np.mean, "max": np.max, "min": np.min}[fusion](attn[b], axis=0)
            fused = fused + np.eye(T)
            for row in range(T):
                fused[row] /= fused[row].sum()
            result = fused @ result
        out[b] = result
    return out


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_matches_numpy_reference(fusion: str) -> None:
    attentions = _random_attention()
    ours = attention_rollout(attentions, fusion)
    want = _rollout_numpy([a.double().numpy() for a in attentions], fusion)
    assert ours.shape == (3, 10, 10) and ours.dtype == torch.float64
    assert np.abs(ours.numpy() - want).max() < 1e-6  # measured ~1e-16
    for attn in attentions:  # every fused matrix is row-stochastic
        sums = fuse_heads(attn, fusion).sum(dim=-1)
        assert torch.allclose(sums, torch.ones_like(sums), rtol=0, atol=1e-12)
    assert torch.allclose(ours.sum(-1), torch.ones(3, 10, dtype=torch.float64))


def test_rollout_known_answers() -> None:
    eye = torch.eye(5).expand(2, 3, 5, 5)
    assert torch.equal(attention_rollout([eye, eye, eye]), torch.eye(5, dtype=torch.float64)
                       .expand(2, 5, 5))
    # One layer of uniform attention: (J/T + I) / 2, so CLS keeps (1/T + 1)/2 of itself.
    uniform = torch.full((1, 2, 5, 5), 0.2, dtype=torch.float64)
    scores = patch_scores(attention_rollout([uniform]))
    assert torch.allclose(scores, torch.full((1, 4), 0.1, dtype=torch.float64))
    assert abs(attention_rollout([uniform])[0, 0, 0].item() - 0.6) < 1e-12


def test_rollout_batched_equals_per_image() -> None:
    attentions = _random_attention(B=4, seed=1)
    batched = attention_rollout(attentions, "max")
    for b in range(4):
        single = attention_rollout([a[b:b + 1] for a in attentions], "max")
        assert torch.allclose(batched[b:b + 1], single, rtol=0, atol=1e-15)


def test_patch_scores_read_cls_row_or_mean_patch_rows() -> None:
    rollout = attention_rollout(_random_attention(B=2, T=7, seed=2))
    assert torch.equal(patch_scores(rollout), rollout[:, 0, 1:])
    mean_rows = patch_scores(rollout, source="mean_patch")
    assert mean_rows.shape == (2, 6)
    assert torch.allclose(mean_rows[1, 2], rollout[1, 1:, 3].mean())


def test_rollout_rejects_bad_input() -> None:
    attn = _random_attention(L=1)[0]
    with pytest.raises(MaelensError, match="`head_fusion`"):
        attention_rollout([attn], "median")
    with pytest.raises(MaelensError, match="`source`"):
        patch_scores(attention_rollout([attn]), source="cls_token")
    with pytest.raises(MaelensError, match="`attentions`"):
        attention_rollout([])
    with pytest.raises(MaelensError, match="`attentions`"):
        attention_rollout(attn)
    with pytest.raises(MaelensError, match=r"`attentions\[1\]`"):
        attention_rollout([attn, attn[:, :, :, :5]])


def test_occlusion_count_rounds_half_up() -> None:
    assert [occlusion_count(196, p) for p in (0, 10, 50, 90, 100)] == [0, 20, 98, 176, 196]
    assert occlusion_count(10, 25) == 3 and occlusion_count(14, 25) == 4  # 2.5 -> 3, 3.5 -> 4


@pytest.mark.parametrize("p", [-1, 100.5, math.nan, True, "10"])
def test_percent_out_of_range_is_rejected(p: object) -> None:
    with pytest.raises(MaelensError, match="`p`"):
        top_patches(torch.rand(1, 4), p)


def test_top_patches_break_ties_by_index_and_nest() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.2], [0.3, 0.3, 0.3, 0.3]])
    assert top_patches(scores, 50).tolist() == [[1, 2], [0, 1]]
    assert top_patches(scores, 75).tolist() == [[1, 2, 3], [0, 1, 2]]
    assert top_patches(scores, 0).shape == (2, 0)
    random_scores = torch.rand(3, 196, generator=torch.Generator().manual_seed(0))
    previous = top_patches(random_scores, 10)
    for p in range(20, 101, 10):
        current = top_patches(random_scores, p)
        assert torch.equal(current[:, :previous.shape[1]], previous)
        previous = current


def _occlude_loop(images: torch.Tensor, removed: torch.Tensor, P: int,
                  value: torch.Tensor) -> torch.Tensor:
    """The grid rule of the spec, pixel block by block; value broadcastable to (C, P, P)."""
    out = images.clone()
    gw = images.shape[-1] // P
    for b, row in enumerate(removed.tolist()):
        for k in row:
            r, c = (k // gw) * P, (k % gw) * P
            out[b, :, r:r + P, c:c + P] = value[b] if value.ndim == 4 else value
    return out


def test_occlude_zero_and_mean_match_loop_on_non_square_grid() -> None:
    images = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(0))  # grid 3 x 4
    removed = torch.tensor([[0, 7, 11], [5, 6, 4]])
    zero = occlude_pixels(images, removed, 4)
    assert torch.equal(zero, _occlude_loop(images, removed, 4, torch.zeros(())))
    mean = torch.tensor([0.485, 0.456, 0.406])
    filled = occlude_pixels(images, removed, 4, "mean", mean=mean)
    assert torch.equal(filled, _occlude_loop(images, removed, 4, mean.view(3, 1, 1)))
    assert torch.equal(occlude_pixels(images, removed[:, :0], 4), images)


def test_occlude_noise_is_keyed_per_image_not_per_batch() -> None:
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    removed = torch.tensor([[0, 3], [1, 2], [2, 3]])
    kwargs = {"fill": "noise", "seed": 7, "p": 50}
    batch = occlude_pixels(images, removed, 4, image_indices=[10, 11, 12], **kwargs)
    alone = occlude_pixels(images[1:2], removed[1:2], 4, image_indices=[11], **kwargs)
    assert torch.equal(batch[1:2], alone)
    hidden = batch != images
    assert hidden[0, :, :4, :4].all() and not hidden[0, :, 4:, :4].any()
    assert batch.min() >= 0 and batch.max() < 1
    assert not torch.equal(batch[0, :, :4, :4], batch[1, :, :4, :4])
    other_p = occlude_pixels(images, removed, 4, image_indices=[10, 11, 12], fill="noise",
                             seed=7, p=60)
    assert not torch.equal(other_p, batch)


def test_occlude_rejects_bad_input() -> None:
    images, removed = torch.rand(1, 3, 8, 8), torch.tensor([[0]])
    with pytest.raises(MaelensError, match="`fill`"):
        occlude_pixels(images, removed, 4, "gray")
    with pytest.raises(MaelensError, match="`mean`"):
        occlude_pixels(images, removed, 4, "mean")
    with pytest.raises(MaelensError, match="`seed`"):
        occlude_pixels(images, removed, 4, "noise", seed=0, p=10)
    with pytest.raises(MaelensError, match="`patch_size`"):
        occlude_pixels(images, removed, 3)
    with pytest.raises(MaelensError, match="`removed`"):
        occlude_pixels(images, torch.tensor([[4]]), 4)
    with pytest.raises(MaelensError, match="`removed`"):
        occlude_pixels(images, torch.tensor([[1, 1]]), 4)
    with pytest.raises(MaelensError, match="`p`"):
        occlude_pixels(images, removed, 4, "noise", seed=0, p=101, image_indices=[0])


def test_keep_after_drop_lists_the_rest_ascending() -> None:
    removed = torch.tensor([[5, 0, 3], [1, 2, 7]])
    assert keep_after_drop(removed, 8).tolist() == [[1, 2, 4, 6, 7], [0, 3, 4, 5, 6]]
    scores = torch.rand(4, 49, generator=torch.Generator().manual_seed(2))
    removed = top_patches(scores, 30)
    kept = keep_after_drop(removed, 49)
    assert kept.shape == (4, 49 - removed.shape[1])
    assert (kept.diff(dim=1) > 0).all()
    union = torch.cat([kept, removed], dim=1).sort(dim=1).values
    assert torch.equal(union, torch.arange(49).expand(4, 49))
    assert torch.equal(keep_after_drop(removed[:, :0], 49), torch.arange(49).expand(4, 49))


def test_random_patches_are_seeded_per_image_and_nested() -> None:
    full = random_patches(196, 196, seed=3, image_indices=[0, 1, 2])
    assert torch.equal(full.sort(dim=1).values, torch.arange(196).expand(3, 196))
    for count in (0, 20, 98, 176):
        part = random_patches(196, count, seed=3, image_indices=[0, 1, 2])
        assert torch.equal(part, full[:, :count])
    alone = random_patches(196, 20, seed=3, image_indices=[2])
    assert torch.equal(alone, full[2:, :20])
    assert not torch.equal(full[0], full[1])
    assert not torch.equal(random_patches(196, 20, seed=4, image_indices=[0]), full[:1, :20])
    with pytest.raises(MaelensError, match="`count`"):
        random_patches(196, 197, seed=3, image_indices=[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rollout_and_occlusion_on_cuda() -> None:
    attentions = _random_attention()
    on_gpu = attention_rollout([a.cuda() for a in attentions], "min")
    assert on_gpu.is_cuda
    assert torch.allclose(on_gpu.cpu(), attention_rollout(attentions, "min"), atol=1e-12)
    images = torch.rand(3, 3, 8, 8)
    removed = top_patches(patch_scores(on_gpu)[:, :4], 50)
    kwargs = {"fill": "noise", "seed": 1, "p": 50, "image_indices": [0, 1, 2]}
    gpu = occlude_pixels(images.cuda(), removed, 4, **kwargs)
    assert torch.equal(gpu.cpu(), occlude_pixels(images, removed.cpu(), 4, **kwargs))
    assert torch.equal(keep_after_drop(removed, 4).cpu(), keep_after_drop(removed.cpu(), 4))
