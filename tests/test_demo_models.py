"""The committed demo models load and perform on the MNIST demo test split (issue 3), and the
embedded default run works end to end."""

from __future__ import annotations

import json

import pytest
import torch

from maelens.checkpoints.demo_models import DEMO_MODELS, demo_model_path
from maelens.checkpoints.load import load_model
from maelens.data import mnist_tensors
from maelens.train.evaluate import accuracy, knn_accuracy, mean_patch_features


@pytest.fixture(scope="module")
def test_split():
    return mnist_tensors("test")


def test_demo_models_are_small_and_describe_themselves():
    total = sum(demo_model_path(name).stat().st_size for name in DEMO_MODELS)
    assert total <= 40 * 2**20
    mae = load_model("demo:mae")
    assert mae.config.has_decoder and mae.head is None
    assert (mae.config.embed_dim, mae.config.num_heads, mae.config.patch_size,
            mae.config.image_size) == (192, 3, 4, 32)
    assert 6 <= mae.config.depth <= 12
    meta = mae.load_info["meta"]
    assert meta["args"]["mask_ratio"] == 0.75 and "torch" in json.dumps(meta)


@pytest.mark.slow
def test_finetuned_mae_reaches_97_percent(test_split):
    model = load_model("demo:finetuned")
    assert model.config.pool == "avg" and model.config.fc_norm and not model.config.has_decoder
    assert accuracy(model, *test_split) >= 0.97


@pytest.mark.slow
def test_supervised_vit_reaches_93_percent(test_split):
    model = load_model("demo:vit")
    assert accuracy(model, *test_split) >= 0.93


@pytest.mark.slow
def test_pretrained_mae_features_are_far_above_chance(test_split):
    model = load_model("demo:mae")
    train_x, train_y = mnist_tensors("train")
    with torch.inference_mode():
        train_f = mean_patch_features(model, train_x)
        test_f = mean_patch_features(model, test_split[0])
    assert knn_accuracy(train_f, train_y, test_f, test_split[1]) >= 0.80  # chance: 0.10
