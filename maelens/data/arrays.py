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

_NPY_MAGIC = b"\x93NUMPY"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from a .npy header, refusing non-.npy bytes and pickles."""
    with open(path, "rb") as handle:
        head = handle.read(len(_NPY_MAGIC))
        if head != _NPY_MAGIC:
            what = "a zip archive such as .npz" if head.startswith(b"PK") else f"{head!r}..."
            raise MaelensError(
                f"array file {path} is not a .npy file (it starts with {what}, not the NumPy "
                "magic); expected one array written by np.save. Fix: np.save the images."
            )
        handle.seek(0)
        try:
            version = np.lib.format.read_magic(handle)
            reader = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = reader(handle)
        except ValueError as exc:
            raise MaelensError(f"array file {path} has a damaged .npy header ({exc}); "
                               "fix: save it again with np.save.") from None
        return tuple(shape), dtype, handle.tell()


def _check_npy(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    shape, dtype, offset = _read_header(path)
    if dtype.hasobject:
        raise MaelensError(
            f"array file {path} holds Python objects ({dtype}), which would need unpickling; "
            "expected numbers (uint8 images or float32 preprocessed images)."
        )
    need = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    have = path.stat().st_size - offset
    if have < need:
        raise MaelensError(
            f"array file {path}: its header says {shape} {dtype} ({_size(need)}) but the file "
            f"holds only {_size(have)} of data; the file is truncated or its header damaged. "
            "Fix: save it again with np.save."
        )
    return shape, dtype


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise MaelensError(f"array file {path} does not exist (or is not a file).")
    shape, _ = _check_npy(path)
    if len(shape) == 0 or shape[0] == 0:
        raise MaelensError(f"array file {path} holds no images (shape {shape}).")
    try:
        # Memory-mapped: images are read as they are preprocessed, not all at once.
        # allow_pickle=False: unpickling an untrusted file can run code.
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise MaelensError(
            f"cannot read array file {path}: {exc}. Expected a .npy file written by np.save."
        ) from exc


def _raw_to_tensor(array: np.ndarray, path: Path, preprocess: Preprocess) -> torch.Tensor:
    if array.dtype != np.uint8:
        raise MaelensError(
            f"array file {path}: raw images must be uint8 in 0..255, got {array.dtype} with "
            f"shape {array.shape}. Fix: pass `--no-preprocess` (preprocessed=True) for "
            "normalised (N, 3, H, W) floats, or convert to uint8 first."
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
            f"{array.dtype} {array.shape}. Fix: drop `--no-preprocess` (preprocessed=False) for "
            "raw uint8 images."
        )
    if array.ndim != 4 or array.shape[1:] != (chans, size, size):
        raise MaelensError(
            f"array file {path}: preprocessed images must have shape {expected} for the "
            f"model's image_size={size}, got {array.shape}. Fix: save them at {size}x{size}, "
            "channels first, or pass raw uint8 images without `--no-preprocess`."
        )
    if not np.all(np.isfinite(array)):
        raise MaelensError(f"array file {path}: preprocessed images contain NaN or infinity.")
    return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))  # a copy


def load_array_images(
    path: str | os.PathLike[str], preprocessed: bool, config: ViTConfig,
    preprocess: Preprocess | None = None,
) -> torch.Tensor:
    """Images from a `.npy` file as model inputs (N, C, S, S) float32, S = config.image_size.

    The file is checked before it is read: NumPy's magic, no pickled objects, and a header that
    agrees with the file size (a damaged header must not allocate gigabytes).
    preprocessed=False: uint8 (N, H, W, 3) or (N, H, W) gray, transformed by `preprocess`
    (default `Preprocess.from_config(config)`: resize, centre crop, config mean / std).
    preprocessed=True: float (N, C, S, S), already normalised, checked and returned as is.
    """
    path = Path(path)
    array = _read_npy(path)
    try:
        if preprocessed:
            return _preprocessed_to_tensor(array, path, config)
        return _raw_to_tensor(array, path, preprocess or Preprocess.from_config(config))
    except MemoryError:
        raise MaelensError(
            f"array file {path}: not enough memory for its {array.shape} {array.dtype} images "
            f"({_size(array.nbytes)}) as model inputs; fix: split it into smaller files."
        ) from None
