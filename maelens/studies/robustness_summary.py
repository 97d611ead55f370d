"""Summaries the robustness study adds to its results: blur levels ordered by measured PSNR,
the ImageNet-C corruption errors (mCE, relative mCE against AlexNet) and the example images.

AlexNet reference errors: the ImageNet-C benchmark (Hendrycks & Dietterich, ICLR 2019,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", Table 1 and
github.com/hendrycks/robustness) normalises each corruption error by AlexNet's. The per-
corruption AlexNet errors below are its mean top-1 error over the five severities, as
published with that repository and copied unchanged by e.g. google-research/augmix
(imagenet.py, ALEXNET_ERR) and OpenMMLab mmpretrain (get_ce_alexnet); the clean error is that of
the torchvision AlexNet it evaluated (56.522 % top-1 -> 43.478 %, the paper's "43.5").
Per-severity AlexNet errors are not published there, so CE needs all five severities:

    CE_c          = sum_s E_{s,c} / sum_s E^AlexNet_{s,c} = mean_s E_{s,c} / ALEXNET_ERROR[c]
    relative CE_c = (mean_s E_{s,c} - E_clean) / (ALEXNET_ERROR[c] - ALEXNET_CLEAN_ERROR)
    mCE           = mean over corruptions of CE_c (likewise relative mCE)

These are comparable with published numbers only on ImageNet-C proper (the released files of
the 1000-class ImageNet validation set, all 15 corruptions x 5 severities); the rows say so.
"""

from __future__ import annotations

import numpy as np
import torch

from maelens.analyses.base import AnalysisResult, Batch, Row
from maelens.engine.conditions import Condition, DropTokens
from maelens.errors import MaelensError
from maelens.model.taps import Taps
from maelens.model.vit import VisionTransformer
from maelens.perturb.corruptions import CORRUPTIONS, SEVERITIES
from maelens.results.store import ResultSet
from maelens.studies.inputs import ImageSet

ALEXNET_ERROR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
ALEXNET_CLEAN_ERROR = 0.43478
COMPARABLE_NOTE = ("AlexNet-normalised corruption errors are comparable with published numbers "
                   "only on ImageNet-C proper: the released files of the 1000-class ImageNet "
                   "validation set, all 15 corruptions x 5 severities")


def top1_of(results: ResultSet, model: str, condition: str) -> float | None:
    rows = results.select(model=model, analysis="accuracy", condition=condition, metric="top1")
    return rows[0]["value"] if rows else None


def _metric(results: ResultSet, model: str, analysis: str, condition: str, metric: str
            ) -> float | None:
    rows = results.select(model=model, analysis=analysis, condition=condition, metric=metric)
    return rows[0]["value"] if rows else None


def blur_order(results: ResultSet, model: str) -> dict:
    """The blur levels by parameter order and by decreasing measured PSNR (and SSIM), and
    where the two orders differ (JSON-ready)."""
    levels = [c for c in results.meta["conditions"] if c["family"] == "blur"]
    psnr = {c["level"]: _metric(results, model, "image_quality", c["name"], "psnr_db_mean")
            for c in levels}
    ssim = {c["level"]: _metric(results, model, "image_quality", c["name"], "ssim_mean")
            for c in levels}
    given = [c["level"] for c in levels]
    key = lambda values: lambda lv: -(values[lv] if values[lv] is not None else -np.inf)  # noqa
    by_psnr = sorted(given, key=key(psnr))
    by_ssim = sorted(given, key=key(ssim))
    moved = [lv for lv, other in zip(given, by_psnr, strict=True) if lv != other]
    note = ("the measured PSNR falls monotonically along the parameter list" if not moved else
            f"by measured PSNR the order is {', '.join(by_psnr)}: levels {', '.join(moved)} "
            "sit elsewhere than in the parameter list, which is not ordered by the degradation "
            "it causes at this resolution (kernel size and sigma both set it; a k x k kernel "
            "truncates a large sigma)")
    return {"parameter_order": given, "psnr_order": by_psnr, "ssim_order": by_ssim,
            "agrees": not moved, "moved": moved, "note": note}


def imagenet_c_summary(results: ResultSet, model: str, on_disk: bool) -> AnalysisResult:
    """Rows: top1_mean per corruption (level = corruption) and over all; ce / relative_ce per
    corruption with all five severities; mce / relative_mce over those (percent)."""
    clean = top1_of(results, model, "clean")
    table: dict[str, dict[int, float]] = {}
    for c in results.meta["conditions"]:
        if c["family"] == "corruption":
            value = top1_of(results, model, c["name"])
            table.setdefault(c["corruption"], {})[c["severity"]] = value
    comparable = on_disk and set(table) == set(CORRUPTIONS) and all(
        set(v) == set(SEVERITIES) for v in table.values())
    extra = {"comparable": comparable, "note": COMPARABLE_NOTE,
             "source": "imagenet-c files" if on_disk else "synthetic corruptions"}
    rows, ces, rel = [], [], []
    for name in (c for c in CORRUPTIONS if c in table):
        accs = table[name]
        mean_acc = float(np.mean(list(accs.values())))
        rows.append(Row("top1_mean", mean_acc, unit="%", level=name,
                        extra={"severities": sorted(accs)}))
        if set(accs) != set(SEVERITIES):
            continue
        error = 1.0 - mean_acc / 100.0
        ces.append(100.0 * error / ALEXNET_ERROR[name])
        rows.append(Row("ce", ces[-1], unit="%", level=name, extra=extra))
        if clean is not None:
            rel.append(100.0 * (error - (1.0 - clean / 100.0))
                       / (ALEXNET_ERROR[name] - ALEXNET_CLEAN_ERROR))
            rows.append(Row("relative_ce", rel[-1], unit="%", level=name, extra=extra))
    every = [v for accs in table.values() for v in accs.values()]
    rows.append(Row("top1_mean", float(np.mean(every)), unit="%", level="all",
                    extra={"conditions": len(every)}))
    summary = {**extra, "corruptions": len(ces)}
    if ces:
        rows.append(Row("mce", float(np.mean(ces)), unit="%", level="all", extra=summary))
    if rel:
        rows.append(Row("relative_mce", float(np.mean(rel)), unit="%", level="all",
                        extra=summary))
    meta = {"alexnet_error": ALEXNET_ERROR, "alexnet_clean_error": ALEXNET_CLEAN_ERROR,
            "source": "Hendrycks & Dietterich 2019 (ImageNet-C), github.com/hendrycks/"
                      "robustness; mean AlexNet error over severities 1-5",
            "comparable": comparable, "note": COMPARABLE_NOTE}
    return AnalysisResult("imagenet_c", rows=rows, meta=meta)


def _uint8(pixels: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) [0, 1] -> (B, H, W, 3) uint8."""
    return (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1) \
        .cpu().numpy()


def example_images(model: VisionTransformer, images: ImageSet, index: int,
                   blur: list[Condition], corruption: list[Condition],
                   occlusion: list[Condition], device: str) -> dict[str, np.ndarray]:
    """uint8 (H, W, 3) pictures of image `index` under every condition: clean (H, W, 3), blur
    (n_levels, ...), corruption (n_corruptions, n_severities, ...) in condition order,
    occlusion (n_conditions, ...) (token dropping drawn as grey patches)."""
    pixels = images.pixels[index:index + 1].to(device)
    batch = Batch(pixels, torch.tensor([index]), images.labels[index:index + 1])
    out = {"clean": _uint8(pixels)[0]}
    if blur:
        out["blur"] = np.concatenate([_uint8(c.pixels(batch, None)) for c in blur])
    if corruption:
        pics = np.concatenate([_uint8(c.pixels(batch, None)) for c in corruption])
        n_c = len(dict.fromkeys(c.level.split("/")[0] for c in corruption))
        out["corruption"] = pics.reshape(n_c, len(corruption) // n_c, *pics.shape[1:])
    if occlusion:
        out["occlusion"] = np.concatenate([_occluded(model, batch, c) for c in occlusion])
    return out


def _occluded(model: VisionTransformer, batch: Batch, condition: Condition) -> np.ndarray:
    """The picture of one occlusion condition (rollout from a clean pass of this image)."""
    param = next(model.parameters())
    c = model.config
    mean = torch.tensor(c.mean, device=param.device).view(1, -1, 1, 1)
    std = torch.tensor(c.std, device=param.device).view(1, -1, 1, 1)
    with torch.inference_mode():
        x = ((batch.pixels.float() - mean) / std).to(param.dtype)
        reference = model(x, taps=Taps(attn=None, final=False))
        if condition.pixels is not None:
            return _uint8(condition.pixels(batch, reference))
        if not isinstance(condition.keep, DropTokens):
            raise MaelensError(f"condition {condition.name!r} is not an occlusion condition.")
        gh, gw = model.grid_of(batch.pixels)
        keep = condition.keep(batch, reference, gh * gw)
        shown = torch.zeros(gh * gw, dtype=torch.bool)
        shown[keep[0].cpu()] = True
        mask = shown.view(1, 1, gh, gw).repeat_interleave(c.patch_size, 2) \
            .repeat_interleave(c.patch_size, 3).to(batch.pixels.device)
        return _uint8(torch.where(mask, batch.pixels, torch.full_like(batch.pixels, 0.5)))
