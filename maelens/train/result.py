"""The end of a run: the final checkpoint with its metadata, and `TrainResult`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from maelens.checkpoints.native import save_checkpoint
from maelens.model.vit import VisionTransformer
from maelens.train._checks import SAVE_DTYPES
from maelens.train.loop import LoopOutcome, LoopSpec
from maelens.train.state import library_versions


@dataclass(frozen=True)
class TrainResult:
    """What a run produced.

    checkpoint: folder with model.safetensors + maelens.json (loadable by `load_model`);
    steps / total_steps: optimizer steps done / planned; complete: steps == total_steps;
    final_loss: mean training loss of the last epoch; elapsed_s: training wall time in seconds
    summed over sessions (evaluation at epoch ends included); images_per_s: training images
    per second over the run; history: one record per epoch
    (epoch, step, loss, lr, and held-out metrics); metrics: final held-out figures
    (test_accuracy for classifiers; knn_accuracy and linear_probe_accuracy for MAE
    pre-training), fractions in [0, 1].
    """

    kind: str
    checkpoint: Path
    steps: int
    total_steps: int
    complete: bool
    final_loss: float
    elapsed_s: float
    history: list[dict[str, Any]]
    metrics: dict[str, float]
    images_per_s: float


def run_meta(spec: LoopSpec, outcome: LoopOutcome, metrics: dict[str, float],
             extra: dict[str, Any]) -> dict[str, Any]:
    """The metadata written next to the weights: what was trained, on what, how, and how well."""
    state, args = outcome.state, spec.args
    return {
        "kind": spec.kind, "args": args.to_dict(), "data": spec.data.description,
        "seed": args.seed, "steps": state.step, "total_steps": outcome.total_steps,
        "complete": outcome.complete, "final_loss": outcome.final_loss,
        "metrics": metrics, "wall_time_s": round(state.elapsed_s, 3),
        "images_per_s": round(_images_per_s(outcome, args.batch_size), 2),
        "device": str(spec.device), "threads": torch.get_num_threads(),
        "versions": library_versions(), "history": state.history, **extra,
    }


def write_result(spec: LoopSpec, outcome: LoopOutcome, model: VisionTransformer,
                 metrics: dict[str, float], extra: dict[str, Any] | None = None) -> TrainResult:
    """Save `model` with the run's metadata into `out_dir`; return the `TrainResult`."""
    meta = run_meta(spec, outcome, metrics, extra or {})
    dtype = SAVE_DTYPES[spec.args.save_dtype]
    dtype = None if dtype == torch.float32 else dtype
    path = save_checkpoint(model, spec.args.out_dir, meta=meta, dtype=dtype)
    if spec.args.export_to is not None:
        exported = Path(spec.args.export_to)
        exported.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(model, exported, meta=meta, dtype=dtype)
    state = outcome.state
    return TrainResult(
        kind=spec.kind, checkpoint=Path(path), steps=state.step, total_steps=outcome.total_steps,
        complete=outcome.complete, final_loss=outcome.final_loss, elapsed_s=state.elapsed_s,
        history=list(state.history), metrics=dict(metrics),
        images_per_s=_images_per_s(outcome, spec.args.batch_size),
    )


def _images_per_s(outcome: LoopOutcome, batch_size: int) -> float:
    state = outcome.state
    return state.step * batch_size / state.elapsed_s if state.elapsed_s else math.nan
