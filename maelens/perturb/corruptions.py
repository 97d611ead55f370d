"""ImageNet-C (Hendrycks & Dietterich, 2019): 15 corruptions x 5 severities, batched in torch.

Why our own implementation: the reference packages (`imagecorruptions`, the ImageNet-C repo) run
one NumPy/OpenCV image at a time (glass blur ~0.7 s per 224^2 image here) and no longer install
with NumPy 2 / scikit-image >= 0.21. These functions follow the published definitions and
severity parameters, act on a batch (B, 3, H, W) of float RGB in [0, 1] on any device, and draw
their randomness per image from `maelens.seeds.generator(seed, "corrupt", name, severity, i)`,
so image i's corruption does not depend on the batch it sits in.

A corruption function has the signature
    fn(images: Tensor (B, 3, H, W) float in [0, 1], severity: int 1..5,
       generators: list[torch.Generator] (one CPU generator per image)) -> Tensor like images
and returns unquantised values in [0, 1]; `corrupt` quantises to 8 bits afterwards, as the
reference's uint8 output is.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch

from maelens.errors import MaelensError
from maelens.seeds import generator

CorruptionFn = Callable[[torch.Tensor, int, list[torch.Generator]], torch.Tensor]

# The order of the ImageNet-C paper's tables: noise, blur, weather, digital.
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def _registry() -> dict[str, CorruptionFn]:
    # Imported lazily so that a missing optional piece names itself when used, not at import.
    from maelens.perturb import corrupt_blur, corrupt_digital, corrupt_noise, corrupt_weather

    table: dict[str, CorruptionFn] = {}
    for module in (corrupt_noise, corrupt_blur, corrupt_weather, corrupt_digital):
        table.update(module.CORRUPTIONS)
    return table


def check_corruption(name: str, severity: int) -> None:
    """One-line errors for an unknown corruption name or a severity outside 1..5."""
    if name not in CORRUPTIONS:
        raise MaelensError(
            f"unknown corruption `{name}`; expected one of: {', '.join(CORRUPTIONS)}.")
    # A float 3.0 equals 3 but would fail later as a tuple index; numpy integers are fine.
    if (isinstance(severity, bool) or not isinstance(severity, numbers.Integral)
            or severity not in SEVERITIES):
        raise MaelensError(f"corruption `severity` must be an integer 1..5, got {severity!r}.")


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    index: Sequence[int] | torch.Tensor,
    seed: int = 0,
    quantize: bool = True,
) -> torch.Tensor:
    """Corrupt a batch of images.

    images: (B, 3, H, W) float RGB in [0, 1] (any device); index: (B,) data-set index of each
    image, which keys its random draws. Returns (B, 3, H, W) float in [0, 1], rounded to 8-bit
    levels (k / 255) unless `quantize` is False.
    """
    check_corruption(name, severity)
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise MaelensError(
            f"`images` must be float (B, 3, H, W) RGB in [0, 1], got {tuple(images.shape)} "
            f"{images.dtype}.")
    index = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
    if len(index) != images.shape[0]:
        raise MaelensError(f"`index` has {len(index)} entries for {images.shape[0]} images.")
    severity = int(severity)  # numpy integers must key the same draws as ints
    gens = [generator(seed, "corrupt", name, severity, i) for i in index]
    out = _registry()[name](images, severity, gens).clamp(0.0, 1.0)
    # Rounded to the nearest 8-bit level; the reference truncates (np.uint8), which sits half
    # a level lower on average: outputs differ by at most one level (see the tests).
    return out.mul_(255.0).round_().div_(255.0) if quantize else out
