"""Exact expected losses against enumeration of every mask, Monte-Carlo, and finite differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from maelens.theory import (
    ExpectedLoss,
    blocks_1d,
    expected_loss,
    gaussian_samples,
    kernel_covariance,
    sample_keep_masks,
)

TARGETS = ["all", "masked", "visible", (1.0, 0.3)]



def setup(d: int = 8, p: int = 2, seed: int = 0):
    sigma = kernel_covariance((d,), 2.5) + 0.1 * np.eye(d)
    W = np.random.default_rng(seed).normal(scale=0.4, size=(d, d))
    return sigma, blocks_1d(d, p), W


def loss_given_mask(sigma, W, keep, weights):
    """E_x of the target-weighted error for one fixed keep-mask r (d,), exact in x."""
    residual = np.eye(len(sigma)) - keep[:, None] * W  # x - (r ⊙ x) W = x (I - diag(r) W)
    per_output = np.diag(residual.T @ sigma @ residual)
    target = weights[0] * (1 - keep) + weights[1] * keep
    return float(target @ per_output)


def enumerated_loss(sigma, W, partition, mask_ratio, scheme, weights):
    n = partition.n_patches
    kept = int(n * (1 - mask_ratio))
    total = 0.0
    for keep_patch in itertools.product([0, 1], repeat=n):
        if scheme == "bernoulli":
            prob = np.prod([(1 - mask_ratio) if k else mask_ratio for k in keep_patch])
        elif sum(keep_patch) == kept:
            prob = 1.0 / len(list(itertools.combinations(range(n), kept)))
        else:
            continue
        keep = np.asarray(keep_patch, dtype=np.float64)[partition.patch_ids]
        total += prob * loss_given_mask(sigma, W, keep, weights)
    return total


WEIGHTS = {"all": (1, 1), "masked": (1, 0), "visible": (0, 1)}


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
@pytest.mark.parametrize("target", TARGETS)
def test_exact_loss_equals_enumeration_over_all_masks(scheme, target):
    sigma, partition, W = setup()
    weights = WEIGHTS.get(target, target) if isinstance(target, str) else target
    exact = expected_loss(sigma, W, 0.5, partition, target=target, scheme=scheme)
    expected = enumerated_loss(sigma, W, partition, 0.5, scheme, weights)
    assert exact == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
@pytest.mark.parametrize("target", ["all", "masked"])
def test_exact_loss_matches_monte_carlo_on_sampled_masks(scheme, target):
    sigma, partition, W = setup(d=12, p=3, seed=1)
    n = 100_000
    x = gaussian_samples(sigma, n, seed=2)
    r = sample_keep_masks(n, partition, 0.5, scheme, seed=3)
    error = (x - (r * x) @ W) ** 2
    weight = (1 - r) if target == "masked" else np.ones_like(r)
    per_sample = np.sum(weight * error, axis=1)
    exact = expected_loss(sigma, W, 0.5, partition, target=target, scheme=scheme)
    standard_error = per_sample.std() / np.sqrt(n)
    assert abs(per_sample.mean() - exact) < 4 * standard_error


def test_mixed_target_is_the_weighted_combination():
    sigma, partition, W = setup()
    lam = 0.3
    mixed = expected_loss(sigma, W, 0.4, partition, target=(1.0, lam))
    all_pixels = expected_loss(sigma, W, 0.4, partition, target="all")
    masked = expected_loss(sigma, W, 0.4, partition, target="masked")
    assert mixed == pytest.approx(lam * all_pixels + (1 - lam) * masked, rel=1e-13)


@pytest.mark.parametrize("target", TARGETS)
def test_gradient_matches_finite_differences(target):
    sigma, partition, W = setup(d=6, p=2, seed=4)
    loss = ExpectedLoss(sigma, 0.5, partition, target, "fixed")
    grad = loss.gradient(W)
    step = 1e-6
    numeric = np.zeros_like(W)
    for i, j in itertools.product(range(6), range(6)):
        E = np.zeros_like(W)
        E[i, j] = step
        numeric[i, j] = (loss.value(W + E) - loss.value(W - E)) / (2 * step)
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_all_pixel_loss_matches_bernoulli_regularised_form():
    # Notes: ℓ = ‖Σ^½ (I - (1-m) W)‖² + m(1-m) tr(Wᵀ D W) for Bernoulli masks.
    sigma, partition, W = setup()
    m = 0.3
    D = sigma * partition.same_patch()
    residual = np.eye(len(sigma)) - (1 - m) * W
    expected = np.trace(residual.T @ sigma @ residual) + m * (1 - m) * np.trace(W.T @ D @ W)
    assert expected_loss(sigma, W, m, partition) == pytest.approx(expected, rel=1e-13)
