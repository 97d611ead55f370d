"""Layer-wise embedding studies (seed paper III-A2, IV-A1; Fig. 1 and Fig. 2).

`run_tsne_study`: one pass of a model over an image set (CLS, mean-patch and sampled patch
tokens per layer) -> t-SNE per layer -> results + Fig. 1a/1b/2.
`run_separability_study`: one pass per model over the evaluation images (and over the train
images when given) -> k-NN / probe / silhouette / Fisher per layer and kind; linear CKA within
each model and, for two models, between them (streamed biased and debiased) -> results +
figures. With two models every batch goes through model A, then model B, so the cross-model
CKA sums see the same images in the same order (and the same masks).

Figures are drawn from the results files just written (read back), never from the models.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maelens.analyses.base import AnalysisResult
from maelens.analyses.cka import StreamedCKA, StreamedCrossCKA, cka_matrix, cka_result
from maelens.analyses.embeddings import LayerEmbeddings
from maelens.analyses.patch_tokens import PatchTokenSample
from maelens.analyses.separability import (
    SeparabilitySettings,
    Split,
    check_labels,
    layer_scores,
    split_by_image,
)
from maelens.analyses.tsne import TSNESettings, tsne_result
from maelens.engine.conditions import CLEAN, Condition, RandomMask
from maelens.engine.plan import PassPlan
from maelens.model.masking import num_visible
from maelens.model.vit import VisionTransformer
from maelens.results.store import ResultSet, read_results, write_results
from maelens.studies.inputs import ImageSet

log = logging.getLogger(__name__)

Progress = Callable[[int], Any] | None
LAYER_CONVENTION = ("layer l = tokens after block l, before the final norm; 0 = embeddings; "
                    "mean patch and patch tokens exclude CLS and masked patches")


@dataclass(frozen=True)
class PassSettings:
    """How the models see the images. `per_image`: patch tokens sampled per image."""

    mask_ratio: float = 0.0
    seed: int = 0
    layers: int | list[int] | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    batch_size: int = 64
    per_image: int = 16

    def reference(self) -> Condition:
        """No masking (the plan's clean reference) or a seeded random mask at `mask_ratio`."""
        if not self.mask_ratio:
            return CLEAN
        level = f"{self.mask_ratio:g}"
        return Condition(f"mask{level}", keep=RandomMask(self.mask_ratio, self.seed),
                         group="mask", level=level)


@dataclass
class _Pass:
    """One model's analyses over one image set."""

    plan: PassPlan
    embeddings: LayerEmbeddings
    patches: PatchTokenSample
    extra: list[Any] = field(default_factory=list)


def _new_pass(model: VisionTransformer, settings: PassSettings, patch_total: int | None
              ) -> _Pass:
    num_visible(model.config.num_patches, settings.mask_ratio)  # a bad ratio fails first
    plan = PassPlan(model, reference=settings.reference(), device=settings.device,
                    dtype=settings.dtype)
    embeddings = LayerEmbeddings(layers=settings.layers)
    patches = PatchTokenSample(layers=settings.layers, per_image=settings.per_image,
                               seed=settings.seed, total=patch_total)
    plan.add(embeddings)
    plan.add(patches)
    return _Pass(plan, embeddings, patches)


def feed_together(passes: Sequence[_Pass], images: ImageSet, batch_size: int,
                  progress: Progress = None) -> None:
    """Every batch through every pass in turn (model A, then B: what cross-model CKA needs)."""
    for batch in images.batches(batch_size):
        for one in passes:
            one.plan.feed([batch])
            if progress is not None:
                progress(len(batch.index))


def _study_meta(images: ImageSet, settings: PassSettings, models: Sequence[str]) -> dict:
    return {"study": "layerwise_embeddings", "models": list(models), "images": images.source,
            "num_images": len(images), "class_names": list(images.class_names),
            "mask_ratio": settings.mask_ratio, "seed": settings.seed,
            "dtype": str(settings.dtype).removeprefix("torch."),
            "per_image": settings.per_image, "layer_convention": LAYER_CONVENTION}


def _finish(results: ResultSet, out_dir: str | os.PathLike | None) -> ResultSet:
    """Write the results and draw every figure from the files just written."""
    if out_dir is None:
        return results
    from maelens.report.fig_layerwise_embeddings import draw_all

    write_results(out_dir, results)
    figures = draw_all(read_results(out_dir), out_dir)
    results.meta["figures"] = [str(p) for p in figures]
    return results


def run_tsne_study(model: VisionTransformer, images: ImageSet, settings: PassSettings,
                   tsne: TSNESettings | None = None, *, model_name: str = "model",
                   patch_total: int | None = 1500, out_dir: str | os.PathLike | None = None,
                   progress: Progress = None, stage: Callable[[str], None] | None = None
                   ) -> ResultSet:
    """t-SNE per layer of CLS, mean-patch and `patch_total` patch tokens (stratified by class).

    Writes results (arrays "model/tsne/condition/{cls,mean_patch,patch}" (L, N, 2) ...) and
    fig1a_tsne_cls, fig1b_tsne_mean_patch, fig2_tsne_patch_tokens into `out_dir`.
    """
    one = _new_pass(model, settings, None)
    feed_together([one], images, settings.batch_size, progress)
    patches = one.patches.result()
    result = tsne_result(one.embeddings.result().arrays, patches.arrays,
                         tsne or TSNESettings(seed=settings.seed), patch_total=patch_total,
                         progress=stage)
    result.meta.update(patches.meta)
    results = ResultSet(meta=_study_meta(images, settings, [model_name]))
    results.add(result, model=model_name, condition=settings.reference().name)
    return _finish(results, out_dir)


@dataclass(frozen=True)
class SeparabilityPlan:
    """What `run_separability_study` computes beyond the pass: the separability settings,
    the cap on patch-token rows per side, the CKA feature kind, whether to keep the
    evaluation embeddings (L, N, D) in the results (the debiased CKA's inputs)."""

    scores: SeparabilitySettings = SeparabilitySettings()
    patch_total: int | None = 4000
    cka_kind: str = "mean_patch"
    keep_embeddings: bool = True


def run_separability_study(models: Sequence[tuple[str, VisionTransformer]], images: ImageSet,
                           settings: PassSettings, plan: SeparabilityPlan = SeparabilityPlan(),
                           *, train_images: ImageSet | None = None,
                           out_dir: str | os.PathLike | None = None, progress: Progress = None
                           ) -> ResultSet:
    """Separability per layer and kind for one or two models, and linear CKA.

    `images` are the evaluation images; with `train_images` the probe and k-NN fit on those,
    else on a seeded stratified split of `images` by image (`plan.scores.test_fraction`).
    """
    check_labels(images.labels.numpy(), "images")
    names = [name for name, _ in models]
    passes = [_new_pass(model, settings, plan.patch_total) for _, model in models]
    within = [StreamedCKA(settings.layers, kind=plan.cka_kind) for _ in models]
    for one, cka in zip(passes, within, strict=True):
        one.plan.add(cka)
    cross = None
    if len(models) == 2:
        cross = StreamedCrossCKA(settings.layers, settings.layers, kind=plan.cka_kind)
        passes[0].plan.add(cross.side_a)
        passes[1].plan.add(cross.side_b)
    feed_together(passes, images, settings.batch_size, progress)
    condition = settings.reference().name
    results = ResultSet(meta=_study_meta(images, settings, names))
    results.meta["separability"] = {**plan.scores.__dict__, "patch_total": plan.patch_total,
                                    "train_images": train_images.source if train_images
                                    else None}
    evaluated = [(one.embeddings.result().arrays, one.patches.result().arrays) for one in passes]
    for (name, model), one, cka, (emb, patches) in zip(models, passes, within, evaluated,
                                                       strict=True):
        train = _train_arrays(model, train_images, settings, plan, progress)
        results.add(separability_scores(emb, patches, train, plan.scores), model=name,
                    condition=condition)
        results.add(cka.result(), model=name, condition=condition)
        results.add(debiased_cka(emb, None, plan.cka_kind, "cka_debiased"), model=name,
                    condition=condition)
        if plan.keep_embeddings:
            results.add(one.embeddings.result(), model=name, condition=condition)
    if cross is not None:
        pair = f"{names[0]} vs {names[1]}"
        results.add(cross.result(), model=pair, condition=condition)
        results.add(debiased_cka(evaluated[0][0], evaluated[1][0], plan.cka_kind,
                              "cka_between_debiased"), model=pair, condition=condition)
    return _finish(results, out_dir)


def _train_arrays(model: VisionTransformer, images: ImageSet | None, settings: PassSettings,
                  plan: SeparabilityPlan, progress: Progress) -> tuple[dict, dict] | None:
    """(embedding arrays, patch-token arrays) of the train images, or None without them."""
    if images is None:
        return None
    one = _new_pass(model, settings, plan.patch_total)
    feed_together([one], images, settings.batch_size, progress)
    return one.embeddings.result().arrays, one.patches.result().arrays


def separability_scores(emb: dict[str, np.ndarray], patches: dict[str, np.ndarray],
            train: tuple[dict, dict] | None, settings: SeparabilitySettings) -> AnalysisResult:
    """Separability rows of CLS, mean patch and patch tokens."""
    rows = []
    layers = emb["layers"].tolist()
    sources = {"cls": (emb, "cls", "labels", "index"),
               "mean_patch": (emb, "mean_patch", "labels", "index"),
               "patch": (patches, "tokens", "labels", "image")}
    for kind, (arrays, feature, label, image) in sources.items():
        if train is None:
            split = split_by_image(arrays[feature], arrays[label], arrays[image], settings)
        else:
            other = train[0] if arrays is emb else train[1]
            split = Split(other[feature], other[label], arrays[feature], arrays[label])
        rows += layer_scores(split, layers, kind, settings)
    return AnalysisResult("separability", rows=rows)


def debiased_cka(a: dict[str, np.ndarray], b: dict[str, np.ndarray] | None, kind: str,
              name: str) -> AnalysisResult:
    """Debiased linear CKA from per-image (L, N, D) embedding arrays (keyed by image index)."""
    kind = kind if kind in ("cls", "mean_patch") else "mean_patch"  # tokens: no per-image rows
    other = a if b is None else b
    matrix = cka_matrix(a[kind], None if b is None else b[kind], debiased=True,
                        index_a=a["index"], index_b=other["index"])
    return cka_result(name, matrix, a["layers"].tolist(), other["layers"].tolist(), kind,
                      "debiased (unbiased HSIC), from per-image arrays")


# The names `maelens.studies.run_post` imports (kept until it uses the public ones above).
_scores, _debiased = separability_scores, debiased_cka


def load_study_images(source: str | Path, model: VisionTransformer, classes: int | None,
                      per_class: int | None, seed: int) -> ImageSet:
    """`load_image_set` at the model's input size."""
    from maelens.studies.inputs import load_image_set

    return load_image_set(source, model.config.image_size, classes=classes,
                          per_class=per_class, seed=seed)
