"""Image quality of a perturbation: PSNR (dB) and SSIM of the perturbed images against the
clean ones (seed paper III-B1 and Table I: blur levels ordered by the degradation they cause).

Paired but needs no taps: the engine hands every condition's pass the reference pixels in
`batch.reference` and the perturbed ones in `batch.pixels`, both (B, 3, H, W) RGB in [0, 1]
(data_range 1). Per image, `maelens.perturb.quality` gives scikit-image's PSNR and SSIM
(computed in float64 on the compute device); only the two numbers per image are kept.

An image the perturbation leaves unchanged has PSNR = +inf. Its SSIM is 1 and counts; the PSNR
mean is taken over the finite values (the count of unchanged images is reported), since one
+inf would make the mean meaningless.
"""

from __future__ import annotations

import numpy as np
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row
from maelens.analyses.bootstrap import check_bootstrap, ci_note, optional_cis
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps
from maelens.perturb.quality import psnr, ssim


class ImageQuality(Analysis):
    """PSNR (dB) and SSIM of `batch.pixels` against `batch.reference`, per image (paired).

    bootstrap / seed: the 95 % CIs of the means (0: none). `result().arrays` (images in index
    order): index (N,) int64, psnr_db (N,) float64 (+inf where unchanged), ssim (N,) float64.
    """

    name = "image_quality"
    paired = True
    taps = Taps(final=False)

    def __init__(self, bootstrap: int = 1000, seed: int = 0) -> None:
        super().__init__()
        self.bootstrap, self.seed = check_bootstrap(bootstrap), int(seed)
        self.add_state("quality", None, "cat")  # rows [psnr_db, ssim] float64

    def update_pair(self, clean: Capture, perturbed: Capture, batch: Batch) -> ImageQuality:
        if batch.reference is None:
            raise MaelensError("ImageQuality compares a condition's pixels with the reference "
                               "pass's, but the batch has no `reference`; add it to a pixel "
                               "condition of a PassPlan (not to the reference pass).")
        reference = batch.reference.to(batch.pixels.device)
        rows = torch.stack([psnr(reference, batch.pixels), ssim(reference, batch.pixels)], 1)
        self.append_rows("quality", batch.index, rows, copy=False)
        return self

    def result(self) -> AnalysisResult:
        index, rows = self.rows_of("quality")
        rows = rows.numpy().reshape(-1, 2).astype(np.float64)
        psnr_db, ssim_values = rows[:, 0], rows[:, 1]
        finite = np.isfinite(psnr_db)
        index_np = index.numpy()
        psnr_ci = optional_cis(psnr_db[finite], index_np[finite], self.seed, self.bootstrap)[0] \
            if finite.any() else (None, None)
        ssim_ci = optional_cis(ssim_values, index_np, self.seed, self.bootstrap)[0] \
            if len(index_np) else (None, None)
        psnr_mean = float(psnr_db[finite].mean()) if finite.any() else (
            float("inf") if len(psnr_db) else float("nan"))
        ssim_mean = float(ssim_values.mean()) if len(ssim_values) else float("nan")
        counts = {"images": len(index_np), "unchanged": int((~finite).sum())}
        rows_out = [Row("psnr_db_mean", psnr_mean, unit="dB", ci_low=psnr_ci[0],
                        ci_high=psnr_ci[1], extra=counts),
                    Row("ssim_mean", ssim_mean, unit="", ci_low=ssim_ci[0], ci_high=ssim_ci[1],
                        extra=counts)]
        meta = {"psnr": "10 log10(1 / MSE) per image over all pixels and channels, [0, 1] RGB "
                        "(scikit-image peak_signal_noise_ratio, data_range=1); mean over "
                        "images with finite PSNR",
                "ssim": "scikit-image structural_similarity defaults (7x7 uniform window, "
                        "channel_axis=-1, data_range=1), mean over images",
                "ci": ci_note(self.bootstrap, self.seed)}
        return AnalysisResult(self.name, rows=rows_out, arrays={
            "index": index_np, "psnr_db": psnr_db, "ssim": ssim_values}, meta=meta)
