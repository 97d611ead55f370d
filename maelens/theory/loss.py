"""Exact expected losses of a linear MAE, x̂ = (r ⊙ x) W, over data x and keep-masks r.

Rows are samples: x (1, d) with E[xᵀx] = Σ (use a covariance, or XᵀX for sums over a data
set), W (d, d) maps input i to output j through W_ij. Targets weight the squared error of each
output by whether its patch was masked:

    ℓ(W) = E Σ_j [w_masked (1 - r_j) + w_visible r_j] (x_j - (r ⊙ x) W_{:,j})²

"all" = (1, 1) (every pixel), "masked" = (1, 0) (what MAE code optimises), "visible" = (0, 1);
any other pair is a mixed target, e.g. λ·ℓ_all + (1 - λ)·ℓ_masked = (1, λ).

The expectation needs mask moments up to third order because r_j multiplies the error:
with S the same-patch indicator, D = Σ ⊙ S, W_S = W ⊙ S and c3 = q1 - 3 q2 + 2 q3,

    ℓ_all = tr Σ - 2 q1 tr(ΣW) + q2 tr(WᵀΣW) + (q1 - q2) tr(WᵀDW)
    ℓ_vis = q1 tr Σ - 2 q2 tr(ΣW) - 2 (q1 - q2) tr(DW) + q3 tr(WᵀΣW)
            + (q2 - q3) [tr(WᵀDW) + 2 tr(W_SᵀΣW)] + c3 tr(W_SᵀDW_S)

and ℓ = w_masked ℓ_all + (w_visible - w_masked) ℓ_vis. (E[r_i r_l r_j] is q1, q2 or q3 when
the three inputs span 1, 2 or 3 distinct patches; the S terms count the coincidences.)
"""

from __future__ import annotations

import numpy as np

from maelens._validate import check_covariance
from maelens.errors import MaelensError
from maelens.theory.masks import Scheme, mask_moments
from maelens.theory.partition import Partition

Target = str | tuple[float, float]
TARGETS = {"all": (1.0, 1.0), "masked": (1.0, 0.0), "visible": (0.0, 1.0)}


def target_weights(target: Target) -> tuple[float, float]:
    """(w_masked, w_visible) for a target name or an explicit pair of non-negative weights."""
    if isinstance(target, str):
        if target not in TARGETS:
            raise MaelensError(
                f"`target` must be one of {sorted(TARGETS)} or a (w_masked, w_visible) pair, "
                f"got {target!r}."
            )
        return TARGETS[target]
    try:
        masked, visible = (float(w) for w in target)
    except (TypeError, ValueError):
        raise MaelensError(
            f"`target` must be a name or a (w_masked, w_visible) pair, got {target!r}."
        ) from None
    if masked < 0 or visible < 0 or masked + visible == 0:
        raise MaelensError(
            f"`target` weights must be non-negative and not both zero, got {target!r}."
        )
    return masked, visible


class ExpectedLoss:
    """The exact expected loss ℓ(W) and its gradient for one (Σ, m, partition, target, scheme).

    Build once, evaluate many times (the solver does): `value(W)`, `gradient(W)` (d, d),
    `value_and_gradient(W)`. Units: those of Σ (squared pixel values, summed over outputs).
    """

    def __init__(
        self,
        sigma: np.ndarray,
        mask_ratio: float,
        partition: Partition,
        target: Target = "all",
        scheme: Scheme = "bernoulli",
    ) -> None:
        self.sigma = check_covariance("sigma", sigma)
        check_partition_matches(self.sigma, partition)
        self.partition = partition
        self.moments = mask_moments(mask_ratio, partition.n_patches, scheme)
        self.same_patch = partition.same_patch()
        self.block = self.sigma * self.same_patch  # D (d, d)
        self.weights = target_weights(target)
        self._coefficients()

    def _coefficients(self) -> None:
        q1, q2, q3 = self.moments.q1, self.moments.q2, self.moments.q3
        alpha, gamma = self.weights[0], self.weights[1] - self.weights[0]
        self.const = (alpha + gamma * q1) * float(np.trace(self.sigma))
        self.lin_sigma = alpha * q1 + gamma * q2  # multiplies -2 tr(ΣW)
        self.lin_block = gamma * (q1 - q2)  # multiplies -2 tr(DW)
        self.quad_sigma = alpha * q2 + gamma * q3  # tr(WᵀΣW)
        self.quad_block = alpha * (q1 - q2) + gamma * (q2 - q3)  # tr(WᵀDW)
        self.cross = 2.0 * gamma * (q2 - q3)  # tr(W_SᵀΣW)
        self.same = gamma * (q1 - 3 * q2 + 2 * q3)  # tr(W_SᵀDW_S)

    def value_and_gradient(self, W: np.ndarray) -> tuple[float, np.ndarray]:
        """ℓ(W) (float) and ∂ℓ/∂W (d, d) for W (d, d)."""
        sigma, block, S = self.sigma, self.block, self.same_patch
        sw, dw = sigma @ W, block @ W
        value = (
            self.const
            - 2.0 * self.lin_sigma * np.sum(sigma * W)
            - 2.0 * self.lin_block * np.sum(block * W)
            + self.quad_sigma * np.sum(W * sw)
            + self.quad_block * np.sum(W * dw)
        )
        grad = (
            -2.0 * self.lin_sigma * sigma
            - 2.0 * self.lin_block * block
            + 2.0 * self.quad_sigma * sw
            + 2.0 * self.quad_block * dw
        )
        if self.cross or self.same:  # only targets that weight masked and visible unequally
            ws = W * S
            dws = block @ ws
            value += self.cross * np.sum(ws * sw) + self.same * np.sum(ws * dws)
            grad += self.cross * (S * sw + sigma @ ws) + 2.0 * self.same * (S * dws)
        return float(value), grad

    def value(self, W: np.ndarray) -> float:
        return self.value_and_gradient(W)[0]

    def gradient(self, W: np.ndarray) -> np.ndarray:
        return self.value_and_gradient(W)[1]


def expected_loss(
    sigma: np.ndarray,
    W: np.ndarray,
    mask_ratio: float,
    partition: Partition,
    *,
    target: Target = "all",
    scheme: Scheme = "bernoulli",
) -> float:
    """Exact E‖target-weighted (x - (r ⊙ x) W)‖² for covariance Σ (d, d) and map W (d, d)."""
    loss = ExpectedLoss(sigma, mask_ratio, partition, target, scheme)
    return loss.value(check_square_map("W", W, loss.sigma.shape[0]))


def check_partition_matches(sigma: np.ndarray, partition: Partition) -> None:
    if not isinstance(partition, Partition):
        raise MaelensError(
            f"`partition` must be a maelens.theory.Partition, got {type(partition).__name__}. "
            "Fix: build one with blocks_1d(...) or tiles_2d(...)."
        )
    if partition.dim != sigma.shape[0]:
        raise MaelensError(
            f"`partition` covers d = {partition.dim} inputs but `sigma` is {sigma.shape}; "
            "expected the same d. Fix: build the partition for the covariance's image shape."
        )


def check_square_map(name: str, W: np.ndarray, dim: int) -> np.ndarray:
    W = np.asarray(W, dtype=np.float64)
    if W.shape != (dim, dim):
        raise MaelensError(f"`{name}` must have shape ({dim}, {dim}), got {W.shape}.")
    return W
