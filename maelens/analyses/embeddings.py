"""Per-layer image embeddings: the CLS token and the mean patch token (seed paper, III-A2).

Layer l is the token sequence after block l, before the final norm (l = 0: embeddings); the
mean patch embedding averages the visible patch tokens and excludes CLS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from maelens.engine.capture import Batch
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps

KINDS = ("cls", "mean_patch")


class LayerEmbeddings:
    """Collect (len(layers), N, D) float32 CLS and/or mean-patch embeddings of N images.

    `layers`: None for all (0..L), an int n for the last n, or a list (as `Taps`).
    `result()` -> {"layers": (n_layers,) int64, "cls": (n_layers, N, D), "mean_patch": ...,
    "labels": (N,) int64 when the batches carry labels}.
    """

    def __init__(self, num_images: int, layers: int | Sequence[int] | None = None,
                 kinds: Sequence[str] = KINDS) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise MaelensError(f"`kinds` must be a non-empty subset of {KINDS}, got {kinds}.")
        self.num_images = num_images
        self.kinds = tuple(kinds)
        self.taps = Taps(hidden=layers, final=False)
        self.arrays_: dict[str, np.ndarray] = {}

    def update(self, capture: Capture, batch: Batch) -> None:
        layers = sorted(capture.hidden)
        rows = batch.index.numpy()
        width = capture.hidden[layers[0]].shape[-1]
        for kind in self.kinds:
            if kind not in self.arrays_:
                self.arrays_[kind] = np.zeros((len(layers), self.num_images, width), np.float32)
            for i, layer in enumerate(layers):
                tokens = capture.hidden[layer]
                value = tokens[:, 0] if kind == "cls" else capture.mean_patch(layer)
                self.arrays_[kind][i, rows] = value.numpy()
        self.arrays_["layers"] = np.asarray(layers, dtype=np.int64)
        if batch.labels is not None:
            self.arrays_.setdefault("labels", np.zeros(self.num_images, np.int64))[rows] = (
                batch.labels.numpy())

    def result(self) -> dict[str, np.ndarray]:
        return dict(self.arrays_)


class Predictions:
    """Top-1 predictions and labels of a classifier: {"predicted": (N,), "labels": (N,)}."""

    def __init__(self, num_images: int) -> None:
        self.taps = Taps(final=False, logits=True)
        self.predicted_ = np.full(num_images, -1, np.int64)
        self.labels_ = np.full(num_images, -1, np.int64)

    def update(self, capture: Capture, batch: Batch) -> None:
        rows = batch.index.numpy()
        self.predicted_[rows] = capture.logits.argmax(-1).numpy()
        if batch.labels is not None:
            self.labels_[rows] = batch.labels.numpy()

    def result(self) -> dict[str, np.ndarray]:
        return {"predicted": self.predicted_.copy(), "labels": self.labels_.copy()}
