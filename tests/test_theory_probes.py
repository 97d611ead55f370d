"""Probe R²: closed form against known answers, scikit-learn, and ridge probes on samples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from maelens.theory import (
    blocks_1d,
    gabor_target,
    gabor_targets,
    kernel_covariance,
    linear_mae_optimum,
    population_r2,
    ridge_probe_r2,
    sampled_probe_r2,
)


def test_population_r2_known_answers():
    sigma = np.diag([4.0, 3.0, 2.0, 1.0])
    A = np.eye(4)[:, :2]  # the code reads coordinates 0 and 1
    targets = np.stack([np.eye(4)[0], np.eye(4)[3], [1.0, 0.0, 0.0, 1.0]], axis=1)
    np.testing.assert_allclose(population_r2(sigma, A, targets), [1.0, 0.0, 0.8], atol=1e-12)
    assert population_r2(sigma, np.eye(4), np.ones(4))[0] == pytest.approx(1.0)


def test_population_r2_is_the_limit_of_empirical_ridge_probes():
    sigma = kernel_covariance((16,), 3.0) + 0.05 * np.eye(16)
    encoder = linear_mae_optimum(sigma, 0.75, blocks_1d(16, 4), 4).A
    targets = np.random.default_rng(0).normal(size=(16, 3))
    exact = population_r2(sigma, encoder, targets)
    sampled = sampled_probe_r2(sigma, encoder, targets, 200_000, seed=1)
    np.testing.assert_allclose(sampled, exact, atol=0.01)
    assert np.all((exact > 0.05) & (exact < 0.99))  # a non-trivial test


def test_ridge_probe_equals_least_squares_without_penalty():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(400, 5))
    y = z @ rng.normal(size=5) + 3.0 + rng.normal(size=400)
    mine = ridge_probe_r2(z[:300], y[:300], z[300:], y[300:], alpha=0.0)[0]
    fitted = LinearRegression().fit(z[:300], y[:300])
    assert mine == pytest.approx(fitted.score(z[300:], y[300:]), rel=1e-10)


def test_gabor_targets():
    g = gabor_target(15, 15, 2.0, channels=3)
    assert g.shape == (15 * 15 * 3,) and np.linalg.norm(g) == pytest.approx(1.0)
    image = g.reshape(15, 15, 3)[:, :, 0]
    assert np.unravel_index(np.argmax(image), image.shape) == (7, 7)  # centred, phase 0
    # along y (perpendicular to the carrier for θ = 0) only the envelope acts: e^{-1/2} at σ
    assert image[9, 7] / image[7, 7] == pytest.approx(np.exp(-0.5))
    assert image[7, 8] / image[7, 7] == pytest.approx(np.exp(-1 / 8) * np.cos(np.pi / 2),
                                                      abs=1e-12)  # λ = 2σ = 4 px
    bank = gabor_targets(8, 8, [1.0, 2.0, 4.0])
    assert bank.shape == (64, 3)
