"""Covariances with a known correlation length, Gaussian samples, and empirical covariances.

Flattening is (H, W, C) channel-last, as the image arrays (N, H, W, C) and `tiles_2d(...,
order="hwc")`; channels enter through a Kronecker product Σ = K_space ⊗ C_channel. Lengths are
in pixels. Kernels of r (Euclidean distance, pixels) and length ℓ:

    exponential  exp(-r/ℓ)                      (Matérn ν = 1/2; e-folding distance ℓ)
    matern32     (1 + √3 r/ℓ) exp(-√3 r/ℓ)      (Matérn ν = 3/2)
    matern52     (1 + √5 r/ℓ + 5r²/3ℓ²) exp(-√5 r/ℓ)   (Matérn ν = 5/2)
    rbf          exp(-r² / 2ℓ²)                 (Matérn ν → ∞)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage

from maelens._validate import check_covariance, check_positive_int, check_ratio
from maelens.errors import MaelensError
from maelens.theory.partition import partition_for
from maelens.theory.spatial import pixel_distances

KERNELS = ("exponential", "matern32", "matern52", "rbf")


def kernel_values(kind: str, distance: np.ndarray, length_px: float) -> np.ndarray:
    """Correlation of two pixels `distance` pixels apart under a stationary kernel."""
    length = float(length_px)
    if not length > 0:
        raise MaelensError(f"`length_px` must be > 0 pixels, got {length_px}.")
    r = np.asarray(distance, dtype=np.float64) / length
    if kind == "exponential":
        return np.exp(-r)
    if kind == "matern32":
        return (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r)
    if kind == "matern52":
        return (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r)
    if kind == "rbf":
        return np.exp(-(r**2) / 2)
    raise MaelensError(f"`kind` must be one of {KERNELS}, got {kind!r}.")


def kernel_covariance(
    image_shape: tuple[int, ...],
    length_px: float,
    kind: str = "exponential",
    *,
    periodic: bool = False,
    variance: float = 1.0,
    channel_cov: np.ndarray | None = None,
) -> np.ndarray:
    """Stationary covariance (d, d) on a (length,) or (H, W, C) grid.

    `periodic` wraps distances (a ring / torus); `channel_cov` (C, C) correlates the channels
    of a pixel (identity by default). The result is checked to be PSD: a wrapped kernel need
    not be.
    """
    distances = _grid_distances(image_shape, periodic)
    spatial = variance * kernel_values(kind, distances, length_px)
    return _with_channels(spatial, image_shape, channel_cov)


def ising_covariance(
    image_shape: tuple[int, ...],
    rho: float,
    *,
    periodic: bool = False,
    channel_cov: np.ndarray | None = None,
) -> np.ndarray:
    """Ising-like / AR(1) covariance ρ^dist with dist the city-block distance in pixels.

    1-D: ρ^|i - j|, the AR(1) process; 2-D: ρ^(|Δy| + |Δx|), a separable product of two AR(1)s,
    hence PSD. For an Ising chain at coupling J, ρ = tanh(J) (`rho_from_coupling`). The
    correlation length is -1 / ln ρ pixels.
    """
    rho = check_ratio("rho", rho)
    shape = tuple(int(s) for s in image_shape)
    coords = _pixel_coords(shape)
    period = _period(shape) if periodic else (None,) * coords.shape[1]
    city_block = sum(
        pixel_distances(coords[:, axis], period=period[axis : axis + 1])
        for axis in range(coords.shape[1])
    )
    return _with_channels(rho**city_block, shape, channel_cov)


def rho_from_coupling(coupling: float) -> float:
    """ρ = tanh(J): nearest-neighbour correlation of a 1-D Ising chain at coupling J (units kT)."""
    return float(np.tanh(coupling))


def gaussian_samples(
    sigma: np.ndarray, n_samples: int, *, seed: int = 0, mean: np.ndarray | None = None
) -> np.ndarray:
    """n_samples rows (n, d) of N(mean, Σ), float64; works for singular PSD Σ."""
    sigma = check_covariance("sigma", sigma)
    n_samples = check_positive_int("n_samples", n_samples)
    values, vectors = np.linalg.eigh(sigma)
    # eigh is backward stable: eigenvalues carry an absolute error of about d·eps·‖Σ‖, so a
    # singular Σ comes back with "zero" eigenvalues of ±1e-16 whose square roots (1e-8) would
    # add BLAS-dependent noise along the null space. Those are zero to working precision.
    floor = len(sigma) * np.finfo(np.float64).eps * max(float(values[-1]), 0.0)
    root = vectors * np.sqrt(np.where(values > floor, values, 0.0))  # root @ rootᵀ = Σ
    z = np.random.default_rng(seed).standard_normal((n_samples, len(sigma)))
    x = z @ root.T
    return x if mean is None else x + np.asarray(mean, dtype=np.float64)


def _grid_distances(image_shape: tuple[int, ...], periodic: bool) -> np.ndarray:
    shape = tuple(int(s) for s in image_shape)
    return pixel_distances(_pixel_coords(shape), period=_period(shape) if periodic else None)


def _pixel_coords(shape: tuple[int, ...]) -> np.ndarray:
    """(n_pixels, n_axes) coordinates, one row per pixel: channels come from the Kronecker."""
    if len(shape) == 3:
        shape = (shape[0], shape[1], 1)
    return partition_for(shape, 1).coords


def _period(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:1] if len(shape) == 1 else shape[:2]


def _with_channels(
    spatial: np.ndarray, shape: tuple[int, ...], channel_cov: np.ndarray | None
) -> np.ndarray:
    channels = shape[2] if len(shape) == 3 else 1
    if channel_cov is None:
        channel_cov = np.eye(channels)
    channel_cov = check_covariance("channel_cov", channel_cov)
    if channel_cov.shape != (channels, channels):
        raise MaelensError(
            f"`channel_cov` must be ({channels}, {channels}) for image shape {shape}, "
            f"got {channel_cov.shape}."
        )
    sigma = spatial if channels == 1 else np.kron(spatial, channel_cov)
    return check_covariance("kernel covariance", sigma)


@dataclass(frozen=True)
class EmpiricalCovariance:
    """mean (d,), covariance (d, d) (divided by n - 1) of images flattened (H, W, C).

    Units: pixel values, i.e. uint8 inputs scaled to [0, 1]; float inputs as given.
    """

    mean: np.ndarray
    covariance: np.ndarray
    image_shape: tuple[int, int, int]
    n_samples: int


class CovarianceAccumulator:
    """Streaming mean and covariance in float64 (Chan et al. pairwise update).

    `update(x)` with rows (n, d), `merge(other)`; both return self. `result()` gives
    (mean (d,), covariance (d, d)) with the n - 1 denominator.
    """

    def __init__(self) -> None:
        self.n_ = 0
        self.mean_: np.ndarray | None = None
        self.m2_: np.ndarray | None = None  # Σ (x - mean)ᵀ (x - mean), (d, d)

    def update(self, rows: np.ndarray) -> CovarianceAccumulator:
        rows = np.asarray(rows, dtype=np.float64)
        mean = rows.mean(axis=0)
        centred = rows - mean
        return self._combine(len(rows), mean, centred.T @ centred)

    def merge(self, other: CovarianceAccumulator) -> CovarianceAccumulator:
        return self if other.n_ == 0 else self._combine(other.n_, other.mean_, other.m2_)

    def _combine(self, n: int, mean: np.ndarray, m2: np.ndarray) -> CovarianceAccumulator:
        if self.n_ == 0:
            self.n_, self.mean_, self.m2_ = n, mean.copy(), m2.copy()
            return self
        total = self.n_ + n
        delta = mean - self.mean_
        self.m2_ = self.m2_ + m2 + np.outer(delta, delta) * (self.n_ * n / total)
        self.mean_ = self.mean_ + delta * (n / total)
        self.n_ = total
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n_ < 2:
            raise MaelensError(f"a covariance needs at least 2 samples, got {self.n_}.")
        return self.mean_.copy(), self.m2_ / (self.n_ - 1)


def resize_images(images: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) float -> (N, h, w, C): block means when h, w divide H, W, else bilinear."""
    n, H, W, C = images.shape
    h, w = (check_positive_int("resolution", r) for r in resolution)
    if (h, w) == (H, W):
        return images
    if H % h == 0 and W % w == 0:  # area averaging: no aliasing
        return images.reshape(n, h, H // h, w, W // w, C).mean(axis=(2, 4))
    return scipy.ndimage.zoom(images, (1, h / H, w / W, 1), order=1)


def empirical_covariance(
    images: np.ndarray,
    *,
    resolution: tuple[int, int] | None = None,
    gray: bool = False,
    ridge: float = 0.0,
    chunk_size: int = 512,
) -> EmpiricalCovariance:
    """Covariance of images (N, H, W, C) or (N, H, W); uint8 is scaled to [0, 1].

    `gray` averages the channels first (replicated-gray RGB, e.g. MNIST as RGB, would give a
    singular Σ). `ridge` adds ridge · mean(diag Σ) · I: pixels that never vary (MNIST's border)
    make Σ singular and the closed form needs Q ≻ 0.
    """
    images = _as_nhwc(images)
    acc = CovarianceAccumulator()
    for start in range(0, len(images), check_positive_int("chunk_size", chunk_size)):
        chunk = images[start : start + chunk_size].astype(np.float64)
        if images.dtype == np.uint8:
            chunk /= 255.0
        if gray:
            chunk = chunk.mean(axis=-1, keepdims=True)
        if resolution is not None:
            chunk = resize_images(chunk, resolution)
        shape = chunk.shape[1:]
        acc.update(chunk.reshape(len(chunk), -1))
    mean, cov = acc.result()
    if ridge:
        cov = cov + float(ridge) * float(np.mean(np.diag(cov))) * np.eye(len(cov))
    return EmpiricalCovariance(mean, cov, tuple(int(s) for s in shape), acc.n_)


def labeled_images_covariance(dataset, **kwargs) -> EmpiricalCovariance:
    """`empirical_covariance` of a `maelens.data.LabeledImages` (its uint8 (N, H, W, 3) images)."""
    images = getattr(dataset, "images", None)
    if not isinstance(images, np.ndarray):
        raise MaelensError(
            f"`dataset` must be a maelens.data.LabeledImages, got {type(dataset).__name__}."
        )
    return empirical_covariance(images, **kwargs)


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) < 2:
        raise MaelensError(
            f"`images` must be (N, H, W, C) or (N, H, W) with N >= 2, got {images.shape}. "
            "Fix: channels-last arrays, e.g. x.transpose(0, 2, 3, 1) for (N, C, H, W)."
        )
    return images
