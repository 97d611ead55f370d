"""The Poisson bootstrap: weights keyed by (seed, image index), percentile intervals."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from maelens.analyses.bootstrap import (
    bootstrap_draws,
    bootstrap_mean_ci,
    bootstrap_mean_cis,
    poisson_weights,
)
from maelens.errors import MaelensError
from maelens.seeds import generator


def test_weights_depend_only_on_seed_and_image_index():
    w = poisson_weights(torch.tensor([5, 9, 2]), 50, seed=3)
    assert w.shape == (50, 3) and w.dtype == torch.float64
    torch.testing.assert_close(poisson_weights([9], 50, 3)[:, 0], w[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(poisson_weights(np.array([2, 5]), 50, 3), w[:, [2, 0]],
                               rtol=0, atol=0)
    assert not torch.equal(poisson_weights([5], 50, 4)[:, 0], w[:, 0])  # another seed
    # Built from the documented generator: image i's uniforms through the Poisson(1) CDF.
    u = torch.rand(50, generator=generator(3, "bootstrap", 9), dtype=torch.float64)
    expected = scipy.stats.poisson.ppf(u.numpy(), 1.0)
    np.testing.assert_array_equal(w[:, 1].numpy(), expected)


def test_weights_follow_poisson_one():
    w = poisson_weights(torch.arange(400), 500, seed=0).numpy().ravel()  # 200k draws
    counts = np.bincount(w.astype(int), minlength=8)[:8]
    expected = scipy.stats.poisson.pmf(np.arange(8), 1.0) * w.size
    # Pearson chi-square over 0..7 (7 d.o.f.): p < 1e-4 would flag a wrong law; the draw is
    # seeded, so the test is deterministic.
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert scipy.stats.chi2.sf(chi2, 7) > 1e-4
    assert abs(w.mean() - 1.0) < 0.01 and abs(w.var() - 1.0) < 0.02


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits, reps = 0, 300
    for rep in range(reps):
        values = rng.normal(1.0, 2.0, size=100)
        lo, hi = bootstrap_mean_ci(values, np.arange(100), seed=rep, n_draws=400)
        hits += lo <= 1.0 <= hi
    # Percentile intervals of a mean at N = 100 cover ~94 %; the binomial SD over 300 data
    # sets is 1.3 points, so [0.90, 0.985] is about +-3.5 SD around the nominal 0.95.
    assert 0.90 <= hits / reps <= 0.985


def test_interval_ignores_image_order_and_sharding():
    rng = np.random.default_rng(1)
    values, index = rng.exponential(size=300), rng.permutation(10_000)[:300]
    ci = bootstrap_mean_ci(values, index, seed=7)
    order = rng.permutation(300)
    assert bootstrap_mean_ci(values[order], index[order], seed=7) == ci  # bit-identical
    assert bootstrap_mean_ci(torch.tensor(values), torch.tensor(index), seed=7) == ci
    assert bootstrap_mean_ci(values, index, seed=8) != ci


def classic_bootstrap_width(values: np.ndarray, n_draws: int, seed: int) -> float:
    """Percentile 95 % width of the multinomial (resample N with replacement) bootstrap."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_draws, len(values)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return hi - lo


def test_width_agrees_with_the_multinomial_bootstrap_and_normal_theory():
    values = np.random.default_rng(2).exponential(size=400)  # skewed on purpose
    widths = [np.subtract(*bootstrap_mean_ci(values, np.arange(400), seed, 4000)[::-1])
              for seed in range(4)]
    classic = np.mean([classic_bootstrap_width(values, 4000, seed) for seed in range(4)])
    normal = 2 * 1.959964 * values.std(ddof=1) / np.sqrt(len(values))
    # All three estimate the same width. A 2.5 % / 97.5 % quantile of 4000 draws has a relative
    # Monte-Carlo SE of ~1.5 % of the width (measured over seeds), 0.75 % for the mean of four
    # seeds, so the two bootstraps' difference has SD ~1.1 %; the Poisson and multinomial laws
    # differ by O(1/N) = 0.25 % more. 5 % is > 4 SD.
    assert abs(np.mean(widths) / classic - 1) < 0.05
    assert abs(np.mean(widths) / normal - 1) < 0.05
    assert all(lo < values.mean() < hi for lo, hi in
               [bootstrap_mean_ci(values, np.arange(400), 0, 1000)])


def test_masked_statistics_share_the_weights():
    rng = np.random.default_rng(3)
    values, index = rng.normal(size=60), np.arange(100, 160)
    mask = values > 0
    draws = bootstrap_draws(np.stack([values, values]), index, seed=1, n_draws=200,
                            masks=np.stack([np.ones(60, bool), mask]))
    # The masked statistic equals an unmasked bootstrap of the selected images alone.
    alone = bootstrap_draws(values[mask], index[mask], seed=1, n_draws=200)
    np.testing.assert_allclose(draws[:, 1], alone[:, 0], rtol=1e-12)
    cis = bootstrap_mean_cis(np.stack([values, values]), index, 1, 200,
                             masks=np.stack([np.ones(60, bool), np.zeros(60, bool)]))
    assert np.isfinite(cis[0]).all() and np.isnan(cis[1]).all()  # no image selected


def test_degenerate_inputs():
    assert np.isnan(bootstrap_mean_ci(np.zeros(0), np.zeros(0, np.int64), 0)).all()
    assert np.isnan(bootstrap_mean_ci(np.array([1.0, np.nan]), np.arange(2), 0)).all()
    lo, hi = bootstrap_mean_ci(np.full(5, 2.5), np.arange(5), 0, n_draws=50)
    assert lo == pytest.approx(2.5) and hi == pytest.approx(2.5)


@pytest.mark.parametrize("kwargs, match", [
    ({"level": 1.5}, "`level`"),
    ({"n_draws": 0}, "`n_draws`"),
    ({"index": np.array([0, 1, 1])}, "repeats"),
    ({"index": np.arange(4)}, "`values`"),
    ({"index": np.array([0.0, 1.0, 2.0])}, "`index`"),
])
def test_bad_input_names_the_option(kwargs, match):
    args = {"values": np.ones(3), "index": np.arange(3), "seed": 0, **kwargs}
    with pytest.raises(MaelensError, match=match):
        bootstrap_mean_ci(**args)
