"""Patch occlusion: pick the top-p % patches by score (or at random), then hide them.

Patch grid: row-major (gh, gw) = (H / P, W / P); patch k covers pixel rows (k // gw) * P ..
(k // gw) * P + P - 1 and columns (k % gw) * P .. (k % gw) * P + P - 1 (the ViT/MAE token order
after CLS). Conventions, stated once:
- count: the number of patches removed at p percent is round(N * p / 100) with halves rounded
  up (floor(N * p / 100 + 0.5)); e.g. N = 196: p = 10 -> 20, p = 50 -> 98, p = 90 -> 176.
- ranking: descending score, ties broken by the lower patch index (stable sort), so the top-p
  sets of one image are nested as p grows.
- random control: one seeded permutation per image, `maelens.seeds.generator(seed,
  "occlusion-random", i)`, cut at each count: the random sets are nested too, which keeps the
  control curve monotone in p instead of redrawing a fresh subset per level.
- pixel fills: "zero" (black), "mean" (a per-channel colour, e.g. the dataset mean, which is 0
  after normalisation), "noise" (uniform [0, 1) per pixel and channel, drawn on the CPU from
  `maelens.seeds.generator(seed, "occlusion-noise", float(p), i)` for the whole image, so image
  i's noise does not depend on the batch it sits in).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from maelens.errors import MaelensError
from maelens.seeds import generator

FILLS: tuple[str, ...] = ("zero", "mean", "noise")


def check_percent(p: float) -> float:
    """`p` as a float in [0, 100] (percent), else a one-line MaelensError naming `p`."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100:
        raise MaelensError(
            f"occlusion `p` must be a percentage in [0, 100], got {p!r}; e.g. 50 removes half "
            "of the patches.")
    return float(p)


def occlusion_count(num_patches: int, p: float) -> int:
    """How many of `num_patches` patches p percent removes: round half up of N * p / 100."""
    return math.floor(num_patches * check_percent(p) / 100 + 0.5)


def top_patches(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Indices of the top-p % patches per image, highest score first: (B, N) -> (B, count) long.

    Ties go to the lower patch index. count = occlusion_count(N, p); p = 0 gives (B, 0).
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise MaelensError(
            f"occlusion `scores` must be (B, N) per-patch scores, got {got}; "
            "use rollout.patch_scores(...).")
    if not torch.isfinite(scores).all():
        raise MaelensError(
            "occlusion `scores` contain NaN or inf; expected finite per-patch scores.")
    count = occlusion_count(scores.shape[1], p)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (B, N)
    return order[:, :count]


def random_patches(num_patches: int, count: int, seed: int, image_indices: Sequence[int],
                   device: torch.device | str | None = None) -> torch.Tensor:
    """The random-patch control: `count` patch indices per image, (B, count) long.

    Image i's indices are the first `count` of one permutation from
    `generator(seed, "occlusion-random", i)` (i: the image's index in its data set), so they
    do not depend on the batch and are nested across counts.
    """
    if not 0 <= count <= num_patches:
        raise MaelensError(
            f"occlusion `count` must be in [0, num_patches={num_patches}], got {count!r}; "
            "use occlusion_count(num_patches, p).")
    rows = [torch.randperm(num_patches, generator=generator(seed, "occlusion-random", int(i)))
            for i in image_indices]
    if not rows:
        return torch.empty(0, count, dtype=torch.long, device=device)
    return torch.stack(rows)[:, :count].to(device)


def _removed_mask(removed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(B, n_removed) indices -> (B, N) bool, True where removed; rejects bad or repeated ones."""
    if not isinstance(removed, torch.Tensor) or removed.ndim != 2 \
            or removed.dtype != torch.long:
        got = (f"{tuple(removed.shape)} {removed.dtype}" if isinstance(removed, torch.Tensor)
               else type(removed).__name__)
        raise MaelensError(
            f"occlusion `removed` must be (B, n_removed) int64 patch indices, got {got}; "
            "use top_patches or random_patches.")
    if removed.numel() and (removed.min() < 0 or removed.max() >= num_patches):
        raise MaelensError(
            f"occlusion `removed` has indices outside [0, {num_patches}), got "
            f"[{int(removed.min())}, {int(removed.max())}]; the patch grid has {num_patches}.")
    mask = torch.zeros(removed.shape[0], num_patches, dtype=torch.bool, device=removed.device)
    mask.scatter_(1, removed, True)
    if removed.numel() and not bool((mask.sum(dim=1) == removed.shape[1]).all()):
        raise MaelensError(
            "occlusion `removed` repeats a patch index within an image; expected distinct "
            "indices per row.")
    return mask


def keep_after_drop(removed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Visible patch indices for token dropping: (B, n_removed) -> (B, N - n_removed) long.

    Each row lists the patches not in `removed`, ascending, so the encoder sees the rest in
    grid order (gather the patch tokens with it; positional embeddings by the same indices).
    """
    mask = _removed_mask(removed, num_patches)  # (B, N), True = removed
    # Stable sort of "removed" flags puts the kept patches first, in ascending index order.
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
    return order[:, : num_patches - removed.shape[1]]


def _fill_values(images: torch.Tensor, fill: str, mean: torch.Tensor | None, seed: int | None,
                 p: float | None, image_indices: Sequence[int] | None) -> torch.Tensor:
    """What goes into hidden pixels: a tensor broadcastable to images (B, C, H, W)."""
    B, C, H, W = images.shape
    if fill == "zero":
        return images.new_zeros(())
    if fill == "mean":
        if not isinstance(mean, torch.Tensor) or mean.shape != (C,):
            got = tuple(mean.shape) if isinstance(mean, torch.Tensor) else mean
            raise MaelensError(
                f"occlusion fill 'mean' needs `mean` of shape ({C},), got {got}; pass the "
                "per-channel mean colour in [0, 1], e.g. torch.tensor((0.485, 0.456, 0.406)).")
        return mean.to(images).view(1, C, 1, 1)
    if seed is None or p is None or image_indices is None or len(image_indices) != B:
        raise MaelensError(
            "occlusion fill 'noise' needs `seed`, `p` and `image_indices` (one per image, "
            f"{B} here); they key each image's noise so it does not depend on the batch.")
    noise = [torch.rand(C, H, W, generator=generator(seed, "occlusion-noise", check_percent(p),
                                                     int(i)))
             for i in image_indices]
    return torch.stack(noise).to(images)  # (B, C, H, W), drawn on the CPU


def occlude_pixels(images: torch.Tensor, removed: torch.Tensor, patch_size: int,
                   fill: str = "zero", *, mean: torch.Tensor | None = None,
                   seed: int | None = None, p: float | None = None,
                   image_indices: Sequence[int] | None = None) -> torch.Tensor:
    """Hide the `removed` patches of each image by overwriting their pixels.

    images: (B, C, H, W) float in [0, 1], H and W multiples of patch_size (pixels);
    removed: (B, n_removed) int64 patch indices (row-major grid); fill: "zero" | "mean" |
    "noise" (see the module docstring; "mean" needs `mean` (C,), "noise" needs `seed`, `p`
    (percent, part of the noise key) and `image_indices`). Returns a new tensor like images.
    """
    if fill not in FILLS:
        raise MaelensError(
            f"unknown occlusion `fill` {fill!r}; expected one of: {', '.join(FILLS)}.")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 \
            or not images.is_floating_point():
        raise MaelensError("occlusion `images` must be a float tensor (B, C, H, W) in [0, 1].")
    B, C, H, W = images.shape
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size <= 0 \
            or H % patch_size or W % patch_size:
        raise MaelensError(
            f"occlusion `patch_size` must be a positive int dividing H={H} and W={W}, got "
            f"{patch_size!r}; use the model's patch size (16 for ViT-B/16).")
    gh, gw = H // patch_size, W // patch_size
    mask = _removed_mask(removed, gh * gw).to(images.device)  # (B, N)
    if mask.shape[0] != B:
        raise MaelensError(
            f"occlusion `removed` has {mask.shape[0]} rows but `images` has {B}; pass one row "
            "of patch indices per image.")
    pixels = mask.view(B, 1, gh, gw).repeat_interleave(patch_size, dim=2)
    pixels = pixels.repeat_interleave(patch_size, dim=3)  # (B, 1, H, W)
    values = _fill_values(images, fill, mean, seed, p, image_indices)
    return torch.where(pixels, values, images)
