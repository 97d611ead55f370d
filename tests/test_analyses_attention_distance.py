"""Mean attention distance and entropy on hand-built attention maps with known answers, against
an independent NumPy/SciPy computation, through a pass plan with and without masking; merge,
state_dict and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform

from maelens.analyses.attention_distance import AttentionDistance
from maelens.analyses.base import Batch
from maelens.engine.conditions import Condition, RandomMask
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.masking import keep_for_images
from maelens.model.taps import Capture, Taps
from tests.conftest import tiny_model

GRID, PATCH = (4, 5), 6  # a non-square grid, patch centres at 2.5 + 6 k px


def centres(patches: np.ndarray, grid: tuple[int, int] = GRID, patch: int = PATCH
            ) -> np.ndarray:
    """(n, 2) pixel centres (row, col) of patch indices, computed independently of maelens."""
    rows, cols = np.divmod(patches, grid[1])
    return np.stack([rows * patch + (patch - 1) / 2, cols * patch + (patch - 1) / 2], axis=1)


def mean_pairwise(patches: np.ndarray) -> float:
    """Mean distance over all (query, key) pairs, self pairs (distance 0) included."""
    n = len(patches)
    return 2 * pdist(centres(patches)).sum() / n**2


def capture_of(attn: torch.Tensor, keep: torch.Tensor) -> Capture:
    return Capture(keep=keep, grid=GRID, patch_size=PATCH, attn={1: attn})


def run(attn: torch.Tensor, keep: torch.Tensor, policy: str = "exclude"):
    batch = Batch(torch.zeros(len(keep)), torch.arange(len(keep)))
    return AttentionDistance(cls_policy=policy).update(capture_of(attn, keep), batch).result()


def full_keep(batch: int) -> torch.Tensor:
    return torch.arange(GRID[0] * GRID[1]).expand(batch, -1).clone()


def test_all_mass_on_self_gives_zero_distance_and_entropy():
    keep = full_keep(2)
    n = keep.shape[1]
    attn = torch.zeros(2, 3, n + 1, n + 1)
    attn[:, :, torch.arange(n + 1), torch.arange(n + 1)] = 1.0
    for policy in ("exclude", "raw"):
        result = run(attn, keep, policy)
        np.testing.assert_allclose(result.arrays["distance_px"], 0.0, atol=1e-12)
        np.testing.assert_allclose(result.arrays["entropy_nats"], 0.0, atol=1e-12)
        np.testing.assert_allclose(result.arrays["cls_attention_mass"], 0.0)


def uniform_with_cls(batch: int, heads: int, n: int, cls_mass: float) -> torch.Tensor:
    attn = torch.full((batch, heads, n + 1, n + 1), (1 - cls_mass) / n, dtype=torch.float64)
    attn[..., 0] = cls_mass
    return attn


def test_uniform_attention_gives_the_mean_pairwise_distance_of_the_grid():
    keep = full_keep(3)
    n = keep.shape[1]
    want = mean_pairwise(np.arange(n))
    result = run(uniform_with_cls(3, 2, n, cls_mass=0.3), keep)
    np.testing.assert_allclose(result.arrays["distance_px"], want, rtol=1e-6)
    np.testing.assert_allclose(result.arrays["entropy_nats"], np.log(n), rtol=1e-6)
    np.testing.assert_allclose(result.arrays["cls_attention_mass"], 0.3, rtol=1e-6)
    np.testing.assert_allclose(result.arrays["uniform_distance_px"], want, rtol=1e-6)
    assert result.meta["grid"] == [4, 5] and result.meta["patch_size"] == PATCH


def test_raw_policy_keeps_the_cls_share_out_of_the_distance_and_in_the_entropy():
    keep, c = full_keep(2), 0.3
    n = keep.shape[1]
    result = run(uniform_with_cls(2, 2, n, cls_mass=c), keep, "raw")
    np.testing.assert_allclose(result.arrays["distance_px"], (1 - c) * mean_pairwise(
        np.arange(n)), rtol=1e-6)
    full_row_entropy = -(c * np.log(c) + (1 - c) * np.log((1 - c) / n))
    np.testing.assert_allclose(result.arrays["entropy_nats"], full_row_entropy, rtol=1e-6)


def test_masked_grids_use_the_kept_positions():
    keep = torch.tensor([[0, 4, 7, 19], [2, 3, 10, 15]])
    attn = uniform_with_cls(2, 1, 4, cls_mass=0.1)
    result = run(attn, keep)
    want = np.mean([mean_pairwise(k.numpy()) for k in keep])  # 4 queries per image
    np.testing.assert_allclose(result.arrays["distance_px"], want, rtol=1e-6)
    assert result.meta["queries"] == 8


def naive(attn: np.ndarray, keep: np.ndarray, policy: str, grid: tuple[int, int] = GRID,
          patch: int = PATCH) -> tuple[np.ndarray, np.ndarray]:
    """Loop-by-loop (H,) distance and entropy means (the definition, written out)."""
    B, H = attn.shape[:2]
    dist, ent = np.zeros(H), np.zeros(H)
    for b in range(B):
        d = squareform(pdist(centres(keep[b], grid, patch)))
        for h in range(H):
            for i in range(keep.shape[1]):
                row = attn[b, h, 1 + i]
                w = row[1:] / row[1:].sum() if policy == "exclude" else row[1:]
                p = w if policy == "exclude" else row
                dist[h] += (w * d[i]).sum()
                ent[h] -= (p[p > 0] * np.log(p[p > 0])).sum()
    count = B * keep.shape[1]
    return dist / count, ent / count


@pytest.mark.parametrize("policy", ["exclude", "raw"])
def test_random_attention_maps_equal_the_loop_definition(policy):
    # maelens sums each row in float32 (relative error ~1e-7 for 8-65 keys) and accumulates in
    # float64; the reference is float64 throughout: rtol 1e-6 holds on any BLAS.
    g = torch.Generator().manual_seed(0)
    keep = keep_for_images(torch.arange(3), 20, 0.6, seed=1)  # 8 visible of 20
    attn = torch.randn(3, 2, 9, 9, generator=g).mul(2).softmax(-1)
    result = run(attn, keep, policy)
    dist, ent = naive(attn.double().numpy(), keep.numpy(), policy)
    np.testing.assert_allclose(result.arrays["distance_px"][0], dist, rtol=1e-6)
    np.testing.assert_allclose(result.arrays["entropy_nats"][0], ent, rtol=1e-6)


@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_pass_plan_with_and_without_masking_equals_the_definition(ratio):
    model = tiny_model()
    pixels = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    reference = Condition("m", keep=RandomMask(ratio, 3)) if ratio else Condition("clean")
    plan = PassPlan(model, reference=reference)
    analysis = plan.add(AttentionDistance())
    plan.feed([Batch(pixels[:3], torch.arange(3)), Batch(pixels[3:], torch.arange(3, 5))])
    result = analysis.result()
    assert result.arrays["distance_px"].shape == (2, 4)  # (L, H)
    keep = keep_for_images(torch.arange(5), 16, ratio, 3)
    with torch.inference_mode():
        x = (pixels - torch.tensor(model.config.mean).view(1, -1, 1, 1)) / torch.tensor(
            model.config.std).view(1, -1, 1, 1)
        cap = model(x, taps=Taps(attn=None, final=False), keep=keep)
    for li, layer in enumerate([1, 2]):  # the tiny model: a 4 x 4 grid of 8 px patches
        dist, ent = naive(cap.attn[layer].double().numpy(), keep.numpy(), "exclude", (4, 4), 8)
        np.testing.assert_allclose(result.arrays["distance_px"][li], dist, rtol=1e-6)
        np.testing.assert_allclose(result.arrays["entropy_nats"][li], ent, rtol=1e-6)
    rows = [r for r in result.rows if r.metric == "distance_px"]
    assert len(rows) == 8 and rows[0].unit == "px"


# -- merge, state_dict, bad input ----------
def random_batches(seed: int, sizes=(3, 2, 4)):
    g = torch.Generator().manual_seed(seed)
    start = 0
    for size in sizes:
        index = torch.arange(start, start + size)
        keep = keep_for_images(index, 20, 0.5, seed=0)  # 10 visible of 20
        attn = {layer: torch.randn(size, 2, 11, 11, generator=g).mul(3).softmax(-1)
                for layer in (2, 4)}
        yield Capture(keep=keep, grid=GRID, patch_size=PATCH, attn=attn), Batch(
            torch.zeros(size), index)
        start += size


def fed(policy: str, parts) -> AttentionDistance:
    analysis = AttentionDistance(cls_policy=policy)
    for capture, batch in parts:
        analysis.update(capture, batch)
    return analysis


def assert_same(a, b, rtol=1e-6):
    for name in a.arrays:
        np.testing.assert_allclose(a.arrays[name], b.arrays[name], rtol=rtol, err_msg=name)
    assert [(r.metric, r.layer, r.head) for r in a.rows] == [
        (r.metric, r.layer, r.head) for r in b.rows]


@pytest.mark.parametrize("policy", ["exclude", "raw"])
def test_two_halves_merged_equal_the_whole_in_either_order(policy):
    parts = list(random_batches(5))
    whole = fed(policy, parts).result()
    np.testing.assert_array_equal(whole.arrays["layers"], [2, 4])
    first, second = fed(policy, parts[:1]), fed(policy, parts[1:])
    assert_same(first.merge(second).result(), whole)
    first, second = fed(policy, parts[:1]), fed(policy, parts[1:])
    assert_same(second.merge(first).result(), whole)
    assert_same(AttentionDistance(cls_policy=policy).merge(fed(policy, parts)).result(), whole)


def test_state_dict_round_trips_through_a_weights_only_file(tmp_path):
    analysis = fed("exclude", random_batches(6))
    torch.save(analysis.state_dict(), tmp_path / "state.pt")
    restored = AttentionDistance().load_state_dict(
        torch.load(tmp_path / "state.pt", weights_only=True))
    assert_same(restored.result(), analysis.result(), rtol=0)
    assert restored.result().meta == analysis.result().meta


def test_bad_input_is_named_in_one_line():
    for kwargs, needle in (({"cls_policy": "drop"}, "`cls_policy`"),
                           ({"layers": 1.5}, "`layers`")):
        with pytest.raises(MaelensError, match=needle) as info:
            AttentionDistance(**kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(MaelensError, match="seen no batch"):
        AttentionDistance().result()
    with pytest.raises(MaelensError, match="same `cls_policy`"):
        AttentionDistance().merge(AttentionDistance(cls_policy="raw"))
    plan = PassPlan(tiny_model())
    plan.add(AttentionDistance(layers=[0]))  # attention layers are blocks 1..L
    with pytest.raises(MaelensError, match="outside the valid layers 1..2"):
        plan.feed([Batch(torch.rand(1, 3, 32, 32), torch.arange(1))])
    analysis = fed("exclude", random_batches(1, sizes=(2,)))
    other_grid = Capture(keep=full_keep(1), grid=(2, 10), patch_size=PATCH,
                         attn={2: torch.full((1, 2, 21, 21), 1 / 21),
                               4: torch.full((1, 2, 21, 21), 1 / 21)})
    with pytest.raises(MaelensError, match="one model and image size"):
        analysis.update(other_grid, Batch(torch.zeros(1), torch.arange(1)))
