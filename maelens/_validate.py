"""Validation of user input, in one place (STYLE habit 7).

Each helper raises `MaelensError` with expected / got / fix; never `assert`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from maelens.errors import MaelensError


def check_ratio(name: str, value: float, *, allow_one: bool = False) -> float:
    """Return `value` as float if it lies in [0, 1) (or [0, 1] with `allow_one`)."""
    value = float(value)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (value >= 0.0 and upper_ok):
        bound = "[0, 1]" if allow_one else "[0, 1)"
        raise MaelensError(f"`{name}` must lie in {bound}, got {value}.")
    return value


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise MaelensError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_image_batch(name: str, pixels: torch.Tensor, in_chans: int, patch_size: int) -> None:
    """Images must be (B, C, H, W) float with H and W multiples of the patch size."""
    if not isinstance(pixels, torch.Tensor):
        raise MaelensError(f"`{name}` must be a torch.Tensor, got {type(pixels).__name__}.")
    if pixels.ndim != 4 or pixels.shape[1] != in_chans:
        raise MaelensError(
            f"`{name}` must have shape (B, {in_chans}, H, W), got {tuple(pixels.shape)}; "
            "images are channels-first, already normalised."
        )
    if not pixels.is_floating_point():
        raise MaelensError(
            f"`{name}` must be floating point, got {pixels.dtype}; preprocess first."
        )
    h, w = pixels.shape[-2:]
    if h % patch_size or w % patch_size:
        raise MaelensError(
            f"`{name}` height and width must be multiples of the patch size {patch_size}, "
            f"got {h}x{w}; resize or crop the images."
        )


def resolve_layers(
    name: str, layers: int | Sequence[int] | None, first: int, last: int
) -> tuple[int, ...]:
    """Turn a layer selection into sorted unique indices in [first, last].

    None selects all; an int n selects the last n; a sequence lists indices, negatives counting
    from the end (-1 is `last`). Out-of-range indices name the valid range.
    """
    valid = list(range(first, last + 1))
    if layers is None:
        return tuple(valid)
    if isinstance(layers, bool):
        raise MaelensError(f"`{name}` must be None, an int or a list of ints, got {layers!r}.")
    if isinstance(layers, int):
        if not 0 <= layers <= len(valid):
            raise MaelensError(
                f"`{name}`={layers} asks for the last {layers} layers; "
                f"expected 0..{len(valid)} (valid layers {first}..{last})."
            )
        return tuple(valid[len(valid) - layers :])
    out = set()
    for index in layers:
        resolved = last + 1 + int(index) if int(index) < 0 else int(index)
        if resolved not in valid:
            raise MaelensError(
                f"`{name}` contains {index}, outside the valid layers {first}..{last} "
                f"(negatives count from the end)."
            )
        out.add(resolved)
    return tuple(sorted(out))


# --- devices and output folders (checked by the CLI before any model or image is read) ---------

DEVICE_CHOICES = "'cpu', 'cuda', 'cuda:N' or 'mps'"


def check_device(name: str, value: str, *, allow_auto: bool = False) -> str:
    """`value` as a device string torch accepts *and this machine has*; 'auto' passes through
    with `allow_auto`. CUDA must be available and N below the device count."""
    text = str(value).strip().lower()
    choices = f"'auto', {DEVICE_CHOICES}" if allow_auto else DEVICE_CHOICES
    if allow_auto and text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise MaelensError(f"`{name}` must be {choices}, got {value!r}.") from None
    if device.type == "cuda":
        _check_cuda(name, value, device)
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise MaelensError(f"`{name}` {value!r}: this machine has no MPS (Apple GPU) "
                               "device; fix: use `--device cpu`.")
    elif device.type != "cpu":
        raise MaelensError(f"`{name}` must be {choices}, got {value!r} (device type "
                           f"{device.type!r} cannot run maelens models).")
    return str(device)


def _check_cuda(name: str, value: str, device: torch.device) -> None:
    if not torch.cuda.is_available():
        raise MaelensError(
            f"`{name}` {value!r}: CUDA is not available on this machine (torch "
            f"{torch.__version__}); fix: use `--device cpu`, or install a CUDA build of torch."
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise MaelensError(
            f"`{name}` {value!r}: this machine has {count} CUDA device(s), cuda:0..cuda:"
            f"{count - 1}; fix: choose one of them."
        )


def check_out_folder(name: str, folder: str | os.PathLike) -> Path:
    """An output folder: an existing folder we can write in, or a path whose nearest existing
    ancestor is such a folder (the run creates the rest). Nothing is created here; stale
    temporary files of earlier, killed writes in it are not touched."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MaelensError(f"`{name}` {folder} is a file; expected a folder (existing or new).")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise MaelensError(f"`{name}` {folder}: {existing} is a file, not a folder; fix: "
                           "choose another output folder.")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".maelens-probe.", suffix=".tmp")
    except OSError as exc:
        raise MaelensError(
            f"`{name}` {folder}: cannot write in {existing} ({exc.strerror}); fix: choose a "
            "folder you can write to."
        ) from None
    os.close(fd)
    os.unlink(probe)
    return folder


# --- linear-MAE theory (maelens.theory) -------------------------------------------------------


def check_covariance(name: str, sigma: object, *, rtol: float = 1e-9) -> np.ndarray:
    """Return `sigma` as a symmetrised float64 (d, d) array if it is symmetric PSD.

    PSD is tested by a Cholesky factorisation of sigma + rtol * max(diag) * I (a d^3/3 cost,
    several times cheaper than an eigendecomposition), so round-off negatives pass.
    """
    array = np.asarray(sigma, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise MaelensError(
            f"`{name}` must be a square (d, d) covariance matrix, got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise MaelensError(f"`{name}` contains NaN or inf; expected a finite covariance matrix.")
    scale = float(np.max(np.abs(array))) or 1.0
    asym = float(np.max(np.abs(array - array.T)))
    if asym > 1e-10 * scale:
        raise MaelensError(
            f"`{name}` must be symmetric, got max |sigma - sigma.T| = {asym:.3g} "
            f"(max |sigma| = {scale:.3g}). Fix: pass (sigma + sigma.T) / 2."
        )
    array = (array + array.T) / 2.0
    jitter = rtol * max(float(np.max(np.diag(array))), 0.0) + 1e-300
    try:
        scipy.linalg.cholesky(array + jitter * np.eye(len(array)), lower=True)
    except np.linalg.LinAlgError:
        low = float(scipy.linalg.eigvalsh(array, subset_by_index=[0, 0])[0])
        raise MaelensError(
            f"`{name}` must be positive semi-definite, got smallest eigenvalue {low:.3g}. "
            "Fix: pass a covariance (e.g. X.T @ X / n) or clip negative eigenvalues."
        ) from None
    return array


def check_rank(name: str, rank: object, dim: int) -> int:
    """A code size k must satisfy 1 <= k < d (k = d would make the optimum the identity map)."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) \
            or not 1 <= int(rank) < dim:
        raise MaelensError(
            f"`{name}` must be an integer with 1 <= {name} < d = {dim}, got {rank!r}. "
            "Fix: choose a bottleneck smaller than the input dimension."
        )
    return int(rank)


def parse_layers(text: str) -> int | list[int] | None:
    """'all' -> None; '1,4,-1' -> [1, 4, -1]; 'last3' -> 3 (the last 3, as Taps' int rule)."""
    text = text.strip().lower()
    if text in ("all", ""):
        return None
    try:
        if text.startswith("last"):
            count = int(text[4:])
            if count < 0:
                raise ValueError(text)
            return count
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise MaelensError(
            f"`--layers` must be 'all', 'lastN' (N >= 0) or comma-separated integers such as "
            f"'1,6,-1', got {text!r}."
        ) from None
