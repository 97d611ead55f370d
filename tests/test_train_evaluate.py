"""Mean-patch features and accuracy; k-NN / probe are re-exported from separability."""

from __future__ import annotations

import pytest
import torch

from maelens.model.config import preset
from maelens.model.vit import VisionTransformer
from maelens.train import accuracy, knn_accuracy, linear_probe_accuracy, mean_patch_features

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_dim": 64, "decoder_depth": 0}


def test_knn_and_probe_are_re_exported_from_separability():
    # k-NN / probe tests live in tests/test_analyses_separability.py, with the functions
    from maelens.analyses import separability

    assert knn_accuracy is separability.knn_accuracy
    assert linear_probe_accuracy is separability.linear_probe_accuracy


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
