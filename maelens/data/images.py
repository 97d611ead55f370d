"""Decoding image files into (H, W, 3) uint8 RGB arrays, and listing the files of a folder.

Every Pillow mode ends as 8-bit RGB by one documented rule (see `read_image`). The EXIF
orientation tag is deliberately *not* applied: torchvision's and timm's loaders ignore it too,
and published accuracies were measured that way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from maelens.errors import MaelensError

if TYPE_CHECKING:
    import torch

    from maelens.data.preprocess import Preprocess

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".jpe", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff",
    ".webp",
)

# Modes whose samples are 16-bit unsigned integers (byte order already resolved by numpy).
_MODES_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _with_alpha_on_black(rgba: np.ndarray) -> np.ndarray:
    """Composite (H, W, 4) uint8 on a black background: rgb * alpha / 255, rounded.

    Why composite instead of dropping alpha: the colour under a fully transparent pixel is
    arbitrary (often left-over paint), while compositing makes it a well-defined black.
    """
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:].astype(np.uint32)
    return ((rgb * alpha + 127) // 255).astype(np.uint8)  # +127: round half up, integers only


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 by replicating the channel."""
    return np.repeat(gray[..., None], 3, axis=-1)


def _int_to_uint8(values: np.ndarray, path: Path, mode: str) -> np.ndarray:
    """16-bit samples (or 32-bit ints holding 16-bit data) -> uint8, 65535 -> 255, rounded.

    Pillow's own `convert("L")` clips 16-bit values at 255 (so 32768 turns white); we scale
    the full 16-bit range instead.
    """
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise MaelensError(
            f"image {path}: mode {mode} holds values in [{values.min()}, {values.max()}]; "
            "expected 16-bit data in [0, 65535]. Fix: save it as 8- or 16-bit."
        )
    return np.rint(values.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)


def _float_to_uint8(values: np.ndarray, path: Path) -> np.ndarray:
    """Float samples in [0, 1] -> uint8 (value * 255, rounded). Other ranges are refused."""
    if not np.all(np.isfinite(values)) or (values.size and (values.min() < 0 or values.max() > 1)):
        raise MaelensError(
            f"image {path}: float image (mode F) has values outside [0, 1] or non-finite ones; "
            "expected floats in [0, 1]. Fix: rescale it to [0, 1] or save it as 8-bit."
        )
    return np.rint(values.astype(np.float64) * 255.0).astype(np.uint8)


def _has_transparency(image: Image.Image) -> bool:
    """Alpha channel, a transparent palette entry / colour key, or an RGBA palette."""
    if image.mode in ("LA", "La", "RGBA", "RGBa", "PA") or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def image_to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """Any Pillow image -> (H, W, 3) uint8 RGB.

    16-bit (I;16*, I) -> gray scaled so that 65535 -> 255; F in [0, 1] -> gray * 255; any
    transparency (LA, RGBA, PA, P or RGB/L with a transparent colour) -> composited on black;
    L, 1 -> replicated gray; CMYK, YCbCr, LAB, HSV, P -> Pillow's conversion to RGB (CMYK
    without an ICC profile: Pillow's naive inversion).
    """
    mode = image.mode
    if mode in _MODES_16BIT or mode == "I":
        return _gray_to_rgb(_int_to_uint8(np.asarray(image), path, mode))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(image), path))
    if _has_transparency(image):
        return _with_alpha_on_black(np.asarray(image.convert("RGBA"), dtype=np.uint8))
    if mode in ("L", "1"):
        return _gray_to_rgb(np.asarray(image.convert("L"), dtype=np.uint8))
    return np.array(image.convert("RGB"), dtype=np.uint8)  # np.array: a writable copy


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one image file into an (H, W, 3) uint8 RGB array (first frame if animated).

    Raises `MaelensError` naming the file when it is missing, not an image, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise MaelensError(f"image file {path} does not exist (or is not a file).")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, inside the try: truncation only shows up here
            return image_to_rgb(image, path)
    except MaelensError:
        raise
    # Corrupt files make Pillow's plugins raise nearly anything (OSError, SyntaxError,
    # struct.error, IndexError, DecompressionBombError, ...), hence the broad except.
    except Exception as exc:
        raise MaelensError(
            f"cannot decode image {path}: {type(exc).__name__}: {exc}. "
            "Expected a readable image file; fix: re-export it or remove it from the folder."
        ) from exc


def _is_hidden(name: str) -> bool:
    # Dot-files include macOS "._x.jpg" resource forks, which carry an image extension but
    # are not images; dot-folders include .ipynb_checkpoints and .git.
    return name.startswith(".")


def scan_images(
    folder: str | os.PathLike[str],
    recursive: bool = True,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> list[Path]:
    """Image files under `folder`, by extension (case-insensitive), sorted by relative path.

    Hidden files and folders (names starting with ".") are ignored. Symbolic links to folders
    are followed once (a link cycle is not walked twice). The folder must exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MaelensError(f"image folder {folder} does not exist (or is not a folder).")
    wanted = tuple(ext.lower() for ext in extensions)
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = [d for d in dirs if not _is_hidden(d)] if recursive else []
        for name in files:
            if not _is_hidden(name) and name.lower().endswith(wanted):
                found.append(Path(current) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


@dataclass
class LoadedImages:
    """Decoded images of a folder. Sizes may differ, so `images` is a list of (H, W, 3) uint8.

    `paths[i]` is the file of `images[i]`; `skipped` lists (path, reason) of unreadable files.
    """

    images: list[np.ndarray]
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def to_tensor(self, preprocess: Preprocess) -> torch.Tensor:
        """(N, 3, S, S) float32, resized, cropped and normalised by `preprocess`."""
        return preprocess(self.images)


def decode_files(
    paths: Sequence[Path], strict: bool, progress: bool = False
) -> tuple[list[np.ndarray], list[Path], list[tuple[Path, str]]]:
    """Decode `paths` in order; returns (images, their paths, skipped (path, reason)).

    strict=True raises on the first unreadable file; otherwise it is skipped and logged.
    """
    images, kept, skipped = [], [], []
    for path in tqdm(paths, desc="decoding images", unit="img", disable=not progress):
        try:
            images.append(read_image(path))
        except MaelensError as exc:
            if strict:
                raise
            # info, not warning: the caller reports `skipped` (the CLI prints each once)
            log.info("skipping unreadable image: %s", exc)
            skipped.append((path, str(exc)))
            continue
        kept.append(path)
    return images, kept, skipped


def load_image_folder(
    folder: str | os.PathLike[str], strict: bool = False, recursive: bool = True,
    progress: bool = False,
) -> LoadedImages:
    """Decode every image under `folder` (sorted as `scan_images`).

    strict=False skips unreadable files and lists them in `skipped`; strict=True raises
    `MaelensError` naming the first one. A folder without any (readable) image is an error.
    """
    paths = scan_images(folder, recursive=recursive)
    if not paths:
        raise MaelensError(
            f"image folder {folder} contains no image files; expected at least one file with an "
            f"extension among {', '.join(IMAGE_EXTENSIONS)}. Fix: point to the folder that "
            "holds the images."
        )
    images, kept, skipped = decode_files(paths, strict=strict, progress=progress)
    if not images:
        raise MaelensError(
            f"image folder {folder}: none of its {len(paths)} image files could be decoded "
            f"(first: {skipped[0][0]}: {skipped[0][1]})."
        )
    return LoadedImages(images=images, paths=kept, skipped=skipped)
