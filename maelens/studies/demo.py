"""The embedded default run: the shipped demo models on the MNIST demo split, end to end.

checkpoints -> one capture pass per model and split -> per-layer embeddings and predictions ->
k-NN / linear-probe accuracies by layer -> summary.json. Later analyses (subspaces, attention
distance, robustness) plug into the same passes as further streaming analyses.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maelens.analyses.embeddings import LayerEmbeddings, Predictions
from maelens.checkpoints.demo_models import DEMO_MODELS, demo_model_path
from maelens.checkpoints.load import load_model
from maelens.data import mnist_tensors
from maelens.engine.capture import iterate_batches, run_capture
from maelens.results.io import write_json
from maelens.train.evaluate import knn_accuracy, linear_probe_accuracy

log = logging.getLogger(__name__)

Progress = Callable[[int], Any] | None


def embed_split(model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor,
                classify: bool, batch_size: int, progress: Progress) -> dict[str, np.ndarray]:
    """One pass: per-layer CLS / mean-patch embeddings and, for classifiers, predictions."""
    analyses: list[Any] = [LayerEmbeddings(len(pixels))]
    if classify:
        analyses.append(Predictions(len(pixels)))
    results = run_capture(model, iterate_batches(pixels, labels, batch_size), analyses,
                          progress=progress)
    out = dict(results[0].arrays)
    if classify:
        out["predicted"] = results[1].arrays["predicted"]
    return out


def layer_probes(train: dict[str, np.ndarray], test: dict[str, np.ndarray]
                 ) -> list[dict[str, float]]:
    """k-NN (cosine, k = 20, weighted) accuracy per layer for CLS and mean-patch embeddings,
    and a logistic linear probe on the mean-patch embedding of the last layer."""
    rows = []
    for i, layer in enumerate(train["layers"].tolist()):
        row = {"layer": layer}
        for kind in ("cls", "mean_patch"):
            row[f"knn_{kind}"] = knn_accuracy(
                torch.from_numpy(train[kind][i]), torch.from_numpy(train["labels"]),
                torch.from_numpy(test[kind][i]), torch.from_numpy(test["labels"]))
        rows.append(row)
    rows[-1]["linear_probe_mean_patch"] = linear_probe_accuracy(
        torch.from_numpy(train["mean_patch"][-1]), torch.from_numpy(train["labels"]),
        torch.from_numpy(test["mean_patch"][-1]), torch.from_numpy(test["labels"]))
    return rows


def run_demo(out_dir: str | Path, batch_size: int = 250, progress: Progress = None
             ) -> dict[str, Any]:
    """Run the demo and write `out_dir/summary.json`; returns the summary."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_x, train_y = mnist_tensors("train")
    test_x, test_y = mnist_tensors("test")
    models: dict[str, Any] = {}
    for name in DEMO_MODELS:
        model = load_model(demo_model_path(name))
        classify = model.head is not None
        train = embed_split(model, train_x, train_y, False, batch_size, progress)
        test = embed_split(model, test_x, test_y, classify, batch_size, progress)
        entry: dict[str, Any] = {"checkpoint": str(demo_model_path(name)),
                                 "kind": model.load_info.get("kind"),
                                 "layers": layer_probes(train, test)}
        if classify:
            entry["test_accuracy"] = float((test["predicted"] == test_y.numpy()).mean())
        models[name] = entry
    summary = {"data": "MNIST demo split (4000 train / 1000 test, 32x32 RGB)",
               "layer_convention": "layer l = tokens after block l, before the final norm; "
                                   "0 = embeddings; mean patch excludes CLS",
               "knn": "cosine, k = 20, similarity-weighted vote (temperature 0.07)",
               "models": models, "elapsed_s": time.perf_counter() - start,
               "torch": torch.__version__, "python": platform.python_version()}
    write_json(out_dir / "summary.json", summary)
    return summary
