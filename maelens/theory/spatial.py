"""Spatial-scale metrics of a linear map or a Jacobian, and a data set's correlation length.

Every metric takes an influence matrix J (d_out, d_in): J[j, i] is the effect of input i on
output j (a Jacobian ∂x̂/∂x; for the linear MAE x̂ = (r ⊙ x) W pass Wᵀ, i.e.
`solution.influence`), plus pixel coordinates or a precomputed distance matrix, so they work
for any map between any two pixel layouts. Distances are Euclidean, in pixels; channels of a
pixel are at distance 0 from each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maelens.errors import MaelensError
from maelens.theory.partition import Partition


def pixel_distances(
    out_coords: np.ndarray,
    in_coords: np.ndarray | None = None,
    period: Sequence[float | None] | None = None,
) -> np.ndarray:
    """Distances (d_out, d_in) in pixels between coordinate rows (d, n_axes).

    `period` (one entry per axis, None = open axis) wraps an axis, e.g. (64,) for a periodic
    1-D signal of 64 samples: the distance along it is min(|Δ|, period - |Δ|).
    """
    out_coords = np.asarray(out_coords, dtype=np.float64).reshape(len(out_coords), -1)
    in_coords = out_coords if in_coords is None else np.asarray(in_coords, dtype=np.float64)
    in_coords = in_coords.reshape(len(in_coords), -1)
    if in_coords.shape[1] != out_coords.shape[1]:
        raise MaelensError(
            f"`in_coords` has {in_coords.shape[1]} axes but `out_coords` {out_coords.shape[1]}."
        )
    periods = [None] * out_coords.shape[1] if period is None else list(period)
    if len(periods) != out_coords.shape[1]:
        raise MaelensError(
            f"`period` needs one entry per axis ({out_coords.shape[1]}), got {period!r}; "
            "use None for an open axis."
        )
    squared = np.zeros((len(out_coords), len(in_coords)))
    for axis, length in enumerate(periods):  # one axis at a time: no (d_out, d_in, n_axes) temp
        delta = np.abs(out_coords[:, axis, None] - in_coords[None, :, axis])
        if length is not None:
            delta = np.minimum(delta, length - delta)
        squared += delta**2
    return np.sqrt(squared)


def weighted_mean_distance(influence: np.ndarray, distances: np.ndarray) -> float:
    """Mean over outputs j of Σ_i |J_ji| dist_ji / Σ_i |J_ji| (pixels); all-zero rows skipped.

    Each output counts equally and the output's own pixel (distance 0) is included, so the
    identity map scores 0. This is the convention behind the working notes' numbers.
    """
    weights = _abs_checked(influence, distances)
    totals = weights.sum(axis=1)
    live = totals > 0
    return float(np.mean((weights * distances).sum(axis=1)[live] / totals[live]))


def spatial_entropy(influence: np.ndarray) -> float:
    """Mean over outputs of the Shannon entropy (nats) of |J_j·| / Σ_i |J_ji|.

    0 for a map that reads one input per output; log(d_in) for uniform weights. exp() of it is
    an effective number of inputs read per output.
    """
    weights = np.abs(np.asarray(influence, dtype=np.float64))
    totals = weights.sum(axis=1, keepdims=True)
    live = totals[:, 0] > 0
    prob = weights[live] / totals[live]
    logs = np.log(np.where(prob > 0, prob, 1.0))
    return float(np.mean(-(prob * logs).sum(axis=1)))


def out_of_patch_mass(
    influence: np.ndarray, out_patch_ids: np.ndarray, in_patch_ids: np.ndarray
) -> float:
    """Share of Σ|J| on (output, input) pairs in different patches, in [0, 1]."""
    weights = np.abs(np.asarray(influence, dtype=np.float64))
    out_ids, in_ids = np.asarray(out_patch_ids), np.asarray(in_patch_ids)
    if weights.shape != (len(out_ids), len(in_ids)):
        raise MaelensError(
            f"`influence` must be (d_out, d_in) = ({len(out_ids)}, {len(in_ids)}), "
            f"got {weights.shape}."
        )
    other = out_ids[:, None] != in_ids[None, :]
    return float(weights[other].sum() / weights.sum())


@dataclass(frozen=True)
class InfluenceProfile:
    """Mean |J| by distance (for `correlation_length`: the mean signed correlation).

    distance_px (n_bins,) bin centres in pixels; mean_abs (n_bins,); counts (n_bins,) pairs per
    bin; decay_length_px of a fitted exp(-r / length) (NaN with fewer than two usable bins).
    """

    distance_px: np.ndarray
    mean_abs: np.ndarray
    counts: np.ndarray
    decay_length_px: float

    def to_dict(self) -> dict:
        return {
            "distance_px": self.distance_px.tolist(),
            "mean_abs": self.mean_abs.tolist(),
            "counts": self.counts.tolist(),
            "decay_length_px": self.decay_length_px,
        }


def influence_profile(
    influence: np.ndarray,
    distances: np.ndarray,
    *,
    bin_width: float = 1.0,
    fit_floor: float = 1e-3,
) -> InfluenceProfile:
    """Mean |J_ji| in distance bins [b·w - w/2, b·w + w/2) and a fitted decay length (pixels).

    The fit is least squares of log(mean |J|) against distance over bins with distance > 0 and
    mean above `fit_floor` times the largest such bin (the far tail is round-off or wrap-around).
    """
    weights = _abs_checked(influence, distances)
    centres, profile, counts = _binned_mean(weights, distances, bin_width)
    return InfluenceProfile(centres, profile, counts, _fit_decay(centres, profile, fit_floor))


def _binned_mean(
    values: np.ndarray, distances: np.ndarray, bin_width: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin centres (pixels), mean value and count of the non-empty distance bins."""
    bins = np.floor(distances / bin_width + 0.5).astype(np.int64).ravel()
    counts = np.bincount(bins)
    sums = np.bincount(bins, weights=values.ravel(), minlength=len(counts))
    used = counts > 0
    return np.arange(len(counts))[used] * bin_width, sums[used] / counts[used], counts[used]


def _fit_decay(distance: np.ndarray, value: np.ndarray, floor: float) -> float:
    far = distance > 0
    if not far.any() or value[far].max() <= 0:
        return float("nan")
    keep = far & (value > floor * value[far].max())
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(distance[keep], np.log(value[keep]), 1)[0]
    return float(-1.0 / slope) if slope < 0 else float("inf")


@dataclass(frozen=True)
class BoundaryEmphasis:
    """Encoder row energy ‖A_i‖² averaged over patches by position inside the patch.

    profile: (p,) for 1-D blocks or (p, p) for 2-D tiles (channels summed).
    edge_over_mean: mean of the profile on the patch border / mean over all positions
    (1 = flat; > 1 = weight concentrated on patch-boundary pixels).
    """

    profile: np.ndarray
    edge_over_mean: float

    def to_dict(self) -> dict:
        return {"profile": self.profile.tolist(), "edge_over_mean": self.edge_over_mean}


def boundary_emphasis(
    encoder: np.ndarray, partition: Partition, *, interior_only: bool = False
) -> BoundaryEmphasis:
    """Row energy of an encoder A (d_in, k) by position within the patch.

    Row energies are invariant to orthogonal changes of the code basis; use the gauge where
    the decoder rows are orthonormal (`LinearMAESolution.A`). `interior_only` averages only
    over patches that do not touch the image border, isolating patch boundaries from the
    image's own edges (meaningful for non-periodic data).
    """
    A = np.asarray(encoder, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != partition.dim:
        raise MaelensError(
            f"`encoder` must be (d_in, k) with d_in = {partition.dim}, got {A.shape}."
        )
    energy = np.sum(A**2, axis=1)
    use = ~partition.patch_on_image_border() if interior_only else np.ones(len(energy), bool)
    if not use.any():
        raise MaelensError(
            "`interior_only=True` leaves no patch: every patch touches the image border. "
            "Fix: use interior_only=False or smaller patches."
        )
    p = partition.patch_size
    shape = (p,) * partition.offsets.shape[1]
    flat = np.ravel_multi_index(tuple(partition.offsets[use].T), shape)
    # Channels of a pixel are summed; positions are averaged over the patches used.
    n_used = len(np.unique(partition.patch_ids[use]))
    profile = np.bincount(flat, weights=energy[use], minlength=p ** len(shape)) / n_used
    profile = profile.reshape(shape)
    edge = _edge_positions(p, len(shape))
    return BoundaryEmphasis(profile, float(profile[edge].mean() / profile.mean()))


def _edge_positions(p: int, n_axes: int) -> np.ndarray:
    offsets = np.indices((p,) * n_axes)
    return np.any((offsets == 0) | (offsets == p - 1), axis=0)


@dataclass(frozen=True)
class CorrelationLength:
    """e_folding_px: first distance where the mean correlation drops below 1/e (linear
    interpolation between bins); fitted_px: decay length of a fitted exp(-r / length);
    profile: mean correlation by distance (an `InfluenceProfile` of the correlation matrix)."""

    e_folding_px: float
    fitted_px: float
    profile: InfluenceProfile

    def to_dict(self) -> dict:
        return {"e_folding_px": self.e_folding_px, "fitted_px": self.fitted_px,
                "profile": self.profile.to_dict()}


def correlation_length(
    sigma: np.ndarray, coords: np.ndarray, *, period: Sequence[float | None] | None = None
) -> CorrelationLength:
    """Estimate a data set's spatial correlation length (pixels) from its covariance (d, d).

    Correlations (Σ_ij / √(Σ_ii Σ_jj); zero-variance inputs dropped) are averaged in 1-pixel
    distance bins. For an exponential kernel exp(-r / ℓ) both estimates return ℓ; for other
    shapes they differ (RBF exp(-r² / 2ℓ²): e-folding √2 ℓ), so report both.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    std = np.sqrt(np.clip(np.diag(sigma), 0.0, None))
    live = std > 0
    corr = sigma[np.ix_(live, live)] / np.outer(std[live], std[live])
    coords = np.asarray(coords, dtype=np.float64)[live]
    distances = pixel_distances(coords, period=period)
    centres, mean_corr, counts = _binned_mean(corr, distances, 1.0)
    profile = InfluenceProfile(centres, mean_corr, counts, _fit_decay(centres, mean_corr, 0.05))
    return CorrelationLength(_e_folding(profile), profile.decay_length_px, profile)


def _e_folding(profile: InfluenceProfile) -> float:
    r, c = profile.distance_px, profile.mean_abs
    below = np.nonzero(c < np.exp(-1.0))[0]
    if len(below) == 0 or below[0] == 0:
        return float("nan")
    i = below[0]
    t = (c[i - 1] - np.exp(-1.0)) / (c[i - 1] - c[i])
    return float(r[i - 1] + t * (r[i] - r[i - 1]))


def _abs_checked(influence: np.ndarray, distances: np.ndarray) -> np.ndarray:
    weights = np.abs(np.asarray(influence, dtype=np.float64))
    if weights.shape != np.shape(distances):
        raise MaelensError(
            f"`influence` {weights.shape} and `distances` {np.shape(distances)} must have the "
            "same (d_out, d_in) shape. Fix: pixel_distances(out_coords, in_coords)."
        )
    return weights
