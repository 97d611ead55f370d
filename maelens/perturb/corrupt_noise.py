"""ImageNet-C noise corruptions: Gaussian, shot (Poisson) and impulse (salt-and-pepper) noise.

Definitions and severity constants follow the reference `imagecorruptions` 1.1.2
(Hendrycks & Dietterich, 2019). Every function takes a batch (B, 3, H, W) of float RGB in [0, 1]
on any device, a severity 1..5 and one CPU `torch.Generator` per image, and returns unclipped,
unquantised floats of the same shape (the registry clamps and quantises). Each image's noise is
drawn on the CPU from its own generator, so it is the same on every device and does not depend
on the other images in the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Standard deviation of the additive noise, in [0, 1] intensity units.
GAUSSIAN_NOISE_STD: tuple[float, ...] = (0.08, 0.12, 0.18, 0.26, 0.38)
# Photon count of a full-intensity pixel: fewer photons, more relative noise.
SHOT_NOISE_PHOTONS: tuple[float, ...] = (60.0, 25.0, 12.0, 5.0, 3.0)
# Fraction of values (per pixel and channel) replaced by 0 or 1.
IMPULSE_NOISE_AMOUNT: tuple[float, ...] = (0.03, 0.06, 0.09, 0.17, 0.27)


def per_image_draws(
    generators: list[torch.Generator],
    draw: Callable[[torch.Generator], torch.Tensor],
    device: torch.device | str,
) -> torch.Tensor:
    """Stack `draw(generator)` over the images (CPU draws) and move the result to `device`.

    Returns (B, *shape) where `draw` returns `shape`; image i's numbers depend only on its
    generator, never on its neighbours in the batch or on the device.
    """
    return torch.stack([draw(g) for g in generators]).to(device)


def gaussian_noise(
    images: torch.Tensor, severity: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """images + N(0, std^2) per pixel and channel; std from `GAUSSIAN_NOISE_STD` ([0, 1] units).

    images: (B, 3, H, W) float in [0, 1]. Returns (B, 3, H, W), unclipped.
    """
    std = GAUSSIAN_NOISE_STD[severity - 1]
    shape = tuple(images.shape[1:])
    noise = per_image_draws(
        generators, lambda g: torch.randn(shape, generator=g), images.device)
    return images + std * noise.to(images.dtype)


def shot_noise(
    images: torch.Tensor, severity: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """Poisson(images * photons) / photons per pixel and channel; photons from
    `SHOT_NOISE_PHOTONS`.

    images: (B, 3, H, W) float in [0, 1]. Returns (B, 3, H, W), unclipped.
    """
    photons = SHOT_NOISE_PHOTONS[severity - 1]
    # The draws depend on the image, so the rates travel to the CPU where the generators live;
    # CPU Poisson sampling gives the same counts on every machine.
    rates = (images.detach().float().cpu() * photons).clamp_(min=0.0)
    counts = torch.stack([torch.poisson(rate, generator=g)
                          for rate, g in zip(rates, generators, strict=True)])
    return (counts / photons).to(device=images.device, dtype=images.dtype)


def impulse_noise(
    images: torch.Tensor, severity: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """Salt-and-pepper noise: each value is, with probability `IMPULSE_NOISE_AMOUNT`, set to
    1 or 0 with equal odds (skimage `random_noise(mode="s&p")`, as the reference uses).

    images: (B, 3, H, W) float in [0, 1]. Returns (B, 3, H, W).
    """
    amount = IMPULSE_NOISE_AMOUNT[severity - 1]
    shape = tuple(images.shape[1:])
    uniform = per_image_draws(
        generators, lambda g: torch.rand(shape, generator=g), images.device)
    # One uniform per value instead of skimage's two Bernoulli draws (flip, then salt or
    # pepper): u < amount / 2 is salt, amount / 2 <= u < amount pepper; the same distribution.
    out = images.masked_fill(uniform < 0.5 * amount, 1.0)
    return out.masked_fill((uniform >= 0.5 * amount) & (uniform < amount), 0.0)

CORRUPTIONS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
}
