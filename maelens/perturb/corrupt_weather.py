"""ImageNet-C weather corruptions (snow, frost, fog, brightness), batched in torch.

Ground truth is the `imagecorruptions` package (1.1.2, `corruptions.py`): its severity constants,
its order of operations and its quirks (fog and frost are not monotone in severity; frost draws
from only the first five of its six textures) are kept on purpose. Each function takes
images (B, 3, H, W) float RGB in [0, 1], a severity 1..5 and one CPU generator per image, and
returns float values in [0, 1] units, not always clipped; `corruptions.corrupt` clamps and
quantises. Random draws happen on the CPU, per image (`*_draws` functions, in the reference's
order), and are moved to the images' device; `*_from_draws` functions apply them, batched, so
tests can hand the reference the very numbers we drew.
"""

from __future__ import annotations

import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maelens.errors import MaelensError

# (loc, scale, zoom, threshold, blur radius px, blur sigma px, image weight), reference `snow`.
_SNOW = ((0.1, 0.3, 3.0, 0.5, 10, 4, 0.8), (0.2, 0.3, 2.0, 0.5, 12, 4, 0.7),
         (0.55, 0.3, 4.0, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
         (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
# (image weight, texture weight), reference `frost`.
_FROST = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
# The package whose data holds the frost textures (an optional extra of maelens).
_TEXTURE_PACKAGE = "imagecorruptions"
# The reference draws `randint(5)` from six files, so frost6.jpg is never used; we match that.
_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
# (fractal weight, wibble decay), reference `fog`.
_FOG = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))
# Added to the HSV value channel, reference `brightness`.
_BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
# OpenCV's RGB2GRAY weights, which the reference's snow uses for its whitened image.
_GRAY = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------- snow


def zoom_crop(crop: torch.Tensor, zoom: float) -> torch.Tensor:
    """The zoom of the reference's `clipped_zoom`, given its centre crop: scipy's order-1 `zoom`
    (grid_mode=False, i.e. corner-aligned linear) of (B, C, h, w) by `zoom`.

    Returns (B, C, round(h * zoom), round(w * zoom)), which can exceed the image by a pixel;
    the reference crops only later, and so do we.
    """
    h, w = crop.shape[-2:]
    # scipy's zoom maps output pixel o to input o * (in - 1) / (out - 1): align_corners=True.
    size = (round(h * zoom), round(w * zoom))
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)


def motion_blur_shifts(width: int, angles_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer (dy, dx) pixel shifts, each (B, width), of the reference's `_motion_blur` taps.

    Computed in float64 with the reference's operation order, so ceil() breaks ties alike.
    """
    taps = torch.arange(width, dtype=torch.float64)
    rad = torch.deg2rad(angles_deg.double())
    p0, p1 = width * torch.sin(rad), width * torch.cos(rad)
    hyp = torch.hypot(p0, p1)[:, None]
    dy = -torch.ceil(taps * p0[:, None] / hyp - 0.5)
    dx = -torch.ceil(taps * p1[:, None] / hyp - 0.5)
    return dy.long(), dx.long()


def motion_blur_layer(layer: torch.Tensor, radius: int, sigma: float,
                      angles_deg: torch.Tensor) -> torch.Tensor:
    """The reference's `_motion_blur` of a (B, H, W) layer, one angle (degrees) per image.

    A one-sided line of 2 * radius + 1 taps with half-Gaussian weights (sigma in pixels); each
    tap is the layer shifted by whole pixels with edge replication (the reference's `shift`),
    i.e. a slice of the edge-padded layer. Slices per image and tap (~25 x B small adds) beat
    one batched gather by ~20x on the CPU, because each image stays in cache.
    """
    B, H, W = layer.shape
    width = 2 * radius + 1
    taps = torch.arange(width, dtype=torch.float64)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).tolist()
    dy, dx = motion_blur_shifts(width, angles_deg)
    # The reference stops at the first tap shifted by a whole image side.
    fits = ((dy.abs() < H) & (dx.abs() < W)).long().cumprod(dim=1).tolist()
    padded = F.pad(layer[:, None], (width,) * 4, mode="replicate")[:, 0]
    out = torch.empty_like(layer)
    for b, (rows, cols) in enumerate(zip(dy.tolist(), dx.tolist(), strict=True)):
        torch.mul(layer[b], kernel[0], out=out[b])  # tap 0 is never shifted
        for i in range(1, width):
            if fits[b][i]:
                top, left = width - rows[i], width - cols[i]
                out[b].add_(padded[b, top:top + H, left:left + W], alpha=kernel[i])
    return out


def snow_draws(generators: list[torch.Generator], severity: int, height: int,
               width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's draws, in order: standard normals (B, h, w) float32 for the snow layer and
    one U[0, 1) (B,) float64 for the blur angle, on the CPU.

    The reference draws H x W normals, but its clipped zoom keeps only the central
    h x w = ceil(H / zoom) x ceil(W / zoom): we draw just those (i.i.d., the same distribution).
    """
    zoom = _SNOW[severity - 1][2]
    crop = (math.ceil(height / zoom), math.ceil(width / zoom))
    normals, uniforms = [], []
    for g in generators:
        normals.append(torch.randn(crop, generator=g))
        uniforms.append(torch.rand((), generator=g, dtype=torch.float64))
    return torch.stack(normals), torch.stack(uniforms)


def snow_from_draws(images: torch.Tensor, severity: int, normals: torch.Tensor,
                    uniforms: torch.Tensor) -> torch.Tensor:
    """Snow given `snow_draws`: a thresholded, zoomed, motion-blurred noise layer and its
    180-degree rotation added to a whitened image. images (B, 3, H, W) in [0, 1]; returns the
    same shape, clipped to [0, 1]."""
    loc, scale, zoom, threshold, radius, sigma, keep = _SNOW[severity - 1]
    H, W = images.shape[-2:]
    # float64 as the reference: the layer is rounded to 8 bits mid-way, and float32 would flip
    # ~1e-5 of those roundings (2 grey levels off instead of 1).
    layer = normals[:, None].to(images.device, torch.float64).mul(scale).add_(loc)
    layer = zoom_crop(layer, zoom)[:, 0]  # (B, H', W'), H' >= H, W' >= W
    layer = layer.masked_fill_(layer < threshold, 0.0).clamp_(max=1.0)  # threshold > 0
    layer = motion_blur_layer(layer, radius, sigma, uniforms * 90.0 - 135.0)  # angle -135..-45
    # The reference rounds the layer to 8 bits before cropping it to the image.
    layer = layer.mul_(255.0).round_().div_(255.0)[:, None, :H, :W].to(images.dtype)
    layer = layer.add_(layer.flip(-2, -1))  # (B, 1, H, W), plus its 180-degree rotation
    # OpenCV's gray of the image, whitened: 1.5 * gray + 0.5.
    weights = images.new_tensor(_GRAY).mul_(1.5)
    gray = torch.einsum("bchw,c->bhw", images, weights)[:, None].add_(0.5)  # (B, 1, H, W)
    out = torch.maximum(images, gray).mul_(1.0 - keep).add_(images, alpha=keep)
    return out.add_(layer).clamp_(0.0, 1.0)


def snow(images: torch.Tensor, severity: int, generators: list[torch.Generator]) -> torch.Tensor:
    """Snow (reference `snow`). images (B, 3, H, W) in [0, 1]; returns the same shape."""
    draws = snow_draws(generators, severity, *images.shape[-2:])
    return snow_from_draws(images, severity, *draws)


# ---------------------------------------------------------------- frost


def frost_texture_dir() -> Path:
    """The folder of the published frost textures, inside the installed `imagecorruptions`.

    Located without importing the package (its import needs OpenCV and scikit-image).
    """
    spec = importlib.util.find_spec(_TEXTURE_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in (Path(f) / "frost" for f in folders):
        if all((folder / name).is_file() for name in _FROST_FILES):
            return folder
    raise MaelensError(
        "corruption `frost` needs the published frost textures of the `imagecorruptions` "
        "package, which is not installed; install them with "
        "`pip install --no-deps imagecorruptions`.")


@lru_cache(maxsize=4)
def frost_textures(height: int, width: int) -> tuple[torch.Tensor, ...]:
    """The five frost textures rescaled for (height, width) images: uint8 (3, H_t, W_t) each.

    As the reference: scale so both sides cover the image, times 1.1 (float arithmetic kept so
    that ceil() lands alike: 900 * 1.1 -> 991), bicubic (a = -0.75, OpenCV's and torch's).
    The texture files' alpha channel is dropped, as `cv2.imread` does.
    """
    folder = frost_texture_dir()
    out = []
    for name in _FROST_FILES:
        with Image.open(folder / name) as im:
            rgb = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        th, tw = rgb.shape[1:]
        scale = max(1.0, height / th, width / tw) * 1.1
        size = (math.ceil(th * scale), math.ceil(tw * scale))
        big = F.interpolate(rgb[None].float(), size=size, mode="bicubic", align_corners=False)
        out.append(big[0].round_().clamp_(0, 255).to(torch.uint8))
    return tuple(out)


def frost_crops(generators: list[torch.Generator], height: int,
                width: int) -> list[tuple[int, int, int]]:
    """Each image's (texture index 0..4, top px, left px) crop, in the reference's draw order."""
    textures = frost_textures(height, width)
    crops = []
    for g in generators:
        index = int(torch.randint(len(textures), (), generator=g))
        top = int(torch.randint(textures[index].shape[1] - height, (), generator=g))
        left = int(torch.randint(textures[index].shape[2] - width, (), generator=g))
        crops.append((index, top, left))
    return crops


def frost_blend(images: torch.Tensor, severity: int,
                crops: list[tuple[int, int, int]]) -> torch.Tensor:
    """keep * image + amount * texture crop, one (index, top, left) crop per image.
    images (B, 3, H, W) in [0, 1]; returns the same shape, unclipped (the caller clamps)."""
    keep, amount = _FROST[severity - 1]
    H, W = images.shape[-2:]
    textures = frost_textures(H, W)
    layer = torch.stack([textures[i][:, top:top + H, left:left + W] for i, top, left in crops])
    layer = layer.to(images.device, images.dtype) * (amount / 255.0)
    return layer.add_(images, alpha=keep)


def frost(images: torch.Tensor, severity: int, generators: list[torch.Generator]) -> torch.Tensor:
    """Frost: a weighted sum of the image and a random crop of one of five frost textures.
    images (B, 3, H, W) in [0, 1]; returns the same shape, unclipped (the caller clamps)."""
    crops = frost_crops(generators, *images.shape[-2:])
    return frost_blend(images, severity, crops)


# ---------------------------------------------------------------- fog


def fog_draws(generators: list[torch.Generator], height: int, width: int) -> torch.Tensor:
    """Each image's U[0, 1) draws for its plasma fractal: (B, map_size^2 - 1) float32, CPU,
    map_size the power of two >= max(height, width), consumed in the reference's order."""
    map_size = 1 << (max(height, width) - 1).bit_length()
    return torch.stack([torch.rand(map_size * map_size - 1, generator=g) for g in generators])


def plasma_fractal(uniforms: torch.Tensor, wibble_decay: float) -> torch.Tensor:
    """The reference's diamond-square `plasma_fractal`, one map per row of `fog_draws`.

    uniforms: (B, map_size^2 - 1) U[0, 1) on the compute device. Returns (B, map_size,
    map_size) float32 in [0, 1]. The reference fills strided views of one map; we keep each
    level's grid compact (its corners, n x n) and interleave the new points into the next
    level's 2n x 2n grid: the same sums and rolls, on contiguous memory. float32 suffices: the
    map spans ~1e4, its finest random steps are >= ~0.6 and float32 resolves ~1e-3 there.
    """
    B = uniforms.shape[0]
    map_size = math.isqrt(uniforms.shape[1] + 1)
    noise = uniforms.float().mul(2.0).sub_(1.0)  # U[-1, 1)
    corners = torch.zeros(B, 1, 1, device=uniforms.device)  # (B, n, n), n = map_size / step
    used, wibble = 0, 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        # total / 4 + wibble * U(-wibble, wibble), consuming the next n * n draws.
        nonlocal used
        n = corners.shape[1]
        u = noise[:, used:used + n * n].view(B, n, n)
        used += n * n
        return u.mul(wibble * wibble).add_(total, alpha=0.25)

    while corners.shape[1] < map_size:
        n = corners.shape[1]
        squares = corners + corners.roll(-1, 1)
        centres = wibbled_mean(squares.add_(squares.roll(-1, 2)))
        # Diamond points right of and below each corner, with the reference's wrap-around rolls.
        right = (corners + corners.roll(-1, 2)).add_(centres).add_(centres.roll(1, 1))
        below = (corners + corners.roll(-1, 1)).add_(centres).add_(centres.roll(1, 2))
        # Interleave into the next level's grid: (row, col) phase (0, 0) corners, (0, 1) right,
        # (1, 0) below, (1, 1) centres.
        grid = torch.empty(B, n, 2, n, 2, device=corners.device)
        grid[:, :, 0, :, 0] = corners
        grid[:, :, 0, :, 1] = wibbled_mean(right)
        grid[:, :, 1, :, 0] = wibbled_mean(below)
        grid[:, :, 1, :, 1] = centres
        corners = grid.view(B, 2 * n, 2 * n)
        wibble /= wibble_decay
    field = corners.sub_(corners.amin(dim=(1, 2), keepdim=True))
    return field.div_(field.amax(dim=(1, 2), keepdim=True))


def fog_from_draws(images: torch.Tensor, severity: int, uniforms: torch.Tensor) -> torch.Tensor:
    """Fog given `fog_draws`: a plasma fractal added to every channel, renormalised by the
    image's maximum. images (B, 3, H, W) in [0, 1]; returns the same shape, unclipped."""
    amount, decay = _FOG[severity - 1]
    H, W = images.shape[-2:]
    fractal = plasma_fractal(uniforms.to(images.device), decay)[:, None, :H, :W]
    peak = images.amax(dim=(1, 2, 3), keepdim=True)  # over all channels, as the reference
    scale = peak / (peak + amount)  # (B, 1, 1, 1)
    # (x + amount * fractal) * scale, in one pass over the full-size output.
    return torch.addcmul(fractal.to(images.dtype) * (amount * scale), images, scale)


def fog(images: torch.Tensor, severity: int, generators: list[torch.Generator]) -> torch.Tensor:
    """Fog (reference `fog`). images (B, 3, H, W) in [0, 1]; returns the same shape."""
    return fog_from_draws(images, severity, fog_draws(generators, *images.shape[-2:]))


# ---------------------------------------------------------------- brightness


def brightness(images: torch.Tensor, severity: int,
               generators: list[torch.Generator]) -> torch.Tensor:
    """Brightness: HSV value + c, clipped to 1. images (B, 3, H, W) in [0, 1]; same shape out.

    With hue and saturation fixed, RGB is linear in the value V = max(R, G, B), so the
    reference's rgb2hsv -> V + c -> hsv2rgb round trip is a per-pixel rescale by V' / V
    (black, with saturation 0 by scikit-image's convention, becomes grey V' = c).
    """
    del generators  # deterministic
    increment = _BRIGHTNESS[severity - 1]
    value = images.amax(dim=1, keepdim=True)  # (B, 1, H, W)
    ratio = (value + increment).clamp_(max=1.0).div_(value)
    # Black (value 0, ratio inf or nan) becomes grey at the increment.
    return images.mul(ratio).masked_fill_(value == 0, increment)


CORRUPTIONS = {"snow": snow, "frost": frost, "fog": fog, "brightness": brightness}
