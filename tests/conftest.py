"""Tiny shared fixtures: depth-2, width-32 models on 32x32 images."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits

from maelens.model.config import ViTConfig
from maelens.model.vit import VisionTransformer

_BLAS_LIMIT = []


def pytest_configure(config) -> None:  # noqa: ANN001
    # Tiny models and matrices gain nothing from a second thread, and on a shared 2-core
    # machine a second thread mostly waits (small-matrix BLAS was seen ~80x slower under load):
    # one thread keeps the suite fast and its timings stable.
    torch.set_num_threads(1)
    _BLAS_LIMIT.append(threadpool_limits(1))


# Architecture overrides of the "mae_demo" preset for tiny training runs.
TINY_TRAIN_OVERRIDES = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_dim": 64,
                        "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2,
                        "decoder_mlp_dim": 64}


def tiny_config(**changes) -> ViTConfig:  # noqa: ANN003
    base = ViTConfig(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_dim=64,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                     decoder_mlp_dim=32)
    return base.replace(**changes)


def tiny_model(seed: int = 0, **changes) -> VisionTransformer:  # noqa: ANN003
    torch.manual_seed(seed)
    return VisionTransformer(tiny_config(**changes)).eval()


@pytest.fixture
def tiny() -> VisionTransformer:
    """An MAE (encoder + decoder) with a 4-class average-pool head, random weights."""
    return tiny_model(num_classes=4, pool="avg", fc_norm=True, final_norm=False)


@pytest.fixture
def images() -> torch.Tensor:
    """(6, 3, 32, 32) normalised-looking random images."""
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
