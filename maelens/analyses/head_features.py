"""Feature-level robustness of attention heads (seed paper III-B2, Eq. 2-3; IV-C, Fig. 6-8).

Per image, layer l and head h, the head output O = A V (`Capture.heads[l]`, (B, T, H, d_head))
is averaged over the visible patch rows (CLS row excluded unless `include_cls`), giving a
d_head vector; its top-k features by magnitude |value| are the image's *active* features
(ties in magnitude: the lower feature index first, by a stable sort of -|x|, the same on CPU
and CUDA). Feature f is *common* in class c when it is active in >= threshold of the class's
images (paper: k = 10, 60 %). Per (l, h, c):

    C_clean  = |common_clean|, C_pert = |common_pert|,
    C_common = |common_clean ∩ common_pert|  (the paper's plotted "C_pert": "we keep these
               counts as the cardinality of the intersection between the clean head-level
               features and the features activated under perturbation")
    delta_c  = C_clean - C_common; ΔC = mean over layers, heads and classes of delta_c
               (the paper's "mean drop ... averaged over all layers and heads", Fig. 8, with
               the ten classes averaged as well).

Only counts are streamed: for each (class, layer, head, feature), how many images have it in
their top-k, clean and perturbed ("sum" states, int64, exact), and each class's image count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maelens.analyses.alignment import wide
from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps

# `threshold * n_images` is compared with a small slack: 0.7 * 10 is 7.000000000000001 in
# binary floating point, which would wrongly demand 8 of 10 images.
_SLACK = 1e-9


def top_k_features(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """(..., k) indices of the k largest |values| along the last axis; equal magnitudes go
    to the lower index (stable sort), identically on every device."""
    return torch.sort(-vectors.abs(), dim=-1, stable=True).indices[..., :k]


class HeadCommonFeatures(Analysis):
    """Common active features per (layer, head, class), clean vs perturbed (paired).

    top_k: active features per image (<= d_head); threshold: fraction of a class's images
    (in (0, 1]); include_cls: average the CLS row of O too; layers: blocks to tap (as `Taps`:
    None all, int n the last n, or a list). Needs labels. `result().arrays`: c_clean, c_pert,
    c_common, delta_c (L, H, C) float64; layers (L,), classes (C,) labels present,
    class_images (C,).
    """

    name = "head_features"
    paired = True

    def __init__(self, top_k: int = 10, threshold: float = 0.6, include_cls: bool = False,
                 layers: int | Sequence[int] | None = None) -> None:
        super().__init__()
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise MaelensError(f"`top_k` must be a positive integer (features per head), got "
                               f"{top_k!r}.")
        if not 0.0 < float(threshold) <= 1.0:
            raise MaelensError(f"`threshold` must lie in (0, 1] (fraction of a class's images, "
                               f"e.g. 0.6), got {threshold}.")
        self.top_k, self.threshold = int(top_k), float(threshold)
        self.include_cls = bool(include_cls)
        self.taps = Taps(heads=layers, final=False)
        self.add_state("hits_clean", None, "sum")  # (C, L, H, d_head) int64 image counts
        self.add_state("hits_pert", None, "sum")
        self.add_state("class_images", None, "sum")  # (C,) int64
        self.add_state("layers_", None, "max")  # (L,) the tapped block numbers

    def _active(self, capture: Capture, layers: list[int]) -> torch.Tensor:
        """(B, L, H, d_head) int64 indicator of each image's top-k features per head."""
        rows = slice(None) if self.include_cls else slice(1, None)
        means = torch.stack([wide(capture.heads[k][:, rows]).mean(dim=1) for k in layers],
                            dim=1)  # (B, L, H, d_head)
        if self.top_k > means.shape[-1]:
            raise MaelensError(f"`top_k`={self.top_k} exceeds the head width d_head="
                               f"{means.shape[-1]}; choose top_k <= {means.shape[-1]}.")
        top = top_k_features(means, self.top_k)
        return torch.zeros(means.shape, dtype=torch.int64, device=means.device).scatter_(
            -1, top, 1)

    def update_pair(self, clean: Capture, perturbed: Capture, batch: Batch
                    ) -> HeadCommonFeatures:
        if batch.labels is None:
            raise MaelensError("HeadCommonFeatures counts common features per class and needs "
                               "labels, but the batch carries none; give a labelled image set.")
        layers = sorted(clean.heads)
        active_clean, active_pert = self._active(clean, layers), self._active(perturbed, layers)
        labels = batch.labels.to(active_clean.device, torch.int64)
        if int(labels.min()) < 0:
            raise MaelensError(f"labels must be >= 0 class indices, got {int(labels.min())}.")
        self._grow(int(labels.max()) + 1, active_clean)
        self.hits_clean.index_add_(0, labels, active_clean)
        self.hits_pert.index_add_(0, labels, active_pert)
        self.class_images.index_add_(0, labels, torch.ones_like(labels))
        self.layers_ = torch.tensor(layers, dtype=torch.int64)
        return self

    def _grow(self, n_classes: int, like: torch.Tensor) -> None:
        """Make room for `n_classes` classes (the class count is learnt from the labels)."""
        if self.hits_clean is None:
            shape = (0, *like.shape[1:])
            self.hits_clean = torch.zeros(shape, dtype=torch.int64, device=like.device)
            self.hits_pert = self.hits_clean.clone()
            self.class_images = torch.zeros(0, dtype=torch.int64, device=like.device)
        self.hits_clean, self.hits_pert, self.class_images = (
            _pad(t, n_classes) for t in (self.hits_clean, self.hits_pert, self.class_images))

    def merge(self, other: Analysis) -> HeadCommonFeatures:
        if isinstance(other, HeadCommonFeatures) and other.hits_clean is not None \
                and self.hits_clean is not None:
            n = max(len(self.class_images), len(other.class_images))
            self._grow(n, self.hits_clean)
            other._grow(n, other.hits_clean)
        return super().merge(other)  # type: ignore[return-value]

    def counts(self) -> dict[str, np.ndarray]:
        """c_clean, c_pert, c_common, delta_c as (L, H, C) float64 over the classes seen."""
        if self.class_images is None or not int(self.class_images.sum()):
            raise MaelensError("HeadCommonFeatures saw no image; feed it through a pass plan.")
        n = self.class_images.cpu()
        present = (n > 0).nonzero().flatten()
        need = self.threshold * n[present].double() - _SLACK  # (C,)
        common = {}
        for which in ("clean", "pert"):
            hits = getattr(self, f"hits_{which}").cpu()[present]  # (C, L, H, d_head)
            common[which] = hits.double() >= need.view(-1, 1, 1, 1)
        both = common["clean"] & common["pert"]
        to_lhc = lambda m: m.sum(-1).permute(1, 2, 0).double().numpy()  # noqa: E731
        c_clean, c_pert, c_common = to_lhc(common["clean"]), to_lhc(common["pert"]), to_lhc(both)
        return {"c_clean": c_clean, "c_pert": c_pert, "c_common": c_common,
                "delta_c": c_clean - c_common, "classes": present.numpy(),
                "class_images": n[present].numpy(), "layers": self.layers_.cpu().numpy()}

    def result(self) -> AnalysisResult:
        arrays = self.counts()
        rows = [Row(f"{name}_mean", float(arrays[name].mean()), unit="features",
                    extra={"over": "layers, heads, classes"})
                for name in ("delta_c", "c_clean", "c_pert", "c_common")]
        for i, layer in enumerate(arrays["layers"].tolist()):
            for head in range(arrays["c_clean"].shape[1]):
                rows += [Row(name, float(arrays[name][i, head].mean()), unit="features",
                             layer=layer, head=head, extra={"over": "classes"})
                         for name in ("c_clean", "c_common", "delta_c")]
        meta = {"top_k": self.top_k, "threshold": self.threshold,
                "rows_averaged": "all tokens" if self.include_cls else
                "visible patch rows of O = A V (CLS row excluded)",
                "ties": "equal |value|: lower feature index first (stable sort)",
                "common": "in the top-k of >= threshold x (class images)",
                "c_common": "|common_clean ∩ common_pert|, the paper's plotted C_pert",
                "delta_c": "mean over layers, heads and classes of C_clean - C_common"}
        return AnalysisResult(self.name, rows=rows, arrays=arrays, meta=meta)


def _pad(state: torch.Tensor, n_classes: int) -> torch.Tensor:
    """`state` (C, ...) zero-padded along the class axis to `n_classes` rows."""
    if len(state) >= n_classes:
        return state
    extra = torch.zeros((n_classes - len(state), *state.shape[1:]), dtype=state.dtype,
                        device=state.device)
    return torch.cat([state, extra])
