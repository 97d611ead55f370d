"""Directional robustness (seed paper III-B2, Eq. 1; IV-C, Table III): how far a perturbation
turns an image's embedding.

Per image, cos(theta) = <z_clean, z_pert> / (|z_clean| |z_pert|) between the clean and the
perturbed embedding, and the norm change | |z_pert| - |z_clean| |. The embedding is, by default,
the paper's mean patch embedding z-bar: the mean over the visible patch tokens (CLS excluded) of
the last block's output *before* the final / head norm (hidden[L][:, 1:].mean(1));
`source="pooled"` takes the classifier head's input instead (after `fc_norm` or `norm`).
Images are split by whether the *perturbed* pass classifies them correctly (the paper: correct
~0.915 vs misclassified ~0.289 at the strongest blur).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maelens.analyses.accuracy import check_classes, top1
from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row
from maelens.analyses.bootstrap import check_bootstrap, ci_note, optional_cis
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps

SOURCES = ("mean_patch", "pooled")
SPLITS = ("all", "correct", "wrong")


def check_source(source: str, layer: int | None) -> None:
    if source not in SOURCES:
        raise MaelensError(f"`source` must be 'mean_patch' (mean visible patch token before the "
                           f"final norm) or 'pooled' (the head input), got {source!r}.")
    if source == "pooled" and layer is not None:
        raise MaelensError(f"`layer`={layer} applies to source='mean_patch' only; the pooled "
                           "head input has no layer. Drop `layer` or use source='mean_patch'.")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise MaelensError(f"`layer` must be an int (0..L, negatives from the end) or None "
                           f"for the last, got {layer!r}.")


def embedding_taps(source: str, layer: int | None, logits: bool = False) -> Taps:
    """The taps an embedding of `source` needs (layer None: the last block, hidden[L])."""
    if source == "pooled":
        return Taps(final=False, pooled=True, logits=logits)
    return Taps(hidden=[-1 if layer is None else layer], final=False, logits=logits)


def wide(values: torch.Tensor) -> torch.Tensor:
    """float64 where the device has it (MPS has no float64: float32 there)."""
    return values.float() if values.device.type == "mps" else values.double()


def embedding_of(capture: Capture, source: str) -> tuple[torch.Tensor, int]:
    """((B, D) float64 embedding on the capture's device, its layer; -1 for "pooled").

    Float64 because cosines near 1 lose digits in bfloat16 / float16 (1 - cos ~ 1e-3 is a
    common value)."""
    if source == "pooled":
        if capture.pooled is None:
            raise MaelensError("the capture has no pooled head input; tap `pooled`.")
        return wide(capture.pooled), -1
    (layer, tokens), = capture.hidden.items()  # the analysis taps exactly one layer
    return wide(tokens[:, 1:]).mean(dim=1), int(layer)


def cosine_and_norms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, 3) float64 rows [cos(a_i, b_i), |a_i|, |b_i|] of (B, D) float64 embeddings."""
    na, nb = a.norm(dim=1), b.norm(dim=1)
    return torch.stack([(a * b).sum(dim=1) / (na * nb), na, nb], dim=1)


class EmbeddingAlignment(Analysis):
    """Eq. 1 cosine and norm change between clean and perturbed embeddings (paired).

    layer: hidden layer for source="mean_patch" (None: the last, L); classify: split images by
    the perturbed pass's top-1 (needs a classifier head and labels); classes / label_space: as
    `Accuracy`; bootstrap / seed: the 95 % CIs. `result().arrays` (images in index order):
    index (N,), cosine (N,), norm_clean (N,), norm_pert (N,), norm_diff (N,) = |norm_pert -
    norm_clean| (embedding units), and with classify correct (N,) bool, predicted (N,).
    """

    name = "alignment"
    paired = True

    def __init__(self, layer: int | None = None, source: str = "mean_patch",
                 classify: bool = True, bootstrap: int = 1000, seed: int = 0, *,
                 classes: Sequence[int] | None = None, label_space: str = "position") -> None:
        super().__init__()
        check_source(source, layer)
        self.layer, self.source, self.classify = layer, source, bool(classify)
        self.classes = check_classes(classes, label_space)
        self.label_space = label_space
        self.bootstrap, self.seed = check_bootstrap(bootstrap), int(seed)
        self.taps = embedding_taps(source, layer, logits=self.classify)
        self.add_state("pairs", None, "cat")  # rows [cos, |z_clean|, |z_pert|]
        self.add_state("correct", None, "cat")
        self.add_state("predicted", None, "cat")
        self.add_state("layer_", None, "max")  # the resolved layer (-1: pooled)

    def update_pair(self, clean: Capture, perturbed: Capture, batch: Batch
                    ) -> EmbeddingAlignment:
        z_clean, layer = embedding_of(clean, self.source)
        z_pert, _ = embedding_of(perturbed, self.source)
        self.append_rows("pairs", batch.index, cosine_and_norms(z_clean, z_pert), copy=False)
        self.layer_ = torch.tensor(layer)
        if self.classify:
            predicted, correct = top1(perturbed.logits, batch.labels, self.classes,
                                      self.label_space, "EmbeddingAlignment (classify=True)")
            self.append_rows("correct", batch.index, correct)
            self.append_rows("predicted", batch.index, predicted)
        return self

    def result(self) -> AnalysisResult:
        index, pairs = self.rows_of("pairs")
        pairs = pairs.numpy().reshape(-1, 3)
        cosine, n_clean, n_pert = pairs.T
        norm_diff = np.abs(n_pert - n_clean)
        arrays = {"index": index.numpy(), "cosine": cosine, "norm_clean": n_clean,
                  "norm_pert": n_pert, "norm_diff": norm_diff}
        splits = {"all": np.ones(len(index), bool)}
        if self.classify:
            correct = self.rows_of("correct")[1].numpy().astype(bool)
            arrays["correct"] = correct
            arrays["predicted"] = self.rows_of("predicted")[1].numpy().astype(np.int64)
            splits.update(correct=correct, wrong=~correct)
        return AnalysisResult(self.name, rows=self._rows(index.numpy(), cosine, norm_diff,
                                                         splits),
                              arrays=arrays, meta=self._meta())

    def _rows(self, index: np.ndarray, cosine: np.ndarray, norm_diff: np.ndarray,
              splits: dict[str, np.ndarray]) -> list[Row]:
        masks = np.stack(list(splits.values()))
        rows = []
        for metric, values, unit in (("cosine_mean", cosine, ""),
                                     ("norm_diff_mean", norm_diff, "embedding norm")):
            stacked = np.broadcast_to(values, masks.shape)
            cis = optional_cis(stacked, index, self.seed, self.bootstrap, masks=masks)
            for (split, mask), (lo, hi) in zip(splits.items(), cis, strict=True):
                value = float(values[mask].mean()) if mask.any() else float("nan")
                rows.append(Row(metric, value, unit=unit, ci_low=lo, ci_high=hi,
                                extra={"split": split, "images": int(mask.sum())}))
        rows += [Row("count", float(mask.sum()), unit="images", extra={"split": split})
                 for split, mask in splits.items()]
        return rows

    def _meta(self) -> dict:
        layer = None if self.layer_ is None else int(self.layer_)
        if self.source == "pooled":
            embedding = "pooled head input (after fc_norm / norm), as the classifier reads it"
        else:
            embedding = (f"mean over visible patch tokens (CLS excluded) of hidden[{layer}], "
                         "the block output before the final / head norm")
        return {"embedding": embedding, "source": self.source, "layer": layer,
                "cosine": "Eq. 1: <z_clean, z_pert> / (|z_clean| |z_pert|), per image",
                "norm_diff": "| |z_pert| - |z_clean| | per image, L2 norms",
                "split": ("top-1 of the perturbed pass vs the label" if self.classify
                          else "none (classify=False)"),
                "classes": "all" if self.classes is None else list(self.classes),
                "ci": ci_note(self.bootstrap, self.seed)}
