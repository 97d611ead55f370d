"""The masked-pixel target: unidentifiable same-patch entries, and the full-rank regression."""

from __future__ import annotations

import numpy as np
import pytest

from maelens.errors import MaelensError
from maelens.theory import (
    ExpectedLoss,
    blocks_1d,
    expected_loss,
    kernel_covariance,
    linear_mae_optimum,
    masked_only_full_rank,
    solve_linear_mae,
    tiles_2d,
)


@pytest.fixture
def problem():
    return kernel_covariance((24,), 4.0), blocks_1d(24, 4)


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
def test_same_patch_entries_get_zero_gradient(problem, scheme):
    sigma, partition = problem
    W = np.random.default_rng(0).normal(size=sigma.shape)
    loss = ExpectedLoss(sigma, 0.5, partition, "masked", scheme)
    grad = loss.gradient(W)
    S = partition.same_patch().astype(bool)
    assert np.max(np.abs(grad[S])) < 1e-12 * np.max(np.abs(grad))
    assert np.max(np.abs(grad[~S])) > 1e-3
    # and the loss does not see them at all
    W_changed = W + 100.0 * np.random.default_rng(1).normal(size=W.shape) * S
    assert loss.value(W_changed) == pytest.approx(loss.value(W), rel=1e-11)


def test_full_rank_columns_are_leave_own_patch_out_regressions(problem):
    sigma, partition = problem
    m = 0.6
    numeric = solve_linear_mae(sigma, m, partition, None, target="masked")
    assert numeric.converged and numeric.gradient_norm < 1e-8
    V = (1 - m) * sigma + m * partition.block_diagonal(sigma)  # the notes' Bernoulli formula
    for j in range(sigma.shape[0]):
        outside = partition.patch_ids != partition.patch_ids[j]
        column = np.linalg.solve(V[np.ix_(outside, outside)], sigma[outside, j])
        np.testing.assert_allclose(numeric.W[outside, j], column, atol=1e-7)
        assert np.all(numeric.W[~outside, j] == 0.0)  # zero gradient: never moved from 0
    np.testing.assert_allclose(masked_only_full_rank(sigma, m, partition), numeric.W, atol=1e-7)


def test_full_rank_closed_form_matches_solver_for_fixed_count_2d():
    sigma = kernel_covariance((4, 4, 2), 1.5, channel_cov=[[1.0, 0.3], [0.3, 1.0]])
    partition = tiles_2d(4, 4, 2, channels=2)
    closed = masked_only_full_rank(sigma, 0.5, partition, "fixed")
    numeric = solve_linear_mae(sigma, 0.5, partition, None, scheme="fixed")
    np.testing.assert_allclose(numeric.W, closed, atol=1e-7)


def test_rank_k_masked_solver_lands_between_the_bounds(problem):
    sigma, partition = problem
    m, k = 0.6, 3
    numeric = solve_linear_mae(sigma, m, partition, k)  # starts from the all-pixel optimum
    assert numeric.converged and numeric.gradient_norm < 1e-6
    full = expected_loss(sigma, masked_only_full_rank(sigma, m, partition), m, partition,
                         target="masked")
    all_pixel = linear_mae_optimum(sigma, m, partition, k)  # optimal for another target
    other = expected_loss(sigma, all_pixel.W, m, partition, target="masked")
    assert full < numeric.loss < other


def test_restarts_keep_the_best_start(problem):
    sigma, partition = problem
    best = solve_linear_mae(sigma, 0.6, partition, 3, n_restarts=2, max_iter=300)
    assert len(best.start_losses) == 3
    assert best.loss == pytest.approx(min(best.start_losses), rel=1e-12)
    decayed = solve_linear_mae(sigma, 0.6, partition, 3, init="random", weight_decay=1e-3)
    assert np.isfinite(decayed.loss) and np.abs(decayed.W).max() < 1e3


def test_masked_target_needs_a_positive_ratio(problem):
    sigma, partition = problem
    with pytest.raises(MaelensError, match="mask_ratio"):
        masked_only_full_rank(sigma, 0.0, partition)
