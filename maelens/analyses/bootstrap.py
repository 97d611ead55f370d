"""Seeded bootstrap confidence intervals that never depend on sharding (Poisson bootstrap).

A classic (multinomial) bootstrap resamples N images with replacement, so image i's count in
draw b depends on every other image and on how many there are: shards or a different image
order give other intervals. The Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al.
2012) gives image i an independent weight w_bi ~ Poisson(1) in draw b, drawn from
`maelens.seeds.generator(seed, "bootstrap", i)`: the weights of an image depend only on
(seed, image index), so any split of the data set, in any order, gives the same interval.
Draw b's statistic is the weighted mean sum_i w_bi v_i / sum_i w_bi; for large N it has the
multinomial bootstrap's distribution (the total weight fluctuates by ~1/sqrt(N) around N and
cancels in the ratio to first order).

The interval is the *percentile* interval: the (1 - level)/2 and (1 + level)/2 quantiles of
the draw statistics (NumPy's linear interpolation between order statistics).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from maelens._validate import check_positive_int
from maelens.errors import MaelensError
from maelens.seeds import generator

# P(X <= k) for X ~ Poisson(1), k = 0..24; P(X > 24) < 1e-25, below float64 resolution of u.
_POISSON1_CDF = torch.tensor(np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(25)]),
                             dtype=torch.float64)
_CHUNK = 4096  # images per weight block: (n_draws, 4096) float64 = 33 MB at 1000 draws


def poisson_weights(index: torch.Tensor | np.ndarray, n_draws: int, seed: int) -> torch.Tensor:
    """(n_draws, N) float64 Poisson(1) bootstrap weights; column i depends only on
    (seed, index[i]).

    Each image draws its n_draws uniforms at once from `generator(seed, "bootstrap", index)`
    and maps them through the Poisson(1) inverse CDF (exact, and the same on every machine;
    `torch.poisson` would be ~4x slower per image).
    """
    n_draws = check_positive_int("n_draws", n_draws)
    rows = _as_index(index)
    if not len(rows):
        return torch.zeros(n_draws, 0, dtype=torch.float64)
    u = torch.stack([torch.rand(n_draws, generator=generator(seed, "bootstrap", i),
                                dtype=torch.float64) for i in rows.tolist()], dim=1)
    return torch.searchsorted(_POISSON1_CDF, u, right=True).to(torch.float64)


def bootstrap_draws(values: np.ndarray | torch.Tensor, index: np.ndarray | torch.Tensor,
                    seed: int, n_draws: int = 1000, masks: np.ndarray | None = None
                    ) -> np.ndarray:
    """(n_draws, M) bootstrap means of M statistics sharing one set of weights.

    values: (M, N) or (N,) per-image values; masks: (M, N) bool, which images count for each
    statistic (e.g. correctly classified ones; default all). A draw whose selected images all
    got weight 0 gives NaN (ignored by the percentile interval: with very few selected images
    the interval is conditional on the draw selecting at least one).
    """
    n_draws = check_positive_int("n_draws", n_draws)
    return _weighted_means(*_prepare(values, index, masks), seed, n_draws)


def _weighted_means(vals: np.ndarray, keep: np.ndarray, rows: torch.Tensor, seed: int,
                    n_draws: int) -> np.ndarray:
    sums = np.zeros((n_draws, len(vals)))
    totals = np.zeros((n_draws, len(vals)))
    for lo in range(0, len(rows), _CHUNK):  # weights in blocks: never (n_draws, N) at once
        w = poisson_weights(rows[lo:lo + _CHUNK], n_draws, seed).numpy()
        sums += w @ (np.where(keep[:, lo:lo + _CHUNK], vals[:, lo:lo + _CHUNK], 0.0)).T
        totals += w @ keep[:, lo:lo + _CHUNK].T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, sums / np.where(totals > 0, totals, 1.0), np.nan)


def bootstrap_mean_cis(values: np.ndarray | torch.Tensor, index: np.ndarray | torch.Tensor,
                       seed: int, n_draws: int = 1000, level: float = 0.95,
                       masks: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Percentile intervals [(lo, hi)] of the means of M statistics (see `bootstrap_draws`).

    A statistic with no selected image, or with a non-finite value, gets (nan, nan).
    """
    level = _check_level(level)
    n_draws = check_positive_int("n_draws", n_draws)
    vals, keep, rows = _prepare(values, index, masks)
    draws = _weighted_means(vals, keep, rows, seed, n_draws)
    out = []
    for m in range(draws.shape[1]):
        col = draws[:, m]
        if not keep[m].any() or not np.isfinite(vals[m][keep[m]]).all() \
                or not np.isfinite(col).any():
            out.append((math.nan, math.nan))
            continue
        lo, hi = np.nanquantile(col, [(1 - level) / 2, (1 + level) / 2])
        out.append((float(lo), float(hi)))
    return out


def bootstrap_mean_ci(values: np.ndarray | torch.Tensor, index: np.ndarray | torch.Tensor,
                      seed: int, n_draws: int = 1000, level: float = 0.95
                      ) -> tuple[float, float]:
    """Percentile `level` interval (lo, hi) of the mean of `values` (N,) over images `index`
    (N,), by the Poisson bootstrap with `n_draws` draws; (nan, nan) for no image."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise MaelensError(f"bootstrap `values` must be 1-D (N,), got shape {values.shape}.")
    return bootstrap_mean_cis(values[None], index, seed, n_draws, level)[0]


def optional_cis(values: np.ndarray, index: np.ndarray | torch.Tensor, seed: int,
                 n_draws: int, masks: np.ndarray | None = None, level: float = 0.95
                 ) -> list[tuple[float | None, float | None]]:
    """`bootstrap_mean_cis`, or (None, None) per statistic when `n_draws` is 0 (no CI asked)."""
    if n_draws == 0:
        vals = np.asarray(values)
        return [(None, None)] * (1 if vals.ndim == 1 else len(vals))
    return bootstrap_mean_cis(values, index, seed, n_draws, level, masks)  # type: ignore


def check_bootstrap(value: int) -> int:
    """The analyses' `bootstrap` option: 0 (no CI) or a positive number of draws."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise MaelensError(f"`bootstrap` must be 0 (no confidence interval) or a positive "
                           f"number of draws (e.g. 1000), got {value!r}.")
    return int(value)


def ci_note(n_draws: int, seed: int) -> str:
    """How an analysis's intervals were made, for its result meta."""
    if not n_draws:
        return "none (bootstrap=0)"
    return (f"95 % percentile interval, Poisson bootstrap over images, {n_draws} draws, "
            f"seed {seed}")


def _prepare(values: np.ndarray | torch.Tensor, index: np.ndarray | torch.Tensor,
             masks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Values (M, N) and masks (M, N) sorted by image index: a canonical summation order,
    so permuting the images changes no bit of the result."""
    vals = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values,
                      dtype=np.float64)
    vals = vals[None] if vals.ndim == 1 else vals
    rows = _as_index(index)
    if vals.ndim != 2 or vals.shape[1] != len(rows):
        raise MaelensError(f"bootstrap `values` must be (N,) or (M, N) with N = {len(rows)} "
                           f"images (the length of `index`), got shape {vals.shape}.")
    keep = np.ones(vals.shape, bool) if masks is None else np.asarray(masks, bool)
    keep = np.broadcast_to(keep[None] if keep.ndim == 1 else keep, vals.shape)
    order = torch.argsort(rows, stable=True)
    return vals[:, order.numpy()], keep[:, order.numpy()], rows[order]


def _as_index(index: torch.Tensor | np.ndarray) -> torch.Tensor:
    rows = torch.as_tensor(np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index))
    if rows.ndim != 1 or (len(rows) and rows.is_floating_point()):
        raise MaelensError(f"bootstrap `index` must be a 1-D integer array of image indices, "
                           f"got shape {tuple(rows.shape)} {rows.dtype}.")
    rows = rows.to(torch.int64)
    if len(torch.unique(rows)) != len(rows):
        raise MaelensError("bootstrap `index` repeats an image index; give each image once "
                           "(per-image values keyed by data-set index).")
    return rows


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise MaelensError(f"bootstrap `level` must lie in (0, 1) (e.g. 0.95), got {level}.")
    return float(level)
