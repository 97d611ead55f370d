"""Numerical optimum of a linear MAE for any target, and the masked-only full-rank closed form.

The masked-pixel target (what non-linear MAE code optimises) has no eigen closed form at rank
k: we minimise the exact expected loss (`maelens.theory.loss.ExpectedLoss`) over A (d, k) and
B (k, d) with L-BFGS. Same-patch entries of W get zero gradient under that target (an input
is never visible while an output of its own patch is masked), so they are unidentifiable.

Full rank, masked target: column j only sees O_j, the inputs outside j's patch, and
w_{O_j, j} = M_OO⁻¹ (q1 - q2) Σ_{O_j, j}, M = (q2 - q3) Σ + (q1 - 2 q2 + q3) D
("leave own patch out" regression; Bernoulli masks give M ∝ V = (1 - m) Σ + m D).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.optimize

from maelens._validate import check_covariance, check_positive_int, check_rank
from maelens.errors import MaelensError
from maelens.theory.closed_form import linear_mae_optimum
from maelens.theory.loss import ExpectedLoss, Target, check_partition_matches
from maelens.theory.masks import Scheme, mask_moments
from maelens.theory.partition import Partition


@dataclass(frozen=True, eq=False)
class NumericalSolution:
    """Result of `solve_linear_mae`. A (d, k), B (k, d) are None at full rank; W (d, d).

    loss: ℓ(W) in the units of Σ (without weight decay). gradient_norm: max |∂objective/∂θ|
    over the optimised parameters θ = (A, B) or W. converged: the optimiser's own verdict (see
    `message`). start_losses: final objective (loss + decay) of every start tried; the
    lowest is returned.
    """

    W: np.ndarray
    A: np.ndarray | None
    B: np.ndarray | None
    loss: float
    gradient_norm: float
    n_iterations: int
    converged: bool
    message: str
    start_losses: tuple[float, ...] = ()


def solve_linear_mae(
    sigma: np.ndarray,
    mask_ratio: float,
    partition: Partition,
    rank: int | None,
    *,
    target: Target = "masked",
    scheme: Scheme = "bernoulli",
    init: Literal["closed_form", "random"] = "closed_form",
    n_restarts: int = 0,
    weight_decay: float = 0.0,
    seed: int = 0,
    max_iter: int = 20000,
    gtol: float = 1e-11,
) -> NumericalSolution:
    """Minimise the exact expected loss over rank-k W = A B (or over W when `rank` is None).

    Rank k is non-convex, and the masked target has spurious valleys: from some random starts
    the loss keeps falling towards a worse value while same-patch entries of W diverge (d = 24,
    p = 4, k = 3, m = 0.6: four of six random starts stall at 11.59-11.62 with same-patch
    entries up to 2e5; the best, 11.5766, has entries <= 2). Starting from the all-pixel
    closed form (`init="closed_form"`) reached the best value in every case we tried;
    `n_restarts` adds random starts (A, B ~ N(0, 1/d), seeds seed, seed + 1, ...) and keeps
    the lowest loss. Full rank is convex and starts from W = 0. `weight_decay` adds
    weight_decay · ‖θ‖² to the objective (bounded minimisers); `loss` excludes it.
    """
    loss = ExpectedLoss(sigma, mask_ratio, partition, target, scheme)
    d = loss.sigma.shape[0]
    max_iter = check_positive_int("max_iter", max_iter)
    decay = float(weight_decay)
    if not decay >= 0:
        raise MaelensError(f"`weight_decay` must be >= 0, got {weight_decay}.")
    value_and_gradient = _stable_objective(loss)
    if rank is None:
        return _minimise_full(loss, value_and_gradient, d, decay, max_iter, gtol)
    k = check_rank("rank", rank, d)
    starts = _starts(loss, k, init, n_restarts, seed)

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        A, B = theta[: d * k].reshape(d, k), theta[d * k :].reshape(k, d)
        value, grad_w = value_and_gradient(A @ B)
        grad = np.concatenate([(grad_w @ B.T).ravel(), (A.T @ grad_w).ravel()])
        return value + decay * float(theta @ theta), grad + 2.0 * decay * theta

    results = [_lbfgs(fun, start, max_iter, gtol) for start in starts]
    best = min(results, key=lambda result: result.fun)
    A, B = best.x[: d * k].reshape(d, k), best.x[d * k :].reshape(k, d)
    solution = _solution(loss, A @ B, A, B, fun(best.x)[1], best)
    return dataclasses.replace(solution, start_losses=tuple(float(r.fun) for r in results))


def _starts(loss: ExpectedLoss, k: int, init: str, n_restarts: int, seed: int) -> list:
    """Flattened (A, B) starting points: the all-pixel closed form and/or random draws."""
    d = loss.sigma.shape[0]
    if init not in ("closed_form", "random"):
        raise MaelensError(f'`init` must be "closed_form" or "random", got {init!r}.')
    if isinstance(n_restarts, bool) or int(n_restarts) != n_restarts or n_restarts < 0:
        raise MaelensError(f"`n_restarts` must be an integer >= 0, got {n_restarts!r}.")
    starts = []
    if init == "closed_form":
        closed = linear_mae_optimum(
            loss.sigma, loss.moments.mask_ratio, loss.partition, k, scheme=loss.moments.scheme
        )
        starts.append(np.concatenate([closed.A.ravel(), closed.B.ravel()]))
    n_random = int(n_restarts) + (init == "random")
    for i in range(n_random):
        rng = np.random.default_rng(seed + i)
        starts.append(rng.normal(scale=1.0 / np.sqrt(d), size=2 * d * k))
    return starts


def _stable_objective(loss: ExpectedLoss):
    """ℓ and ∂ℓ/∂W; for the masked-only target evaluated on W ⊙ (1 - S).

    Same value and gradient in exact arithmetic (ℓ_masked ignores same-patch entries), but
    large same-patch entries no longer cancel inside the quadratic terms in floating point.
    """
    if loss.weights[1] != 0.0:
        return loss.value_and_gradient
    off_patch = 1.0 - loss.same_patch

    def value_and_gradient(W: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = loss.value_and_gradient(W * off_patch)
        return value, grad * off_patch

    return value_and_gradient


def _minimise_full(loss, value_and_gradient, d, decay, max_iter, gtol) -> NumericalSolution:
    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_gradient(theta.reshape(d, d))
        return value + decay * float(theta @ theta), grad.ravel() + 2.0 * decay * theta

    result = _lbfgs(fun, np.zeros(d * d), max_iter, gtol)
    return _solution(loss, result.x.reshape(d, d), None, None, fun(result.x)[1], result)


def _lbfgs(fun, start: np.ndarray, max_iter: int, gtol: float) -> scipy.optimize.OptimizeResult:
    # ftol = 0: stop on the gradient (or on stagnation); the loss stops changing at 1e-16
    # relative long before the optimal subspace has converged to 1e-6.
    options = {"maxiter": max_iter, "maxfun": 4 * max_iter, "gtol": gtol, "ftol": 0.0,
               "maxcor": 30}
    return scipy.optimize.minimize(fun, start, jac=True, method="L-BFGS-B", options=options)


def _solution(loss, W, A, B, grad, result) -> NumericalSolution:
    return NumericalSolution(
        W=W, A=A, B=B, loss=_stable_objective(loss)(W)[0],
        gradient_norm=float(np.max(np.abs(grad))), n_iterations=int(result.nit),
        converged=bool(result.success), message=str(result.message),
    )


def masked_only_full_rank(
    sigma: np.ndarray, mask_ratio: float, partition: Partition, scheme: Scheme = "bernoulli"
) -> np.ndarray:
    """Full-rank optimum W (d, d) of the masked-pixel target; same-patch entries set to 0.

    One solve per patch: all columns of a patch share the visible set O (the other patches).
    """
    sigma = check_covariance("sigma", sigma)
    check_partition_matches(sigma, partition)
    moments = mask_moments(mask_ratio, partition.n_patches, scheme)
    q1, q2, q3 = moments.q1, moments.q2, moments.q3
    if q1 - q2 <= 0:
        raise MaelensError(
            f"`mask_ratio`={mask_ratio} never masks an output while keeping another patch "
            "(q1 = q2); the masked-only target is empty. Fix: use mask_ratio > 0."
        )
    M = (q2 - q3) * sigma + (q1 - 2 * q2 + q3) * partition.block_diagonal(sigma)
    W = np.zeros_like(sigma)
    for patch in range(partition.n_patches):
        inside = partition.patch_ids == patch
        outside = ~inside
        if not outside.any():  # a single patch: nothing is ever visible while it is masked
            continue
        try:
            factor = scipy.linalg.cho_factor(M[np.ix_(outside, outside)], lower=True)
        except np.linalg.LinAlgError as exc:
            raise MaelensError(
                "the masked-only normal equations are singular for patch "
                f"{patch}; expected positive-definite patch blocks of `sigma`. Fix: add a small "
                "ridge to `sigma`."
            ) from exc
        W[np.ix_(outside, inside)] = scipy.linalg.cho_solve(
            factor, (q1 - q2) * sigma[np.ix_(outside, inside)]
        )
    return W
