"""`LabeledImages`: equal-sized uint8 images with integer labels and class names.

The plain-data contract between the loaders (MNIST demo, class folders) and everything
downstream: images stay uint8 until a `Preprocess` turns them into model inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from maelens.data.preprocess import Preprocess
from maelens.errors import MaelensError


@dataclass(frozen=True)
class LabeledImages:
    """images (N, H, W, 3) uint8 RGB; labels (N,) int64 in [0, C); class_names (C,) strings."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[-1] != 3:
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(
                images).__name__
            raise MaelensError(f"LabeledImages `images` must be uint8 (N, H, W, 3), got {got}.")
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise MaelensError(
                f"LabeledImages `labels` must be integers of shape ({len(images)},), got "
                f"{labels.dtype} {labels.shape}."
            )
        n_classes = len(self.class_names)
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise MaelensError(
                f"LabeledImages `labels` must lie in [0, {n_classes}) for {n_classes} class "
                f"names, got values in [{labels.min()}, {labels.max()}]."
            )
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "class_names", [str(name) for name in self.class_names])

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabeledImages:
        """The images at `indices` (in that order; a copy), with the same class names."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise MaelensError(
                f"LabeledImages.subset: indices must lie in [0, {len(self)}), got values in "
                f"[{indices.min()}, {indices.max()}]."
            )
        return LabeledImages(self.images[indices], self.labels[indices], list(self.class_names))

    def to_tensor(self, preprocess: Preprocess) -> torch.Tensor:
        """(N, 3, S, S) float32 model inputs, resized, cropped and normalised by `preprocess`."""
        return preprocess(self.images)

    def labels_tensor(self) -> torch.Tensor:
        """(N,) int64 labels as a tensor (a copy)."""
        return torch.from_numpy(self.labels.copy())
