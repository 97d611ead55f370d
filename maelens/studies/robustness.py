"""The robustness study of a fine-tuned classifier (seed paper III-B, IV-B, IV-C; Tables I-III,
Fig. 5-8), as ONE pass plan: each batch runs once through the clean reference pass, whose
capture (logits, attention for rollout, head outputs, last hidden layer) feeds every condition:

    clean                      Accuracy
    blur level I..X            Accuracy, ImageQuality, EmbeddingAlignment, HeadCommonFeatures
    ImageNet-C (c, s)          the same four (synthetic corruption, or files of an on-disk tree)
    occlusion p % (3 curves)   Accuracy, EmbeddingAlignment, HeadCommonFeatures
    K random masks             one MaskInvariance (paired with the unmasked clean pass)

`run_robustness` returns (and writes) a `ResultSet`: every analysis's rows under its condition
name, `meta["conditions"]` with the numbers behind each condition, the blur levels in order of
measured PSNR, the ImageNet-C summaries, and small uint8 example images for the figure sheet.
Tables and figures (`maelens.report.tables_robustness`, `fig_robustness`) read nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from maelens._validate import check_positive_int
from maelens.analyses.accuracy import Accuracy
from maelens.analyses.alignment import EmbeddingAlignment
from maelens.analyses.base import Analysis, AnalysisResult
from maelens.analyses.bootstrap import check_bootstrap
from maelens.analyses.head_features import HeadCommonFeatures
from maelens.analyses.image_quality import ImageQuality
from maelens.analyses.mask_invariance import MaskInvariance
from maelens.engine.condition_sets import (
    HEAD_FUSIONS,
    PAPER_PERCENTS,
    ROLLOUT_SOURCES,
    blur_conditions,
    check_blur_levels,
    check_corruptions,
    check_masks,
    check_percents,
    check_severities,
    condition_params,
    corruption_conditions,
    mask_invariance_conditions,
    occlusion_conditions,
    stored_conditions,
)
from maelens.engine.conditions import Condition
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.vit import VisionTransformer
from maelens.perturb.blur import PAPER_BLUR_LEVELS
from maelens.perturb.corruptions import CORRUPTIONS, SEVERITIES
from maelens.perturb.occlusion import FILLS
from maelens.results.store import ResultSet, write_results
from maelens.studies.inputs import ImageSet
from maelens.studies.robustness_summary import (
    blur_order,
    example_images,
    imagenet_c_summary,
)

log = logging.getLogger(__name__)

# The three occlusion curves of Fig. 5: (name, mode, ranking).
CURVES = {"pixels": ("pixels", "rollout"), "tokens": ("tokens", "rollout"),
          "random": ("pixels", "random")}
DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True, kw_only=True)
class RobustnessSettings:
    """What to perturb and how to measure it.

    blur_levels: (kernel size, sigma) pairs in pixels (default: Table I); percents: occlusion
    levels in % (0 is the clean pass); curves: which occlusion curves ("pixels": rollout-ranked
    patches filled with `fill`; "tokens": rollout-ranked patches dropped; "random": the seeded
    random-patch control, pixel fill); head_fusion / rollout_source: the rollout (see
    `PatchRanking`); corruptions / severities: ImageNet-C, synthetic unless `imagenet_c` names
    a pre-generated tree; masks: K random masks per image at `mask_ratio` (0: skip); top_k /
    threshold: the head common-feature counts; bootstrap: CI draws (0: none); classes: the logit
    index of each data-set label (None: labels are logit indices); restrict: argmax over
    `classes` only; example_image: the image drawn on the example sheet.
    """

    blur_levels: tuple[tuple[int, float], ...] = PAPER_BLUR_LEVELS
    percents: tuple[float, ...] = PAPER_PERCENTS
    curves: tuple[str, ...] = ("pixels", "tokens", "random")
    fill: str = "zero"
    head_fusion: str = "mean"
    rollout_source: str = "cls"
    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    imagenet_c: str | None = None
    masks: int = 100
    mask_ratio: float = 0.75
    top_k: int = 10
    threshold: float = 0.6
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 64
    device: str = "cpu"
    dtype: str = "float32"
    classes: tuple[int, ...] | None = None
    restrict: bool = False
    example_image: int = 0

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        put("blur_levels", check_blur_levels(self.blur_levels, "blur_levels"))
        put("percents", check_percents(self.percents))
        put("corruptions", check_corruptions(tuple(self.corruptions)))
        put("severities", check_severities(self.severities) if self.corruptions else
            tuple(self.severities))
        put("masks", check_masks(self.masks))
        unknown = sorted(set(self.curves) - set(CURVES))
        if unknown:
            raise MaelensError(f"`curves` must name some of {', '.join(CURVES)}, got {unknown}.")
        for option, value, choices in (("fill", self.fill, FILLS),
                                       ("head_fusion", self.head_fusion, HEAD_FUSIONS),
                                       ("rollout_source", self.rollout_source, ROLLOUT_SOURCES),
                                       ("dtype", self.dtype, DTYPE_NAMES)):
            if value not in choices:
                raise MaelensError(f"`{option}` must be one of {', '.join(choices)}, "
                                   f"got {value!r}.")
        if self.masks and not 0.0 < float(self.mask_ratio) < 1.0:
            raise MaelensError(f"`mask_ratio` must lie in (0, 1) for the random-mask study "
                               f"(e.g. 0.75), got {self.mask_ratio}.")
        check_positive_int("top_k", self.top_k)
        if not 0.0 < float(self.threshold) <= 1.0:
            raise MaelensError(f"`threshold` must lie in (0, 1], got {self.threshold}.")
        put("bootstrap", check_bootstrap(self.bootstrap))
        check_positive_int("batch_size", self.batch_size)
        if self.example_image < 0:
            raise MaelensError(f"`example_image` must be >= 0, got {self.example_image}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def logit_classes(images: ImageSet, num_classes: int) -> tuple[int, ...] | None:
    """The logit index of each label of `images`, or None when labels already are logits.

    An ImageNet-layout folder holding all `num_classes` class folders numbers classes by their
    sorted folder names, exactly as the classifier's logits (ImageNet: sorted WordNet ids); a
    `--classes N` pick then labels 0..N-1, whose logits are the folders' positions. Other sets
    (MNIST digits, one flat folder) label with logit indices already.
    """
    from pathlib import Path

    from maelens.data.class_folders import list_class_folders

    root = Path(images.source)
    if root.is_dir() and len(images.class_names) > 1 or len(images.class_names) > num_classes:
        folders = list_class_folders(root) if root.is_dir() else []
        if len(folders) != num_classes or not set(images.class_names) <= set(folders):
            raise MaelensError(
                f"cannot tell which of the model's {num_classes} logits the "
                f"{len(images.class_names)} classes of {images.source} are; fix: give the "
                f"folder that holds all {num_classes} class folders (e.g. ImageNet val) and "
                "pick classes with `--classes` / `--per-class`.")
        positions = tuple(folders.index(name) for name in images.class_names)
        return None if positions == tuple(range(len(positions))) else positions
    return None


def check_classifier(model: VisionTransformer, name: str) -> None:
    if model.head is None:
        raise MaelensError(
            f"the model {name} has no classifier head ({model.config.num_classes} classes); the "
            "robustness study measures top-1 accuracy: give a fine-tuned checkpoint.")


@dataclass
class _Families:
    """The study's conditions per family, in table order."""

    blur: list[Condition]
    occlusion: list[Condition]
    corruption: list[Condition]
    masks: list[Condition]

    @property
    def perturbations(self) -> list[Condition]:
        return self.blur + self.corruption + self.occlusion


def build_conditions(model: VisionTransformer, images: ImageSet, s: RobustnessSettings
                     ) -> _Families:
    """Every condition of the study (see the module docstring)."""
    c = model.config
    occlusion = []
    for curve in s.curves:
        mode, ranking = CURVES[curve]
        occlusion += occlusion_conditions(s.percents, mode, s.fill, ranking, s.head_fusion,
                                          s.rollout_source, s.seed, c.patch_size,
                                          tuple(c.mean))
    if s.imagenet_c and s.corruptions:
        from maelens.studies.imagenet_c import matching_files, scan_imagenet_c

        tree = scan_imagenet_c(s.imagenet_c)
        tree.require(s.corruptions, s.severities)
        corrupted = stored_conditions({(name, sev): matching_files(tree, name, sev, images.names)
                                       for name in s.corruptions for sev in s.severities})
    else:
        corrupted = corruption_conditions(s.corruptions, s.severities, s.seed) \
            if s.corruptions else []
    masks = mask_invariance_conditions(s.mask_ratio, s.masks, s.seed) if s.masks else []
    return _Families(blur_conditions(s.blur_levels), occlusion, corrupted, masks)


def _accuracy_classes(s: RobustnessSettings, num_logits: int) -> tuple[int, ...] | None:
    """`Accuracy(classes=...)` for position labels. Unrestricted: every logit, the evaluated
    classes first, so label j still names logit classes[j] while the argmax runs over all."""
    if s.classes is None:
        return None
    if s.restrict:
        return s.classes
    return s.classes + tuple(k for k in range(num_logits) if k not in set(s.classes))


def build_plan(model: VisionTransformer, families: _Families, s: RobustnessSettings
               ) -> tuple[PassPlan, list[tuple[Analysis, str, str]]]:
    """The pass plan and the (analysis, condition name, level label) feeds whose results are
    kept."""
    plan = PassPlan(model, device=s.device, dtype=getattr(torch, s.dtype))
    classes = _accuracy_classes(s, model.config.num_classes)
    accuracy = lambda: Accuracy(classes, s.bootstrap, s.seed)  # noqa: E731
    feeds: list[tuple[Analysis, str, str]] = [(plan.add(accuracy()), "clean", "clean")]
    quality = {id(c) for c in families.blur + families.corruption}
    for cond in families.perturbations:
        fed = [accuracy(), EmbeddingAlignment(bootstrap=s.bootstrap, seed=s.seed,
                                              classes=classes),
               HeadCommonFeatures(s.top_k, s.threshold)]
        if id(cond) in quality:
            fed.append(ImageQuality(s.bootstrap, s.seed))
        feeds += [(plan.add(analysis, cond), cond.name, cond.level) for analysis in fed]
    if families.masks:
        invariance = MaskInvariance(bootstrap=s.bootstrap, seed=s.seed)
        for cond in families.masks:  # one instance, K conditions fed back to back
            plan.add(invariance, cond)
        feeds.append((invariance, "mask-invariance", f"K={s.masks} ratio={s.mask_ratio:g}"))
    return plan, feeds


def run_robustness(model: VisionTransformer, images: ImageSet, settings: RobustnessSettings,
                   out_dir: str | os.PathLike | None = None, *, model_name: str = "model",
                   progress: Callable[[int], None] | None = None) -> ResultSet | None:
    """Run the whole study on `images` ([0, 1] RGB at the model's size, with labels); write
    results.json / results.csv / arrays.npz into `out_dir` when given. Same seed, same numbers,
    whatever the batch size. Under torchrun each rank takes its shard of the images and rank 0
    gets every state and the results; the other ranks return None."""
    from maelens.engine.distributed import current_world, gather_to_main, shard_range

    check_classifier(model, model_name)
    if not len(images):
        raise MaelensError(f"the image set {images.source} is empty.")
    families = build_conditions(model, images, settings)
    plan, feeds = build_plan(model, families, settings)
    log.info("robustness: %d images x %d passes (1 clean + %d conditions)", len(images),
             1 + len(plan.stages), len(plan.stages))
    world = current_world()
    start, stop = shard_range(len(images), world)
    plan.feed(images.batches(settings.batch_size, start, stop), progress)
    if not gather_to_main([analysis for analysis, _, _ in feeds], world):
        return None
    results = ResultSet(meta=study_meta(model, model_name, images, settings, families))
    for analysis, condition, level in feeds:
        result = analysis.result()
        for row in result.rows:  # label the long table's rows with the condition's level
            row.level = level if row.level is None else row.level
        results.add(result, model=model_name, condition=condition)
    add_summaries(results, model, images, settings, families, model_name)
    if out_dir is not None:
        write_results(out_dir, results)
    return results


def add_summaries(results: ResultSet, model: VisionTransformer, images: ImageSet,
               s: RobustnessSettings, families: _Families, model_name: str) -> None:
    """Blur order by PSNR, ImageNet-C summaries and the example sheet, into `results`."""
    if families.blur:
        results.meta["blur_order"] = blur_order(results, model_name)
    if families.corruption:
        on_disk = bool(s.imagenet_c)
        results.add(imagenet_c_summary(results, model_name, on_disk), model=model_name,
                    condition="imagenet-c")
    index = min(s.example_image, len(images) - 1)
    arrays = example_images(model, images, index, families.blur, families.corruption,
                            families.occlusion, s.device)
    results.add(AnalysisResult("examples", arrays=arrays, meta={"image": images.names[index],
                                                                "index": index}),
                model=model_name)


def study_meta(model: VisionTransformer, model_name: str, images: ImageSet,
          s: RobustnessSettings, families: _Families) -> dict:
    c = model.config
    conditions = [condition_params(cond) for cond in families.perturbations]
    return {"study": "robustness", "model": model_name,
            "model_config": {"image_size": c.image_size, "patch_size": c.patch_size,
                             "depth": c.depth, "num_heads": c.num_heads,
                             "embed_dim": c.embed_dim, "num_classes": c.num_classes,
                             "pool": c.pool},
            "images": {"source": images.source, "count": len(images),
                       "classes": list(images.class_names),
                       "per_class": np.bincount(images.labels.numpy()).tolist()},
            "settings": s.to_dict(), "conditions": conditions,
            "mask_invariance": {"k_masks": s.masks, "ratio": s.mask_ratio} if s.masks else None,
            "notes": {"occlusion_p0": "p = 0 % is the clean pass (cosine 1, delta C 0)",
                      "embedding": "mean visible patch token of the last block, before the "
                                   "final / head norm (Eq. 1)",
                      "head_features": "C counts averaged over classes; C_pert is the paper's "
                                       "|common_clean ∩ common_pert|"}}
