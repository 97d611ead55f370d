"""Random-mask invariance (seed paper III-B2, "Directional Robustness", first paragraph).

For each image, K randomly masked views at one ratio are compared with each other and with the
unmasked image: the paper finds the K embeddings "highly aligned in direction" and their norms
"tightly concentrated (e.g. 92.4 to 95.4)". Streamed per image, never holding K embeddings:

    S = sum_k u_k (u_k = z_k / |z_k|, the unit masked-view embeddings)
    mean pairwise cosine among the K views = (|S|^2 - K) / (K (K - 1))     (exact: |S|^2 =
        sum_k |u_k|^2 + sum_{j != k} <u_j, u_k> = K + K (K - 1) * mean pairwise cosine)
    mean cosine to the unmasked embedding, min / max masked-view norm, the unmasked norm.

One `MaskInvariance` instance is added, as a paired analysis, to all K conditions of
`mask_invariance_conditions` (the reference pass must be unmasked):

    inv = MaskInvariance()
    for cond in mask_invariance_conditions(0.75, k_masks=100):
        plan.add(inv, cond)
"""

from __future__ import annotations

import numpy as np
import torch

from maelens.analyses.alignment import (
    check_source,
    cosine_and_norms,
    embedding_of,
    embedding_taps,
)
from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row
from maelens.analyses.bootstrap import check_bootstrap, ci_note, optional_cis
from maelens.errors import MaelensError
from maelens.model.taps import Capture

# Per-image row layout after the D unit-vector sum: view count, sum of cosines to the
# unmasked embedding, min and max masked-view norm, unmasked norm.
_K, _COS, _MIN, _MAX, _CLEAN = range(-5, 0)


class MaskInvariance(Analysis):
    """Direction and norm consistency of randomly masked views of each image (paired).

    source / layer: the embedding, as `EmbeddingAlignment` (default: mean visible patch token of
    hidden[L], before the final norm). `result().arrays` (images in index order): index (N,),
    views (N,) K, pairwise_cosine (N,), cosine_to_unmasked (N,), norm_min / norm_max (N,)
    over the K views, unmasked_norm (N,) (embedding units).
    """

    name = "mask_invariance"
    paired = True

    def __init__(self, source: str = "mean_patch", layer: int | None = None, *,
                 bootstrap: int = 1000, seed: int = 0) -> None:
        super().__init__()
        check_source(source, layer)
        self.source, self.layer = source, layer
        self.bootstrap, self.seed = check_bootstrap(bootstrap), int(seed)
        self.taps = embedding_taps(source, layer)
        self.add_state("views", None, "cat")  # (N, D + 5) float64, see the row layout above
        self.add_state("layer_", None, "max")
        # The engine feeds the K conditions of one batch back to back: rows accumulate here
        # (on the compute device) while the image indices repeat, and reach "views" once.
        self._open: tuple[torch.Tensor, torch.Tensor] | None = None

    def update_pair(self, clean: Capture, perturbed: Capture, batch: Batch) -> MaskInvariance:
        n_patches = clean.grid[0] * clean.grid[1]
        if clean.keep.shape[1] != n_patches:
            raise MaelensError("MaskInvariance compares masked views with the unmasked image: "
                               "the reference pass must be unmasked (reference mask ratio 0).")
        if perturbed.keep.shape[1] == n_patches:
            raise MaelensError("MaskInvariance was fed a condition that masks nothing; add it "
                               "to the conditions of `mask_invariance_conditions` only.")
        z_clean, layer = embedding_of(clean, self.source)
        z_view, _ = embedding_of(perturbed, self.source)
        cos, n_clean, n_view = cosine_and_norms(z_clean, z_view).T
        ones = torch.ones_like(cos)
        rows = torch.cat([z_view / n_view[:, None],
                          torch.stack([ones, cos, n_view, n_view, n_clean], dim=1)], dim=1)
        self.layer_ = torch.tensor(layer)
        self._accumulate(batch.index, rows)
        return self

    def _accumulate(self, index: torch.Tensor, rows: torch.Tensor) -> None:
        if self._open is not None and torch.equal(self._open[0], index.cpu()):
            acc = self._open[1]
            acc[:, :_MIN] += rows[:, :_MIN]  # unit-vector sum, count, cosine sum
            acc[:, _MIN] = torch.minimum(acc[:, _MIN], rows[:, _MIN])
            acc[:, _MAX] = torch.maximum(acc[:, _MAX], rows[:, _MAX])
            return
        self._flush()
        self._open = (index.detach().to("cpu", torch.int64, copy=True), rows)

    def _flush(self) -> None:
        if self._open is not None:
            self.append_rows("views", self._open[0], self._open[1], copy=False)
            self._open = None

    def merge(self, other: Analysis) -> MaskInvariance:
        self._flush()
        if isinstance(other, MaskInvariance):
            other._flush()
        return super().merge(other)  # type: ignore[return-value]

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._flush()
        return super().state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> MaskInvariance:
        self._open = None
        return super().load_state_dict(state)  # type: ignore[return-value]

    def per_image(self) -> dict[str, np.ndarray]:
        """The per-image arrays of `result()` (rows of one image from several shards or
        batches are combined: sums add, min / max fold)."""
        self._flush()
        index, rows = self.rows_of("views")
        if not len(index):
            raise MaelensError("MaskInvariance saw no image; feed it through a pass plan.")
        images, group = torch.unique_consecutive(index, return_inverse=True)
        rows = rows.double()
        total = torch.zeros(len(images), rows.shape[1], dtype=torch.float64)
        total.index_add_(0, group, rows)
        for col, how in ((_MIN, "amin"), (_MAX, "amax"), (_CLEAN, "amax")):
            total[:, col] = torch.zeros(len(images), dtype=torch.float64).scatter_reduce(
                0, group, rows[:, col], how, include_self=False)
        k = total[:, _K]
        if int(k.min()) < 2:
            raise MaelensError(f"MaskInvariance needs >= 2 masked views per image, got "
                               f"{int(k.min())}; build the conditions with `k_masks` >= 2.")
        sq = (total[:, :_K] ** 2).sum(dim=1)
        return {"index": images.numpy(), "views": k.numpy().astype(np.int64),
                "pairwise_cosine": ((sq - k) / (k * (k - 1))).numpy(),
                "cosine_to_unmasked": (total[:, _COS] / k).numpy(),
                "norm_min": total[:, _MIN].numpy(), "norm_max": total[:, _MAX].numpy(),
                "unmasked_norm": total[:, _CLEAN].numpy()}

    def result(self) -> AnalysisResult:
        arrays = self.per_image()
        norm_range = arrays["norm_max"] - arrays["norm_min"]
        stats = {"pairwise_cosine_mean": (arrays["pairwise_cosine"], ""),
                 "cosine_to_unmasked_mean": (arrays["cosine_to_unmasked"], ""),
                 "norm_range_mean": (norm_range, "embedding norm"),
                 "norm_range_relative_mean": (norm_range / arrays["unmasked_norm"], "ratio"),
                 "unmasked_norm_mean": (arrays["unmasked_norm"], "embedding norm")}
        values = np.stack([v for v, _ in stats.values()])
        cis = optional_cis(values, arrays["index"], self.seed, self.bootstrap)
        views = {"views_min": int(arrays["views"].min()), "views_max": int(arrays["views"].max()),
                 "images": len(arrays["index"])}
        rows = [Row(metric, float(v.mean()), unit=unit, ci_low=lo, ci_high=hi, extra=views)
                for (metric, (v, unit)), (lo, hi) in zip(stats.items(), cis, strict=True)]
        layer = None if self.layer_ is None else int(self.layer_)
        meta = {"source": self.source, "layer": layer,
                "embedding": ("pooled head input" if self.source == "pooled" else
                              f"mean visible patch token of hidden[{layer}] (before the final "
                              "norm)"),
                "pairwise_cosine": "(|sum_k u_k|^2 - K) / (K (K - 1)), u_k unit view embeddings",
                "norm_range": "max_k |z_k| - min_k |z_k|; relative: divided by |z_unmasked|",
                "ci": ci_note(self.bootstrap, self.seed)}
        return AnalysisResult(self.name, rows=rows, arrays=arrays, meta=meta)
