"""Batched image-quality metrics, PSNR (dB) and SSIM, equal to scikit-image's defaults.

Both take (B, C, H, W) float images (maelens: RGB in [0, 1], so data_range=1.0) on any device,
compute in float64 whatever the input dtype, and return one float64 value per image, shape (B,).

- `psnr` equals `skimage.metrics.peak_signal_noise_ratio(ref, dist, data_range=...)`: the MSE is
  taken over all pixels and channels together. Identical images give +inf dB (MSE 0), as
  scikit-image does (without its divide-by-zero warning).
- `ssim` equals `skimage.metrics.structural_similarity(ref, dist, channel_axis=-1,
  data_range=...)` with its defaults: 7 x 7 uniform window, K1 = 0.01, K2 = 0.03, sample
  (co)variances (use_sample_covariance=True: factor 49 / 48), the SSIM map averaged over the
  pixels at least 3 from the border (scikit-image crops (7 - 1) // 2 pixels), then averaged over
  channels. Because of that crop, the filter's boundary mode never matters and a "valid" 7 x 7
  average (no padding) gives exactly the cropped map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maelens.errors import MaelensError

SSIM_WINDOW = 7  # pixels, scikit-image's default `win_size` for non-Gaussian weights
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(reference: torch.Tensor, distorted: torch.Tensor, data_range: float) -> None:
    for name, x in (("reference", reference), ("distorted", distorted)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            got = (f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor)
                   else type(x).__name__)
            raise MaelensError(
                f"quality `{name}` must be a float tensor (B, C, H, W), got {got}; "
                "pass [0, 1] images with a batch axis.")
    if reference.shape != distorted.shape:
        raise MaelensError(
            f"quality `distorted` must have the shape of `reference` {tuple(reference.shape)}, "
            f"got {tuple(distorted.shape)}; compare images of the same size.")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) \
            or not data_range > 0:
        raise MaelensError(
            f"quality `data_range` must be a number > 0, got {data_range!r}; "
            "use 1.0 for [0, 1] images, 255 for 8-bit.")


def psnr(reference: torch.Tensor, distorted: torch.Tensor,
         data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, shape (B,) float64; +inf where identical.

    reference, distorted: (B, C, H, W) float; data_range: max - min of the value scale.
    """
    _check_pair(reference, distorted, data_range)
    diff = reference.to(torch.float64) - distorted.to(torch.float64)
    mse = diff.square().flatten(1).mean(dim=1)  # (B,)
    # 10 log10(R^2 / 0) = +inf is what we want for identical images: no special case.
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(reference: torch.Tensor, distorted: torch.Tensor,
         data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity per image, shape (B,) float64, in [-1, 1] (1: identical).

    reference, distorted: (B, C, H, W) float with H, W >= 7 pixels; data_range: max - min of
    the value scale. Matches scikit-image's `structural_similarity(..., channel_axis=-1)`.
    """
    _check_pair(reference, distorted, data_range)
    B, C, H, W = reference.shape
    if min(H, W) < SSIM_WINDOW:
        raise MaelensError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {H}x{W}; "
            "compare larger images.")
    x = reference.to(torch.float64).reshape(B * C, 1, H, W)
    y = distorted.to(torch.float64).reshape(B * C, 1, H, W)
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B*C, 5, H, W)
    # Valid box average = scikit-image's uniform filter on the region it keeps after cropping.
    means = F.avg_pool2d(stats, SSIM_WINDOW, stride=1)  # (B*C, 5, H - 6, W - 6)
    ux, uy, uxx, uyy, uxy = means.unbind(dim=1)
    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)  # sample covariance, scikit-image's use_sample_covariance=True
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    s_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s_map.flatten(1).mean(dim=1).reshape(B, C).mean(dim=1)
