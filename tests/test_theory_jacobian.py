"""Autograd Jacobians: exact for a linear network, zero on masked inputs, equal to finite
differences for a tiny MAE; averages, spread metrics, effective rank and the adaptive basis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maelens.errors import MaelensError
from maelens.model.config import ViTConfig
from maelens.model.vit import VisionTransformer
from maelens.studies.jacobian import (
    JacobianAverage,
    LinearMAE,
    adaptive_basis,
    average_jacobian,
    effective_rank,
    input_jacobian,
    mae_jacobian,
    participation_ratio,
    reconstruction_fn,
)

TINY = ViTConfig(image_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, mlp_dim=32,
                 decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, decoder_mlp_dim=32)


@pytest.fixture(scope="module")
def mae() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(TINY).double().eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


KEEP = torch.tensor([0, 3, 5, 6, 9, 10, 15])  # 7 of the 16 patches of a 4x4 grid


def test_linear_network_jacobian_equals_w_exactly():
    g = torch.Generator().manual_seed(0)
    d, k = 12, 5
    net = LinearMAE(torch.randn(d, k, generator=g, dtype=torch.float64),
                    torch.randn(k, d, generator=g, dtype=torch.float64))
    x = torch.randn(d, generator=g, dtype=torch.float64)
    J = input_jacobian(net, x, batch_size=5)  # chunks of 5 rows: 3 passes
    W = net.W.detach()
    assert torch.equal(J, W.T) or torch.allclose(J, W.T, rtol=0, atol=1e-15)
    keep = (torch.rand(d, generator=g) > 0.5).double()
    masked = input_jacobian(lambda b: net(b, keep), x)
    torch.testing.assert_close(masked, (keep[:, None] * W).T, rtol=0, atol=1e-15)


def test_linear_network_from_closed_form_matches_its_influence():
    from maelens.theory import blocks_1d, kernel_covariance, linear_mae_optimum

    sigma = kernel_covariance((16,), 3.0)
    solution = linear_mae_optimum(sigma, 0.5, blocks_1d(16, 4), 4)
    net = LinearMAE(torch.from_numpy(solution.A), torch.from_numpy(solution.B))
    J = input_jacobian(net, torch.zeros(16, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(J, solution.influence, rtol=0, atol=1e-13)


def test_mae_jacobian_zero_on_masked_inputs_and_matches_finite_differences(mae, image):
    jac = mae_jacobian(mae, image, KEEP, channels="grey")
    assert jac.signed.shape == (256, 256)
    assert jac.visible.sum() == 7 * 16
    assert np.all(jac.signed[:, ~jac.visible] == 0.0)
    assert np.abs(jac.signed[:, jac.visible]).max() > 0
    fn = reconstruction_fn(mae, KEEP, "grey")
    grey = image.mean(dim=0)
    eps = 1e-6
    for j, i in [(0, 1), (40, 17), (200, 250), (255, 3)]:
        if not jac.visible[i]:
            continue
        up, down = grey.clone(), grey.clone()
        up.view(-1)[i] += eps
        down.view(-1)[i] -= eps
        with torch.no_grad():
            fd = (fn(up[None]).reshape(-1)[j] - fn(down[None]).reshape(-1)[j]) / (2 * eps)
        assert jac.signed[j, i] == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


def test_sum_channels_signed_equals_grey_and_rows_subset(mae, image):
    image = image.mean(dim=0, keepdim=True).expand(3, -1, -1)  # equal at a grey image only
    grey = mae_jacobian(mae, image, KEEP, channels="grey")
    rows = np.array([3, 77, 128])
    full = mae_jacobian(mae, image, KEEP, channels="sum", rows=rows)
    np.testing.assert_allclose(full.signed, grey.signed[rows], rtol=1e-9, atol=1e-12)
    assert np.all(full.magnitude >= np.abs(full.signed) - 1e-12)
    assert np.all(full.magnitude[:, ~full.visible] == 0.0)


def test_average_counts_only_visible_inputs_and_merges(mae):
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2),
                         dtype=torch.float64)
    avg = average_jacobian(mae, images, mask_ratio=0.5, masks_per_image=2, seed=3)
    assert avg.n_samples == 4 and len(avg.sample_ranks) == 4
    assert avg.counts.sum(axis=0).max() <= 4
    masked = avg.influence("masked")
    assert masked.shape == (256, 256)
    halves = [average_jacobian(mae, images[i:i + 1], mask_ratio=0.5, masks_per_image=2, seed=3)
              for i in range(2)]
    assert halves[0].merge(halves[1]).n_samples == 4
    spread = avg.spread()
    assert spread.mean_distance_px > 0 and 0 < spread.out_of_patch_mass <= 1
    assert 1 <= spread.effective_rank <= 256
    again = average_jacobian(mae, images, mask_ratio=0.5, masks_per_image=2, seed=3)
    np.testing.assert_array_equal(again.abs_sum, avg.abs_sum)  # same seed, same numbers
    sub = average_jacobian(mae, images[:1], mask_ratio=0.5, seed=3, output_pixels=16)
    assert (sub.counts.sum(axis=(0, 2)) > 0).sum() <= 16
    assert np.isnan(sub.spread().effective_rank)


def test_effective_rank_of_known_matrices():
    assert effective_rank(np.ones(5)) == pytest.approx(5.0)
    assert participation_ratio(np.ones(5)) == pytest.approx(5.0)
    assert effective_rank([3.0, 0.0, 0.0]) == pytest.approx(1.0)
    values = np.linalg.svd(np.diag([2.0, 2.0, 0.0, 0.0]), compute_uv=False)
    assert effective_rank(values) == pytest.approx(2.0)
    p = np.array([0.5, 0.25, 0.25])
    assert effective_rank([2.0, 1.0, 1.0]) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert participation_ratio([2.0, 1.0, 1.0]) == pytest.approx(36 / 18)


def test_adaptive_basis_of_a_local_blur():
    coords = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2)
    dist2 = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    basis = adaptive_basis(np.exp(-dist2 / 2.0), (8, 8), n_vectors=3)
    assert basis.input_vectors.shape == (3, 8, 8)
    assert np.all(np.diff(basis.singular_values) <= 1e-12)
    assert 1 < basis.effective_rank < 64
    assert basis.extent_px[0] > 0
    identity = adaptive_basis(np.eye(64), (8, 8), n_vectors=2)
    assert identity.effective_rank == pytest.approx(64.0)
    assert identity.to_dict()["effective_rank"] == pytest.approx(64.0)


def test_bad_input_names_the_parameter(mae, image):
    with pytest.raises(MaelensError, match="mask_ratio"):
        average_jacobian(mae, image[None], mask_ratio=1.0)
    with pytest.raises(MaelensError, match="channels"):
        reconstruction_fn(mae, KEEP, "rgb")
    with pytest.raises(MaelensError, match="outputs"):
        JacobianAverage.empty((16, 16), 4).influence("nope")
    with pytest.raises(MaelensError, match="output_pixels"):
        average_jacobian(mae, image[None], mask_ratio=0.5, output_pixels=0)
    with pytest.raises(MaelensError, match="encoder"):
        LinearMAE(torch.zeros(4, 2), torch.zeros(3, 4))
