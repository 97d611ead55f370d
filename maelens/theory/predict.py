"""What the linear theory predicts over an (m, p) grid for a data set's covariance, and a pick.

For each patch size p and masking ratio m we report, in pixels or as ratios:
- mean_distance_px, spatial_entropy, out_of_patch_mass of the full-rank all-pixel optimum
  W* = q1 Q⁻¹ Σ (no bottleneck: the map whose spread the working notes show growing with m;
  with a rank-k bottleneck W* starts from the PCA projector, already spread out at m = 0, and
  the trend can reverse, see tests/test_theory_spatial.py);
- boundary_emphasis, relative_eigengap, tied, min_loss of the rank-k optimum (encoder A).

`recommend` then picks the (m, p) whose predicted spread is closest to a target scale,
by default the data's correlation length (see its docstring for the rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg

from maelens._validate import check_covariance, check_rank
from maelens.errors import MaelensError
from maelens.theory.closed_form import cholesky_q, reduced_rank_solution
from maelens.theory.loss import check_partition_matches
from maelens.theory.masks import Scheme, mask_moments
from maelens.theory.partition import partition_for
from maelens.theory.spatial import (
    boundary_emphasis,
    correlation_length,
    out_of_patch_mass,
    pixel_distances,
    spatial_entropy,
    weighted_mean_distance,
)

GRID_METRICS = ("mean_distance_px", "spatial_entropy", "out_of_patch_mass",
                "boundary_emphasis", "relative_eigengap", "min_loss")


@dataclass
class SpreadGrid:
    """Predictions on the grid; every metric is a list over patch_sizes of lists over
    mask_ratios (row i = patch_sizes[i]). Plain numbers only: `to_dict` is JSON-ready."""

    image_shape: list[int]
    mask_ratios: list[float]
    patch_sizes: list[int]
    rank: int
    scheme: str
    periodic: bool
    correlation_length_px: float
    mean_distance_px: list[list[float]]
    spatial_entropy: list[list[float]]
    out_of_patch_mass: list[list[float]]
    boundary_emphasis: list[list[float]]
    relative_eigengap: list[list[float]]
    tied: list[list[bool]]
    min_loss: list[list[float]]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpreadGrid:
        return cls(**data)


def luminance_covariance(sigma: np.ndarray, channels: int) -> np.ndarray:
    """Covariance (n_pixels, n_pixels) of the channel mean of (H, W, C)-flattened inputs."""
    n = sigma.shape[0] // channels
    return sigma.reshape(n, channels, n, channels).mean(axis=(1, 3))


def predict_grid(
    sigma: np.ndarray,
    image_shape: tuple[int, ...],
    mask_ratios: Sequence[float],
    patch_sizes: Sequence[int],
    rank: int,
    *,
    scheme: Scheme = "bernoulli",
    periodic: bool = False,
) -> SpreadGrid:
    """Predicted spatial spread etc. for Σ (d, d) on a (length,) or (H, W, C) grid (see module).

    `periodic` measures distances on a ring / torus (for covariances built periodic).
    """
    sigma = check_covariance("sigma", sigma)
    shape = tuple(int(s) for s in image_shape)
    if not len(patch_sizes):
        raise MaelensError("`patch_sizes` must list at least one patch size, got none.")
    partitions = [partition_for(shape, p) for p in patch_sizes]
    check_partition_matches(sigma, partitions[0])
    k = check_rank("rank", rank, sigma.shape[0])
    if not len(mask_ratios):
        raise MaelensError("`mask_ratios` must list at least one ratio, got none.")
    period = (shape[:1] if len(shape) == 1 else shape[:2]) if periodic else None
    coords = partitions[0].coords
    distances = pixel_distances(coords, period=period)
    sigma_sq = sigma @ sigma  # shared by every grid point
    rows = {name: [] for name in (*GRID_METRICS, "tied")}
    for partition in partitions:
        cells = [_grid_point(sigma, sigma_sq, partition, m, k, scheme, distances)
                 for m in mask_ratios]
        for name in rows:
            rows[name].append([cell[name] for cell in cells])
    return SpreadGrid(
        image_shape=list(shape), mask_ratios=[float(m) for m in mask_ratios],
        patch_sizes=[int(p) for p in patch_sizes], rank=k, scheme=scheme, periodic=periodic,
        correlation_length_px=_data_length(sigma, shape, period), **rows,
    )


def _grid_point(sigma, sigma_sq, partition, mask_ratio, k, scheme, distances) -> dict:
    moments = mask_moments(mask_ratio, partition.n_patches, scheme)
    Q = moments.q2 * sigma + (moments.q1 - moments.q2) * partition.block_diagonal(sigma)
    full = moments.q1 * scipy.linalg.cho_solve(cholesky_q(Q), sigma)  # W* = q1 Q⁻¹ Σ
    solution = reduced_rank_solution(sigma, Q, moments.q1, k, sigma_sq=sigma_sq,
                                     mask_ratio=moments.mask_ratio, scheme=scheme)
    ids = partition.patch_ids
    return {
        "mean_distance_px": weighted_mean_distance(full.T, distances),
        "spatial_entropy": spatial_entropy(full.T),
        "out_of_patch_mass": out_of_patch_mass(full.T, ids, ids),
        "boundary_emphasis": boundary_emphasis(solution.A, partition).edge_over_mean,
        "relative_eigengap": solution.relative_eigengap,
        "tied": solution.tied,
        "min_loss": solution.min_loss,
    }


def _data_length(sigma, shape, period) -> float:
    """e-folding correlation length (pixels) of the luminance; the fitted length if undefined."""
    channels = shape[2] if len(shape) == 3 else 1
    lum = luminance_covariance(sigma, channels)
    coords = partition_for(shape[:2] + (1,) if len(shape) == 3 else shape, 1).coords
    length = correlation_length(lum, coords, period=period)
    return length.e_folding_px if np.isfinite(length.e_folding_px) else length.fitted_px


@dataclass
class Recommendation:
    """The chosen (mask_ratio, patch_size), its predicted spread and the reasoning as text."""

    mask_ratio: float
    patch_size: int
    predicted_spread_px: float
    target_scale_px: float
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def recommend(grid: SpreadGrid | dict, target_scale_px: float | None = None,
              tolerance: float = 0.05) -> Recommendation:
    """Pick the (m, p) whose predicted |W*|-weighted spread is closest to a target scale.

    Rule: the target is `target_scale_px` (e.g. the size of the features a downstream task
    needs) or, by default, the data's correlation length, so the masked-out pixels are
    predicted from about as far as the data's correlations reach. Among pairs within
    `tolerance` · target of the best distance, prefer the higher ratio, then the larger patch
    (fewer visible tokens: cheaper encoder passes). A heuristic on a linear model: confirm it
    with a small trained sweep.
    """
    grid = SpreadGrid.from_dict(grid) if isinstance(grid, dict) else grid
    target = grid.correlation_length_px if target_scale_px is None else float(target_scale_px)
    if target_scale_px is not None and not (np.isfinite(target) and target > 0):
        raise MaelensError(
            f"`target_scale_px` must be a positive number of pixels, got {target_scale_px}; "
            "fix: give the feature scale you want, or None for the data's correlation length."
        )
    if not np.isfinite(target) or target <= 0:
        raise MaelensError(
            f"the data's correlation length could not be estimated (got {target}), so there is "
            "no default target scale; fix: pass `target_scale_px`."
        )
    spread = np.asarray(grid.mean_distance_px)  # (n_p, n_m)
    gap = np.abs(spread - target)
    close = np.argwhere(gap <= gap.min() + tolerance * target)
    i, j = max(close, key=lambda ij: (grid.mask_ratios[ij[1]], grid.patch_sizes[ij[0]]))
    return Recommendation(
        mask_ratio=grid.mask_ratios[j], patch_size=grid.patch_sizes[i],
        predicted_spread_px=float(spread[i, j]), target_scale_px=target,
        text=_reasoning(grid, spread, target, i, j, target_scale_px is None),
    )


def _reasoning(grid: SpreadGrid, spread, target, i, j, from_data) -> str:
    source = "the data's correlation length" if from_data else (
        f"requested; the data's correlation length is {grid.correlation_length_px:.2f} px")
    m, p = grid.mask_ratios[j], grid.patch_sizes[i]
    lines = [
        f"Target scale {target:.2f} px ({source}).",
        f"Predicted spread of the linear MAE map W* ranges {spread.min():.2f}-"
        f"{spread.max():.2f} px over m in {grid.mask_ratios} and p in {grid.patch_sizes}.",
        f"Recommended m = {m:g}, p = {p}: predicted spread {spread[i, j]:.2f} px "
        f"(|gap| {abs(spread[i, j] - target):.2f} px), out-of-patch mass "
        f"{grid.out_of_patch_mass[i][j]:.2f}, boundary emphasis "
        f"{grid.boundary_emphasis[i][j]:.2f} (rank {grid.rank}).",
    ]
    if target > spread.max() or target < spread.min():
        lines.append("The target lies outside the predicted range; the closest edge was taken.")
    if grid.tied[i][j]:
        lines.append(f"Note: the rank-{grid.rank} optimum there has tied eigenvalues.")
    lines.append("Linear theory only: check the choice with a small trained (m, p) sweep.")
    return "\n".join(lines)
