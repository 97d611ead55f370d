"""Seeded batch augmentations for small images: random translation and horizontal flips.

Random numbers are drawn on the CPU from an explicit generator (as `masking.random_keep`), so
a seed gives the same augmentations on every device, and the augmentation of step s depends
only on the generator the loop derives for step s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(pixels: torch.Tensor, max_shift: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Translate each image by (dy, dx), each uniform in [-max_shift, max_shift] pixels.

    Equivalent to padding by `max_shift` with the edge pixels (replicate) and cropping at a
    random offset: torchvision's RandomCrop(size, padding, padding_mode="edge"). Edge padding
    keeps the background colour of digits and most natural images, unlike zero padding in
    normalised units (which is grey, not black). pixels: (B, C, H, W) -> (B, C, H, W).
    """
    if max_shift == 0:
        return pixels
    B, C, H, W = pixels.shape
    offsets = torch.randint(0, 2 * max_shift + 1, (B, 2), generator=generator).to(pixels.device)
    padded = F.pad(pixels, (max_shift,) * 4, mode="replicate")  # (B, C, H + 2s, W + 2s)
    rows = offsets[:, :1] + torch.arange(H, device=pixels.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(W, device=pixels.device)  # (B, W)
    batch = torch.arange(B, device=pixels.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2. (B, C, H, W) -> (B, C, H, W)."""
    flip = (torch.rand(pixels.shape[0], generator=generator) < 0.5).to(pixels.device)
    return torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)


def augment_batch(pixels: torch.Tensor, *, shift: int = 0, flip: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Translation (if shift > 0), then flips (if flip); draws nothing when both are off."""
    pixels = random_shift(pixels, shift, generator)
    return random_hflip(pixels, generator) if flip else pixels
