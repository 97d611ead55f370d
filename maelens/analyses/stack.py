"""Collect raw activations of a whole data set into preallocated float32 arrays (for export)."""

from __future__ import annotations

import numpy as np

from maelens.engine.capture import Batch
from maelens.model.taps import Capture, Taps


class StackActivations:
    """Stack the requested activations of `num_images` images.

    `result()` returns a dict of NumPy arrays (float32 unless noted), images in data-set order:
    hidden (len(hidden_layers), N, T, D), final (N, T, D), attn (len(attn_layers), N, H, T, T),
    heads (len(heads_layers), N, T, H, d_head), keep (N, N_v) int64, logits (N, C), pooled (N, D),
    labels (N,) int64 when known, and the layer numbers `hidden_layers`, `attn_layers`,
    `heads_layers` (int64; hidden 0 = embeddings, block l = 1..L).
    """

    def __init__(self, num_images: int, taps: Taps) -> None:
        self.num_images = num_images
        self.taps = taps
        self.arrays_: dict[str, np.ndarray] = {}

    def _slot(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        if name not in self.arrays_:
            self.arrays_[name] = np.zeros(shape, dtype=dtype)
        return self.arrays_[name]

    def update(self, capture: Capture, batch: Batch) -> None:
        rows = batch.index.numpy()
        n = self.num_images
        for kind in ("hidden", "attn", "heads"):
            layers = sorted(getattr(capture, kind))
            if not layers:
                continue
            first = getattr(capture, kind)[layers[0]]
            out = self._slot(kind, (len(layers), n, *first.shape[1:]))
            self.arrays_[f"{kind}_layers"] = np.asarray(layers, dtype=np.int64)
            for i, layer in enumerate(layers):
                out[i, rows] = getattr(capture, kind)[layer].numpy()
        for kind in ("final", "pooled", "logits"):
            value = getattr(capture, kind)
            if value is not None:
                self._slot(kind, (n, *value.shape[1:]))[rows] = value.numpy()
        self._slot("keep", (n, capture.keep.shape[1]), np.int64)[rows] = capture.keep.numpy()
        if batch.labels is not None:
            self._slot("labels", (n,), np.int64)[rows] = batch.labels.numpy()

    def result(self) -> dict[str, np.ndarray]:
        return dict(self.arrays_)
