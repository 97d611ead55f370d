"""The closed-form rank-k optimum against numerical optimisation, SGD, and its known limits."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from maelens.theory import (
    blocks_1d,
    denoising_ae_optimum,
    expected_loss,
    full_rank_optimum,
    kernel_covariance,
    linear_mae_optimum,
    mae_spectrum,
    optimum_grid,
    sample_keep_masks,
    solve_linear_mae,
    tiles_2d,
)


def projector(X: np.ndarray) -> np.ndarray:
    q = np.linalg.qr(X)[0]
    return q @ q.T


def span_cosines(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between span(X) and span(Y)."""
    return np.linalg.svd(np.linalg.qr(X)[0].T @ np.linalg.qr(Y)[0], compute_uv=False)


def pca(sigma: np.ndarray, k: int) -> np.ndarray:
    return np.linalg.eigh(sigma)[1][:, ::-1][:, :k]


@pytest.fixture
def open_kernel():
    """Non-periodic exponential kernel: no tied eigenvalues."""
    return kernel_covariance((24,), 4.0), blocks_1d(24, 4)


def test_generalized_and_naive_paths_agree(open_kernel):
    sigma, partition = open_kernel
    fast = linear_mae_optimum(sigma, 0.6, partition, 5)
    naive = linear_mae_optimum(sigma, 0.6, partition, 5, method="naive")
    np.testing.assert_allclose(fast.eigenvalues, naive.eigenvalues, rtol=1e-10)
    np.testing.assert_allclose(fast.W, naive.W, atol=1e-10)
    assert np.linalg.norm(projector(fast.U) - projector(naive.U)) < 1e-9
    np.testing.assert_allclose(fast.U.T @ fast.U, np.eye(5), atol=1e-12)


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
def test_closed_form_matches_lbfgs_on_exact_loss(open_kernel, scheme):
    sigma, partition = open_kernel
    closed = linear_mae_optimum(sigma, 0.6, partition, 3, scheme=scheme)
    numeric = solve_linear_mae(sigma, 0.6, partition, 3, target="all", scheme=scheme, seed=1)
    assert abs(numeric.loss - closed.min_loss) <= 1e-8 * closed.min_loss
    assert np.linalg.norm(projector(numeric.B.T) - projector(closed.U)) < 1e-6
    assert np.linalg.norm(projector(numeric.A) - projector(closed.A)) < 1e-6


def test_min_loss_is_the_expected_loss_of_w_star(open_kernel):
    sigma, partition = open_kernel
    for scheme in ("bernoulli", "fixed"):
        closed = linear_mae_optimum(sigma, 0.4, partition, 4, scheme=scheme)
        value = expected_loss(sigma, closed.W, 0.4, partition, scheme=scheme)
        assert value == pytest.approx(closed.min_loss, rel=1e-12)


def test_closed_form_matches_sgd_on_sampled_masks():
    d, k, m = 16, 2, 0.5
    sigma, partition = kernel_covariance((d,), 3.0), blocks_1d(d, 2)
    closed = linear_mae_optimum(sigma, m, partition, k)
    rng = np.random.default_rng(0)
    root = np.linalg.cholesky(sigma)
    A, B = rng.normal(scale=0.3, size=(d, k)), rng.normal(scale=0.3, size=(k, d))
    for step in range(4000):
        lr = 0.02 * min(1.0, (1500 / (step + 1)) ** 1.5)
        x = rng.standard_normal((256, d)) @ root.T
        r = sample_keep_masks(256, partition, m, seed=int(rng.integers(2**31)))
        h = (r * x) @ A
        error = h @ B - x  # (256, d)
        grad_b = 2 / 256 * h.T @ error
        grad_a = 2 / 256 * (r * x).T @ (error @ B.T)
        A, B = A - lr * grad_a, B - lr * grad_b
    assert span_cosines(B.T, closed.U).min() > 0.999
    assert span_cosines(A, closed.A).min() > 0.999


def test_zero_ratio_is_pca(open_kernel):
    sigma, partition = open_kernel
    closed = linear_mae_optimum(sigma, 0.0, partition, 4)
    top = pca(sigma, 4)
    np.testing.assert_allclose(closed.W, top @ top.T, atol=1e-10)
    np.testing.assert_allclose(closed.eigenvalues, np.linalg.eigvalsh(sigma)[::-1][:5], rtol=1e-10)


def test_single_patch_is_pca():
    # (The fixed-count scheme keeps int(1 * (1 - m)) = 0 of a single patch for any m > 0.)
    sigma = kernel_covariance((4, 4, 2), 2.0, channel_cov=[[1.0, 0.5], [0.5, 1.0]])
    closed = linear_mae_optimum(sigma, 0.7, tiles_2d(4, 4, 4, channels=2), 2)
    assert not closed.tied  # k = 2 stops before the x / y tie of a square image
    assert np.linalg.norm(projector(closed.U) - projector(pca(sigma, 2))) < 1e-9


@pytest.mark.parametrize("mask_ratio", [0.25, 0.5, 0.9])
def test_pixel_patches_on_stationary_sigma_give_pca_span(mask_ratio):
    sigma = kernel_covariance((24,), 3.0, periodic=True)  # eigenvalues: 1, then cos/sin pairs
    closed = linear_mae_optimum(sigma, mask_ratio, blocks_1d(24, 1), 3)
    assert not closed.tied
    assert np.linalg.norm(projector(closed.U) - projector(pca(sigma, 3))) < 1e-9


def test_denoising_ae_is_pca_span(open_kernel):
    sigma, _ = open_kernel
    dae = denoising_ae_optimum(sigma, 0.7, 4)
    assert np.linalg.norm(projector(dae.U) - projector(pca(sigma, 4))) < 1e-9
    values = np.linalg.eigvalsh(sigma)[::-1][:4]
    shrink = values / (values + 0.49)  # W* = (Σ + σ²I)⁻¹ Σ U Uᵀ has eigenvalues λ / (λ + σ²)
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(dae.W).real)[::-1][:4], shrink, rtol=1e-9)


def test_gauge_invariance(open_kernel):
    sigma, partition = open_kernel
    closed = linear_mae_optimum(sigma, 0.5, partition, 3)
    C = np.random.default_rng(5).normal(size=(3, 3)) + 3 * np.eye(3)
    A, B = closed.A @ np.linalg.inv(C), C @ closed.B
    np.testing.assert_allclose(A @ B, closed.W, atol=1e-12)
    assert expected_loss(sigma, A @ B, 0.5, partition) == pytest.approx(closed.min_loss, rel=1e-12)
    assert span_cosines(A, closed.A).min() > 1 - 1e-12


def test_continuity_as_ratio_tends_to_one(open_kernel):
    sigma, partition = open_kernel
    D = partition.block_diagonal(sigma)
    limit = sigma @ np.linalg.solve(D, sigma)  # M -> Σ D⁻¹ Σ (block-whitened) as m -> 1
    top = np.linalg.eigh(limit)[1][:, ::-1][:, :3]
    near = linear_mae_optimum(sigma, 0.9999, partition, 3)
    assert np.linalg.norm(projector(near.U) - projector(top)) < 1e-3


def test_tied_eigenvalues_are_detected_and_reported(caplog):
    sigma = kernel_covariance((32,), 5.0, periodic=True)
    partition = blocks_1d(32, 4)
    with caplog.at_level(logging.WARNING, logger="maelens.theory.closed_form"):
        split = linear_mae_optimum(sigma, 0.5, partition, 2)  # cuts a cos/sin pair
    assert split.tied and split.relative_eigengap < 1e-12
    assert "not unique" in caplog.text
    assert split.summary()["tied"] is True
    whole = linear_mae_optimum(sigma, 0.5, partition, 3)  # the pair kept whole
    assert not whole.tied and whole.relative_eigengap > 1e-3


def test_full_rank_optimum_is_v_inverse_sigma(open_kernel):
    sigma, partition = open_kernel
    m = 0.6
    V = (1 - m) * sigma + m * partition.block_diagonal(sigma)
    np.testing.assert_allclose(
        full_rank_optimum(sigma, m, partition), np.linalg.solve(V, sigma), atol=1e-10
    )


def test_spectrum_and_grid_agree_with_single_calls(open_kernel):
    sigma, partition = open_kernel
    grid = optimum_grid(sigma, [0.0, 0.5], [partition, blocks_1d(24, 2)], 3)
    assert sorted(grid) == [(2, 0.0), (2, 0.5), (4, 0.0), (4, 0.5)]
    single = linear_mae_optimum(sigma, 0.5, partition, 3)
    np.testing.assert_allclose(grid[(4, 0.5)].W, single.W, atol=1e-12)
    spectrum = mae_spectrum(sigma, 0.5, partition)
    np.testing.assert_allclose(spectrum[:4], single.eigenvalues, rtol=1e-10)
