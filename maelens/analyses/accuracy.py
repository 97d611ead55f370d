"""Top-1 accuracy of a classifier, per image, with a sharding-independent bootstrap CI.

The seed paper reports top-1 accuracy on ten ImageNet classes under blur and occlusion
(Table I, Fig. 5). Per-image correct flags are kept (a "cat" state keyed by data-set index),
so the correct / wrong split of the alignment study and the bootstrap are exact.

`classes` restricts the argmax to the evaluated classes' logits (a 1000-way ImageNet head
scored on ten classes). Labels then name positions in `classes` (label j <-> logit
classes[j], how `load_image_set` numbers class folders) unless `label_space="logit"`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row
from maelens.analyses.bootstrap import check_bootstrap, ci_note, optional_cis
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps

LABEL_SPACES = ("position", "logit")


def check_classes(classes: Sequence[int] | None, label_space: str) -> tuple[int, ...] | None:
    """Validate the `classes` / `label_space` options (shared with the alignment analysis)."""
    if label_space not in LABEL_SPACES:
        raise MaelensError(f"`label_space` must be 'position' (label j is logit classes[j]) or "
                           f"'logit' (labels are logit indices), got {label_space!r}.")
    if classes is None:
        return None
    out = tuple(int(c) for c in classes)
    if not out or min(out) < 0 or len(set(out)) != len(out):
        raise MaelensError(f"`classes` must be distinct non-negative logit indices, got "
                           f"{list(classes)}; or None for all classes.")
    return out


def top1(logits: torch.Tensor | None, labels: torch.Tensor | None,
         classes: tuple[int, ...] | None, label_space: str, who: str
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted logit index (B,), correct (B,) bool) on the logits' device.

    logits: (B, C) in any dtype; the argmax over `classes` (ties: the first of them, as
    torch.argmax documents) is mapped back to the logit index.
    """
    if logits is None:
        raise MaelensError(f"{who} needs a classifier head, but the capture has no logits "
                           "(Capture.logits is None); use a fine-tuned checkpoint or drop it.")
    if labels is None:
        raise MaelensError(f"{who} needs labels, but the batch carries none; give an image "
                           "set with class labels.")
    labels = labels.to(logits.device, torch.int64)
    if classes is None:
        predicted = logits.argmax(-1)
        return predicted, predicted == labels
    if max(classes) >= logits.shape[-1]:
        raise MaelensError(f"`classes` contains {max(classes)}, but the model has "
                           f"{logits.shape[-1]} logits; give indices below {logits.shape[-1]}.")
    chosen = torch.tensor(classes, device=logits.device)
    position = logits.index_select(-1, chosen).argmax(-1)
    predicted = chosen[position]
    if label_space == "position":
        if int(labels.max()) >= len(classes) or int(labels.min()) < 0:
            raise MaelensError(f"a label ({int(labels.max())}) is outside the {len(classes)} "
                               "evaluated `classes` (labels name positions in `classes`); "
                               "set label_space='logit' if labels are logit indices.")
        return predicted, position == labels
    return predicted, predicted == labels


class Accuracy(Analysis):
    """Top-1 accuracy (percent) of the pass it is fed, with a Poisson-bootstrap 95 % CI.

    classes: evaluated logit indices (None: all); bootstrap: draws for the CI (0: none);
    seed: bootstrap seed. `result().arrays`: index (N,) int64, correct (N,) bool, predicted
    (N,) int64 logit index, labels (N,) int64.
    """

    name = "accuracy"
    taps = Taps(final=False, logits=True)

    def __init__(self, classes: Sequence[int] | None = None, bootstrap: int = 1000,
                 seed: int = 0, *, label_space: str = "position") -> None:
        super().__init__()
        self.classes = check_classes(classes, label_space)
        self.label_space = label_space
        self.bootstrap = check_bootstrap(bootstrap)
        self.seed = int(seed)
        self.add_state("correct", None, "cat")
        self.add_state("predicted", None, "cat")
        self.add_state("labels", None, "cat")

    def update(self, capture: Capture, batch: Batch) -> Accuracy:
        predicted, correct = top1(capture.logits, batch.labels, self.classes, self.label_space,
                                  "Accuracy")
        self.append_rows("correct", batch.index, correct)
        self.append_rows("predicted", batch.index, predicted)
        self.append_rows("labels", batch.index, batch.labels)
        return self

    def result(self) -> AnalysisResult:
        index, correct = self.rows_of("correct")
        flags = correct.numpy().astype(bool)
        value = 100.0 * flags.mean() if len(flags) else float("nan")
        ci = optional_cis(100.0 * flags, index.numpy(), self.seed, self.bootstrap)[0]
        classes = "all" if self.classes is None else list(self.classes)
        row = Row("top1", float(value), unit="%", ci_low=ci[0], ci_high=ci[1],
                  extra={"classes": classes, "images": len(flags), "correct": int(flags.sum())})
        meta = {"classes": classes, "label_space": self.label_space,
                "ci": ci_note(self.bootstrap, self.seed)}
        return AnalysisResult(self.name, rows=[row], arrays={
            "index": index.numpy(), "correct": flags,
            "predicted": self.rows_of("predicted")[1].numpy().astype(np.int64),
            "labels": self.rows_of("labels")[1].numpy().astype(np.int64)}, meta=meta)

