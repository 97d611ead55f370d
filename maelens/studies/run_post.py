"""From the stages' analyses to one ResultSet: the analyses' own results plus what is computed
from them after the passes (t-SNE, separability, CKA, robustness summaries) and the linear-MAE
theory's prediction for the same images (seed 002)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from maelens.analyses.base import AnalysisResult, Row
from maelens.analyses.embeddings import LayerEmbeddings
from maelens.analyses.patch_tokens import PatchTokenSample
from maelens.analyses.separability import SeparabilitySettings, stratified_subsample
from maelens.analyses.tsne import TSNESettings, tsne_result
from maelens.results.store import ResultSet
from maelens.studies.experiment import Experiment
from maelens.studies.layerwise_embeddings import debiased_cka, separability_scores
from maelens.studies.run_stages import Stage

log = logging.getLogger(__name__)
THEORY_SIDE = 32  # pixels: the covariance of 32 x 32 grey images is 1024 x 1024
SEPARABILITY_PATCH_TOKENS = 2000


def postprocess(results: ResultSet, stages: list[Stage], exp: Experiment, inputs: Any) -> None:
    """Fill `results` from the finished stages (see the module docstring)."""
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    for stage in stages:
        if stage.name.startswith("robustness/"):
            _robustness(results, stage)
            continue
        kept = _add_outputs(results, stage)
        if stage.name.startswith("layerwise/"):
            embeddings[stage.model_role] = _layerwise_extras(results, stage, kept, exp)
    if "mae" in embeddings and "vit" in embeddings:
        ref = stages[0].reference.name
        results.add(debiased_cka(embeddings["mae"], embeddings["vit"], "mean_patch",
                                 "cka_between_debiased"), model="mae vs vit", condition=ref)
    if exp.theory.enabled:
        _theory(results, stages, exp, inputs)


def _add_outputs(results: ResultSet, stage: Stage) -> dict[str, Any]:
    """Add each kept analysis's result; per-image arrays of embeddings stay out of the files."""
    kept = {}
    for analysis, condition, level in stage.outputs:
        if isinstance(analysis, (LayerEmbeddings, PatchTokenSample)):
            kept[type(analysis).__name__] = analysis.result()
            continue
        results.add(analysis.result(), model=stage.model_role, condition=condition, level=level)
    return kept


def _layerwise_extras(results: ResultSet, stage: Stage, kept: dict[str, AnalysisResult],
                      exp: Experiment) -> dict[str, np.ndarray]:
    emb = kept["LayerEmbeddings"].arrays
    patches = kept["PatchTokenSample"]
    role, condition = stage.model_role, stage.reference.name
    tsne_cfg = exp.layerwise.tsne
    rows = first_per_class(emb["labels"], tsne_cfg.classes, tsne_cfg.per_class)
    chosen = set(emb["index"][rows].tolist())
    tsne_emb = {k: (v[:, rows] if k in ("cls", "mean_patch") else v[rows] if k in (
        "index", "labels") else v) for k, v in emb.items()}
    in_set = np.isin(patches.arrays["image"], list(chosen))
    tsne_patches = {k: (v[:, in_set] if k == "tokens" else v[in_set] if v.ndim and len(v) == len(
        in_set) else v) for k, v in patches.arrays.items()}
    settings = TSNESettings(seed=exp.run.seed, perplexity=tsne_cfg.perplexity,
                            n_iter=max(1, tsne_cfg.iterations - 250))
    with threadpool_limits(1, user_api="blas"):
        tsne = tsne_result(tsne_emb, tsne_patches, settings, patch_total=tsne_cfg.patch_tokens)
    tsne.meta.update(patches.meta)
    results.add(tsne, model=role, condition=condition)
    # Patch tokens are many (16 per image): a stratified cap keeps the probes and the
    # quadratic silhouette to seconds; CLS and mean patch use every image.
    picked = stratified_subsample(patches.arrays["labels"], SEPARABILITY_PATCH_TOKENS,
                                  exp.run.seed, "separability-patch")
    few = {k: (v[:, picked] if k == "tokens" else v[picked] if v.ndim and len(v) == len(
        patches.arrays["labels"]) else v) for k, v in patches.arrays.items()}
    results.add(separability_scores(emb, few, None, SeparabilitySettings(seed=exp.run.seed)),
                model=role, condition=condition)
    results.add(debiased_cka(emb, None, "mean_patch", "cka_debiased"), model=role,
                condition=condition)
    return emb


def first_per_class(labels: np.ndarray, classes: int | None, per_class: int | None
                    ) -> np.ndarray:
    """Rows of the first `per_class` images of each of the first `classes` labels, in order."""
    rows, seen = [], {}
    for row, label in enumerate(np.asarray(labels).tolist()):
        if classes is not None and label >= classes:
            continue
        if per_class is None or seen.get(label, 0) < per_class:
            rows.append(row)
            seen[label] = seen.get(label, 0) + 1
    return np.asarray(rows, dtype=np.int64)


def _robustness(results: ResultSet, stage: Stage) -> None:
    """The robustness study's results and summaries, its meta kept per model (two models may
    run it: the fine-tuned MAE and the ViT)."""
    from maelens.studies.robustness import add_summaries, study_meta

    settings, families = stage.extra  # type: ignore[misc]
    role = stage.model_role
    own = ResultSet(meta=study_meta(stage.model, role, stage.images, settings, families))
    _add_outputs(own, stage)
    add_summaries(own, stage.model, stage.images, settings, families, role)
    results.rows += own.rows
    results.arrays.update(own.arrays)
    results.meta.setdefault("model_meta", {})[role] = own.meta


def _theory(results: ResultSet, stages: list[Stage], exp: Experiment, inputs: Any) -> None:
    """The linear MAE's predicted spread for the images, at each model's (mask ratio, patch)."""
    from maelens.theory.covariance import empirical_covariance, resize_images
    from maelens.theory.partition import tiles_2d
    from maelens.theory.predict import predict_grid
    from maelens.theory.spatial import correlation_length

    models = {s.model_role: s.model for s in stages}
    if not models:
        return
    model = next(iter(models.values()))
    size, patch = model.config.image_size, model.config.patch_size
    grid = size // patch
    scale = max(1, THEORY_SIDE // grid)   # theory pixels per patch
    side = grid * scale
    images = inputs.main[size]
    pixels = images.take(list(range(min(len(images), 2000))))
    grey = pixels.mean(dim=1, keepdim=True).permute(0, 2, 3, 1).numpy().astype(np.float64)
    grey = resize_images(grey, (side, side))
    raw = empirical_covariance(grey, gray=True)
    length = correlation_length(raw.covariance, tiles_2d(side, side, 1).coords)
    sigma = empirical_covariance(grey, gray=True, ridge=1e-2).covariance
    patches = sorted({p for p in (1, 2, 4, 8) if side % p == 0 and p < side} | {scale})
    ratios = [0.0, 0.25, 0.5, 0.6, 0.75, 0.9]
    # Ties at the rank-k cut (common on digits with constant borders) are logged per grid
    # point by the theory; the spread, an |W*|-weighted distance, does not depend on them.
    quiet = logging.getLogger("maelens.theory")
    level, quiet.level = quiet.level, logging.ERROR
    with threadpool_limits(1, user_api="blas"):
        spread = predict_grid(sigma, (side, side, 1), ratios, patches, min(32, side * side - 1),
                              scheme="fixed")
    quiet.setLevel(level)
    px = size / side  # model pixels per theory pixel
    arrays = {"mask_ratios": np.asarray(ratios), "patch_sizes_px": np.asarray(patches) * px,
              "mean_distance_px": np.asarray(spread.mean_distance_px) * px,
              "out_of_patch_mass": np.asarray(spread.out_of_patch_mass)}
    i, j = patches.index(scale), ratios.index(0.75) if 0.75 in ratios else -1
    rows = [Row("correlation_length_px", float(length.e_folding_px) * px, "px"),
            Row("predicted_spread_px", float(arrays["mean_distance_px"][i, j]), "px",
                extra={"mask_ratio": ratios[j], "patch_px": patch})]
    meta = {"theory_side_px": side, "model_px_per_theory_px": px, "images": images.source,
            "n_images": len(pixels), "rank": spread.rank, "scheme": "fixed", "ridge": 1e-2}
    results.add(AnalysisResult("theory", rows, arrays, meta), model="data", condition="clean")
