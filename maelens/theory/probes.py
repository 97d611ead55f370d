"""Linear probes of a linear code z = x A: population R² in closed form, and empirical ridge.

For zero-mean x with covariance Σ and a linear target y = x g, the best linear read-out of y
from z = x A explains R² = gᵀΣA (AᵀΣA)⁻¹ AᵀΣg / gᵀΣg of its variance. A ridge probe fitted on
n samples converges to it as n → ∞ and the ridge → 0. Gabor filters of chosen widths make
targets of a chosen spatial scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg

from maelens._validate import check_covariance, check_positive_int, check_ratio
from maelens.errors import MaelensError
from maelens.theory.covariance import gaussian_samples


def population_r2(sigma: np.ndarray, encoder: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """R² of each target column g (d,) or (d, n_targets) from z = x A, A (d, k): (n_targets,)."""
    sigma = check_covariance("sigma", sigma)
    A, G = _check_probe_shapes(sigma, encoder, targets)
    cross = (sigma @ A).T @ G  # AᵀΣg, (k, n_targets)
    gram = A.T @ sigma @ A  # AᵀΣA, (k, k); lstsq tolerates a rank-deficient code
    explained = np.sum(cross * np.linalg.lstsq(gram, cross, rcond=None)[0], axis=0)
    return explained / np.sum(G * (sigma @ G), axis=0)


def ridge_probe_r2(
    z_train: np.ndarray,
    y_train: np.ndarray,
    z_test: np.ndarray,
    y_test: np.ndarray,
    *,
    alpha: float = 1e-8,
) -> np.ndarray:
    """Held-out R² (n_targets,) of ridge regressions y ≈ z w + b (closed form, intercept).

    z (n, k), y (n,) or (n, n_targets); `alpha` is relative: the penalty is
    alpha · mean(diag(zᵀz)) so it does not depend on the units of z.
    """
    z_train, z_test = np.asarray(z_train, np.float64), np.asarray(z_test, np.float64)
    y_train = np.asarray(y_train, np.float64).reshape(len(z_train), -1)
    y_test = np.asarray(y_test, np.float64).reshape(len(z_test), -1)
    z_mean, y_mean = z_train.mean(axis=0), y_train.mean(axis=0)
    zc = z_train - z_mean
    gram = zc.T @ zc
    gram += float(alpha) * np.mean(np.diag(gram)) * np.eye(len(gram))
    weights = scipy.linalg.solve(gram, zc.T @ (y_train - y_mean), assume_a="pos")
    residual = y_test - (z_test - z_mean) @ weights - y_mean
    total = y_test - y_test.mean(axis=0)
    return 1.0 - np.sum(residual**2, axis=0) / np.sum(total**2, axis=0)


def sampled_probe_r2(
    sigma: np.ndarray,
    encoder: np.ndarray,
    targets: np.ndarray,
    n_samples: int,
    *,
    seed: int = 0,
    test_fraction: float = 0.5,
    alpha: float = 1e-8,
) -> np.ndarray:
    """Empirical R² (n_targets,): ridge probes on Gaussian samples x ~ N(0, Σ), z = xA, y = xg."""
    sigma = check_covariance("sigma", sigma)
    A, G = _check_probe_shapes(sigma, encoder, targets)
    n = check_positive_int("n_samples", n_samples)
    n_test = int(round(check_ratio("test_fraction", test_fraction) * n))
    if not 2 <= n_test <= n - 2:
        raise MaelensError(
            f"`test_fraction`={test_fraction} of {n} samples leaves {n_test} test rows; expected "
            "at least 2 train and 2 test rows. Fix: more samples or another fraction."
        )
    x = gaussian_samples(sigma, n, seed=seed)
    z, y = x @ A, x @ G
    return ridge_probe_r2(z[n_test:], y[n_test:], z[:n_test], y[:n_test], alpha=alpha)


def gabor_target(
    height: int,
    width: int,
    sigma_px: float,
    *,
    wavelength_px: float | None = None,
    theta_rad: float = 0.0,
    phase_rad: float = 0.0,
    center: tuple[float, float] | None = None,
    channels: int = 1,
) -> np.ndarray:
    """A unit-norm 2-D Gabor filter g (d,), d = H·W·C, flattened (H, W, C).

    g(y, x) = exp(-ρ² / 2σ²) cos(2π u / λ + φ), u = x cos θ + y sin θ measured from `center`
    (default: the image centre), λ = `wavelength_px` (default 2σ). Every channel gets the same
    filter, so the target reads luminance.
    """
    sigma_px = float(sigma_px)
    if not sigma_px > 0:
        raise MaelensError(f"`sigma_px` must be > 0 pixels, got {sigma_px}.")
    wavelength = 2.0 * sigma_px if wavelength_px is None else float(wavelength_px)
    cy, cx = ((height - 1) / 2, (width - 1) / 2) if center is None else center
    y, x = np.meshgrid(np.arange(height) - cy, np.arange(width) - cx, indexing="ij")
    u = x * np.cos(theta_rad) + y * np.sin(theta_rad)
    envelope = np.exp(-(x**2 + y**2) / (2 * sigma_px**2))
    g = envelope * np.cos(2 * np.pi * u / wavelength + phase_rad)
    g = np.repeat(g[:, :, None], check_positive_int("channels", channels), axis=2).ravel()
    return g / np.linalg.norm(g)


def gabor_targets(
    height: int, width: int, widths_px: Sequence[float], **kwargs
) -> np.ndarray:
    """Gabor targets (d, n_widths), one column per width σ (pixels); see `gabor_target`."""
    return np.stack([gabor_target(height, width, s, **kwargs) for s in widths_px], axis=1)


def _check_probe_shapes(
    sigma: np.ndarray, encoder: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    d = sigma.shape[0]
    A = np.asarray(encoder, dtype=np.float64)
    G = np.asarray(targets, dtype=np.float64)
    G = G[:, None] if G.ndim == 1 else G
    if A.ndim != 2 or A.shape[0] != d:
        raise MaelensError(f"`encoder` must be (d, k) with d = {d}, got {A.shape}.")
    if G.ndim != 2 or G.shape[0] != d:
        raise MaelensError(f"`targets` must be (d,) or (d, n_targets) with d = {d}, got {G.shape}.")
    return A, G
