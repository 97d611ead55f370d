"""Mask moments against exact enumeration and Monte-Carlo averages of sampled masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from maelens.errors import MaelensError
from maelens.theory import (
    blocks_1d,
    fixed_count_kept,
    keep_second_moment,
    mask_moments,
    sample_keep_masks,
    tiles_2d,
)


def enumerated_moments(n_patches: int, mask_ratio: float, scheme: str) -> list[float]:
    """q1, q2, q3 by summing over every keep-set of patches with its probability."""
    q = [0.0, 0.0, 0.0]
    kept = int(n_patches * (1 - mask_ratio))
    for keep in itertools.product([0, 1], repeat=n_patches):
        if scheme == "bernoulli":
            prob = np.prod([(1 - mask_ratio) if k else mask_ratio for k in keep])
        else:
            prob = 1.0 / _choose(n_patches, kept) if sum(keep) == kept else 0.0
        for n in range(3):
            q[n] += prob * all(keep[: n + 1])
    return q


def _choose(n: int, k: int) -> int:
    return len(list(itertools.combinations(range(n), k)))


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
@pytest.mark.parametrize("mask_ratio", [0.0, 0.3, 0.6, 0.75])
def test_moments_equal_enumeration(scheme, mask_ratio):
    moments = mask_moments(mask_ratio, 6, scheme)
    expected = enumerated_moments(6, mask_ratio, scheme)
    np.testing.assert_allclose([moments.q1, moments.q2, moments.q3], expected, atol=1e-14)


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
def test_second_moment_matrix_matches_monte_carlo(scheme):
    partition = tiles_2d(4, 4, 2, channels=2)  # 4 patches of 2x2x2 inputs, d = 32
    moments = mask_moments(0.5, partition.n_patches, scheme)
    n = 40_000
    r = sample_keep_masks(n, partition, 0.5, scheme, seed=3)
    empirical = r.T @ r / n
    exact = keep_second_moment(moments, partition)
    # Each entry is a mean of n Bernoulli draws: standard error <= 0.5 / sqrt(n) = 0.0025.
    assert np.max(np.abs(empirical - exact)) < 5 * 0.5 / np.sqrt(n)
    first = [int(np.argmax(partition.patch_ids == k)) for k in range(3)]  # patches 0, 1, 2
    triple = np.mean(r[:, first[0]] * r[:, first[1]] * r[:, first[2]])
    assert abs(triple - moments.q3) < 5 * 0.5 / np.sqrt(n)


def test_masks_are_constant_inside_patches_and_fixed_count_is_exact():
    partition = blocks_1d(20, 4)  # N = 5
    r = sample_keep_masks(200, partition, 0.5, "fixed", seed=0)
    per_patch = r.reshape(200, 5, 4)
    assert np.all(per_patch == per_patch[:, :, :1])
    assert np.all(per_patch[:, :, 0].sum(axis=1) == int(5 * 0.5))  # K = int(2.5) = 2


def test_fixed_count_follows_mae_code_truncation():
    assert fixed_count_kept(10, 0.7) == 3  # int(3.0000000000000004)
    assert fixed_count_kept(10, 0.75) == 2  # int(2.5), realised ratio 0.8
    assert mask_moments(0.75, 10, "fixed").q1 == pytest.approx(0.2)
    with pytest.raises(MaelensError, match="mask_ratio"):
        fixed_count_kept(10, 0.95)  # int(0.5) = 0 visible patches
    masking = pytest.importorskip("maelens.model.masking")
    for n, m in [(196, 0.75), (49, 0.9), (16, 0.3), (64, 0.5)]:
        assert fixed_count_kept(n, m) == masking.num_visible(n, m)


def test_same_seed_same_masks():
    partition = blocks_1d(12, 3)
    a = sample_keep_masks(50, partition, 0.4, seed=7)
    b = sample_keep_masks(50, partition, 0.4, seed=7)
    np.testing.assert_array_equal(a, b)
