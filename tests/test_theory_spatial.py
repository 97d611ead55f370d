"""Spatial-scale metrics on hand-made maps, and the working notes' numbers reproduced."""

from __future__ import annotations

import numpy as np
import pytest

from maelens.theory import (
    blocks_1d,
    boundary_emphasis,
    correlation_length,
    full_rank_optimum,
    gaussian_samples,
    influence_profile,
    ising_covariance,
    kernel_covariance,
    linear_mae_optimum,
    out_of_patch_mass,
    pixel_distances,
    spatial_entropy,
    tiles_2d,
    weighted_mean_distance,
)


def test_pixel_distances_wrap_periodic_axes():
    coords = np.arange(10)[:, None]
    open_ = pixel_distances(coords)
    ring = pixel_distances(coords, period=(10,))
    assert open_[0, 9] == 9 and ring[0, 9] == 1 and ring[2, 7] == 5
    grid = tiles_2d(3, 4, 1).coords
    assert pixel_distances(grid)[0, -1] == pytest.approx(np.hypot(2, 3))


def test_weighted_mean_distance_known_answers():
    distances = pixel_distances(np.arange(5)[:, None])
    assert weighted_mean_distance(np.eye(5), distances) == 0.0
    J = np.zeros((5, 5))
    J[0, [0, 2]] = [1.0, -3.0]  # output 0 reads input 0 (weight 1) and input 2 (|w| = 3)
    J[4, 1] = 2.0  # output 4 reads input 1, 3 pixels away; outputs 1-3 read nothing
    assert weighted_mean_distance(J, distances) == pytest.approx(((3 * 2) / 4 + 3) / 2)


def test_spatial_entropy_and_out_of_patch_mass():
    assert spatial_entropy(np.eye(6)) == 0.0
    assert spatial_entropy(np.ones((3, 8))) == pytest.approx(np.log(8))
    ids = np.array([0, 0, 1, 1])
    block = np.kron(np.eye(2), np.ones((2, 2)))
    assert out_of_patch_mass(block, ids, ids) == 0.0
    assert out_of_patch_mass(1 - block, ids, ids) == 1.0
    assert out_of_patch_mass(np.ones((4, 4)), ids, ids) == pytest.approx(0.5)


def test_influence_profile_recovers_an_exponential_decay():
    distances = pixel_distances(np.arange(40)[:, None])
    profile = influence_profile(np.exp(-distances / 3.5), distances)
    assert profile.decay_length_px == pytest.approx(3.5, rel=1e-10)
    np.testing.assert_allclose(profile.mean_abs, np.exp(-profile.distance_px / 3.5))
    assert profile.counts[0] == 40 and profile.counts.sum() == 1600


def test_correlation_length_of_kernels_and_samples():
    line = correlation_length(kernel_covariance((64,), 5.0), np.arange(64)[:, None])
    assert line.e_folding_px == pytest.approx(5.0, abs=0.05)
    assert line.fitted_px == pytest.approx(5.0, rel=1e-8)
    grid = tiles_2d(16, 16, 1).coords
    plane = correlation_length(ising_covariance((16, 16, 1), np.exp(-1 / 3)), grid)
    assert 2.0 < plane.e_folding_px < 3.5  # city-block decay, Euclidean bins: ≈ 3 / √2..3
    sigma = kernel_covariance((48,), 4.0)
    x = gaussian_samples(sigma, 20_000, seed=0)
    sampled = correlation_length(np.cov(x.T), np.arange(48)[:, None])
    assert sampled.fitted_px == pytest.approx(4.0, rel=0.05)


def test_boundary_emphasis_known_answers():
    partition = blocks_1d(12, 4)
    edge_only = np.where(partition.on_patch_edge(), 1.0, 0.0)[:, None]  # (12, 1) encoder
    result = boundary_emphasis(edge_only, partition)
    np.testing.assert_allclose(result.profile, [1, 0, 0, 1])
    assert result.edge_over_mean == pytest.approx(2.0)
    tiles = tiles_2d(6, 6, 3, channels=2)
    flat = boundary_emphasis(np.ones((72, 2)), tiles)
    assert flat.profile.shape == (3, 3)
    np.testing.assert_allclose(flat.profile, 4.0)  # 2 channels x 2 code units, summed
    assert flat.edge_over_mean == pytest.approx(1.0)


# --- the working notes' numbers (linear-mae.md, "How m and p act") ---------------------------

NOTES_SPREAD = {  # |W*|-weighted mean distance, 1-D periodic exponential kernel, length 6, d = 64
    1: [0.0, 0.93, 1.64, 2.68, 3.89],
    4: [0.0, 1.74, 2.57, 3.43, 4.09],
    16: [0.0, 1.70, 2.14, 2.43, 2.59],
}
RATIOS = [0.0, 0.25, 0.5, 0.75, 0.9]


@pytest.mark.parametrize("patch_size", sorted(NOTES_SPREAD))
def test_notes_spread_numbers_reproduce_and_grow_with_ratio(patch_size):
    sigma = kernel_covariance((64,), 6.0, periodic=True)
    partition = blocks_1d(64, patch_size)
    distances = pixel_distances(partition.coords, period=(64,))
    spread = [
        weighted_mean_distance(full_rank_optimum(sigma, m, partition).T, distances)
        for m in RATIOS
    ]
    np.testing.assert_allclose(spread, NOTES_SPREAD[patch_size], atol=0.02)
    assert np.all(np.diff(spread) > 0)


def test_full_rank_spread_grows_with_ratio_on_2d_exponential_kernel():
    sigma = kernel_covariance((8, 8, 1), 2.0)
    distances = pixel_distances(tiles_2d(8, 8, 1).coords)
    for p in (1, 2, 4):
        partition = tiles_2d(8, 8, p)
        spread = [
            weighted_mean_distance(full_rank_optimum(sigma, m, partition).T, distances)
            for m in (0.0, 0.3, 0.6, 0.9)
        ]
        assert spread[0] == pytest.approx(0.0, abs=1e-12)
        assert np.all(np.diff(spread) > 0), (p, spread)


def test_rank_k_spread_is_dominated_by_the_bottleneck():
    # A candid check of a limit of the notes' claim: with a bottleneck, W* at m = 0 is the PCA
    # projector U Uᵀ, already spread out, and at p = 1 masking then *narrows* it (W* =
    # U diag(λ / ((1 - m) λ + m σ²)) Uᵀ re-weights towards rougher components).
    sigma = kernel_covariance((8, 8, 1), 2.0)
    distances = pixel_distances(tiles_2d(8, 8, 1).coords)
    partition = tiles_2d(8, 8, 1)
    spread = [
        weighted_mean_distance(linear_mae_optimum(sigma, m, partition, 10).influence, distances)
        for m in (0.0, 0.3, 0.6, 0.9)
    ]
    assert spread[0] > 2.5 and np.all(np.diff(spread) < 0)


def test_boundary_emphasis_on_ar1_grows_with_ratio():
    sigma = ising_covariance((64,), 0.76)
    partition = blocks_1d(64, 8)
    ratios = [0.0, 0.25, 0.5, 0.75, 0.9]
    emphasis = [
        boundary_emphasis(linear_mae_optimum(sigma, m, partition, 8).A, partition)
        for m in ratios
    ]
    values = [e.edge_over_mean for e in emphasis]
    assert 0.85 < values[0] < 1.15  # flat at m = 0 (PCA)
    assert all(v > 1 for v in values[1:]) and np.all(np.diff(values) > 0)
    # Notes: ≈ 2.4 at m = 0.5 and ≈ 3.2 at m = 0.9. Averaging only over patches away from the
    # signal's two ends (which have no outside neighbour) gives 2.43 and 3.20; all patches
    # give 2.28 and 3.09.
    interior = [
        boundary_emphasis(linear_mae_optimum(sigma, m, partition, 8).A, partition,
                          interior_only=True).edge_over_mean
        for m in (0.5, 0.9)
    ]
    np.testing.assert_allclose(interior, [2.4, 3.2], atol=0.05)
    np.testing.assert_allclose([values[2], values[4]], [2.28, 3.09], atol=0.01)
