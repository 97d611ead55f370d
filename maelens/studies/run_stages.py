"""The stages of `maelens run`: which analyses each (model, images, reference) pass feeds.

A stage is one pass plan: every batch of one image set goes once through the reference pass of
one model and once per condition, and feeds every analysis that needs it. The run has, per
model role (see `maelens.studies.experiment.Models`):
    layerwise    mae, vit      masked reference: embeddings, patch tokens, class subspaces,
                               attention distance (Fig. 1-4, separability, CKA)
    attention    mae, vit      clean reference, same images and the second image set
                               (Fig. 3 without masking, and on natural photos)
    robustness   finetuned, vit  clean reference + every perturbation (Tables I-III, Fig. 5-8)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from maelens.analyses.attention_distance import AttentionDistance
from maelens.analyses.embeddings import LayerEmbeddings
from maelens.analyses.patch_tokens import PatchTokenSample
from maelens.analyses.subspaces import ClassSubspaces
from maelens.engine.conditions import CLEAN, Condition, RandomMask
from maelens.engine.plan import PassPlan
from maelens.model.vit import VisionTransformer
from maelens.studies.cache import Job, cache_key, code_version, describe
from maelens.studies.experiment import Experiment
from maelens.studies.inputs import ImageSet

PATCH_TOKENS_PER_IMAGE = 16


@dataclass
class Stage:
    """One pass plan's worth of work, and where its results go in the ResultSet."""

    name: str
    model_role: str
    model: VisionTransformer
    images: ImageSet
    reference: Condition
    jobs: list[Job] = field(default_factory=list)
    # (analysis, condition name, level label) of every result kept
    outputs: list[tuple[object, str, str | None]] = field(default_factory=list)
    extra: tuple | None = None  # robustness: (settings, condition families)

    def plan(self, device: str, dtype: torch.dtype) -> PassPlan:
        return PassPlan(self.model, reference=self.reference, device=device, dtype=dtype)


def stage_key_parts(stage: Stage, checkpoint: str, exp: Experiment) -> dict:
    """What every job of `stage` depends on besides its own settings."""
    return {"checkpoint": checkpoint, "images": stage.images.source,
            "names": stage.images.names, "reference": describe(stage.reference),
            "seed": exp.run.seed, "code": code_version(), "dtype": exp.run.dtype}


def add_job(stage: Stage, analysis: object, condition: Condition | None, output: str,
            parts: dict) -> None:
    """Add `analysis` fed by `condition` (None: reference) and keep its result as `output`."""
    key = cache_key(**parts, analysis=analysis,
                    condition=None if condition is None else describe(condition))
    stage.jobs.append(Job(analysis, condition, key))  # type: ignore[arg-type]
    stage.outputs.append((analysis, output, None))


def reference_mask(ratio: float, seed: int) -> Condition:
    if not ratio:
        return CLEAN
    return Condition(f"mask{ratio:g}", keep=RandomMask(ratio, seed), group="mask",
                     level=f"{ratio:g}")


def layerwise_stage(role: str, model: VisionTransformer, images: ImageSet, exp: Experiment,
                    checkpoint: str, layers: list[int] | None) -> Stage:
    lw, seed = exp.layerwise, exp.run.seed
    ref = reference_mask(lw.mask_ratio, seed)
    stage = Stage(f"layerwise/{role}", role, model, images, ref)
    parts = stage_key_parts(stage, checkpoint, exp)
    attn_layers = None if layers is None else [k for k in layers if k >= 1]
    for analysis in (LayerEmbeddings(layers=layers),
                     PatchTokenSample(layers, PATCH_TOKENS_PER_IMAGE, seed),
                     ClassSubspaces(layers, k=lw.subspaces.k, centred=lw.subspaces.centred),
                     AttentionDistance(attn_layers, cls_policy=lw.attention.cls_policy)):
        add_job(stage, analysis, None, ref.name, parts)
    return stage


def attention_stage(role: str, model: VisionTransformer, images: ImageSet, label: str,
                    exp: Experiment, checkpoint: str) -> Stage:
    """Attention distance without masking on `images` (condition column: `label`)."""
    stage = Stage(f"attention/{role}/{label}", role, model, images, CLEAN)
    add_job(stage, AttentionDistance(cls_policy=exp.layerwise.attention.cls_policy), None,
            label, stage_key_parts(stage, checkpoint, exp))
    return stage


def robustness_stage(role: str, model: VisionTransformer, images: ImageSet, exp: Experiment,
                     checkpoint: str) -> tuple[Stage, object, object]:
    """The robustness study's plan as a stage; returns (stage, settings, families)."""
    from maelens.studies.robustness import build_conditions, build_plan

    settings = robustness_settings(exp, images, model)
    families = build_conditions(model, images, settings)
    proto, feeds = build_plan(model, families, settings)
    stage = Stage(f"robustness/{role}", role, model, images, CLEAN)
    parts = stage_key_parts(stage, checkpoint, exp)
    fed_by = _conditions_of(proto)
    for analysis, output, level in feeds:
        conditions = fed_by[id(analysis)]
        for condition in conditions:
            key = cache_key(**parts, analysis=analysis, conditions=[
                describe(c) for c in conditions])
            stage.jobs.append(Job(analysis, condition, key))  # type: ignore[arg-type]
        stage.outputs.append((analysis, output, level))
    return stage, settings, families


def _conditions_of(plan: PassPlan) -> dict[int, list[Condition | None]]:
    out: dict[int, list[Condition | None]] = {}
    for analysis in plan.reference.single:
        out.setdefault(id(analysis), []).append(None)
    for stage in plan.stages.values():
        for analysis in stage.single + stage.paired:
            out.setdefault(id(analysis), []).append(stage.condition)
    return out


def robustness_settings(exp: Experiment, images: ImageSet, model: VisionTransformer) -> object:
    from maelens.perturb.blur import PAPER_BLUR_LEVELS
    from maelens.perturb.corruptions import CORRUPTIONS
    from maelens.studies.robustness import RobustnessSettings, logit_classes

    r = exp.robustness
    blur = PAPER_BLUR_LEVELS if r.blur == "paper" else tuple(tuple(level) for level in r.blur)
    corruptions = CORRUPTIONS if r.corruptions == "all" else tuple(r.corruptions)
    return RobustnessSettings(
        blur_levels=blur, percents=tuple(r.occlusion), fill=r.occlusion_fill,
        corruptions=corruptions, severities=tuple(r.severities),
        imagenet_c=exp.data.imagenet_c, masks=r.masks, mask_ratio=r.mask_ratio,
        top_k=r.top_k, threshold=r.threshold, bootstrap=r.bootstrap, seed=exp.run.seed,
        batch_size=exp.run.batch_size, device=exp.run.device, dtype=exp.run.dtype,
        classes=logit_classes(images, model.config.num_classes))
