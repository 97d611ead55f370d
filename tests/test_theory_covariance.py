"""Covariance builders, Gaussian samples and the streaming empirical covariance."""

from __future__ import annotations

import numpy as np
import pytest

from maelens.theory import (
    KERNELS,
    CovarianceAccumulator,
    empirical_covariance,
    gaussian_samples,
    ising_covariance,
    kernel_covariance,
    kernel_values,
    labeled_images_covariance,
    resize_images,
    rho_from_coupling,
)


def test_kernel_values_at_known_points():
    assert kernel_values("exponential", 3.0, 3.0) == pytest.approx(np.exp(-1))
    assert kernel_values("rbf", 2.0, 2.0) == pytest.approx(np.exp(-0.5))
    r = np.sqrt(3)
    assert kernel_values("matern32", 1.0, 1.0) == pytest.approx((1 + r) * np.exp(-r))
    r = np.sqrt(5)
    assert kernel_values("matern52", 1.0, 1.0) == pytest.approx((1 + r + 5 / 3) * np.exp(-r))
    for kind in KERNELS:  # every kernel is a correlation: 1 at distance 0, decreasing
        values = kernel_values(kind, np.arange(6.0), 2.0)
        assert values[0] == 1.0 and np.all(np.diff(values) < 0)


def test_2d_kernel_with_channels_is_a_kronecker_product():
    channel = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, 0.6], [0.2, 0.6, 1.0]])
    sigma = kernel_covariance((3, 4, 3), 1.5, "matern52", channel_cov=channel, variance=2.0)
    assert sigma.shape == (36, 36)
    # input index (y * W + x) * C + c: pixel (0, 1) channel 2 vs pixel (2, 3) channel 0
    i, j = (0 * 4 + 1) * 3 + 2, (2 * 4 + 3) * 3 + 0
    expected = 2.0 * kernel_values("matern52", np.hypot(2, 2), 1.5) * channel[2, 0]
    assert sigma[i, j] == pytest.approx(expected)


def test_ising_covariance_is_ar1_and_separable_in_2d():
    line = ising_covariance((6,), 0.5)
    np.testing.assert_allclose(line, 0.5 ** np.abs(np.subtract.outer(np.arange(6), np.arange(6))))
    ar_y, ar_x = ising_covariance((3,), 0.7), ising_covariance((4,), 0.7)
    np.testing.assert_allclose(ising_covariance((3, 4, 1), 0.7), np.kron(ar_y, ar_x))
    ring = ising_covariance((8,), 0.5, periodic=True)
    assert ring[0, 7] == 0.5
    assert rho_from_coupling(0.5) == pytest.approx(np.tanh(0.5))


def test_gaussian_samples_have_the_covariance_and_are_seeded():
    sigma = kernel_covariance((6,), 2.0)
    x = gaussian_samples(sigma, 200_000, seed=1)
    np.testing.assert_allclose(np.cov(x.T), sigma, atol=0.02)
    np.testing.assert_allclose(gaussian_samples(sigma, 5, seed=1), x[:5], atol=1e-12)  # prefix
    np.testing.assert_array_equal(gaussian_samples(sigma, 7, seed=3),
                                  gaussian_samples(sigma, 7, seed=3))
    singular = np.ones((3, 3))  # rank 1: every sample has equal coordinates
    y = gaussian_samples(singular, 10, seed=0)
    # Tolerance from the numerics: eigenvalues at round-off level (|λ| <= d·eps·λ_max) are
    # zeroed, so each sample is z·sqrt(3)·v with v = (1, 1, 1)/sqrt(3) computed to a few ulps:
    # coordinates differ by about |z|·1e-15 (|z| < 5 for 10 normal draws); 1e-12 leaves 1000x
    # head-room whatever the BLAS kernel. Without the zeroing the null-space eigenvalues
    # (~1e-16, kernel-dependent) gave sqrt(1e-16) = 1e-8 noise.
    np.testing.assert_allclose(y - y[:, :1], 0.0, atol=1e-12)
    assert np.std(y[:, 0]) > 0.3  # the one direction of Σ is sampled (its variance is 3)


def test_chunked_and_merged_covariance_equal_one_shot():
    x = np.random.default_rng(0).normal(size=(300, 5)) + 10.0
    one_shot = np.cov(x.T)
    chunked = CovarianceAccumulator()
    for start in range(0, 300, 70):
        chunked.update(x[start : start + 70])
    np.testing.assert_allclose(chunked.result()[1], one_shot, rtol=1e-12)
    a = CovarianceAccumulator().update(x[:100])
    b = CovarianceAccumulator().update(x[100:])
    ab, ba = a.merge(b).result(), CovarianceAccumulator().update(x[100:]).merge(
        CovarianceAccumulator().update(x[:100])).result()
    np.testing.assert_allclose(ab[1], ba[1], rtol=1e-12)
    np.testing.assert_allclose(ab[0], x.mean(axis=0), rtol=1e-12)


def test_empirical_covariance_of_images():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 8, 8, 3), dtype=np.uint8)
    result = empirical_covariance(images, resolution=(4, 4), chunk_size=16)
    small = resize_images(images.astype(np.float64) / 255.0, (4, 4))
    assert result.image_shape == (4, 4, 3) and result.n_samples == 50
    np.testing.assert_allclose(result.covariance, np.cov(small.reshape(50, -1).T), atol=1e-12)
    gray = empirical_covariance(images, gray=True, ridge=0.1)
    assert gray.image_shape == (8, 8, 1)
    plain = np.cov((images.mean(axis=-1) / 255.0).reshape(50, -1).T)
    ridge = 0.1 * np.mean(np.diag(plain))
    np.testing.assert_allclose(gray.covariance, plain + ridge * np.eye(64), atol=1e-12)


def test_resize_block_means_and_bilinear():
    images = np.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_allclose(resize_images(images, (2, 2))[0, :, :, 0], [[2.5, 4.5],
                                                                          [10.5, 12.5]])
    assert resize_images(images, (3, 3)).shape == (1, 3, 3, 1)


def test_covariance_of_a_maelens_data_set():
    data = pytest.importorskip("maelens.data")
    images = np.random.default_rng(1).integers(0, 256, size=(30, 8, 8, 3), dtype=np.uint8)
    dataset = data.LabeledImages(images, np.zeros(30, dtype=np.int64), ["only"])
    result = labeled_images_covariance(dataset, resolution=(4, 4), gray=True)
    expected = empirical_covariance(images, resolution=(4, 4), gray=True)
    assert result.image_shape == (4, 4, 1)
    np.testing.assert_allclose(result.covariance, expected.covariance)
