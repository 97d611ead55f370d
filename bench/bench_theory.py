"""Closed-form linear-MAE optimum on a 32x32x3 (d = 3072) covariance over a 10 x 4 (m, p) grid.

Σ: 2-D exponential kernel (length 4 px) ⊗ a 3x3 channel correlation. Rank k = 32, Bernoulli
masks, m in {0.0, 0.1, ..., 0.9}, p in {2, 4, 8, 16}. Two paths for the same optimum:
  generalized  Σ² a = λ Q a, scipy.linalg.eigh(..., subset_by_index) for the top k + 1 pairs,
               Σ² formed once and reused over the grid (one Cholesky + reduction per point)
  naive        M = Σ Q⁻¹ Σ formed explicitly, full numpy.linalg.eigh (the textbook recipe)
The generalized path runs on the whole grid; the naive one, far slower, on --naive-points
points (one per patch size by default) and is extrapolated to the grid, which the output says.
Both paths' eigenvalues and (when no tie is cut) subspaces are compared where both ran.

The machine is shared and noisy: BLAS runs on --threads threads (default 1, so that another
job cannot stall a spinning thread pool), and where both paths run they are timed interleaved,
twice each, keeping the faster run.

    python bench/bench_theory.py [--size 32] [--rank 32] [--naive-points 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np

from maelens.theory import kernel_covariance, linear_mae_optimum, tiles_2d
from maelens.theory.closed_form import reduced_rank_solution
from maelens.theory.masks import mask_moments


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def projector_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a @ a.T - b @ b.T))


def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    return ", ".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info())


def solve_point(sigma, sigma_sq, block, partition, ratio, rank, method):
    moments = mask_moments(ratio, partition.n_patches)
    Q = moments.q2 * sigma + (moments.q1 - moments.q2) * block
    return reduced_rank_solution(sigma, Q, moments.q1, rank, method=method, sigma_sq=sigma_sq,
                                 mask_ratio=ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--naive-points", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("threadpoolctl missing: BLAS threads not limited")
    else:
        threadpool_limits(args.threads)
    # Tied cuts are counted in the summary below instead of one warning per grid point.
    logging.getLogger("maelens.theory").setLevel(logging.ERROR)
    ratios = [round(0.1 * i, 1) for i in range(10)]
    patches = [2, 4, 8, 16]
    channel = np.array([[1.0, 0.8, 0.6], [0.8, 1.0, 0.8], [0.6, 0.8, 1.0]])
    shape = (args.size, args.size, 3)
    sigma, t_build = timed(kernel_covariance, shape, 4.0, channel_cov=channel)
    d = sigma.shape[0]
    print(f"d = {d}, rank k = {args.rank}, grid {len(ratios)} ratios x {len(patches)} patch "
          f"sizes, BLAS threads: {blas_threads()}")
    print(f"build + validate Σ: {t_build:.2f} s")
    # Warm-up: the first LAPACK call pays one-off costs that are not the method's.
    linear_mae_optimum(kernel_covariance((8, 8, 1), 2.0), 0.5, tiles_2d(8, 8, 2), 4)
    sigma_sq, t_sq = timed(np.matmul, sigma, sigma)
    print(f"Σ² (once for the grid): {t_sq:.2f} s")

    fast, fast_times, naive_times, checks = {}, {}, {}, []
    naive_plan = {(p, ratios[(3 * i + 5) % len(ratios)])
                  for i, p in enumerate(patches)} if args.naive_points else set()
    naive_plan = set(sorted(naive_plan)[: args.naive_points])
    for p in patches:
        partition = tiles_2d(args.size, args.size, p, channels=3)
        block = partition.block_diagonal(sigma)
        for m in ratios:
            fast[(p, m)], fast_times[(p, m)] = timed(
                solve_point, sigma, sigma_sq, block, partition, m, args.rank, "generalized")
            if (p, m) in naive_plan:
                runs = [timed(solve_point, sigma, sigma_sq if method == "generalized" else None,
                              block, partition, m, args.rank, method)
                        for _ in range(2) for method in ("naive", "generalized")]
                naive_times[(p, m)] = min(runs[0][1], runs[2][1])
                fast_times[(p, m)] = min(fast_times[(p, m)], runs[1][1], runs[3][1])
                checks.append(((p, m), fast[(p, m)], runs[0][0]))
        line = " ".join(f"{fast_times[(p, m)]:.2f}" for m in ratios)
        print(f"p = {p:2d}: generalized s/point over m = 0.0..0.9: {line}")
    report(ratios, patches, fast, fast_times, naive_times, checks, t_sq)


def report(ratios, patches, fast, fast_times, naive_times, checks, t_sq) -> None:
    total_fast = sum(fast_times.values()) + t_sq
    print(f"\ngeneralized path, whole grid ({len(fast_times)} points): {total_fast:.1f} s "
          f"({total_fast / len(fast_times):.2f} s/point, Σ² included)")
    ratio_pairs = [naive_times[key] / fast_times[key] for key in naive_times]
    for key in sorted(naive_times):
        print(f"  naive at (p={key[0]}, m={key[1]}): {naive_times[key]:.2f} s vs generalized "
              f"{fast_times[key]:.2f} s -> x{naive_times[key] / fast_times[key]:.2f}")
    if naive_times:
        est = statistics.mean(naive_times.values()) * len(fast_times)
        print(f"naive path, whole grid: EXTRAPOLATED from {len(naive_times)} measured points: "
              f"~{est:.0f} s; speed-up of generalized over naive: x{est / total_fast:.2f} "
              f"(per point, median x{statistics.median(ratio_pairs):.2f})")
    for (p, m), a, b in checks:
        rel = np.max(np.abs(a.eigenvalues - b.eigenvalues) / a.eigenvalues[0])
        dist = "n/a (tied cut)" if a.tied else f"{projector_distance(a.U, b.U):.1e}"
        print(f"  agreement at (p={p}, m={m}): max rel eigenvalue diff {rel:.1e}, "
              f"projector distance {dist}")
    tied = sorted(key for key, sol in fast.items() if sol.tied)
    print(f"grid points whose rank-k cut splits tied eigenvalues (flagged, not split silently):"
          f" {len(tied)} of {len(fast)}" + (f", e.g. {tied[:4]}" if tied else ""))
    top = {p: [round(float(fast[(p, m)].eigenvalues[0]), 1) for m in (ratios[0], ratios[-1])]
           for p in patches}
    print(f"λ_1 of Σ Q⁻¹ Σ at m = {ratios[0]} / {ratios[-1]} by p: {top}")


if __name__ == "__main__":
    main()
