"""The closed-form rank-k optimum of the all-pixel linear MAE, and the denoising-AE baseline.

With Q = E[(r ⊙ x)ᵀ(r ⊙ x)] = q2 Σ + (q1 - q2) D (D = Σ ⊙ S), the loss
ℓ(W) = tr Σ - 2 q1 tr(ΣW) + tr(WᵀQW) is a reduced-rank regression. Its rank-k minimiser is
W* = q1 Q⁻¹ Σ U_k U_kᵀ with U_k the top-k eigenvectors of M = Σ Q⁻¹ Σ, and
ℓ(W*) = tr Σ - q1² Σ_{i<=k} λ_i(M). Only W* and the spans are identifiable: A = q1 Q⁻¹ Σ U_k C⁻¹,
B = C U_kᵀ for any invertible C; we return the gauge C = I (decoder rows orthonormal).

Two paths give the same answer:
- "generalized" (fast): the encoder directions solve Σ² a = λ Q a. `scipy.linalg.eigh` with
  `subset_by_index` factors Q (Cholesky), reduces to standard form and computes only the top
  k + 1 pairs; then U = Σ a / √λ and A = q1 √λ a (eigh normalises aᵀQa = 1).
- "naive": form M = Σ Q⁻¹ Σ and take a full `numpy.linalg.eigh` (kept for tests and the
  benchmark).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg

from maelens._validate import check_covariance, check_rank
from maelens.errors import MaelensError
from maelens.theory.loss import check_partition_matches
from maelens.theory.masks import MaskMoments, Scheme, mask_moments
from maelens.theory.partition import Partition

logger = logging.getLogger(__name__)

Method = Literal["generalized", "naive"]


@dataclass(frozen=True, eq=False)
class LinearMAESolution:
    """A rank-k optimum x̂ = (r ⊙ x) A B; arrays float64.

    U: (d, k) orthonormal decoder directions U_k (top eigenvectors of M = Σ Q⁻¹ Σ).
    A: (d, k) encoder, gain · Q⁻¹ Σ U (gauge C = I). B = Uᵀ (k, d); W = A B (d, d).
    eigenvalues: (k + 1,) the top k + 1 eigenvalues of M, descending (λ_{k+1} gives the gap).
    min_loss: ℓ(W*) in the units of Σ. gain: q1 for an MAE (1 - m for Bernoulli), 1 for a DAE.
    tied: λ_k - λ_{k+1} <= tie_rtol · λ_1, i.e. the k-th direction is not unique (e.g. a cos /
    sin pair of a stationary Σ split by the cut); then only projectors onto the whole tied
    cluster are meaningful and U, A, W depend on round-off. Compare spans, never vectors.
    """

    U: np.ndarray
    A: np.ndarray
    eigenvalues: np.ndarray
    min_loss: float
    rank: int
    gain: float
    mask_ratio: float | None
    scheme: str
    tie_rtol: float

    # Capital names mirror the algebra (U, A, B, W); W is computed on demand because a d x d
    # array per grid point would dominate memory at d = 3072.
    @property
    def B(self) -> np.ndarray:  # noqa: N802
        """Decoder (k, d) = Uᵀ."""
        return self.U.T

    @property
    def W(self) -> np.ndarray:  # noqa: N802
        """End-to-end map W* = A B (d, d); W_ij = influence of input i on output j."""
        return self.A @ self.U.T

    @property
    def influence(self) -> np.ndarray:
        """W*ᵀ (d_out, d_in), the layout of a Jacobian ∂x̂/∂x, for `maelens.theory.spatial`."""
        return self.W.T

    @property
    def eigengap(self) -> float:
        """λ_k - λ_{k+1} of M (units of Σ)."""
        return float(self.eigenvalues[self.rank - 1] - self.eigenvalues[self.rank])

    @property
    def relative_eigengap(self) -> float:
        """(λ_k - λ_{k+1}) / λ_1, scale-free."""
        return self.eigengap / float(self.eigenvalues[0])

    @property
    def tied(self) -> bool:
        return self.relative_eigengap <= self.tie_rtol

    def summary(self) -> dict:
        """JSON-serialisable numbers (no large arrays)."""
        return {
            "rank": self.rank,
            "mask_ratio": self.mask_ratio,
            "scheme": self.scheme,
            "gain": self.gain,
            "min_loss": self.min_loss,
            "eigenvalues": [float(v) for v in self.eigenvalues],
            "eigengap": self.eigengap,
            "relative_eigengap": self.relative_eigengap,
            "tied": self.tied,
        }


def masked_second_moment(
    sigma: np.ndarray, moments: MaskMoments, partition: Partition
) -> np.ndarray:
    """Q = E[(r ⊙ x)ᵀ(r ⊙ x)] = q2 Σ + (q1 - q2) (Σ ⊙ S), (d, d)."""
    return moments.q2 * sigma + (moments.q1 - moments.q2) * partition.block_diagonal(sigma)


def linear_mae_optimum(
    sigma: np.ndarray,
    mask_ratio: float,
    partition: Partition,
    rank: int,
    *,
    scheme: Scheme = "bernoulli",
    method: Method = "generalized",
    tie_rtol: float = 1e-8,
    sigma_sq: np.ndarray | None = None,
) -> LinearMAESolution:
    """Rank-k minimiser of the all-pixel loss for covariance Σ (d, d), ratio m, partition.

    `sigma_sq` may pass a precomputed Σ @ Σ to reuse over a grid of (m, p) (it does not
    depend on either). A tie at the cut is logged as a warning and flagged in `tied`.
    """
    sigma, moments, Q = _masked_problem(sigma, mask_ratio, partition, scheme)
    k = check_rank("rank", rank, sigma.shape[0])
    return reduced_rank_solution(
        sigma, Q, moments.q1, k, method=method, tie_rtol=tie_rtol, sigma_sq=sigma_sq,
        mask_ratio=moments.mask_ratio, scheme=scheme,
    )


def denoising_ae_optimum(
    sigma: np.ndarray,
    noise_std: float,
    rank: int,
    *,
    method: Method = "generalized",
    tie_rtol: float = 1e-8,
) -> LinearMAESolution:
    """Linear denoising AE x̂ = (x + ε) W, ε ~ N(0, noise_std² I): Q = Σ + σ² I, gain 1.

    Q shares Σ's eigenvectors, so U spans the top-k PCA directions for any noise level: a
    baseline that shrinks but never re-selects features. `noise_std` in pixel-value units.
    """
    sigma = check_covariance("sigma", sigma)
    k = check_rank("rank", rank, sigma.shape[0])
    noise_std = float(noise_std)
    if not np.isfinite(noise_std) or noise_std < 0:
        raise MaelensError(f"`noise_std` must be a finite number >= 0, got {noise_std}.")
    Q = sigma + noise_std**2 * np.eye(sigma.shape[0])
    return reduced_rank_solution(
        sigma, Q, 1.0, k, method=method, tie_rtol=tie_rtol, mask_ratio=None, scheme="dae"
    )


def _masked_problem(sigma: np.ndarray, mask_ratio: float, partition: Partition, scheme: Scheme
                    ) -> tuple[np.ndarray, MaskMoments, np.ndarray]:
    """Validated Σ (d, d), the mask moments, and Q = E[(r⊙x)ᵀ(r⊙x)] (d, d)."""
    sigma = check_covariance("sigma", sigma)
    check_partition_matches(sigma, partition)
    moments = mask_moments(mask_ratio, partition.n_patches, scheme)
    return sigma, moments, masked_second_moment(sigma, moments, partition)


def full_rank_optimum(
    sigma: np.ndarray, mask_ratio: float, partition: Partition, scheme: Scheme = "bernoulli"
) -> np.ndarray:
    """W* = q1 Q⁻¹ Σ (d, d), the all-pixel optimum without a bottleneck (Bernoulli: V⁻¹ Σ)."""
    sigma, moments, Q = _masked_problem(sigma, mask_ratio, partition, scheme)
    return moments.q1 * scipy.linalg.cho_solve(cholesky_q(Q), sigma)


def mae_spectrum(
    sigma: np.ndarray, mask_ratio: float, partition: Partition, scheme: Scheme = "bernoulli"
) -> np.ndarray:
    """All d eigenvalues of M = Σ Q⁻¹ Σ, descending (the feature 'variances' the MAE ranks)."""
    sigma, _, Q = _masked_problem(sigma, mask_ratio, partition, scheme)
    try:
        values = scipy.linalg.eigh(sigma @ sigma, Q, eigvals_only=True)
    except np.linalg.LinAlgError as exc:
        raise _singular_q_error() from exc
    return values[::-1].copy()


def reduced_rank_solution(
    sigma: np.ndarray,
    Q: np.ndarray,
    gain: float,
    rank: int,
    *,
    method: Method = "generalized",
    tie_rtol: float = 1e-8,
    sigma_sq: np.ndarray | None = None,
    mask_ratio: float | None = None,
    scheme: str = "bernoulli",
) -> LinearMAESolution:
    """argmin over rank-k W of tr Σ - 2 gain tr(ΣW) + tr(WᵀQW), for validated Σ and Q ≻ 0."""
    if method == "generalized":
        values, U, A = _top_generalized(sigma, Q, rank, sigma_sq)
    elif method == "naive":
        values, U, A = _top_naive(sigma, Q, rank)
    else:
        raise MaelensError(f'`method` must be "generalized" or "naive", got {method!r}.')
    if not values[rank - 1] > 1e-13 * values[0]:
        raise MaelensError(
            f"`rank`={rank} exceeds the numerical rank of `sigma`: eigenvalue {rank} of "
            f"Σ Q⁻¹ Σ is {values[rank - 1]:.3g}. Fix: lower `rank`."
        )
    solution = LinearMAESolution(
        U=U, A=gain * A, eigenvalues=values, rank=rank, gain=float(gain),
        min_loss=float(np.trace(sigma) - gain**2 * np.sum(values[:rank])),
        mask_ratio=mask_ratio, scheme=scheme, tie_rtol=float(tie_rtol),
    )
    if solution.tied:
        logger.warning(
            "rank-%d optimum is not unique: λ_k = %.6g and λ_k+1 = %.6g tie (relative gap "
            "%.2g <= %.2g); U, A and W* split the tied cluster arbitrarily. Choose a rank at "
            "a gap or compare projectors onto the whole cluster.",
            rank, values[rank - 1], values[rank], solution.relative_eigengap, tie_rtol,
        )
    return solution


def _top_generalized(
    sigma: np.ndarray, Q: np.ndarray, k: int, sigma_sq: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top k + 1 λ (descending), U (d, k) and Q⁻¹ Σ U (d, k) from Σ² a = λ Q a."""
    d = sigma.shape[0]
    sigma_sq = sigma @ sigma if sigma_sq is None else sigma_sq
    try:
        values, vectors = scipy.linalg.eigh(sigma_sq, Q, subset_by_index=[d - k - 1, d - 1])
    except np.linalg.LinAlgError as exc:
        raise _singular_q_error() from exc
    values, vectors = values[::-1], vectors[:, ::-1]
    top = np.sqrt(np.maximum(values[:k], np.finfo(float).tiny))
    a = vectors[:, :k]  # (d, k), aᵀ Q a = I
    return values, (sigma @ a) / top, a * top


def _top_naive(sigma: np.ndarray, Q: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Same as `_top_generalized`, by forming M = Σ Q⁻¹ Σ and a full eigendecomposition."""
    factor = cholesky_q(Q)
    M = sigma @ scipy.linalg.cho_solve(factor, sigma)
    values, vectors = np.linalg.eigh((M + M.T) / 2.0)  # symmetrise away round-off
    values, U = values[::-1][: k + 1], vectors[:, ::-1][:, :k]
    return values, U, scipy.linalg.cho_solve(factor, sigma @ U)


def cholesky_q(Q: np.ndarray) -> tuple[np.ndarray, bool]:
    try:
        return scipy.linalg.cho_factor(Q, lower=True)
    except np.linalg.LinAlgError as exc:
        raise _singular_q_error() from exc


def _singular_q_error() -> MaelensError:
    return MaelensError(
        "the masked input covariance Q = q2 Σ + (q1 - q2) (Σ ⊙ S) is singular: expected Σ "
        "positive definite (or m > 0 with positive-definite patch blocks). Fix: add a small "
        "ridge to `sigma` (sigma + 1e-6 * np.trace(sigma) / d * I)."
    )


def optimum_grid(
    sigma: np.ndarray,
    mask_ratios: Sequence[float],
    partitions: Sequence[Partition],
    rank: int,
    *,
    scheme: Scheme = "bernoulli",
    method: Method = "generalized",
    tie_rtol: float = 1e-8,
) -> dict[tuple[int, float], LinearMAESolution]:
    """Optima for every (patch size, mask ratio), validating Σ and forming Σ² only once."""
    sigma = check_covariance("sigma", sigma)
    k = check_rank("rank", rank, sigma.shape[0])
    sigma_sq = sigma @ sigma if method == "generalized" else None
    out = {}
    for partition in partitions:
        check_partition_matches(sigma, partition)
        block = partition.block_diagonal(sigma)  # D, shared by every ratio of this p
        for ratio in mask_ratios:
            moments = mask_moments(ratio, partition.n_patches, scheme)
            Q = moments.q2 * sigma + (moments.q1 - moments.q2) * block
            out[(partition.patch_size, moments.mask_ratio)] = reduced_rank_solution(
                sigma, Q, moments.q1, k, method=method, tie_rtol=tie_rtol,
                sigma_sq=sigma_sq, mask_ratio=moments.mask_ratio, scheme=scheme,
            )
    return out
