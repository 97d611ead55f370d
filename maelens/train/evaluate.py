"""Held-out accuracy of classifiers, and k-NN / linear-probe accuracy of frozen features.

The frozen features are *mean-patch* embeddings: the mean over the patch tokens (CLS
excluded) of the encoder output after its final norm, with no masking. k-NN votes with the
DINO rule by default (cosine similarity, k = 20, each neighbour weighted by exp(sim / 0.07));
`vote="majority"` gives plain majority voting (ties to the smallest class index, as
scikit-learn). The linear probe is scikit-learn's logistic regression (or closed-form ridge
classification) on standardised features. Both are defined in `maelens.analyses.separability`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# k-NN and linear-probe accuracy live with the other separability measures; re-exported here.
from maelens.analyses.separability import knn_accuracy, linear_probe_accuracy
from maelens.errors import MaelensError
from maelens.model.vit import VisionTransformer

__all__ = ["accuracy", "feature_accuracies", "knn_accuracy", "linear_probe_accuracy",
           "mean_patch_features", "predict_logits"]

Classifier = Callable[[torch.Tensor], torch.Tensor]  # pixels (B, C, H, W) -> logits (B, C)


def _device_of(module: object, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(module, nn.Module):
        param = next(module.parameters(), None)
        if param is not None:
            return param.device
    return torch.device("cpu")


@torch.no_grad()
def predict_logits(classifier: VisionTransformer | Classifier, images: torch.Tensor, *,
                   batch_size: int = 256, device: str | torch.device | None = None
                   ) -> torch.Tensor:
    """Logits (N, C) float32 on the CPU for normalised images (N, C, H, W), in eval mode."""
    forward = classifier.classify if isinstance(classifier, VisionTransformer) else classifier
    was_training = isinstance(classifier, nn.Module) and classifier.training
    if isinstance(classifier, nn.Module):
        classifier.eval()
    device = _device_of(classifier, device)
    try:
        chunks = [forward(images[i:i + batch_size].to(device)).float().cpu()
                  for i in range(0, len(images), batch_size)]
    finally:
        if was_training:
            classifier.train()
    return torch.cat(chunks)


def accuracy(classifier: VisionTransformer | Classifier, images: torch.Tensor,
             labels: torch.Tensor, *, batch_size: int = 256,
             device: str | torch.device | None = None) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of `classifier` on (images, labels)."""
    if len(images) != len(labels) or len(images) == 0:
        raise MaelensError(
            f"accuracy needs as many labels as images (at least one), got {len(images)} images "
            f"and {len(labels)} labels."
        )
    logits = predict_logits(classifier, images, batch_size=batch_size, device=device)
    return float((logits.argmax(dim=1) == labels.cpu()).double().mean())


@torch.no_grad()
def mean_patch_features(model: VisionTransformer, images: torch.Tensor, *,
                        batch_size: int = 256, device: str | torch.device | None = None
                        ) -> torch.Tensor:
    """(N, D) float32 CPU: mean over patch tokens of the final-norm output, no masking."""
    was_training = model.training
    model.eval()
    device = _device_of(model, device)
    try:
        chunks = [model(images[i:i + batch_size].to(device)).mean_patch().float().cpu()
                  for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def feature_accuracies(model: VisionTransformer, train_images: torch.Tensor,
                       train_labels: torch.Tensor, test_images: torch.Tensor,
                       test_labels: torch.Tensor, *, device: str | torch.device | None = None
                       ) -> dict[str, float]:
    """{"knn_accuracy", "linear_probe_accuracy"} of the frozen mean-patch features (defaults
    of `knn_accuracy` and `linear_probe_accuracy`)."""
    train_x = mean_patch_features(model, train_images, device=device)
    test_x = mean_patch_features(model, test_images, device=device)
    k = min(20, len(train_x))
    return {
        "knn_accuracy": knn_accuracy(train_x, train_labels, test_x, test_labels, k=k),
        "linear_probe_accuracy": linear_probe_accuracy(train_x, train_labels, test_x,
                                                       test_labels),
    }
