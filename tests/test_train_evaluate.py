"""k-NN and linear-probe accuracy of frozen features, mean-patch features, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier
from sklearn.neighbors import KNeighborsClassifier

from maelens.errors import MaelensError
from maelens.model.config import preset
from maelens.model.vit import VisionTransformer
from maelens.train import accuracy, knn_accuracy, linear_probe_accuracy, mean_patch_features

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_dim": 64, "decoder_depth": 0}


def blobs(n: int, seed: int, spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three overlapping Gaussian classes in 8 dimensions."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.randn(3, 8, generator=torch.Generator().manual_seed(99))
    return centres[labels] + spread * torch.randn(n, 8, generator=g), labels


def test_majority_knn_equals_scikit_learn():
    train_x, train_y = blobs(120, 0)
    test_x, test_y = blobs(60, 1)
    ours = knn_accuracy(train_x, train_y, test_x, test_y, k=7, vote="majority")
    knn = KNeighborsClassifier(n_neighbors=7, metric="cosine", algorithm="brute")
    knn.fit(train_x.numpy(), train_y.numpy())
    assert ours == pytest.approx(float(np.mean(knn.predict(test_x.numpy()) == test_y.numpy())))
    assert 0.4 < ours < 1.0  # overlapping classes: neither trivial nor chance


def test_weighted_knn_by_hand():
    # One query; neighbours at cosine 1.0 (class 0) and 0.8, 0.8 (class 1), k = 3.
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    query, truth = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    # weighted: exp(1/0.07) > 2 exp(0.8/0.07) -> class 0; majority: 2 votes to 1 -> class 1
    assert knn_accuracy(train, labels, query, truth, k=3) == 1.0
    assert knn_accuracy(train, labels, query, truth, k=3, vote="majority") == 0.0
    # a high temperature flattens the weights towards majority voting
    assert knn_accuracy(train, labels, query, truth, k=3, temperature=10.0) == 0.0


def test_linear_probe_separable_and_ridge_equals_scikit_learn():
    train_x, train_y = blobs(150, 0, spread=0.1)
    test_x, test_y = blobs(60, 1, spread=0.1)
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y) == 1.0
    train_x, train_y = blobs(150, 0, spread=1.5)
    test_x, test_y = blobs(90, 1, spread=1.5)
    ours = linear_probe_accuracy(train_x, train_y, test_x, test_y, method="ridge", l2=2.0)
    mean, std = train_x.double().mean(0), train_x.double().std(0, unbiased=False)
    ridge = RidgeClassifier(alpha=2.0).fit(((train_x - mean) / std).numpy(), train_y.numpy())
    expected = np.mean(ridge.predict(((test_x - mean) / std).numpy()) == test_y.numpy())
    assert ours == pytest.approx(float(expected))


def test_feature_functions_reject_bad_input():
    x, y = blobs(10, 0)
    with pytest.raises(MaelensError, match="k"):
        knn_accuracy(x, y, x, y, k=11)
    with pytest.raises(MaelensError, match="vote"):
        knn_accuracy(x, y, x, y, vote="mean")
    with pytest.raises(MaelensError, match="features"):
        linear_probe_accuracy(x, y[:5], x, y)
    with pytest.raises(MaelensError, match="method"):
        linear_probe_accuracy(x, y, x, y, method="svm")


def test_mean_patch_features_and_accuracy():
    torch.manual_seed(0)
    model = VisionTransformer(preset("mae_demo", **TINY, num_classes=4)).train()
    pixels = torch.randn(5, 3, 32, 32)
    features = mean_patch_features(model, pixels, batch_size=2)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        tokens = model.norm(_tokens(model, pixels))  # (B, T, D) by hand
    torch.testing.assert_close(features, tokens[:, 1:].mean(dim=1))
    with torch.no_grad():
        predicted = model.classify(pixels).argmax(dim=1)
    labels = predicted.clone()
    labels[:2] = (labels[:2] + 1) % 4
    assert accuracy(model, pixels, labels, batch_size=2) == pytest.approx(3 / 5)


def _tokens(model: VisionTransformer, pixels: torch.Tensor) -> torch.Tensor:
    x = model.patch_embed(pixels) + model.pos_embed[:, 1:]
    x = torch.cat([(model.cls_token + model.pos_embed[:, :1]).expand(len(x), -1, -1), x], 1)
    for block in model.blocks:
        x = block(x)[0]
    return x
