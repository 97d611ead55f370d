"""Per-layer image embeddings: the CLS token and the mean patch token (seed paper, III-A2).

Layer l is the token sequence after block l, before the final norm (l = 0: embeddings); the
mean patch embedding z̄ averages the visible patch tokens and excludes CLS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from maelens.analyses.base import Analysis, AnalysisResult, Batch
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps

KINDS = ("cls", "mean_patch")


class LayerEmbeddings(Analysis):
    """CLS and/or mean-patch embeddings of every image at the requested layers.

    `layers`: None for all (0..L), an int n for the last n, or a list (as `Taps`).
    `result().arrays`: "layers" (n_layers,) int64, "cls" / "mean_patch" (n_layers, N, D)
    float32, "index" (N,) and "labels" (N,) int64 when the batches carry labels.
    Embeddings are reduced on the compute device; only (B, D) rows per layer are kept.
    """

    name = "embeddings"

    def __init__(self, num_images: int | None = None, layers: int | Sequence[int] | None = None,
                 kinds: Sequence[str] = KINDS) -> None:
        super().__init__()
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise MaelensError(f"`kinds` must be a non-empty subset of {KINDS}, got {kinds}.")
        self.kinds = tuple(kinds)
        self.taps = Taps(hidden=layers, final=False)
        self.layers_: list[int] = []
        self.add_state("labels", None, "cat")
        self.add_state("index", None, "cat")

    def update(self, capture: Capture, batch: Batch) -> LayerEmbeddings:
        if not self.layers_:
            self.layers_ = sorted(capture.hidden)
            for kind in self.kinds:
                for layer in self.layers_:
                    self.add_state(f"{kind}@{layer}", None, "cat")
        for layer in self.layers_:
            tokens = capture.hidden[layer].float()
            for kind in self.kinds:
                value = tokens[:, 0] if kind == "cls" else tokens[:, 1:].mean(dim=1)
                self.append_rows(f"{kind}@{layer}", batch.index, value)
        self.append_rows("index", batch.index, batch.index)
        if batch.labels is not None:
            self.append_rows("labels", batch.index, batch.labels)
        return self

    def merge(self, other: Analysis) -> LayerEmbeddings:
        if not self.layers_ and isinstance(other, LayerEmbeddings) and other.layers_:
            self.update_layers(other.layers_)
        return super().merge(other)  # type: ignore[return-value]

    def update_layers(self, layers: Sequence[int]) -> None:
        self.layers_ = list(layers)
        for kind in self.kinds:
            for layer in self.layers_:
                self.add_state(f"{kind}@{layer}", None, "cat")

    def load_state_dict(self, state: dict) -> LayerEmbeddings:
        layers = sorted({int(k.split("@")[1].split(".")[0]) for k in state if "@" in k})
        if layers and not self.layers_:
            self.update_layers(layers)
        return super().load_state_dict(state)  # type: ignore[return-value]

    def result(self) -> AnalysisResult:
        arrays: dict[str, np.ndarray] = {"layers": np.asarray(self.layers_, dtype=np.int64)}
        arrays["index"] = self.rows_of("index")[1].numpy()
        for kind in self.kinds:
            arrays[kind] = np.stack([self.rows_of(f"{kind}@{k}")[1].numpy().astype(np.float32)
                                     for k in self.layers_])
        labels = self.rows_of("labels")[1]
        if len(labels):
            arrays["labels"] = labels.numpy()
        return AnalysisResult(self.name, arrays=arrays)


class Predictions(Analysis):
    """Top-1 predictions and labels of a classifier: arrays "predicted", "labels", "index"."""

    name = "predictions"
    taps = Taps(final=False, logits=True)

    def __init__(self, num_images: int | None = None) -> None:
        super().__init__()
        self.add_state("predicted", None, "cat")
        self.add_state("labels", None, "cat")

    def update(self, capture: Capture, batch: Batch) -> Predictions:
        self.append_rows("predicted", batch.index, capture.logits.argmax(-1))
        if batch.labels is not None:
            self.append_rows("labels", batch.index, batch.labels)
        return self

    def result(self) -> AnalysisResult:
        index, predicted = self.rows_of("predicted")
        labels = self.rows_of("labels")[1]
        return AnalysisResult(self.name, arrays={
            "index": index.numpy(), "predicted": predicted.numpy(),
            "labels": labels.numpy() if len(labels) else np.full(len(index), -1)})
