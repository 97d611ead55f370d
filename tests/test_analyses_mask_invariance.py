"""Random-mask invariance: the streamed pairwise cosine equals the brute-force mean over pairs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.spatial.distance
import torch

from maelens.analyses.mask_invariance import MaskInvariance
from maelens.engine.condition_sets import mask_invariance_conditions
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.masking import keep_for_images
from maelens.model.taps import Taps
from tests.conftest import tiny_model
from tests.robustness_helpers import batch, capture, check_halves_and_round_trip, image_batches

MASKED_KEEP = torch.tensor([[0, 2], [1, 3], [0, 1]])  # 2 of 4 patches visible


def brute_force(clean: np.ndarray, views: np.ndarray) -> dict[str, np.ndarray]:
    """clean (N, D), views (K, N, D) -> per-image statistics by explicit loops over pairs."""
    cos = lambda a, b: 1 - scipy.spatial.distance.cosine(a, b)  # noqa: E731
    K, N = views.shape[:2]
    norms = np.linalg.norm(views, axis=2)
    return {
        "pairwise_cosine": np.array([np.mean([cos(views[j, i], views[k, i]) for j, k in
                                              itertools.combinations(range(K), 2)])
                                     for i in range(N)]),
        "cosine_to_unmasked": np.array([np.mean([cos(views[k, i], clean[i]) for k in range(K)])
                                        for i in range(N)]),
        "norm_min": norms.min(0), "norm_max": norms.max(0),
        "unmasked_norm": np.linalg.norm(clean, axis=1)}


def test_streamed_statistics_equal_brute_force_in_any_feeding_order():
    gen = torch.Generator().manual_seed(0)
    clean = torch.randn(6, 5, 8, generator=gen, dtype=torch.float64)  # (N, T, D), 4 patches
    views = torch.randn(5, 6, 3, 8, generator=gen, dtype=torch.float64)  # (K, N, 1 + 2, D)
    expected = brute_force(clean[:, 1:].mean(1).numpy(), views[:, :, 1:].mean(2).numpy())
    parts = (slice(0, 3), slice(3, 6))
    sequential, interleaved = MaskInvariance(bootstrap=0), MaskInvariance(bootstrap=0)
    for part in parts:  # as the engine feeds it: the K conditions of a batch back to back
        for k in range(5):
            sequential.update_pair(capture(clean[part]), capture(views[k, part],
                                   keep=MASKED_KEEP), batch(range(6)[part]))
    for k, part in itertools.product(range(5), parts[::-1]):  # batches interleaved, reversed
        interleaved.update_pair(capture(clean[part]), capture(views[k, part], keep=MASKED_KEEP),
                                batch(range(6)[part]))
    for out in (sequential.result(), interleaved.result()):
        for name, value in expected.items():
            np.testing.assert_allclose(out.arrays[name], value, rtol=1e-10, err_msg=name)
        np.testing.assert_array_equal(out.arrays["views"], 5)
    rows = {r.metric: r.value for r in sequential.result().rows}
    assert rows["pairwise_cosine_mean"] == pytest.approx(expected["pairwise_cosine"].mean())
    spread = (expected["norm_max"] - expected["norm_min"])
    assert rows["norm_range_mean"] == pytest.approx(spread.mean())
    assert rows["norm_range_relative_mean"] == pytest.approx(
        (spread / expected["unmasked_norm"]).mean())


def test_identical_views_have_pairwise_cosine_one():
    clean = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(1))
    inv = MaskInvariance(bootstrap=0)
    for _ in range(3):
        inv.update_pair(capture(clean), capture(clean[:, :3], keep=MASKED_KEEP[:2]),
                        batch([0, 1]))
    arrays = inv.result().arrays
    np.testing.assert_allclose(arrays["pairwise_cosine"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(arrays["norm_max"] - arrays["norm_min"], 0.0, atol=1e-12)


def test_conditions_are_seeded_masks_named_by_k():
    conds = mask_invariance_conditions(0.75, k_masks=12, seed=3)
    assert [c.name for c in conds[:2]] == ["mask-invariance/k00", "mask-invariance/k01"]
    assert conds[7].name == "mask-invariance/k07" and conds[7].level == "k07"
    assert conds[7].keep.purpose == ("invariance", 7) and conds[7].keep.seed == 3
    assert mask_invariance_conditions(0.5, 101)[100].name == "mask-invariance/k100"


def test_tiny_model_through_a_pass_plan_matches_direct_masked_forwards(tmp_path):
    model = tiny_model(num_classes=4, pool="avg", fc_norm=True, final_norm=False)
    pixels = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    conds = mask_invariance_conditions(0.5, k_masks=3, seed=1)

    def feed(inv: MaskInvariance, part: slice) -> None:
        plan = PassPlan(model)
        for cond in conds:
            plan.add(inv, cond)
        plan.feed(image_batches(pixels, None, part))

    out = check_halves_and_round_trip(lambda: MaskInvariance(bootstrap=100), feed, 7, tmp_path)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (model.config.mean,
                                                             model.config.std))
    x, taps = (pixels - mean) / std, Taps(hidden=[2], final=False)
    with torch.inference_mode():
        clean = model(x, taps=taps).mean_patch(2).double().numpy()
        views = np.stack([model(x, taps=taps, keep=keep_for_images(
            torch.arange(7), 16, 0.5, 1, ("invariance", k))).mean_patch(2).double().numpy()
            for k in range(3)])
    expected = brute_force(clean, views)
    for name, value in expected.items():  # same float32 forwards; float64 maths after them
        np.testing.assert_allclose(out.arrays[name], value, rtol=1e-5, err_msg=name)
    assert out.meta["layer"] == 2


def test_bad_input_fails_with_one_line():
    with pytest.raises(MaelensError, match="`k_masks`"):
        mask_invariance_conditions(0.75, k_masks=1)
    for ratio in (0.0, 1.0):
        with pytest.raises(MaelensError, match="`ratio`"):
            mask_invariance_conditions(ratio)
    with pytest.raises(MaelensError, match="`source`"):
        MaskInvariance(source="cls")
    tokens = torch.randn(3, 5, 4)
    with pytest.raises(MaelensError, match="reference pass must be unmasked"):
        MaskInvariance().update_pair(capture(tokens[:, :3], keep=MASKED_KEEP),
                                     capture(tokens[:, :3], keep=MASKED_KEEP), batch(range(3)))
    with pytest.raises(MaelensError, match="masks nothing"):
        MaskInvariance().update_pair(capture(tokens), capture(tokens), batch(range(3)))
    one_view = MaskInvariance().update_pair(capture(tokens), capture(
        tokens[:, :3], keep=MASKED_KEEP), batch(range(3)))
    with pytest.raises(MaelensError, match=">= 2 masked views.*`k_masks`"):
        one_view.result()
    with pytest.raises(MaelensError, match="saw no image"):
        MaskInvariance().result()
