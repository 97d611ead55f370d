"""Bad input to maelens.theory raises MaelensError naming the parameter, with a fix."""

from __future__ import annotations

import numpy as np
import pytest

from maelens.errors import MaelensError
from maelens.theory import (
    blocks_1d,
    expected_loss,
    kernel_covariance,
    linear_mae_optimum,
    mask_moments,
    partition_for,
    solve_linear_mae,
    tiles_2d,
)


@pytest.fixture
def sigma():
    return kernel_covariance((16,), 3.0)


def test_error_is_a_value_error():
    assert issubclass(MaelensError, ValueError)


def test_sigma_not_symmetric(sigma):
    bad = sigma.copy()
    bad[0, 1] += 0.1
    with pytest.raises(MaelensError, match="`sigma` must be symmetric"):
        linear_mae_optimum(bad, 0.5, blocks_1d(16, 4), 2)


def test_sigma_not_positive_semidefinite(sigma):
    bad = sigma - 2.0 * np.eye(16)
    with pytest.raises(MaelensError, match="`sigma` must be positive semi-definite"):
        linear_mae_optimum(bad, 0.5, blocks_1d(16, 4), 2)
    with pytest.raises(MaelensError, match="`sigma` must be a square"):
        linear_mae_optimum(np.ones((3, 4)), 0.5, blocks_1d(4, 2), 1)


def test_patch_size_must_tile_the_image():
    with pytest.raises(MaelensError, match="`patch_size`=3 does not tile"):
        blocks_1d(16, 3)
    with pytest.raises(MaelensError, match="`patch_size`=3 does not tile"):
        tiles_2d(8, 6, 3)
    with pytest.raises(MaelensError, match="`patch_size`"):
        tiles_2d(8, 8, 0)
    with pytest.raises(MaelensError, match="`image_shape`"):
        partition_for((8, 8), 2)


@pytest.mark.parametrize("rank", [0, -1, 16, 17, 2.5, True])
def test_rank_must_be_between_one_and_d(sigma, rank):
    with pytest.raises(MaelensError, match="`rank`"):
        linear_mae_optimum(sigma, 0.5, blocks_1d(16, 4), rank)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan")])
def test_mask_ratio_must_lie_in_zero_one(sigma, ratio):
    with pytest.raises(MaelensError, match="`mask_ratio`"):
        linear_mae_optimum(sigma, ratio, blocks_1d(16, 4), 2)
    with pytest.raises(MaelensError, match="`mask_ratio`"):
        mask_moments(ratio, 4)


def test_other_mismatches(sigma):
    with pytest.raises(MaelensError, match="`partition` covers d = 8"):
        linear_mae_optimum(sigma, 0.5, blocks_1d(8, 4), 2)
    with pytest.raises(MaelensError, match="`scheme`"):
        mask_moments(0.5, 4, "random")
    with pytest.raises(MaelensError, match="`target`"):
        expected_loss(sigma, np.eye(16), 0.5, blocks_1d(16, 4), target="pixels")
    with pytest.raises(MaelensError, match="`W` must have shape"):
        expected_loss(sigma, np.eye(4), 0.5, blocks_1d(16, 4))
    with pytest.raises(MaelensError, match="`init`"):
        solve_linear_mae(sigma, 0.5, blocks_1d(16, 4), 2, init="zeros")


def test_singular_q_names_the_fix():
    singular = np.ones((4, 4))  # rank one: Q singular at m = 0
    with pytest.raises(MaelensError, match="ridge"):
        linear_mae_optimum(singular, 0.0, blocks_1d(4, 2), 1)
