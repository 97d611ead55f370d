"""Validation of user input, in one place (STYLE habit 7).

Each helper raises `MaelensError` with expected / got / fix; never `assert`.
"""

from __future__ import annotations

from collections.abc import Sequence

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
