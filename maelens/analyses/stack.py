"""Raw activations of a whole data set, in data-set order (what `maelens extract` exports)."""

from __future__ import annotations

import numpy as np
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch
from maelens.model.taps import Capture, Taps

LAYERED = ("hidden", "attn", "heads")
SINGLE = ("final", "pooled", "logits")


class StackActivations(Analysis):
    """Stack the requested activations of every image (float32, on the CPU).

    `result().arrays` (images in data-set index order): hidden (len(hidden_layers), N, T, D),
    final (N, T, D), attn (len(attn_layers), N, H, T, T), heads (len(heads_layers), N, T, H,
    d_head), keep (N, N_v) int64, logits (N, C), pooled (N, D), labels (N,) int64 when known,
    index (N,) int64, and the layer numbers `hidden_layers`, `attn_layers`, `heads_layers`
    (hidden 0 = embeddings, block l = 1..L). The only analysis that keeps per-image tensors
    whole: an export needs them on the host; everything else reduces on the device.
    """

    name = "stack"

    def __init__(self, num_images: int | None = None, taps: Taps | None = None) -> None:
        super().__init__()
        self.taps = taps if taps is not None else Taps()
        self.num_images = num_images  # kept for the old signature; the index decides N
        self.add_state("keep", None, "cat")
        self.add_state("labels", None, "cat")
        self._names: list[str] = []

    def _state(self, name: str) -> str:
        if name not in self._names:
            self._names.append(name)
            self.add_state(name, None, "cat")
        return name

    def update(self, capture: Capture, batch: Batch) -> StackActivations:
        index = batch.index
        for kind in LAYERED:
            for layer, value in sorted(getattr(capture, kind).items()):
                self.append_rows(self._state(f"{kind}@{layer}"), index, _host(value), copy=False)
        for kind in SINGLE:
            value = getattr(capture, kind)
            if value is not None:
                self.append_rows(self._state(kind), index, _host(value), copy=False)
        self.append_rows("keep", index, capture.keep.cpu())
        if batch.labels is not None:
            self.append_rows("labels", index, batch.labels.cpu())
        return self

    def merge(self, other: Analysis) -> StackActivations:
        for name in getattr(other, "_names", []):
            self._state(name)
        super().merge(other)
        return self

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> StackActivations:
        for key in state:
            name = key.rsplit(".", 1)[0]
            if name not in ("keep", "labels"):
                self._state(name)
        super().load_state_dict(state)
        return self

    def result(self) -> AnalysisResult:
        index, keep = self.rows_of("keep")
        arrays: dict[str, np.ndarray] = {"index": index.numpy(), "keep": keep.numpy()}
        _, labels = self.rows_of("labels")
        if len(labels):
            arrays["labels"] = labels.numpy()
        for kind in LAYERED:
            layers = sorted(int(n.split("@")[1]) for n in self._names if n.startswith(kind + "@"))
            if layers:
                arrays[kind] = np.stack([self.rows_of(f"{kind}@{k}")[1].numpy() for k in layers])
                arrays[f"{kind}_layers"] = np.asarray(layers, dtype=np.int64)
        for kind in SINGLE:
            if kind in self._names:
                arrays[kind] = self.rows_of(kind)[1].numpy()
        return AnalysisResult(self.name, arrays=arrays)


def _host(value: torch.Tensor) -> torch.Tensor:
    """A float32 CPU copy (always a copy: the capture's buffers are reused)."""
    return value.detach().to("cpu", torch.float32, copy=True)
