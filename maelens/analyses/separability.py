"""How separable the classes are, layer by layer: k-NN and linear-probe accuracy on held-out
images, the silhouette score and a Fisher ratio (post-processing of result arrays).

Definitions (features X (N, D) with labels y, C classes, class means mu_c, overall mean mu):
- k-NN accuracy: cosine k-NN of the test rows by the train rows; DINO's similarity-weighted
  vote by default (k = 20, weight exp(cos / 0.07)), or plain majority (ties to the smallest
  class index, as scikit-learn).
- linear-probe accuracy: multinomial logistic regression (lbfgs, C = 1 / l2) or the closed-form
  ridge classifier on train features standardised with the train mean / std.
- silhouette: scikit-learn's mean silhouette coefficient, cosine distance by default
  (euclidean optional), in [-1, 1].
- Fisher ratio: tr(S_B) / tr(S_W), S_B = sum_c n_c (mu_c - mu)(mu_c - mu)^T (between-class
  scatter), S_W = sum_c sum_{i in c} (x_i - mu_c)(x_i - mu_c)^T (within-class scatter); unbounded,
  0 when the class means coincide. Euclidean, so it depends on the feature scaling.

Held-out split: seeded, stratified, and *by image*: every patch token of an image falls on
the same side, since tokens of one image are strongly correlated (a token split would leak).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from maelens.analyses.base import Row
from maelens.errors import MaelensError
from maelens.seeds import derive_seed

METRICS = ("knn_accuracy", "probe_accuracy", "silhouette", "fisher_ratio")


# --------------------------------------------------------------------------- k-NN and probe
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


# --------------------------------------------------------------------------- geometry
def check_labels(labels: np.ndarray, what: str = "images") -> np.ndarray:
    """`labels` (N,) as int64, with at least two classes and two rows in every class."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise MaelensError(f"separability needs at least two classes, got {len(classes)} "
                           f"({len(labels)} {what}); fix: give images of two or more classes.")
    if counts.min() < 2:
        lonely = classes[counts < 2].tolist()
        raise MaelensError(f"class(es) {lonely} have a single image; separability needs at "
                           "least two per class; fix: raise `--per-class` or drop that class.")
    return labels


def silhouette(features: np.ndarray, labels: np.ndarray, metric: str = "cosine") -> float:
    """Mean silhouette coefficient of (N, D) `features` by `labels` (scikit-learn), in [-1, 1].

    NaN when every row is the same point (e.g. the CLS token before any block).
    """
    from sklearn.metrics import silhouette_score

    if metric not in ("cosine", "euclidean"):
        raise MaelensError(f"`metric` must be 'cosine' or 'euclidean', got {metric!r}.")
    x = np.asarray(features, dtype=np.float64)
    labels = check_labels(labels, "rows")
    if _is_constant(x):
        return float("nan")
    return float(silhouette_score(x, labels, metric=metric))


def fisher_ratio(features: np.ndarray, labels: np.ndarray) -> float:
    """tr(S_B) / tr(S_W) of (N, D) `features` (see the module docstring); NaN if S_W = 0.

    Both traces are sums of squared distances, so no D x D scatter matrix is formed.
    """
    x = np.asarray(features, dtype=np.float64)
    labels = check_labels(labels, "rows")
    mean = x.mean(axis=0)
    between = within = 0.0
    for label in np.unique(labels):
        rows = x[labels == label]
        centre = rows.mean(axis=0)
        between += len(rows) * float(np.sum((centre - mean) ** 2))
        within += float(np.sum((rows - centre) ** 2))
    return between / within if within > 0 else float("nan")


def _is_constant(x: np.ndarray) -> bool:
    spread = float(np.max(np.ptp(x, axis=0))) if len(x) else 0.0
    return spread <= 1e-7 * max(float(np.max(np.abs(x))), 1e-30)


# --------------------------------------------------------------------------- splits, caps
def stratified_split(labels: np.ndarray, test_fraction: float = 0.25, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows), ascending: round(test_fraction * n_c) rows of each class c
    (at least 1, at most n_c - 1) go to the test side, drawn from (seed, "split", c)."""
    if not 0.0 < test_fraction < 1.0:
        raise MaelensError(f"`test_fraction` must lie in (0, 1), got {test_fraction}.")
    labels = check_labels(labels)
    test = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        n_test = min(max(1, round(test_fraction * len(rows))), len(rows) - 1)
        order = np.random.default_rng(derive_seed(seed, "split", int(label))).permutation(
            len(rows))
        test.append(rows[order[:n_test]])
    test_rows = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_rows), test_rows


def stratified_subsample(labels: np.ndarray, total: int | None, seed: int = 0,
                         purpose: str = "subsample") -> np.ndarray:
    """Ascending rows of at most `total`, spread as evenly over the classes as their counts
    allow (a class with fewer rows gives its share to the others); each class's draw comes
    from (seed, purpose, class), so the pick depends on neither batching nor order."""
    labels = np.asarray(labels).reshape(-1)
    if total is None or total >= len(labels):
        return np.arange(len(labels))
    if total < 1:
        raise MaelensError(f"the subsample size must be >= 1, got {total}.")
    classes, counts = np.unique(labels, return_counts=True)
    quota, remaining = {}, int(total)
    for left, at in enumerate(np.argsort(counts, kind="stable")):
        quota[classes[at]] = min(int(counts[at]), remaining // (len(classes) - left))
        remaining -= quota[classes[at]]
    chosen = []
    for label in classes:
        rows = np.flatnonzero(labels == label)
        rng = np.random.default_rng(derive_seed(seed, purpose, int(label)))
        chosen.append(rows[rng.permutation(len(rows))[:quota[label]]])
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------- per layer
@dataclass(frozen=True)
class SeparabilitySettings:
    """k / vote of the k-NN, probe method / l2, silhouette metric, held-out fraction and seed
    of the split, cap on the rows the silhouette sees (it costs N^2)."""

    k: int = 20
    vote: str = "weighted"
    probe: str = "logistic"
    l2: float = 1.0
    metric: str = "cosine"
    test_fraction: float = 0.25
    seed: int = 0
    max_silhouette_rows: int = 5000


@dataclass
class Split:
    """Features of one kind on both sides: train (L, N_tr, D), test (L, N_te, D), labels."""

    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray


def split_by_image(features: np.ndarray, labels: np.ndarray, image: np.ndarray,
                   settings: SeparabilitySettings) -> Split:
    """A seeded stratified split of (L, M, D) rows by their image (`image` (M,) ids): all
    rows of an image land on one side."""
    images, first = np.unique(image, return_index=True)
    train_images, test_images = stratified_split(labels[first], settings.test_fraction,
                                                 settings.seed)
    test_rows = np.isin(image, images[test_images])
    return Split(features[:, ~test_rows], labels[~test_rows], features[:, test_rows],
                 labels[test_rows])


def layer_scores(split: Split, layers: Sequence[int], kind: str,
                 settings: SeparabilitySettings) -> list[Row]:
    """Rows (metric in METRICS, layer, extra {"kind"}) for every layer of `split`.

    Silhouette and Fisher ratio see train and test rows together (they fit nothing; the
    silhouette on a stratified subsample of at most `max_silhouette_rows`)."""
    if len(layers) != split.train.shape[0]:
        raise MaelensError(f"{len(layers)} layer numbers for {split.train.shape[0]} layers.")
    labels = check_labels(np.concatenate([split.train_labels, split.test_labels]), "rows")
    if len(np.unique(split.train_labels)) < 2 or len(split.test_labels) == 0:
        raise MaelensError("the train side must hold two or more classes and the test side at "
                           f"least one row, got classes {np.unique(split.train_labels).tolist()}"
                           f" and {len(split.test_labels)} test rows; fix: give more images.")
    sub = stratified_subsample(labels, settings.max_silhouette_rows, settings.seed, "silhouette")
    k = min(settings.k, split.train.shape[1])
    rows = []
    for i, layer in enumerate(layers):
        train, test = split.train[i], split.test[i]
        both = np.concatenate([train, test])
        values = {
            "knn_accuracy": knn_accuracy(torch.from_numpy(train), split.train_labels,
                                         torch.from_numpy(test), split.test_labels, k=k,
                                         vote=settings.vote),
            "probe_accuracy": linear_probe_accuracy(
                torch.from_numpy(train), split.train_labels, torch.from_numpy(test),
                split.test_labels, method=settings.probe, l2=settings.l2),
            "silhouette": silhouette(both[sub], labels[sub], settings.metric),
            "fisher_ratio": fisher_ratio(both, labels),
        }
        extra = {"kind": kind, "n_train": int(len(train)), "n_test": int(len(test))}
        rows += [Row(metric=name, value=value, unit="fraction" if "accuracy" in name else "",
                     layer=int(layer), extra=dict(extra)) for name, value in values.items()]
    return rows
