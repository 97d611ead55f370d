"""Fine-tuning, linear probing, the supervised baseline, architecture and argument checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maelens.checkpoints.load import load_model
from maelens.checkpoints.native import read_native, save_checkpoint
from maelens.errors import MaelensError
from maelens.model.config import preset
from maelens.model.vit import VisionTransformer
from maelens.train import (
    FinetuneArgs,
    PretrainArgs,
    TrainData,
    TrainViTArgs,
    accuracy,
    finetune,
    train_vit,
)
from maelens.train.finetune import Classifier
from tests.conftest import TINY_TRAIN_OVERRIDES as TINY

COLOURS = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]])  # two classes, normalised units


def colour_data(n: int, seed: int) -> TrainData:
    """Two separable classes: constant-colour images (per class) plus small noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = COLOURS[labels][:, :, None, None] + 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    return TrainData(images, labels, ("red", "green"))


@pytest.fixture(scope="module")
def mae_checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained MAE saved as a maelens checkpoint (fine-tuning needs no pre-training
    to separate two colours)."""
    path = tmp_path_factory.mktemp("mae") / "tiny_mae"
    torch.manual_seed(0)
    save_checkpoint(VisionTransformer(preset("mae_demo", **TINY)), path, meta={"kind": "test"})
    return path


def ft_args(out: Path, checkpoint: Path, **changes) -> FinetuneArgs:
    base = {"out_dir": str(out), "checkpoint": str(checkpoint), "epochs": 3, "batch_size": 16,
            "lr": 3e-3, "warmup_epochs": 0.5, "progress": False, "device": "cpu",
            "augment_shift": 1}
    return FinetuneArgs(**{**base, **changes})


def test_finetune_separates_two_colours(tmp_path, mae_checkpoint):
    result = finetune(ft_args(tmp_path, mae_checkpoint), data=colour_data(64, 0),
                      eval_data=colour_data(32, 1))
    assert result.metrics["test_accuracy"] >= 0.95
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert "test_accuracy" in result.history[-1]
    config, state, meta = read_native(tmp_path)
    assert config.pool == "avg" and config.fc_norm and not config.final_norm
    assert config.num_classes == 2 and config.decoder_depth == 0
    assert not any(k.startswith(("decoder_", "mask_token", "norm.")) for k in state)
    assert meta["kind"] == "finetune" and meta["source"]["path"] == str(mae_checkpoint)
    source = read_native(mae_checkpoint)[1]
    assert not torch.equal(state["blocks.0.attn.qkv.weight"], source["blocks.0.attn.qkv.weight"])


def test_linear_probe_leaves_the_encoder_unchanged(tmp_path, mae_checkpoint):
    args = ft_args(tmp_path, mae_checkpoint, linear_probe=True, pool="cls", lr=1e-2)
    result = finetune(args, data=colour_data(64, 0), eval_data=colour_data(32, 1))
    assert result.metrics["test_accuracy"] >= 0.95
    config, state, meta = read_native(tmp_path)
    source = read_native(mae_checkpoint)[1]
    encoder = [k for k in state if not k.startswith("head.")]
    assert "norm.weight" in encoder and config.final_norm and meta["kind"] == "linear_probe"
    for key in encoder:
        assert torch.equal(state[key], source[key]), key


def test_folding_the_probe_batchnorm_keeps_the_logits():
    torch.manual_seed(0)
    vit = VisionTransformer(preset("mae_demo", **{**TINY, "decoder_depth": 0}, num_classes=3))
    probe = Classifier(vit, frozen_encoder=True).train()
    pixels = torch.randn(16, 3, 32, 32)
    for _ in range(3):  # gather running statistics
        probe(pixels)
    probe.eval()
    with torch.no_grad():
        expected = probe(pixels)
        got = probe.export().classify(pixels)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_train_vit_from_scratch(tmp_path):
    args = TrainViTArgs(out_dir=str(tmp_path), overrides=TINY, epochs=3, batch_size=16, lr=3e-3,
                        warmup_epochs=0.5, progress=False, device="cpu")
    result = train_vit(args, data=colour_data(64, 0), eval_data=colour_data(32, 1))
    assert result.metrics["test_accuracy"] >= 0.95
    config, state, meta = read_native(tmp_path)
    assert config.pos_embed == "sincos" and config.decoder_depth == 0 and config.pool == "avg"
    assert meta["kind"] == "supervised" and config.drop_path_rate == 0.1
    model = load_model(tmp_path)  # the public loader reads what training wrote
    assert model.config == config
    data = colour_data(32, 1)
    assert accuracy(model, data.images, data.labels) == result.metrics["test_accuracy"]


def test_finetune_resume_gives_identical_weights(tmp_path, mae_checkpoint):
    data, held = colour_data(48, 0), colour_data(16, 1)
    finetune(ft_args(tmp_path / "full", mae_checkpoint, epochs=2), data=data, eval_data=held)
    finetune(ft_args(tmp_path / "split", mae_checkpoint, epochs=2, stop_at_step=2), data=data,
             eval_data=held)
    finetune(ft_args(tmp_path / "split", mae_checkpoint, epochs=2, resume=True), data=data,
             eval_data=held)
    full, split = read_native(tmp_path / "full")[1], read_native(tmp_path / "split")[1]
    assert all(torch.equal(full[k], split[k]) for k in full)


def test_architecture_mismatch_names_the_fields(tmp_path, mae_checkpoint):
    with pytest.raises(MaelensError, match=r"checkpoint embed_dim=32, requested 192") as err:
        finetune(ft_args(tmp_path, mae_checkpoint, preset="mae_demo"), data=colour_data(32, 0))
    assert "depth=2, requested 6" in str(err.value)


def test_resume_into_another_architecture_names_the_field(tmp_path, mae_checkpoint):
    data = colour_data(32, 0)
    finetune(ft_args(tmp_path, mae_checkpoint, stop_at_step=1), data=data)
    with pytest.raises(MaelensError, match="pool='avg', requested 'cls'"):
        finetune(ft_args(tmp_path, mae_checkpoint, pool="cls", resume=True), data=data)


def test_data_of_the_wrong_size_is_refused(tmp_path, mae_checkpoint):
    small = TrainData(torch.zeros(16, 3, 16, 16), torch.zeros(16, dtype=torch.long), ("a",))
    with pytest.raises(MaelensError, match="3x16x16"):
        finetune(ft_args(tmp_path, mae_checkpoint), data=small)


def test_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(MaelensError):
        finetune(ft_args(tmp_path / "out", tmp_path / "nothing_here"), data=colour_data(32, 0))


@pytest.mark.parametrize(("changes", "field"), [
    ({"mask_ratio": 1.0}, "mask_ratio"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": -1.0}, "lr"),
    ({"epochs": 2, "warmup_epochs": 3}, "warmup_epochs"),
    ({"overrides": {"width": 3}}, "overrides"),
    ({"preset": "nope"}, "preset"),
    ({"betas": (0.9, 1.5)}, "betas"),
    ({"save_dtype": "int8"}, "save_dtype"),
    ({"augment_shift": -1}, "augment_shift"),
    ({"clip_grad": float("nan")}, "clip_grad"),
])
def test_bad_pretrain_arguments_name_the_field(tmp_path, changes, field):
    with pytest.raises(MaelensError, match=field):
        PretrainArgs(out_dir=str(tmp_path), **changes)


@pytest.mark.parametrize(("changes", "field"), [
    ({"pool": "max"}, "pool"),
    ({"layer_decay": 1.5}, "layer_decay"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"drop_path": -0.1}, "drop_path"),
    ({"checkpoint": ""}, "checkpoint"),
])
def test_bad_finetune_arguments_name_the_field(tmp_path, changes, field):
    with pytest.raises(MaelensError, match=field):
        FinetuneArgs(**{"out_dir": str(tmp_path), "checkpoint": "x", **changes})


def test_batch_larger_than_data_and_unknown_device(tmp_path, mae_checkpoint):
    with pytest.raises(MaelensError, match="batch_size"):
        finetune(ft_args(tmp_path / "a", mae_checkpoint, batch_size=64), data=colour_data(32, 0))
    with pytest.raises(MaelensError, match="device"):
        finetune(ft_args(tmp_path / "b", mae_checkpoint, device="tpu"), data=colour_data(32, 0))
