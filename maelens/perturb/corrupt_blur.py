"""ImageNet-C blur corruptions: defocus, glass, motion and zoom blur.

Definitions and severity constants follow the reference `imagecorruptions` 1.1.2
(Hendrycks & Dietterich, 2019), including its quirks where they change the output (noted where
they occur). Every function takes a batch (B, 3, H, W) of float RGB in [0, 1] on any device, a
severity 1..5 and one CPU `torch.Generator` per image, and returns unquantised floats of the same
shape. Random numbers (glass-blur offsets, motion-blur angles) are drawn on the CPU from each
image's own generator, so an image's output does not depend on its batch neighbours or device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from maelens.perturb.corrupt_noise import per_image_draws

# (disk radius in pixels, sigma of the anti-aliasing Gaussian in pixels)
DEFOCUS_BLUR: tuple[tuple[float, float], ...] = (
    (3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))
# (Gaussian sigma in pixels, max pixel displacement, shuffle passes)
GLASS_BLUR: tuple[tuple[float, int, int], ...] = (
    (0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
# (kernel radius in pixels, Gaussian sigma of the tap weights in pixels)
MOTION_BLUR: tuple[tuple[int, float], ...] = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
MOTION_ANGLE_DEG = 45.0  # the blur direction is uniform in [-45, 45] degrees
# Zoom factors averaged with the image; np.arange exactly as the reference (its float stop
# makes e.g. the first list end at 1.11, not 1.10).
ZOOM_FACTORS: tuple[tuple[float, ...], ...] = tuple(
    tuple(float(z) for z in np.arange(1.0, stop, step))
    for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)))


# ---------------------------------------------------------------- Gaussian filter (scipy's)

def _gaussian_taps(sigma: float, truncate: float = 4.0) -> list[float]:
    """scipy.ndimage's 1-D Gaussian weights (radius int(truncate * sigma + 0.5), sum 1),
    computed with its very NumPy expression so that they agree to the last bit."""
    radius = int(truncate * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 / (sigma * sigma) * offsets**2)
    return (weights / weights.sum()).tolist()


def _correlate_symmetric(padded: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """1-D correlation along `dim` of an already padded tensor with symmetric `taps`, in
    scipy's `correlate1d` order (centre, then pairs from the farthest in), so that float64
    results match it bit for bit where it matters (glass blur truncates them to 8 bits)."""
    radius = len(taps) // 2
    length = padded.shape[dim] - 2 * radius
    out = padded.narrow(dim, radius, length) * taps[radius]
    for distance in range(radius, 0, -1):
        pair = padded.narrow(dim, radius - distance, length) + padded.narrow(
            dim, radius + distance, length)
        out = out + pair * taps[radius - distance]
    return out


def gaussian_filter_nearest(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with edge replication, as `skimage.filters.gaussian(mode=
    "nearest", truncate=4)` (scipy's `gaussian_filter`: rows first, then columns).

    images: (B, C, H, W) float; sigma in pixels. Returns (B, C, H, W) in the input dtype.
    """
    taps = _gaussian_taps(sigma)
    radius = len(taps) // 2
    rows = F.pad(images, (0, 0, radius, radius), mode="replicate")
    blurred = _correlate_symmetric(rows, taps, dim=-2)
    cols = F.pad(blurred, (radius, radius, 0, 0), mode="replicate")
    return _correlate_symmetric(cols, taps, dim=-1)


# ---------------------------------------------------------------- defocus blur

@functools.lru_cache(maxsize=8)
def defocus_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference's anti-aliased disk (L, L), float32, as a (1, 1, L, L) tensor.

    A binary disk normalised to sum 1 on a 17 x 17 grid (21 x 21 for radius 10), then a 3 x 3
    (5 x 5) Gaussian blur with reflect-101 borders, as `cv2.GaussianBlur`: where the disk
    touches the grid edge (radius 8 and 10), the reflection adds mass, so the kernel sums to
    ~1.01 there; kept, because the reference's images carry that brightening.
    """
    half, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).float()
    disk = (disk / disk.sum()).double()  # float32 normalisation, as the reference's array
    offsets = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    gauss = torch.exp(-(offsets**2) / (2 * alias_blur**2))
    gauss = gauss / gauss.sum()
    pad = ksize // 2
    padded = F.pad(disk[None, None], (pad, pad, pad, pad), mode="reflect")[0, 0]
    rows = sum(w * padded[k:k + disk.shape[0], :] for k, w in enumerate(gauss))
    kernel = sum(w * rows[:, k:k + disk.shape[1]] for k, w in enumerate(gauss))
    return kernel.float()[None, None]


def _reflect101_index(size: int, pad: int, device: torch.device) -> torch.Tensor:
    """Source index of each of size + 2 pad positions under reflect-101 (period 2 (size-1))."""
    index = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index < size, index, period - index)


def _pad_reflect101(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-101 padding of the last two axes (`cv2.BORDER_REFLECT_101`); unlike
    `F.pad(mode="reflect")`, valid for pads wider than the image."""
    height, width = images.shape[-2:]
    rows = _reflect101_index(height, pad, images.device)
    cols = _reflect101_index(width, pad, images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


@functools.lru_cache(maxsize=16)
def _kernel_spectrum(
    kernel: torch.Tensor, shape: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """rfft2 of the (1, 1, L, L) kernel zero-padded to `shape`, cached per size and device."""
    return torch.fft.rfft2(kernel[0, 0].to(device), s=shape)


def _filter_reflect101_fft(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel with a centro-symmetric (L, L) kernel, reflect-101 borders (as
    `cv2.filter2D`), through the FFT: its cost does not grow with the kernel (up to 21 x 21).

    images: (B, C, H, W); kernel: (1, 1, L, L) with L odd. Returns (B, C, H, W).
    """
    size = kernel.shape[-1]
    half = size // 2
    height, width = images.shape[-2:]
    padded = _pad_reflect101(images, half)
    shape = tuple(padded.shape[-2:])
    spectrum = torch.fft.rfft2(padded) * _kernel_spectrum(kernel, shape, padded.device)
    # Circular convolution of the padded image; rows/cols from `size - 1` on are uncorrupted
    # by the wrap-around and equal the correlation (the kernel is point-symmetric).
    full = torch.fft.irfft2(spectrum, s=shape)
    return full[..., size - 1:size - 1 + height, size - 1:size - 1 + width]


def defocus_blur(
    images: torch.Tensor, severity: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """Convolution with an anti-aliased disk (`defocus_kernel`), reflect-101 borders.

    images: (B, 3, H, W) float in [0, 1]; deterministic (`generators` unused). Returns
    (B, 3, H, W).
    """
    radius, alias_blur = DEFOCUS_BLUR[severity - 1]
    return _filter_reflect101_fft(images, defocus_kernel(radius, alias_blur))


# ---------------------------------------------------------------- glass blur

@functools.lru_cache(maxsize=16)
def _glass_schedule(height: int, width: int, max_delta: int) -> tuple[torch.Tensor, list[int]]:
    """An order of the shuffled positions and round sizes that runs the reference's
    sequential scan as parallel rounds with the same result.

    The reference visits rows h = H-d .. d+1 and, in each, columns w = W-d .. d+1 (scan index
    i = H-d-h, j = W-d-w) and sets pixel (h, w) to pixel (h+dy, w+dx), dx, dy in [-d, d-1].
    Two visits interact only if they are within d pixels in both axes, so ordering visits by
    t = (d+1) i + j keeps every interacting pair in the reference's order, and visits with
    equal t (|dw| = (d+1) |di| > d) are independent: each round is one vectorised copy.
    Returns (order over the flattened (nH, nW) scan grid, round sizes).
    """
    n_rows, n_cols = max(height - 2 * max_delta, 0), max(width - 2 * max_delta, 0)
    rounds = ((max_delta + 1) * torch.arange(n_rows)[:, None] + torch.arange(n_cols)).flatten()
    order = torch.argsort(rounds, stable=True)
    sizes = torch.bincount(rounds).tolist() if rounds.numel() else []
    return order, [s for s in sizes if s]


def _shuffle_by_deltas(levels: torch.Tensor, max_delta: int, deltas: torch.Tensor
                       ) -> torch.Tensor:
    """Run the shuffle passes; deltas: (B, passes, P) flat source offsets (dy W + dx) of the
    visits in `_glass_schedule` order. Returns (B, C, H, W)."""
    B, C, H, W = levels.shape
    order, sizes = _glass_schedule(H, W, max_delta)
    device = levels.device
    scan_h = H - max_delta - torch.arange(H - 2 * max_delta, device=device)
    scan_w = W - max_delta - torch.arange(W - 2 * max_delta, device=device)
    target = (scan_h[:, None] * W + scan_w[None, :]).flatten()[order.to(device)]  # (P,)
    # (P, B) layout, so that each round is one contiguous slice.
    target = target[:, None] + torch.arange(B, device=device) * (H * W)
    source = deltas.to(device).permute(1, 2, 0) + target  # (passes, P, B)
    chunks = [size * B for size in sizes]
    targets = target.flatten().split(chunks)
    pixel_of = torch.arange(B * H * W, device=device)  # which original pixel sits where
    for pass_sources in source:
        for tgt, src in zip(targets, pass_sources.flatten().split(chunks), strict=True):
            # index_copy_ rather than `pixel_of[tgt] = ...`: ~100x less overhead per round.
            pixel_of.index_copy_(0, tgt, pixel_of.index_select(0, src))
    flat = levels.permute(0, 2, 3, 1).reshape(B * H * W, C)
    return flat.index_select(0, pixel_of).reshape(B, H, W, C).permute(0, 3, 1, 2)


def glass_shuffle(levels: torch.Tensor, max_delta: int, offsets: torch.Tensor) -> torch.Tensor:
    """The reference's local pixel "swap" passes, vectorised; returns (B, C, H, W).

    levels: (B, C, H, W); offsets: (B, passes, nH, nW, 2) integer (dx, dy) in [-d, d-1] for
    scan position (i, j), i.e. pixel (H-d-i, W-d-j), nH = H - 2d, nW = W - 2d. Quirk kept:
    the reference's `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on NumPy row views copies pixel
    (h', w') onto (h, w) and leaves (h', w') as it was, so a visit is a copy, not a swap.
    """
    H, W = levels.shape[-2:]
    order, sizes = _glass_schedule(H, W, max_delta)
    if not sizes:
        return levels
    deltas = (offsets[..., 1] * W + offsets[..., 0]).flatten(2)  # (B, passes, nH nW)
    return _shuffle_by_deltas(levels, max_delta, deltas[..., order])


def _as_float64_levels(images: torch.Tensor) -> torch.Tensor:
    """float64 copy in which values within 1e-3 levels of an 8-bit level k / 255 become k / 255
    in float64, as the reference's `uint8 / 255.`: the glass blur truncates to 8 bits midway,
    and a float32 k / 255 would land on the other side of an integer in flat regions."""
    levels = images.float() * 255.0
    snapped = levels.round()
    levels = torch.where((levels - snapped).abs_() < 1e-3, snapped, levels)
    return levels.double() / 255.0


def _truncated_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """The reference's `np.uint8(gaussian(x / 255.) * 255)` in float64, as float32 levels
    0..255 (float64, so that the truncation falls on the same side as the reference's)."""
    blurred = gaussian_filter_nearest(_as_float64_levels(images), sigma)
    return (blurred * 255.0).clamp_(0.0, 255.0).floor_().float()


def _glass_blur(images: torch.Tensor, severity: int,
                shuffle: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Gaussian blur, truncation to 8-bit levels, `shuffle`, Gaussian blur again."""
    sigma = GLASS_BLUR[severity - 1][0]
    # One image at a time: the float64 passes then stay in cache (~15x faster on a CPU).
    levels = torch.cat([_truncated_blur(image[None], sigma) for image in images])
    shuffled = shuffle(levels)
    # float32 is enough after the truncation: the result is quantised again.
    return torch.cat([gaussian_filter_nearest(image[None] / 255.0, sigma)
                      for image in shuffled]).to(images.dtype)


def glass_blur_with_offsets(
    images: torch.Tensor, severity: int, offsets: torch.Tensor
) -> torch.Tensor:
    """Glass blur with given shuffle offsets (B, passes, nH, nW, 2) in the reference's scan
    order (see `glass_shuffle`), e.g. the draws the reference made.

    images: (B, 3, H, W) float in [0, 1]. Returns (B, 3, H, W) in the input dtype.
    """
    max_delta = GLASS_BLUR[severity - 1][1]
    return _glass_blur(images, severity, lambda x: glass_shuffle(x, max_delta, offsets))


def glass_blur(
    images: torch.Tensor, severity: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """Blur, shuffle pixels within +-d pixels (d from `GLASS_BLUR`), blur again.

    images: (B, 3, H, W) float in [0, 1]. Returns (B, 3, H, W). Each visit's (dx, dy) is
    uniform on [-d, d-1]^2 (NumPy's `randint(-d, d)`, high exclusive), as in the reference.
    """
    _, max_delta, passes = GLASS_BLUR[severity - 1]
    H, W = images.shape[-2:]
    order, _ = _glass_schedule(H, W, max_delta)
    side = 2 * max_delta
    # One draw k per visit, already in schedule order: (dx, dy) = (k % 2d - d, k // 2d - d).
    codes = per_image_draws(generators, lambda g: torch.randint(
        0, side * side, (passes, order.numel()), generator=g, dtype=torch.int32), "cpu")
    steps = torch.arange(side, dtype=torch.int32) - max_delta
    table = (steps[:, None] * W + steps[None, :]).flatten()  # code -> dy * W + dx
    deltas = table[codes.long()]  # (B, passes, P)
    if deltas.shape[-1] == 0:
        return _glass_blur(images, severity, lambda x: x)
    return _glass_blur(images, severity,
                       lambda x: _shuffle_by_deltas(x, max_delta, deltas))


# ---------------------------------------------------------------- motion blur

def _motion_taps(radius: int, sigma: float, angle_deg: float) -> list[tuple[float, int, int]]:
    """The reference's (weight, dy, dx) taps: 2 radius + 1 one-sided Gaussian weights along
    the direction `angle_deg`, each a pixel shift rounded as `-ceil(t - 0.5)`."""
    width = 2 * radius + 1
    weights = [math.exp(-(i**2) / (2 * sigma**2)) for i in range(width)]
    total = sum(weights)
    rad = math.radians(angle_deg)
    point = (width * math.sin(rad), width * math.cos(rad))
    hypot = math.hypot(*point)
    return [(w / total, -math.ceil(i * point[0] / hypot - 0.5),
             -math.ceil(i * point[1] / hypot - 0.5)) for i, w in enumerate(weights)]


def motion_blur_with_angles(
    images: torch.Tensor, severity: int, angles_deg: list[float]
) -> torch.Tensor:
    """Motion blur of image b along `angles_deg[b]`: the weighted sum of the image shifted
    along that line, edges replicated.

    images: (B, 3, H, W) float in [0, 1]. Returns (B, 3, H, W).
    """
    radius, sigma = MOTION_BLUR[severity - 1]
    H, W = images.shape[-2:]
    pad = min(2 * radius, max(H, W))
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    out = torch.zeros_like(images)
    for b, angle in enumerate(angles_deg):
        for weight, dy, dx in _motion_taps(radius, sigma, angle):
            if abs(dy) >= H or abs(dx) >= W:
                break  # the reference stops (without renormalising) once past the image
            view = padded[b, :, pad - dy:pad - dy + H, pad - dx:pad - dx + W]
            out[b].add_(view, alpha=weight)
    return out


def motion_blur(
    images: torch.Tensor, severity: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """Motion blur in a direction uniform in [-45, 45] degrees, one per image.

    images: (B, 3, H, W) float in [0, 1]. Returns (B, 3, H, W).
    """
    angles = [float(torch.rand((), generator=g, dtype=torch.float64)) * 2 * MOTION_ANGLE_DEG
              - MOTION_ANGLE_DEG for g in generators]
    return motion_blur_with_angles(images, severity, angles)


# ---------------------------------------------------------------- zoom blur

def _clipped_zoom(images: torch.Tensor, zoom: float) -> torch.Tensor:
    """The reference's `clipped_zoom`: a centre crop of ceil(side / zoom) pixels, resized by
    `zoom` (scipy order-1 zoom: bilinear, corners aligned, output round(side * zoom)), then
    the top-left (H, W) kept (sic: not re-centred, so the zoom drifts by about a pixel)."""
    H, W = images.shape[-2:]
    crop_h, crop_w = math.ceil(H / zoom), math.ceil(W / zoom)
    top, left = (H - crop_h) // 2, (W - crop_w) // 2
    crop = images[..., top:top + crop_h, left:left + crop_w]
    size = (int(round(crop_h * zoom)), int(round(crop_w * zoom)))
    zoomed = F.interpolate(crop, size=size, mode="bilinear", align_corners=True)
    return zoomed[..., :H, :W]


def zoom_blur(
    images: torch.Tensor, severity: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """Mean of the image and its centre zooms by each factor of `ZOOM_FACTORS`.

    images: (B, 3, H, W) float in [0, 1]; deterministic (`generators` unused). Returns
    (B, 3, H, W).
    """
    factors = ZOOM_FACTORS[severity - 1]
    # Channels-last makes torch's bilinear resize ~1.6x faster on a CPU; same values.
    source = images.contiguous(memory_format=torch.channels_last)
    total = source.clone()
    for zoom in factors:
        total += source if zoom == 1.0 else _clipped_zoom(source, zoom)
    return (total / (len(factors) + 1)).contiguous()


CORRUPTIONS = {
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
}
