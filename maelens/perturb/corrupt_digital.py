"""ImageNet-C digital corruptions (contrast, elastic, pixelate, JPEG), batched where it pays.

Ground truth is the `imagecorruptions` package (1.1.2, `corruptions.py`): its severity constants
and order of operations. Note that its `elastic_transform` is a smoothed random displacement
field only (the ImageNet-C repository's version adds a random affine warp first; the package's
does not, and the package is our reference). Each function takes images (B, 3, H, W) float RGB
in [0, 1], a severity 1..5 and one CPU generator per image, and returns float values in [0, 1]
units; `corruptions.corrupt` clamps and quantises.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Contrast factor around the per-channel mean, reference `contrast`.
_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
# Displacement gain, reference `elastic_transform` (250 * [...]).
_ELASTIC_ALPHA = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)
# Downscale factor, reference `pixelate`.
_PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)
# JPEG quality, reference `jpeg_compression`.
_JPEG_QUALITY = (25, 18, 15, 10, 7)


def contrast(images: torch.Tensor, severity: int,
             generators: list[torch.Generator]) -> torch.Tensor:
    """Contrast: (x - mean) * c + mean with the per-image, per-channel mean over pixels.
    images (B, 3, H, W) in [0, 1]; returns the same shape."""
    del generators  # deterministic
    factor = _CONTRAST[severity - 1]
    means = images.mean(dim=(2, 3), keepdim=True)  # (B, 3, 1, 1)
    # mean * (1 - c) + c * x in one pass: one full-size allocation, the output.
    return torch.add(means * (1.0 - factor), images, alpha=factor)


# ---------------------------------------------------------------- elastic transform


@lru_cache(maxsize=8)
def gaussian_filter_matrix(size: int, sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter1d along an axis of `size` pixels, as a (size, size) matrix.

    Kernel radius int(truncate * sigma + 0.5) (scipy's rule), sigma in pixels; borders in
    scipy's "reflect" mode (d c b a | a b c d | d c b a), folded into the matrix so that a
    matmul does padding and filtering at once (torch's conv2d with a 1-channel 15-tap kernel
    is ~8x slower than a 224 x 224 matmul on the CPU). Cached: a float32 CPU tensor, read-only.
    """
    radius = int(truncate * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    rows = torch.arange(size)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    for offset, weight in zip(range(-radius, radius + 1), kernel.tolist(), strict=True):
        cols = (rows + offset) % (2 * size)  # reflect, folded as often as needed
        cols = torch.where(cols >= size, 2 * size - 1 - cols, cols)
        matrix.index_put_((rows, cols), torch.full((size,), weight, dtype=torch.float64),
                          accumulate=True)
    return matrix.float()


def elastic_draws(generators: list[torch.Generator], height: int, width: int) -> torch.Tensor:
    """Each image's U[0, 1) draws for its displacement field: (B, 2, H, W) float32 on the CPU,
    x displacements first, then y (the reference's order)."""
    return torch.stack([torch.rand((2, height, width), generator=g) for g in generators])


def elastic_from_draws(images: torch.Tensor, severity: int,
                       uniforms: torch.Tensor) -> torch.Tensor:
    """Elastic transform given `elastic_draws`: resample along a smoothed random displacement.

    images (B, 3, H, W) in [0, 1]; returns the same shape. Per image: dx, dy ~ U(-0.005 H,
    0.005 H) per pixel, Gaussian-smoothed (sigma = 0.01 * (H, W) px, truncate 3), times alpha;
    bilinear sampling at (y + dy, x + dx) with half-sample-symmetric borders, which is both
    scipy's `map_coordinates(order=1, mode="reflect")` and `grid_sample(padding_mode=
    "reflection", align_corners=False)`.
    """
    H, W = images.shape[-2:]
    alpha, max_shift = _ELASTIC_ALPHA[severity - 1], H * 0.005  # pixels, both from H
    # The reference smooths U(-m, m) noise and scales by alpha. Smoothing is linear and each
    # filter row sums to 1, so we smooth u ~ U[0, 1) and map after: d = (2 s - 1) m alpha px.
    rows_filter = gaussian_filter_matrix(H, 0.01 * H).to(images.device)
    cols_filter = gaussian_filter_matrix(W, 0.01 * W).to(images.device)
    smooth = rows_filter @ uniforms.to(images.device, torch.float32) @ cols_filter.T
    # grid_sample's coordinate of pixel p + d (align_corners=False) is (2 (p + d) + 1) / size
    # - 1; with d = (2 s - 1) m alpha that is s * 4 m alpha / size + (2 p + 1 - 2 m alpha) / size
    # - 1, one multiply-add per coordinate.
    gain = 2.0 * max_shift * alpha
    grid_x, grid_y = smooth.unbind(1)  # (B, H, W) each
    cols = torch.arange(W, device=images.device, dtype=torch.float32)
    rows = torch.arange(H, device=images.device, dtype=torch.float32)[:, None]
    grid_x.mul_(2.0 * gain / W).add_((2.0 * cols + 1.0 - gain) / W - 1.0)
    grid_y.mul_(2.0 * gain / H).add_((2.0 * rows + 1.0 - gain) / H - 1.0)
    grid = smooth.permute(0, 2, 3, 1).to(images.dtype)  # (B, H, W, 2), (x, y) order
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def elastic_transform(images: torch.Tensor, severity: int,
                      generators: list[torch.Generator]) -> torch.Tensor:
    """Elastic transform (reference `elastic_transform`). images (B, 3, H, W) in [0, 1]."""
    return elastic_from_draws(images, severity, elastic_draws(generators, *images.shape[-2:]))


# ---------------------------------------------------------------- PIL-defined corruptions


def _map_uint8_images(fn: Callable[[np.ndarray], np.ndarray],
                      images: torch.Tensor) -> torch.Tensor:
    """Apply fn, (H, W, 3) uint8 -> (H, W, 3) uint8, to every image of a (B, 3, H, W) float
    [0, 1] batch (rounded to 8 bits first, as the reference's input is uint8); returns
    (B, 3, H, W) float in [0, 1] on the images' device.

    The float <-> uint8 conversions are batched (per image they cost ~15% more); fn runs on
    threads, as Pillow releases the GIL in its codecs and resamplers.
    """
    B, _, H, W = images.shape
    pixels = torch.empty(B, H, W, 3, dtype=torch.uint8)
    pixels.copy_(images.detach().permute(0, 2, 3, 1).mul(255.0).round_().clamp_(0.0, 255.0))
    arrays = pixels.numpy()

    def one(i: int) -> None:
        arrays[i] = fn(arrays[i])

    workers = min(B, os.cpu_count() or 1)
    if workers <= 1:
        for i in range(B):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, range(B)))
    return pixels.to(images.device).permute(0, 3, 1, 2).to(images.dtype).div_(255.0)


def _pixelate_one(image: np.ndarray, factor: float) -> np.ndarray:
    """The reference's `pixelate` of one (H, W, 3) uint8 image."""
    H, W = image.shape[:2]
    # max(1, .): images under 4 px, where the reference's Pillow call fails, keep one pixel.
    size = (max(1, int(W * factor)), max(1, int(H * factor)))
    small = Image.fromarray(image).resize(size, Image.Resampling.BOX)
    return np.asarray(small.resize((W, H), Image.Resampling.NEAREST))


def pixelate(images: torch.Tensor, severity: int,
             generators: list[torch.Generator]) -> torch.Tensor:
    """Pixelate: Pillow BOX downscale by c, then NEAREST upscale back; the definition is
    Pillow's (its fixed-point box weights and its nearest rounding), so Pillow runs it, one
    image at a time on threads. images (B, 3, H, W) in [0, 1] (rounded to 8 bits first, as
    the reference's input is uint8); returns the same shape, exact 8-bit levels."""
    del generators  # deterministic
    factor = _PIXELATE[severity - 1]
    return _map_uint8_images(lambda image: _pixelate_one(image, factor), images)


def _jpeg_one(image: np.ndarray, quality: int) -> np.ndarray:
    """The reference's `jpeg_compression` of one (H, W, 3) uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def jpeg_compression(images: torch.Tensor, severity: int,
                     generators: list[torch.Generator]) -> torch.Tensor:
    """JPEG compression at quality c: Pillow's (libjpeg's) encoder and decoder define it, so
    they run it, one image at a time on threads. images (B, 3, H, W) in [0, 1] (rounded to
    8 bits first); returns the same shape, exact 8-bit levels."""
    del generators  # deterministic
    quality = _JPEG_QUALITY[severity - 1]
    return _map_uint8_images(lambda image: _jpeg_one(image, quality), images)


CORRUPTIONS = {"contrast": contrast, "elastic_transform": elastic_transform,
               "pixelate": pixelate, "jpeg_compression": jpeg_compression}
