"""ImageQuality: PSNR / SSIM per image against scikit-image, inside a pass plan, merging and
state round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from maelens.analyses.base import Batch
from maelens.analyses.image_quality import ImageQuality
from maelens.engine.condition_sets import blur_conditions
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.perturb.blur import gaussian_blur
from tests.conftest import tiny_model
from tests.robustness_helpers import check_halves_and_round_trip

# The pass plan computes in float64 on the same float32 inputs as scikit-image: agreement to
# float64 rounding of sums over 32 x 32 x 3 pixels (~1e-13 relative).
RTOL = 1e-10


def _images(n: int = 7) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(4))


def _skimage(clean: np.ndarray, distorted: np.ndarray) -> tuple[float, float]:
    a, b = clean.transpose(1, 2, 0).astype(np.float64), distorted.transpose(1, 2, 0)
    b = b.astype(np.float64)
    return (peak_signal_noise_ratio(a, b, data_range=1.0),
            structural_similarity(a, b, channel_axis=-1, data_range=1.0))


def test_psnr_ssim_in_a_pass_plan_equal_scikit_image():
    pixels = _images()
    model = tiny_model(num_classes=4, pool="avg", fc_norm=True, final_norm=False)
    plan = PassPlan(model)
    cond = blur_conditions([(5, 2.0)])[0]
    quality = plan.add(ImageQuality(bootstrap=200, seed=1), cond)
    plan.feed(Batch(pixels[i:i + 3], torch.arange(i, min(i + 3, 7))) for i in range(0, 7, 3))
    result = quality.result()
    blurred = gaussian_blur(pixels, 5, 2.0).numpy()
    want = np.array([_skimage(pixels[i].numpy(), blurred[i]) for i in range(7)])
    np.testing.assert_allclose(result.arrays["psnr_db"], want[:, 0], rtol=RTOL)
    np.testing.assert_allclose(result.arrays["ssim"], want[:, 1], rtol=RTOL)
    rows = {r.metric: r for r in result.rows}
    np.testing.assert_allclose(rows["psnr_db_mean"].value, want[:, 0].mean(), rtol=RTOL)
    np.testing.assert_allclose(rows["ssim_mean"].value, want[:, 1].mean(), rtol=RTOL)
    assert rows["psnr_db_mean"].unit == "dB"
    assert rows["ssim_mean"].ci_low < rows["ssim_mean"].value < rows["ssim_mean"].ci_high


def test_unchanged_images_have_infinite_psnr_and_are_left_out_of_its_mean():
    pixels = _images(4)
    distorted = pixels.clone()
    distorted[:2] = gaussian_blur(pixels[:2], 3, 1.0)
    quality = ImageQuality(bootstrap=0)
    quality.update_pair(None, None, Batch(distorted, torch.arange(4), reference=pixels))
    result = quality.result()
    assert np.isinf(result.arrays["psnr_db"][2:]).all()
    assert result.arrays["ssim"][2:].tolist() == [1.0, 1.0]
    psnr_row = result.rows[0]
    np.testing.assert_allclose(psnr_row.value, result.arrays["psnr_db"][:2].mean())
    assert psnr_row.extra["unchanged"] == 2 and psnr_row.ci_low is None


def test_halves_merge_and_state_dict_round_trip(tmp_path):
    pixels = _images(9)
    noisy = (pixels + 0.05 * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(2))
             ).clamp(0, 1)

    def feed(analysis, part):
        idx = torch.arange(9)[part]
        for i in range(0, len(idx), 2):
            rows = idx[i:i + 2]
            analysis.update_pair(None, None, Batch(noisy[rows], rows, reference=pixels[rows]))

    check_halves_and_round_trip(lambda: ImageQuality(bootstrap=100, seed=3), feed, 9, tmp_path)


def test_needs_the_reference_pixels_and_refuses_the_reference_pass():
    with pytest.raises(MaelensError, match="reference"):
        ImageQuality().update_pair(None, None, Batch(_images(2), torch.arange(2)))
    plan = PassPlan(tiny_model(num_classes=4, pool="avg", fc_norm=True, final_norm=False))
    with pytest.raises(MaelensError, match="paired"):
        plan.add(ImageQuality())
    with pytest.raises(MaelensError, match="bootstrap"):
        ImageQuality(bootstrap=-1)
