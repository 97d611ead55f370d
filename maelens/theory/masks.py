"""Moments of random patch keep-masks, for the two masking schemes.

A keep-mask r ∈ {0,1}^d is constant inside a patch (1 = visible). Everything the exact
expected losses need is q_n = P(n given distinct patches are all kept), n = 1, 2, 3:

- "bernoulli": every patch is masked independently with probability m, q_n = (1 - m)^n.
- "fixed": exactly K = int(N * (1 - m)) of the N patches are kept, chosen uniformly. This is
  the MAE code's convention (`len_keep = int(L * (1 - mask_ratio))`, mirrored by
  `maelens.model.masking.num_visible`); note the int() truncation, so int(10 * (1 - 0.9)) = 0 and
  the realised ratio 1 - K/N can exceed m. Then q_n = K!/(K-n)! * (N-n)!/N!.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from maelens._validate import check_positive_int, check_ratio
from maelens.errors import MaelensError
from maelens.theory.partition import Partition

Scheme = Literal["bernoulli", "fixed"]
SCHEMES = ("bernoulli", "fixed")


@dataclass(frozen=True)
class MaskMoments:
    """Keep probabilities of one (or two, three) distinct patches, and the scheme behind them.

    q1 = P(a patch is kept); q2 = P(two distinct patches both kept); q3 for three.
    n_kept is K for the "fixed" scheme and None for "bernoulli".
    """

    mask_ratio: float
    n_patches: int
    scheme: str
    q1: float
    q2: float
    q3: float
    n_kept: int | None = None


def fixed_count_kept(n_patches: int, mask_ratio: float) -> int:
    """K = int(N * (1 - m)), the MAE code's number of visible patches; must be >= 1."""
    kept = int(n_patches * (1.0 - mask_ratio))
    if kept < 1:
        raise MaelensError(
            f"`mask_ratio`={mask_ratio} keeps int({n_patches} * (1 - {mask_ratio})) = 0 of "
            f"{n_patches} patches under the fixed-count scheme; expected at least one visible "
            "patch. Fix: lower `mask_ratio`, use smaller patches, or scheme='bernoulli'."
        )
    return kept


def mask_moments(mask_ratio: float, n_patches: int, scheme: Scheme = "bernoulli") -> MaskMoments:
    """q1, q2, q3 for masking ratio m in [0, 1) over N patches (see the module docstring)."""
    m = check_ratio("mask_ratio", mask_ratio)
    n = check_positive_int("n_patches", n_patches)
    check_scheme(scheme)
    if scheme == "bernoulli":
        keep = 1.0 - m
        return MaskMoments(m, n, scheme, keep, keep**2, keep**3)
    kept = fixed_count_kept(n, m)
    # q_n = prod_{i<n} (K - i) / (N - i); a factor with N - i = 0 only arises when K - i = 0 too.
    q = [1.0]
    for i in range(3):
        q.append(q[-1] * ((kept - i) / (n - i) if n - i > 0 else 0.0))
    return MaskMoments(m, n, scheme, q[1], q[2], q[3], kept)


def keep_second_moment(moments: MaskMoments, partition: Partition) -> np.ndarray:
    """E[r rᵀ] (d, d) = q2 11ᵀ + (q1 - q2) S, S the same-patch indicator."""
    _check_patches(moments, partition)
    return moments.q2 + (moments.q1 - moments.q2) * partition.same_patch()


def sample_keep_masks(
    n_samples: int,
    partition: Partition,
    mask_ratio: float,
    scheme: Scheme = "bernoulli",
    seed: int = 0,
) -> np.ndarray:
    """Random keep-masks r (n_samples, d) float64 in {0, 1}, constant inside each patch."""
    n_samples = check_positive_int("n_samples", n_samples)
    moments = mask_moments(mask_ratio, partition.n_patches, scheme)
    rng = np.random.default_rng(seed)
    n = partition.n_patches
    if scheme == "bernoulli":
        keep_patch = rng.random((n_samples, n)) >= moments.mask_ratio
    else:
        # The K patches with the smallest uniform noise are kept, as in MAE's random_masking.
        ranks = np.argsort(np.argsort(rng.random((n_samples, n)), axis=1), axis=1)
        keep_patch = ranks < moments.n_kept
    return keep_patch[:, partition.patch_ids].astype(np.float64)


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise MaelensError(f"`scheme` must be one of {SCHEMES}, got {scheme!r}.")
    return scheme


def _check_patches(moments: MaskMoments, partition: Partition) -> None:
    if moments.n_patches != partition.n_patches:
        raise MaelensError(
            f"`moments` were computed for {moments.n_patches} patches but `partition` has "
            f"{partition.n_patches}. Fix: mask_moments(m, partition.n_patches, scheme)."
        )
