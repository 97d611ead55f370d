"""A seeded sample of visible patch tokens per layer (seed paper, III-A2 and Fig. 2).

Layer l is the token sequence after block l, before the final norm (l = 0: embeddings), as in
`LayerEmbeddings`; CLS is never sampled. Each image contributes `per_image` of its N_v visible
tokens, drawn from (seed, "patch-sample", image index): the sample depends on neither batch
size nor order. Under masking the draw is among the *visible* tokens (the mask itself comes
from the pass's keep policy, keyed the same way).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch
from maelens.analyses.separability import stratified_subsample
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps
from maelens.seeds import generator

STORAGE = {"float32": torch.float32, "float16": torch.float16}


class PatchTokenSample(Analysis):
    """`per_image` visible patch tokens of every image at the requested layers.

    `layers`: None for all (0..L), an int n for the last n, or a list (as `Taps`).
    `dtype`: "float32" or "float16" storage (float16 halves the memory; t-SNE and the
    separability measures do not need more digits). `total`: cap the result to this many
    tokens, stratified by class (seeded; see `stratified_subsample`); None keeps all.

    `result().arrays` (M sampled tokens, sorted by image index then token order):
    "layers" (L,) int64; "tokens" (L, M, D) in the storage dtype; "image" (M,) data-set index
    of each token's image; "patch" (M,) its patch index on the row-major (gh, gw) grid;
    "labels" (M,) int64 when the batches carry labels. meta: per_image, seed, grid, patch_size.
    """

    name = "patch_tokens"

    def __init__(self, layers: int | Sequence[int] | None = None, per_image: int = 16,
                 seed: int = 0, dtype: str = "float32", total: int | None = None) -> None:
        super().__init__()
        if isinstance(per_image, bool) or int(per_image) != per_image or per_image < 1:
            raise MaelensError(f"`per_image` must be a positive integer, got {per_image!r}.")
        if dtype not in STORAGE:
            raise MaelensError(f"`dtype` must be 'float32' or 'float16', got {dtype!r}.")
        if total is not None and (isinstance(total, bool) or total < 1):
            raise MaelensError(f"`total` must be None or a positive integer, got {total!r}.")
        self.per_image, self.seed, self.dtype, self.total = int(per_image), seed, dtype, total
        self.taps = Taps(hidden=layers, final=False)
        self.layers_: list[int] = []
        self.grid_: tuple[int, int] | None = None
        self.patch_size_: int | None = None
        self.add_state("patch", None, "cat")
        self.add_state("labels", None, "cat")

    def _declare(self, layers: Sequence[int]) -> None:
        self.layers_ = sorted(layers)
        for layer in self.layers_:
            self.add_state(f"tokens@{layer}", None, "cat")

    def slots(self, index: torch.Tensor, num_visible: int) -> torch.Tensor:
        """(B, P) token slots (0-based among the N_v visible tokens, ascending) per image."""
        take = min(self.per_image, num_visible)
        rows = [torch.randperm(num_visible, generator=generator(self.seed, "patch-sample",
                                                                int(i)))[:take].sort().values
                for i in index.tolist()]
        return torch.stack(rows)

    def update(self, capture: Capture, batch: Batch) -> PatchTokenSample:
        if not self.layers_:
            self._declare(capture.hidden)
            self.grid_, self.patch_size_ = tuple(capture.grid), capture.patch_size
        slots = self.slots(batch.index, capture.keep.shape[1]).to(capture.keep.device)
        for layer in self.layers_:
            patches = capture.hidden[layer][:, 1:]  # (B, N_v, D), CLS dropped
            picked = patches.gather(1, slots[..., None].expand(-1, -1, patches.shape[-1]))
            # gather already copies out of the reused capture buffer: no second copy
            self.append_rows(f"tokens@{layer}", batch.index, picked.to(STORAGE[self.dtype]),
                             copy=False)
        self.append_rows("patch", batch.index, capture.keep.gather(1, slots), copy=False)
        if batch.labels is not None:
            labels = batch.labels.to(slots.device)[:, None].expand_as(slots)
            self.append_rows("labels", batch.index, labels)
        return self

    def merge(self, other: Analysis) -> PatchTokenSample:
        if not self.layers_ and isinstance(other, PatchTokenSample) and other.layers_:
            self._declare(other.layers_)
            self.grid_, self.patch_size_ = other.grid_, other.patch_size_
        return super().merge(other)  # type: ignore[return-value]

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = super().state_dict()
        if self.grid_ is not None:  # geometry as tensors: the state stays weights_only-safe
            state["grid"] = torch.tensor([*self.grid_, self.patch_size_])
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> PatchTokenSample:
        layers = sorted({int(k.split("@")[1].split(".")[0]) for k in state if "@" in k})
        if layers and not self.layers_:
            self._declare(layers)
        if "grid" in state:
            gh, gw, p = (int(v) for v in state["grid"])
            self.grid_, self.patch_size_ = (gh, gw), p
        return super().load_state_dict(state)  # type: ignore[return-value]

    def result(self) -> AnalysisResult:
        index, patch = self.rows_of("patch")  # (N,), (N, P)
        per = patch.shape[1] if patch.ndim == 2 else 0
        image = index[:, None].expand(-1, per).reshape(-1).numpy()
        arrays: dict[str, np.ndarray] = {"layers": np.asarray(self.layers_, dtype=np.int64),
                                         "image": image, "patch": patch.reshape(-1).numpy()}
        labels = self.rows_of("labels")[1]
        keep = np.arange(len(image))
        if len(labels):
            arrays["labels"] = labels.reshape(-1).numpy()
            keep = stratified_subsample(arrays["labels"], self.total, self.seed, "patch-cap")
        elif self.total is not None:
            keep = keep[:self.total]  # no classes to stratify by: the first tokens
        tokens = [self.rows_of(f"tokens@{k}")[1] for k in self.layers_]
        arrays["tokens"] = (np.stack([t.reshape(len(image), -1).numpy() for t in tokens])
                            if tokens else np.zeros((0, len(image), 0), np.float32))
        arrays = {k: (v[:, keep] if k == "tokens" else v if k == "layers" else v[keep])
                  for k, v in arrays.items()}
        meta = {"per_image": self.per_image, "seed": self.seed, "total": self.total,
                "grid": list(self.grid_ or ()), "patch_size": self.patch_size_,
                "dtype": self.dtype}
        return AnalysisResult(self.name, arrays=arrays, meta=meta)
