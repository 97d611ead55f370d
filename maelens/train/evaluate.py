"""Held-out accuracy of classifiers, and k-NN / linear-probe accuracy of frozen features.

The frozen features are *mean-patch* embeddings: the mean over the patch tokens (CLS
excluded) of the encoder output after its final norm, with no masking. k-NN votes with the
DINO rule by default (cosine similarity, k = 20, each neighbour weighted by exp(sim / 0.07));
`vote="majority"` gives plain majority voting (ties to the smallest class index, as
scikit-learn). The linear probe is scikit-learn's logistic regression (or closed-form ridge
classification) on standardised features.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maelens.errors import MaelensError
from maelens.model.vit import VisionTransformer

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


def _check_features(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                    test_y: torch.Tensor) -> None:
    ok = (train_x.ndim == 2 and test_x.ndim == 2 and train_x.shape[1] == test_x.shape[1]
          and len(train_x) == len(train_y) and len(test_x) == len(test_y) and len(test_x) > 0)
    if not ok:
        raise MaelensError(
            "features must be (N, D) train and (M, D) test arrays with N and M labels, got "
            f"{tuple(train_x.shape)} / {tuple(train_y.shape)} and {tuple(test_x.shape)} / "
            f"{tuple(test_y.shape)}."
        )


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor,
                 test_features: torch.Tensor, test_labels: torch.Tensor, *, k: int = 20,
                 vote: str = "weighted", temperature: float = 0.07) -> float:
    """Accuracy of cosine k-NN classification of the test features by the train features.

    vote "weighted": each of the k nearest neighbours adds exp(cosine / temperature) to its
    class (DINO's k-NN monitor); "majority": each adds 1. Predicted class: the largest total,
    ties to the smallest class index.
    """
    train_x, test_x = torch.as_tensor(train_features), torch.as_tensor(test_features)
    train_y, test_y = torch.as_tensor(train_labels).long(), torch.as_tensor(test_labels).long()
    _check_features(train_x, train_y, test_x, test_y)
    if vote not in ("weighted", "majority"):
        raise MaelensError(f"`vote` must be 'weighted' or 'majority', got {vote!r}.")
    if not 1 <= k <= len(train_x):
        raise MaelensError(f"`k` must lie in [1, {len(train_x)}] (train size), got {k}.")
    train_x = F.normalize(train_x.double(), dim=1)
    test_x = F.normalize(test_x.double(), dim=1)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for start in range(0, len(test_x), 1024):
        sims, idx = (test_x[start:start + 1024] @ train_x.T).topk(k, dim=1)  # (Q, k)
        weights = (sims / temperature).exp() if vote == "weighted" else torch.ones_like(sims)
        votes = torch.zeros(len(sims), n_classes, dtype=torch.float64)
        votes.scatter_add_(1, train_y[idx], weights)  # (Q, C)
        correct += int((votes.argmax(dim=1) == test_y[start:start + 1024]).sum())
    return correct / len(test_x)


def linear_probe_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor,
                          test_features: torch.Tensor, test_labels: torch.Tensor, *,
                          method: str = "logistic", l2: float = 1.0) -> float:
    """Accuracy of a linear classifier fitted on standardised train features.

    method "logistic": multinomial logistic regression (lbfgs), C = 1 / l2; "ridge": the
    closed-form ridge classifier (one-vs-all least squares on +-1 targets), alpha = l2.
    """
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.preprocessing import StandardScaler

    train_x, test_x = torch.as_tensor(train_features), torch.as_tensor(test_features)
    train_y, test_y = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    _check_features(train_x, train_y, test_x, test_y)
    if method not in ("logistic", "ridge"):
        raise MaelensError(f"`method` must be 'logistic' or 'ridge', got {method!r}.")
    if not l2 > 0:
        raise MaelensError(f"`l2` must be > 0, got {l2}.")
    scaler = StandardScaler().fit(train_x.double().numpy())
    fit_x, eval_x = scaler.transform(train_x.double().numpy()), scaler.transform(
        test_x.double().numpy())
    model = (LogisticRegression(C=1.0 / l2, max_iter=2000) if method == "logistic"
             else RidgeClassifier(alpha=l2))
    model.fit(fit_x, train_y.numpy())
    return float(np.mean(model.predict(eval_x) == test_y.numpy()))


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
