"""Patches and masks; the one mask generator.

Conventions (as in the MAE code): patches are numbered row-major on the (gh, gw) grid; a patch
vector is the p x p x C tile flattened channel-last; a *mask* is (B, N) with 0 = keep,
1 = remove. Unlike the MAE code we never shuffle: `keep` lists the visible patch indices in
ascending (spatial) order, so token i + 1 (after CLS) is patch keep[:, i].
"""

from __future__ import annotations

import torch

from maelens.errors import MaelensError
from maelens.seeds import generator as seeded_generator


def patchify(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), N = (H/p)(W/p), channel-last inside a patch."""
    B, C, H, W = pixels.shape
    p = patch_size
    x = pixels.reshape(B, C, H // p, p, W // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)  # (B, gh, gw, p, p, C)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int], in_chans: int = 3
               ) -> torch.Tensor:
    """(B, N, p*p*C) -> (B, C, gh*p, gw*p); the inverse of `patchify`."""
    B = patches.shape[0]
    p, (gh, gw) = patch_size, grid
    x = patches.reshape(B, gh, gw, p, p, in_chans)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(B, in_chans, gh * p, gw * p)


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Visible patches under the MAE fixed-count convention: int(N * (1 - ratio))."""
    if not 0.0 <= mask_ratio < 1.0:
        raise MaelensError(f"`mask_ratio` must lie in [0, 1), got {mask_ratio}.")
    keep = int(num_patches * (1.0 - mask_ratio))
    if keep < 1:
        raise MaelensError(
            f"`mask_ratio`={mask_ratio} leaves no visible patch out of {num_patches}; lower it."
        )
    return keep


def random_keep(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Visible patch indices (B, N_v), ascending, for MAE random masking at `mask_ratio`.

    Each image keeps exactly int(N (1 - ratio)) patches chosen uniformly at random. The noise is
    drawn on the CPU from `generator`, so a seed gives the same masks on every device.
    Ratio 0 returns arange(N) for every image.
    """
    n_keep = num_visible(num_patches, mask_ratio)
    if n_keep == num_patches:
        return torch.arange(num_patches, device=device).expand(batch, -1).clone()
    noise = torch.rand(batch, num_patches, generator=generator)
    keep = noise.argsort(dim=1)[:, :n_keep].sort(dim=1).values
    return keep.to(device)


def keep_for_images(
    index: torch.Tensor | list[int],
    num_patches: int,
    mask_ratio: float,
    seed: int,
    purpose: tuple[int | str, ...] = ("mask",),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, N_v) ascending visible indices; image i's mask depends only on (seed, purpose, i).

    The one mask generator of maelens: `extract`, capture, the pass engine, training
    (purpose ("train", epoch)) and the Jacobian study (purpose ("jacobian", k)) all draw here,
    so a mask never depends on batch size, batch order or the number of processes. Any integer
    seed is accepted (it is hashed, see `maelens.seeds`).
    """
    rows = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
    n_keep = num_visible(num_patches, mask_ratio)
    if n_keep == num_patches:
        return torch.arange(num_patches, device=device).expand(len(rows), -1).clone()
    keeps = [random_keep(1, num_patches, mask_ratio, seeded_generator(seed, *purpose, i))
             for i in rows]
    return torch.cat(keeps).to(device)


def keep_to_mask(keep: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(B, N_v) visible indices -> (B, N) float mask, 0 = keep, 1 = remove."""
    mask = torch.ones(keep.shape[0], num_patches, device=keep.device)
    return mask.scatter(1, keep, 0.0)


def check_keep(keep: torch.Tensor, batch: int, num_patches: int) -> torch.Tensor:
    """Validate caller-given visible indices: (B, N_v) or (N_v,) integers in [0, N), no repeats."""
    if not isinstance(keep, torch.Tensor) or keep.dtype not in (torch.int64, torch.int32):
        raise MaelensError("`keep` must be an integer tensor of patch indices, shape (B, N_v).")
    if keep.ndim == 1:
        keep = keep.expand(batch, -1)
    if keep.ndim != 2 or keep.shape[0] != batch or keep.shape[1] < 1:
        raise MaelensError(
            f"`keep` must have shape ({batch}, N_v) with N_v >= 1, got {tuple(keep.shape)}."
        )
    if int(keep.min()) < 0 or int(keep.max()) >= num_patches:
        raise MaelensError(
            f"`keep` indices must lie in [0, {num_patches}), got range "
            f"[{int(keep.min())}, {int(keep.max())}]."
        )
    ordered = keep.sort(dim=1).values
    if (ordered[:, 1:] == ordered[:, :-1]).any():
        raise MaelensError("`keep` repeats a patch index within an image; indices must be unique.")
    return keep.long()
