"""`maelens run EXPERIMENT.yaml`: checkpoints + images -> every table and figure -> one report.

    exp = load_experiment("experiment.yaml")
    outcome = run_experiment(exp, resume=True)
    outcome.report            # out/report.html

Steps: check the output folder (before anything is loaded); load the models (recording each
checkpoint's SHA-256) and the image sets; run the stages (`maelens.studies.run_stages`), each
pass once, through the stage cache (finished analyses are reused, interrupted stages resume);
turn the analyses into one ResultSet (plus t-SNE, separability, CKA, robustness summaries and
the linear-MAE theory); write results.json / results.csv / arrays.npz; then draw the figures,
tables and report from those files alone (`maelens.report.build`).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from maelens.checkpoints.load import load_model
from maelens.engine.distributed import World, current_world, gather_to_main, shard_range
from maelens.errors import MaelensError
from maelens.model.vit import VisionTransformer
from maelens.results.store import ResultSet, write_results
from maelens.studies.cache import StageCache, code_version, run_stage
from maelens.studies.experiment import Experiment, ModelSpec
from maelens.studies.inputs import ImageSet, load_image_set
from maelens.studies.run_post import postprocess
from maelens.studies.run_stages import (
    Stage,
    attention_stage,
    layerwise_stage,
    robustness_stage,
)

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (stage name, images done, images in stage)


@dataclass
class Outcome:
    out_dir: Path
    results: Path
    report: Path | None
    seconds: dict[str, float] = field(default_factory=dict)
    reused: int = 0


def check_out_dir(path: str | os.PathLike) -> Path:
    """The output folder exists or can be made, is a folder and is writable (checked first)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise MaelensError(f"output folder `run.out` {out} is a file; give a folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".maelens-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise MaelensError(f"output folder `run.out` {out} is not writable ({exc.strerror}).") \
            from None
    return out


def load_models(exp: Experiment) -> dict[str, tuple[VisionTransformer, str]]:
    """{role: (model, checkpoint SHA-256 or a description)} for every role given."""
    out = {}
    for role in ("mae", "finetuned", "vit"):
        spec: ModelSpec | None = getattr(exp.models, role)
        if spec is not None:
            model = load_model(spec.source, **_arch(spec))
            out[role] = (model, checkpoint_id(model, spec.source))
    if not out:
        raise MaelensError("`models` names no model; give at least one of mae, finetuned, vit.")
    return out


def _arch(spec: ModelSpec) -> dict[str, Any]:
    allowed = {"image_size", "num_classes", "num_heads", "decoder_num_heads"}
    unknown = sorted(set(spec.arch) - allowed)
    if unknown:
        raise MaelensError(f"`arch` of {spec.source} has unknown fields {unknown}; "
                           f"allowed: {sorted(allowed)}.")
    return dict(spec.arch)


def checkpoint_id(model: VisionTransformer, source: str) -> str:
    """The checkpoint's SHA-256 (files are hashed once; names resolve to a hashed file)."""
    info = getattr(model, "load_info", {}) or {}
    if info.get("sha256"):
        return str(info["sha256"])
    path = Path(str(info.get("path") or info.get("source") or source))
    if path.is_file():
        from maelens.checkpoints.urls import sha256_file

        return sha256_file(path)
    return f"unhashed:{source}"


@dataclass
class Inputs:
    main: dict[int, ImageSet]    # by image size
    second: dict[int, ImageSet]


def load_inputs(exp: Experiment, sizes: set[int]) -> Inputs:
    d, lw, r = exp.data, exp.layerwise, exp.robustness
    classes = _largest(lw.tsne.classes, lw.subspaces.classes, lw.separability.classes,
                       r.classes)
    per_class = _largest(lw.tsne.per_class, lw.subspaces.per_class,
                         lw.separability.per_class, r.per_class)
    main = {s: load_image_set(d.images, s, classes=classes, per_class=per_class,
                              seed=exp.run.seed, crop_pct=d.crop_pct, workers=exp.run.workers)
            for s in sizes}
    second = {} if not d.second_images else {
        s: load_image_set(d.second_images, s, seed=exp.run.seed, crop_pct=d.crop_pct,
                          workers=exp.run.workers) for s in sizes}
    return Inputs(main, second)


def _largest(*values: int | None) -> int | None:
    return None if any(v is None for v in values) else max(values)  # type: ignore[type-var]


def plan_stages(exp: Experiment, models: dict, inputs: Inputs) -> list[Stage]:
    stages: list[Stage] = []
    lw = exp.layerwise
    for role in ("mae", "vit"):
        if role not in models or not lw.enabled:
            continue
        model, sha = models[role]
        size = model.config.image_size
        images = inputs.main[size].per_class(lw.subspaces.classes, lw.subspaces.per_class)
        stages.append(layerwise_stage(role, model, images, exp, sha, _layers(lw.layers, model)))
        stages.append(attention_stage(role, model, images, "clean", exp, sha))
        if size in inputs.second:
            stages.append(attention_stage(role, model, inputs.second[size], "photos", exp, sha))
    if exp.robustness.enabled:
        for role in ("finetuned", "vit"):
            if role in models and models[role][0].head is not None:
                model, sha = models[role]
                images = inputs.main[model.config.image_size].per_class(
                    exp.robustness.classes, exp.robustness.per_class)
                stage, settings, families = robustness_stage(role, model, images, exp, sha)
                stage.extra = (settings, families)
                stages.append(stage)
    return stages


def _layers(text: str, model: VisionTransformer) -> list[int] | None:
    from maelens._validate import parse_layers  # one parser for "all", "lastN", lists

    value = parse_layers(text)
    if isinstance(value, int):
        return list(range(model.depth + 1 - value, model.depth + 1))
    return value


def run_experiment(exp: Experiment, *, resume: bool = True, cache: bool = True,
                   progress: Progress | None = None) -> Outcome:
    """Run `exp` (see the module docstring); returns where everything was written."""
    world = current_world()
    out = check_out_dir(exp.run.out)
    started = time.perf_counter()
    models = load_models(exp)
    inputs = load_inputs(exp, {m.config.image_size for m, _ in models.values()})
    stages = plan_stages(exp, models, inputs)
    every = float(os.environ.get("MAELENS_CACHE_EVERY_S", "30"))
    store = StageCache(out / "cache" / f"rank{world.rank}" if cache else None, every_s=every)
    if not resume and store.root is not None:
        for partial in store.root.glob("*.partial.pt"):
            partial.unlink()
    seconds = {"load": time.perf_counter() - started}
    for stage in stages:
        seconds[stage.name] = _run_one(stage, exp, store, world, progress)
    if not gather_to_main([out[0] for s in stages for out in s.outputs], world):
        return Outcome(out, out / "results.json", None, seconds, len(store.loaded))
    tick = time.perf_counter()
    results = ResultSet(meta=_meta(exp, models, inputs))
    postprocess(results, stages, exp, inputs)
    seconds["postprocess"] = time.perf_counter() - tick
    results.meta["seconds"] = seconds
    path = write_results(out, results)
    from maelens.report.build import render_all

    tick = time.perf_counter()
    report = render_all(out)
    seconds["report"] = time.perf_counter() - tick
    return Outcome(out, path, report, seconds, len(store.loaded))


def _run_one(stage: Stage, exp: Experiment, store: StageCache, world: World,
             progress: Progress | None) -> float:
    tick = time.perf_counter()
    start, stop = shard_range(len(stage.images), world)
    total = stop - start
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(stage.name, done[0], total)

    plan = stage.plan(exp.run.device, getattr(torch, exp.run.dtype))
    run_stage(plan, stage.jobs,
              lambda first: stage.images.batches(exp.run.batch_size, max(first, start), stop),
              store, advance)
    return time.perf_counter() - tick


def _meta(exp: Experiment, models: dict, inputs: Inputs) -> dict[str, Any]:
    import numpy
    import scipy

    return {"experiment": exp.model_dump(mode="json"), "code_version": code_version(),
            "checkpoints": {role: {"source": getattr(exp.models, role).source, "sha256": sha,
                                   "config": m.config.to_dict(),
                                   "kind": (m.load_info or {}).get("kind")}
                            for role, (m, sha) in models.items()},
            "image_sets": {str(s): {"source": i.source, "count": len(i)}
                           for s, i in inputs.main.items()},
            "images": next(iter(inputs.main.values())).source,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": numpy.__version__, "scipy": scipy.__version__},
            "seed": exp.run.seed, "device": exp.run.device, "dtype": exp.run.dtype,
            # read by the layer-wise figures (t-SNE titles, legends)
            "mask_ratio": exp.layerwise.mask_ratio,
            "class_names": next(iter(inputs.main.values())).class_names}
