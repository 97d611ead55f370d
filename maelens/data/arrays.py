"""Images stored as a NumPy `.npy` array, raw (uint8) or already preprocessed (float).

Raw: (N, H, W, 3) uint8 RGB or (N, H, W) uint8 gray, run through `Preprocess.from_config`.
Preprocessed: (N, C, S, S) float, normalised for the model, with S = config.image_size and
C = config.in_chans; float16 / float64 are accepted and cast to float32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from maelens.data.preprocess import Preprocess
from maelens.errors import MaelensError
from maelens.model.config import ViTConfig


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise MaelensError(f"array file {path} does not exist (or is not a file).")
    try:
        # allow_pickle=False: a .npy of images never needs pickled objects, and unpickling an
        # untrusted file can run code.
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise MaelensError(
            f"cannot read array file {path}: {exc}. Expected a .npy file written by np.save."
        ) from exc
    if not isinstance(array, np.ndarray):
        raise MaelensError(
            f"array file {path} holds several arrays (an .npz archive); expected one .npy "
            "array. Fix: np.save the images array alone."
        )
    if array.ndim == 0 or array.shape[0] == 0:
        raise MaelensError(f"array file {path} holds no images (shape {array.shape}).")
    return array


def _raw_to_tensor(array: np.ndarray, path: Path, preprocess: Preprocess) -> torch.Tensor:
    if array.dtype != np.uint8:
        raise MaelensError(
            f"array file {path}: raw images must be uint8 in 0..255, got {array.dtype} with "
            f"shape {array.shape}. Fix: pass preprocessed=True for normalised (N, 3, H, W) "
            "floats, or convert to uint8 first."
        )
    if array.ndim == 3:  # (N, H, W) gray -> (N, H, W, 3)
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise MaelensError(
            f"array file {path}: raw images must have shape (N, H, W, 3) or (N, H, W), got "
            f"{array.shape}. Fix: channels-last RGB, e.g. x.transpose(0, 2, 3, 1) for "
            "(N, 3, H, W)."
        )
    return preprocess(array)


def _preprocessed_to_tensor(array: np.ndarray, path: Path, config: ViTConfig) -> torch.Tensor:
    size, chans = config.image_size, config.in_chans
    expected = f"(N, {chans}, {size}, {size})"
    if not np.issubdtype(array.dtype, np.floating):
        raise MaelensError(
            f"array file {path}: preprocessed images must be float32 {expected}, got "
            f"{array.dtype} {array.shape}. Fix: pass preprocessed=False for raw uint8 images."
        )
    if array.ndim != 4 or array.shape[1:] != (chans, size, size):
        raise MaelensError(
            f"array file {path}: preprocessed images must have shape {expected} for the "
            f"model's image_size={size}, got {array.shape}. Fix: save them at {size}x{size}, "
            "channels first, or pass raw uint8 images with preprocessed=False."
        )
    if not np.all(np.isfinite(array)):
        raise MaelensError(f"array file {path}: preprocessed images contain NaN or infinity.")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def load_array_images(
    path: str | os.PathLike[str], preprocessed: bool, config: ViTConfig,
    preprocess: Preprocess | None = None,
) -> torch.Tensor:
    """Images from a `.npy` file as model inputs (N, C, S, S) float32, S = config.image_size.

    preprocessed=False: uint8 (N, H, W, 3) or (N, H, W) gray, transformed by `preprocess`
    (default `Preprocess.from_config(config)`: resize, centre crop, config mean / std).
    preprocessed=True: float (N, C, S, S), already normalised, checked and returned as is.
    """
    path = Path(path)
    array = _read_npy(path)
    if preprocessed:
        return _preprocessed_to_tensor(array, path, config)
    return _raw_to_tensor(array, path, preprocess or Preprocess.from_config(config))
