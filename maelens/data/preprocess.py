"""The ImageNet evaluation transform of MAE / timm: resize, centre crop, scale, normalise.

Resizing uses Pillow, not `torch.nn.functional.interpolate(antialias=True)`: the published MAE
and timm accuracies were measured with torchvision's `Resize` on PIL images, i.e. Pillow's
antialiased filters applied to uint8 and rounded back to uint8. Using Pillow reproduces those
inputs bit for bit; torch's antialiased bicubic is close but not identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from maelens._validate import check_positive_int
from maelens.errors import MaelensError
from maelens.model.config import IMAGENET_MEAN, IMAGENET_STD, ViTConfig

# Aspect ratios above this are resampled from the centre square only (see `Preprocess.crop`).
MAX_EXACT_ASPECT = 32

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def _check_channel_stats(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3 or (name == "std" and min(values) <= 0):
        rule = "3 positive values" if name == "std" else "3 values"
        raise MaelensError(f"Preprocess `{name}` needs {rule} (one per RGB channel), got {values}.")
    return values  # type: ignore[return-value]


def _check_uint8_images(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Accept (H, W, 3), (N, H, W, 3) or a list of (H, W, 3) uint8; return a list of images."""
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = [images]
        elif images.ndim != 4:
            raise MaelensError(
                f"Preprocess expects a uint8 image (H, W, 3) or batch (N, H, W, 3), got shape "
                f"{images.shape}. Fix: gray arrays (N, H, W) need a channel axis, e.g. "
                "np.repeat(x[..., None], 3, axis=-1)."
            )
    out = list(images)
    if not out:
        raise MaelensError("Preprocess got an empty batch; expected at least one image.")
    for i, image in enumerate(out):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                or image.shape[-1] != 3:
            got = (f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray)
                   else type(image).__name__)
            raise MaelensError(
                f"Preprocess image {i}: expected a uint8 array of shape (H, W, 3) in 0..255, "
                f"got {got}. Fix: decode files with `read_image`, or convert with "
                "(x * 255).round().astype(np.uint8) if x is a float image in [0, 1]."
            )
    return out


@dataclass(frozen=True)
class Preprocess:
    """uint8 RGB images -> normalised float32 tensors (N, 3, size, size).

    Steps (the MAE / timm eval convention): resize the shorter side to
    floor(size / crop_pct) pixels with `interpolation` (the longer side keeps the aspect ratio,
    truncated to an int as torchvision does), centre-crop `size` x `size`, scale to [0, 1],
    subtract `mean` and divide by `std` (per RGB channel, in [0, 1] units). For 224 inputs and
    crop_pct 0.875 this is resize 256 -> crop 224. crop_pct=1.0 resizes the shorter side to
    `size` and crops the centre.
    """

    size: int
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", check_positive_int("size", self.size))
        if not 0.0 < float(self.crop_pct) <= 1.0:
            raise MaelensError(
                f"Preprocess `crop_pct` must lie in (0, 1], got {self.crop_pct}; "
                "0.875 is the ImageNet eval convention, 1.0 means no margin."
            )
        object.__setattr__(self, "crop_pct", float(self.crop_pct))
        object.__setattr__(self, "mean", _check_channel_stats("mean", self.mean))
        object.__setattr__(self, "std", _check_channel_stats("std", self.std))
        if self.interpolation not in INTERPOLATIONS:
            raise MaelensError(
                f"Preprocess `interpolation` must be one of {sorted(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}."
            )

    @classmethod
    def from_config(
        cls, config: ViTConfig, crop_pct: float = 0.875, interpolation: str = "bicubic"
    ) -> Preprocess:
        """The transform that goes with a model: its image_size, mean and std."""
        if config.in_chans != 3:
            raise MaelensError(
                f"Preprocess handles RGB images, but the config has in_chans={config.in_chans}."
            )
        return cls(config.image_size, crop_pct, tuple(config.mean), tuple(config.std),
                   interpolation)

    @property
    def resize_size(self) -> int:
        """Shorter-side length (pixels) before the crop: floor(size / crop_pct), as timm."""
        return math.floor(self.size / self.crop_pct)

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the shorter-side resize; torchvision's integer rule."""
        short, long = min(height, width), max(height, width)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> resized and centre-cropped (size, size, 3) uint8.

        Images up to MAX_EXACT_ASPECT : 1 are resized whole, then cropped (torchvision's
        result, bit for bit). Longer ones would be resized to a huge strip first (a 1x8000
        image to 256x2048000 pixels, gigabytes), so only the centre square's source region
        is resampled (Pillow's `box`): the same geometry and filter, with memory bounded by
        the crop, though not bit-identical to resizing the whole strip.
        """
        height, width = self.resized_shape(*image.shape[:2])
        # torchvision's centre-crop offsets: round((H - size) / 2) with Python's round.
        top = int(round((height - self.size) / 2.0))
        left = int(round((width - self.size) / 2.0))
        resample = INTERPOLATIONS[self.interpolation]
        if max(height, width) > MAX_EXACT_ASPECT * min(height, width):
            sy, sx = image.shape[0] / height, image.shape[1] / width  # source px per output px
            box = (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)
            resized = Image.fromarray(image).resize((self.size, self.size), resample, box=box)
            return np.asarray(resized)
        if (height, width) != image.shape[:2]:
            image = np.asarray(Image.fromarray(image).resize((width, height), resample))
        return image[top : top + self.size, left : left + self.size]

    def normalize(self, images: np.ndarray) -> torch.Tensor:
        """(N, S, S, 3) uint8 -> (N, 3, S, S) float32: (x / 255 - mean) / std.

        Computed in float64 one image at a time and rounded once to float32, so the result is
        the correctly rounded value of the formula (and memory stays at one image in float64).
        """
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        out = np.empty((len(images), 3, *images.shape[1:3]), dtype=np.float32)
        for i, image in enumerate(images):
            out[i] = ((image.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1)
        return torch.from_numpy(out)

    def __call__(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """(H, W, 3), (N, H, W, 3) or a list of (H, W, 3) uint8 -> (N, 3, size, size) float32.

        A single (H, W, 3) image gives N = 1. Images in a list may differ in size.
        """
        crops = [self.crop(image) for image in _check_uint8_images(images)]
        return self.normalize(np.stack(crops))

    def denormalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Inverse of the normalisation with this transform's mean and std; see `denormalize`."""
        return denormalize(pixels, self.mean, self.std)


def denormalize(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Normalised (3, H, W) or (N, 3, H, W) -> float in [0, 1]: x * std + mean, clamped.

    Clamping is needed because model outputs (e.g. MAE reconstructions) overshoot [0, 1].
    """
    if not isinstance(pixels, torch.Tensor) or pixels.ndim not in (3, 4) or pixels.shape[-3] != 3:
        got = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise MaelensError(
            f"denormalize expects a tensor (3, H, W) or (N, 3, H, W), got {got}."
        )
    if len(mean) != 3 or len(std) != 3:
        raise MaelensError(f"denormalize needs 3 mean and 3 std values, got {mean} / {std}.")
    dtype = pixels.dtype if pixels.is_floating_point() else torch.float32
    mean_t = torch.tensor(mean, dtype=dtype, device=pixels.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=dtype, device=pixels.device).view(3, 1, 1)
    return (pixels.to(dtype) * std_t + mean_t).clamp(0.0, 1.0)
