"""The (m, p) grid prediction, its JSON round trip, the recommendation rule, and the figures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from maelens.errors import MaelensError
from maelens.report.theory_figures import (
    plot_boundary_emphasis,
    plot_eigen_spectra,
    plot_influence_profiles,
    plot_spread_heatmap,
)
from maelens.theory import (
    SpreadGrid,
    blocks_1d,
    boundary_emphasis,
    full_rank_optimum,
    influence_profile,
    ising_covariance,
    kernel_covariance,
    linear_mae_optimum,
    luminance_covariance,
    mae_spectrum,
    pixel_distances,
    predict_grid,
    recommend,
    tiles_2d,
    weighted_mean_distance,
)

RATIOS = [0.0, 0.25, 0.5, 0.75, 0.9]



@pytest.fixture(scope="module")
def ring_grid():
    sigma = kernel_covariance((64,), 6.0, periodic=True)
    return predict_grid(sigma, (64,), RATIOS, [1, 4, 16], 9, periodic=True)


def test_grid_reproduces_the_notes_and_single_computations(ring_grid):
    np.testing.assert_allclose(ring_grid.mean_distance_px[0], [0, 0.93, 1.64, 2.68, 3.89],
                               atol=0.02)
    assert ring_grid.correlation_length_px == pytest.approx(6.0, abs=0.05)
    sigma = kernel_covariance((64,), 6.0, periodic=True)
    partition = blocks_1d(64, 4)
    single = linear_mae_optimum(sigma, 0.5, partition, 9)
    assert ring_grid.boundary_emphasis[1][2] == pytest.approx(
        boundary_emphasis(single.A, partition).edge_over_mean, rel=1e-10)
    assert ring_grid.min_loss[1][2] == pytest.approx(single.min_loss, rel=1e-12)
    assert ring_grid.out_of_patch_mass[1][0] == pytest.approx(0.0, abs=1e-12)  # W* = I at m = 0


def test_grid_is_json_ready_and_round_trips(ring_grid):
    text = json.dumps(ring_grid.to_dict())
    again = SpreadGrid.from_dict(json.loads(text))
    assert again == ring_grid


def test_recommendation_follows_the_documented_rule(ring_grid):
    pick = recommend(ring_grid, target_scale_px=2.6)
    spread = np.asarray(ring_grid.mean_distance_px)
    assert abs(pick.predicted_spread_px - 2.6) <= np.abs(spread - 2.6).min() + 0.05 * 2.6
    # Within 0.05 * 2.6 px of the best gap: p=16 m=0.9 (2.59), p=4 m=0.5 (2.57), p=1 m=0.75
    # (2.68); the highest ratio wins.
    assert (pick.mask_ratio, pick.patch_size) == (0.9, 16)
    assert "m = 0.9, p = 16" in pick.text and "2.59 px" in pick.text
    default = recommend(ring_grid.to_dict())  # target: the data's correlation length, 6 px
    assert default.target_scale_px == pytest.approx(6.0, abs=0.05)
    assert "outside the predicted range" in default.text
    with pytest.raises(MaelensError, match="target_scale_px"):
        recommend(ring_grid, target_scale_px=-1.0)


def test_grid_on_2d_images_with_channels():
    channel = np.array([[1.0, 0.7], [0.7, 1.0]])
    sigma = kernel_covariance((8, 8, 2), 2.0, channel_cov=channel)
    grid = predict_grid(sigma, (8, 8, 2), [0.0, 0.5], [2, 4], 6)
    assert np.shape(grid.mean_distance_px) == (2, 2)
    lum = luminance_covariance(sigma, 2)
    np.testing.assert_allclose(lum, kernel_covariance((8, 8, 1), 2.0) * 0.85)
    partition = tiles_2d(8, 8, 4, channels=2)
    W = full_rank_optimum(sigma, 0.5, partition)
    expected = weighted_mean_distance(W.T, pixel_distances(partition.coords))
    assert grid.mean_distance_px[1][1] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(MaelensError, match="patch_size"):
        predict_grid(sigma, (8, 8, 2), [0.5], [3], 6)


def test_figures_write_png_from_results_and_dicts(ring_grid, tmp_path):
    sigma = ising_covariance((32,), 0.7)
    partition = blocks_1d(32, 8)
    distances = pixel_distances(partition.coords)
    profiles = {f"m={m}": influence_profile(full_rank_optimum(sigma, m, partition).T, distances)
                for m in (0.25, 0.75)}
    emphasis = {f"m={m}": boundary_emphasis(linear_mae_optimum(sigma, m, partition, 4).A,
                                            partition) for m in (0.0, 0.75)}
    tiles = tiles_2d(8, 8, 4)
    emphasis_2d = {"m=0.5": boundary_emphasis(
        linear_mae_optimum(kernel_covariance((8, 8, 1), 2.0), 0.5, tiles, 4).A, tiles)}
    spectra = {f"m={m}": mae_spectrum(sigma, m, partition) for m in (0.0, 0.75)}
    paths = [
        plot_spread_heatmap(json.loads(json.dumps(ring_grid.to_dict())), tmp_path / "a.png"),
        plot_spread_heatmap(ring_grid, tmp_path / "b.png", metric="boundary_emphasis"),
        plot_influence_profiles({k: v.to_dict() for k, v in profiles.items()}, tmp_path / "c.png"),
        plot_boundary_emphasis(emphasis, tmp_path / "d.png"),
        plot_boundary_emphasis(emphasis_2d, tmp_path / "e.png"),
        plot_eigen_spectra(spectra, tmp_path / "sub" / "f.png", n_show=20),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MaelensError, match="metric"):
        plot_spread_heatmap(ring_grid, tmp_path / "g.png", metric="nope")
