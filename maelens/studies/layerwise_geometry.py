"""Layer-wise geometry studies (seed paper §IV-A): class subspaces with principal angles
(Fig. 4) and mean attention distance per head (Fig. 3).

    images = load_image_set("mnist:test", 32, classes=10, per_class=50)
    results = subspaces_study(load_model("demo:mae"), images, "out/subspaces",
                              settings=PassSettings(mask_ratio=0.75))

Each study runs its analyses through one `PassPlan` per model (reference pass: clean, or a
seeded `RandomMask(mask_ratio, seed)`), writes results.json / results.csv / arrays.npz with
`write_results`, and draws the figures from the files it just wrote (never from the model).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from maelens._validate import check_positive_int, check_ratio, resolve_layers
from maelens.analyses.attention_distance import AttentionDistance
from maelens.analyses.base import Analysis, AnalysisResult
from maelens.analyses.subspaces import DEFAULT_K, KINDS, ClassSubspaces
from maelens.engine.conditions import CLEAN, Condition, RandomMask
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.masking import num_visible
from maelens.model.vit import VisionTransformer
from maelens.report.fig_layerwise_geometry import render_layerwise_geometry
from maelens.results.store import ResultSet, read_results, write_results
from maelens.studies.inputs import ImageSet

log = logging.getLogger(__name__)
Progress = Callable[[int], Any] | None
LayerArg = int | Sequence[int] | None


@dataclass(frozen=True)
class PassSettings:
    """How the images go through a model: the reference pass's random mask ratio (0: clean) and
    seed (image i's mask from (seed, "mask", i)), compute device and dtype, images per batch."""

    mask_ratio: float = 0.0
    seed: int = 0
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_ratio("mask_ratio", self.mask_ratio)
        check_positive_int("batch_size", self.batch_size)

    @property
    def condition(self) -> Condition:
        """The reference condition: clean, or MAE random masking at `mask_ratio`."""
        if not self.mask_ratio:
            return CLEAN
        return Condition(f"mask{self.mask_ratio:g}", keep=RandomMask(self.mask_ratio, self.seed),
                         group="mask", level=f"{self.mask_ratio:g}")

    def to_dict(self) -> dict[str, Any]:
        return {"mask_ratio": self.mask_ratio, "seed": self.seed, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "batch_size": self.batch_size}


def run_analyses(model: VisionTransformer, images: ImageSet, analyses: Sequence[Analysis],
                 settings: PassSettings, progress: Progress = None) -> list[AnalysisResult]:
    """Feed every image through `model` once (reference pass of `settings`), every analysis
    with its own taps; returns their results in order."""
    if len(images) == 0:
        raise MaelensError(f"the image set {images.source!r} is empty; give images.")
    num_visible(model.config.num_patches, settings.mask_ratio)  # fails before any pass
    plan = PassPlan(model, reference=settings.condition, device=settings.device,
                    dtype=settings.dtype)
    for analysis in analyses:
        plan.add(analysis)
    return plan.run(images.batches(settings.batch_size), progress)


def model_layers(model: VisionTransformer, layers: LayerArg, first: int) -> list[int]:
    """`layers` resolved against the model's depth (first = 0 for hidden states, 1 for
    attention), naming the option when out of range."""
    return list(resolve_layers("layers", layers, first, model.depth))


def subspace_results(model: VisionTransformer, images: ImageSet, *, name: str = "model",
                     k: int = DEFAULT_K, kinds: Sequence[str] = KINDS, centred: bool = False,
                     layers: LayerArg = None, settings: PassSettings | None = None,
                     progress: Progress = None) -> ResultSet:
    """ClassSubspaces of `model` on `images` (labelled, >= 2 classes) as a ResultSet."""
    settings = settings or PassSettings()
    analysis = ClassSubspaces(model_layers(model, layers, 0), k=k, kinds=kinds, centred=centred)
    (result,) = run_analyses(model, images, [analysis], settings, progress)
    out = ResultSet(meta=_meta(images, settings, {name: model}))
    out.add(result, model=name, condition=settings.condition.name)
    return out


def attention_results(runs: Sequence[tuple[str, VisionTransformer, ImageSet]], *,
                      cls_policy: str = "exclude", layers: LayerArg = None,
                      settings: PassSettings | None = None, progress: Progress = None
                      ) -> ResultSet:
    """AttentionDistance of each (name, model, images) run (one or two models, each on images
    at its own input size) as one ResultSet."""
    settings = settings or PassSettings()
    if not runs:
        raise MaelensError("`runs` is empty: give at least one (name, model, images).")
    names = [name for name, _, _ in runs]
    if len(set(names)) != len(names):
        raise MaelensError(f"model names must differ, got {names}.")
    out = ResultSet(meta=_meta(runs[0][2], settings, {n: m for n, m, _ in runs}))
    for name, model, images in runs:
        analysis = AttentionDistance(model_layers(model, layers, 1), cls_policy=cls_policy)
        (result,) = run_analyses(model, images, [analysis], settings, progress)
        out.add(result, model=name, condition=settings.condition.name)
    return out


def _meta(images: ImageSet, settings: PassSettings, models: dict[str, VisionTransformer]
          ) -> dict[str, Any]:
    return {"study": "layerwise_geometry", "images": images.source, "num_images": len(images),
            "class_names": list(images.class_names), **settings.to_dict(),
            "models": {n: {"config": m.config.to_dict(),
                           "source": str(getattr(m, "load_info", {}).get("source", ""))}
                       for n, m in models.items()},
            "layer_convention": "hidden[l] after block l, before the final norm; 0 = embeddings;"
                                " attention layer l = block l"}


def finish(results: ResultSet, out_dir: str | os.PathLike) -> ResultSet:
    """Write `results` into `out_dir` and draw its figures from the files written."""
    write_results(out_dir, results)
    render_layerwise_geometry(read_results(out_dir), out_dir)
    return results


def subspaces_study(model: VisionTransformer, images: ImageSet, out_dir: str | os.PathLike,
                    **options: Any) -> ResultSet:
    """`subspace_results` (same keyword options), written to `out_dir` with Fig. 4 and the
    spectra figure; returns the ResultSet."""
    return finish(subspace_results(model, images, **options), out_dir)


def attention_study(runs: Sequence[tuple[str, VisionTransformer, ImageSet]],
                    out_dir: str | os.PathLike, **options: Any) -> ResultSet:
    """`attention_results` (same keyword options), written to `out_dir` with Fig. 3."""
    return finish(attention_results(runs, **options), out_dir)


def theta1_medians(results: ResultSet, kind: str = "patch") -> dict[int, float]:
    """{layer: median θ1 in degrees} of the first subspaces run (for summaries)."""
    rows = [r for r in results.rows if r["analysis"] == "subspaces"
            and r["metric"] == "theta1_deg_median" and (r["extra"] or {}).get("kind") == kind]
    return {int(r["layer"]): r["value"] for r in rows}


def head_mean_distances(results: ResultSet, model: str) -> dict[int, float]:
    """{layer: mean over heads of the attention distance in px} of `model`."""
    rows = results.select(analysis="attention_distance", model=model,
                          metric="distance_px_head_mean")
    return {int(r["layer"]): r["value"] for r in rows}

