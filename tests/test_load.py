"""`load_model` on official-MAE / timm files, the restricted unpickler, and every error."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from maelens.checkpoints.load import Opaque, load_model, read_weights
from maelens.checkpoints.native import save_checkpoint
from maelens.errors import MaelensError
from maelens.model.config import ViTConfig
from maelens.model.taps import Taps
from maelens.model.vit import VisionTransformer

ENC = ViTConfig(image_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, mlp_dim=256)
FULL = ENC.replace(decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=2,
                   decoder_mlp_dim=128)
# The four official MAE kinds and a supervised timm ViT (CLS pooling, learned positions).
KINDS = {
    "mae_pretrain": ENC,
    "mae_full": FULL,
    "mae_visualize": FULL,
    "mae_finetuned": ENC.replace(pos_embed="learned", pool="avg", final_norm=False,
                                 fc_norm=True, num_classes=10),
    "timm_supervised": ENC.replace(pos_embed="learned", num_classes=10),
}
KEEP = torch.tensor([[0, 2, 5, 7, 8, 11, 13, 14]] * 2)


def _random_model(config: ViTConfig, seed: int = 0) -> VisionTransformer:
    """Random weights everywhere (biases and LayerNorms too), sin-cos tables kept exact."""
    torch.manual_seed(seed)
    model = VisionTransformer(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            fixed = name == "decoder_pos_embed" or (name == "pos_embed"
                                                    and config.pos_embed == "sincos")
            if not fixed:
                param.add_(0.05 * torch.randn_like(param))
    return model


def _train_args(**changes) -> argparse.Namespace:
    return argparse.Namespace(**{"model": "mae_vit_tiny", "mask_ratio": 0.75,
                                 "norm_pix_loss": False, "input_size": 32, "lr": None,
                                 **changes})


def _save_official(state, path, **args) -> None:
    """What the official MAE scripts write: weights under "model" plus training state."""
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
                "epoch": 7, "scaler": {"scale": 65536.0}, "args": _train_args(**args)}, path)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def models() -> dict[str, VisionTransformer]:
    return {kind: _random_model(config, seed) for seed, (kind, config) in enumerate(KINDS.items())}


def assert_same_outputs(loaded: VisionTransformer, source: VisionTransformer, pixels) -> None:
    head = source.config.num_classes > 0
    taps = Taps(hidden=None, attn=None, heads=None, pooled=True, logits=head)
    got, want = loaded(pixels, taps=taps, keep=KEEP), source(pixels, taps=taps, keep=KEEP)
    for name in ("hidden", "attn", "heads"):
        for layer, tensor in getattr(want, name).items():
            torch.testing.assert_close(getattr(got, name)[layer], tensor, atol=0, rtol=0)
    for name in ("final", "pooled") + (("logits",) if head else ()):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), atol=0, rtol=0)
    if source.config.has_decoder:
        a, b = loaded.forward_mae(pixels, keep=KEEP), source.forward_mae(pixels, keep=KEEP)
        torch.testing.assert_close(a.pred, b.pred, atol=0, rtol=0)
        torch.testing.assert_close(a.loss, b.loss, atol=0, rtol=0)


# --------------------------------------------------------------------------- official / timm
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("fmt", [".pth", ".safetensors"])
def test_official_and_timm_files_load_with_their_architecture(kind, fmt, models, pixels,
                                                              tmp_path):
    source = models[kind]
    path = tmp_path / f"{kind}_vit_tiny{fmt}"
    if fmt == ".pth":
        _save_official(source.state_dict(), path)
    else:
        save_file(source.state_dict(), str(path))
    loaded = load_model(path)
    assert loaded.config == source.config  # depth, width, heads, patch, size, pool, decoder...
    assert not loaded.training
    assert loaded.load_info["format"] == "timm"
    assert loaded.load_info["mask_ratio"] == (0.75 if fmt == ".pth" else None)
    assert_same_outputs(loaded, source, pixels)


@pytest.mark.parametrize("wrap", ["bare", "module", "state_dict", "legacy"])
def test_timm_state_dict_wrappings(wrap, models, pixels, tmp_path):
    source = models["timm_supervised"]
    state = source.state_dict()
    path = tmp_path / "vit.bin"
    if wrap == "module":  # DistributedDataParallel prefix
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif wrap == "state_dict":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif wrap == "legacy":  # the pre-1.6 non-zip format
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(state, path)
    loaded = load_model(path)
    assert loaded.config == source.config and loaded.load_info["kind"] == "classifier-cls"
    assert_same_outputs(loaded, source, pixels)


def test_training_args_set_norm_pix_loss(models, tmp_path):
    path = tmp_path / "mae_full.pth"
    _save_official(models["mae_full"].state_dict(), path, norm_pix_loss=True, mask_ratio=0.6)
    loaded = load_model(path)
    assert loaded.config.norm_pix_loss and loaded.load_info["mask_ratio"] == 0.6


def test_finetuned_kind_is_recognised(models, tmp_path):
    path = tmp_path / "mae_finetuned_vit_tiny.pth"
    _save_official(models["mae_finetuned"].state_dict(), path)
    config = load_model(path).config
    assert config.pool == "avg" and config.fc_norm and not config.final_norm
    assert config.num_classes == 10 and config.pos_embed == "learned"


# --------------------------------------------------------------------------- safe unpickling
class _Payload:
    """Unpickling this runs a shell command: the classic malicious checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_never_run(models, pixels, tmp_path):
    marker = tmp_path / "pwned_marker"
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": models["mae_pretrain"].state_dict(), "args": _train_args(),
                "payload": _Payload(str(marker))}, path)
    with pytest.raises(Exception):  # noqa: B017 - torch's safe mode refuses the whole file
        torch.load(path, weights_only=True)
    torch.load(path, weights_only=False)  # the payload is live: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    loaded = load_model(path)
    assert not marker.exists()
    assert_same_outputs(loaded, models["mae_pretrain"], pixels)
    _, args = read_weights(path)
    assert isinstance(args, Opaque) and "argparse.Namespace" in repr(args)
    assert args.mask_ratio == 0.75 and args.model == "mae_vit_tiny"


# --------------------------------------------------------------------------- other sources
def test_native_checkpoints_and_in_memory_sources(models, pixels, tmp_path):
    source = models["mae_full"]
    for target in (tmp_path / "native.safetensors", tmp_path / "native_dir"):
        save_checkpoint(source, target)
        loaded = load_model(target)
        assert loaded.config == source.config and loaded.load_info["format"] == "maelens"
        assert_same_outputs(loaded, source, pixels)
    copy = load_model(source)
    assert copy is not source and copy.config == source.config
    assert_same_outputs(copy, source, pixels)
    pair = load_model((source.config, source.state_dict()))
    assert_same_outputs(pair, source, pixels)


@pytest.mark.parametrize("kind", ["mae_full", "timm_supervised"])
def test_image_size_override_rebuilds_the_position_table_once(kind, models, tmp_path):
    source = models[kind]
    path = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = load_model(path, image_size=48)
    assert loaded.config.image_size == 48 and loaded.pos_embed.shape == (1, 37, 128)
    big = torch.randn(1, 3, 48, 48)
    taps = Taps(hidden=None)
    got, want = loaded(big, taps=taps), source(big, taps=taps)
    for layer, tensor in want.hidden.items():
        torch.testing.assert_close(got.hidden[layer], tensor, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.final, want.final, atol=1e-6, rtol=1e-5)
    if source.config.has_decoder:
        torch.testing.assert_close(loaded.forward_mae(big, keep=KEEP[:1]).pred,
                                   source.forward_mae(big, keep=KEEP[:1]).pred,
                                   atol=1e-6, rtol=1e-5)


def test_num_classes_num_heads_and_dtype_overrides(models, tmp_path):
    source = models["mae_finetuned"]
    path = tmp_path / "ft.safetensors"
    save_file(source.state_dict(), str(path))
    five = load_model(path, num_classes=5)
    assert five.head.weight.shape == (5, 128) and five.config.num_classes == 5
    assert torch.equal(five.fc_norm.weight, source.fc_norm.weight)
    assert load_model(path, num_classes=0).head is None
    assert load_model(path, num_heads=4).config.num_heads == 4
    half = load_model(path, dtype="bfloat16")
    assert half.blocks[0].attn.qkv.weight.dtype == torch.bfloat16


# --------------------------------------------------------------------------- errors
def test_unknown_formats(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(MaelensError, match=r"unknown file format: .*notes\.pth"):
        load_model(text)
    npz = tmp_path / "arrays.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(MaelensError, match=r"unknown file format: .*zip archive.*npz"):
        load_model(npz)


@pytest.mark.parametrize("fmt", [".pth", ".safetensors"])
def test_truncated_files(fmt, models, tmp_path):
    path = tmp_path / f"cut{fmt}"
    if fmt == ".pth":
        _save_official(models["mae_pretrain"].state_dict(), path)
    else:
        save_file(models["mae_pretrain"].state_dict(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MaelensError, match=rf"cut\{fmt}.*truncated or corrupt") as info:
        load_model(path)
    assert "\n" not in str(info.value)


def test_missing_and_unexpected_keys_are_named_and_counted(models, tmp_path):
    state = dict(models["timm_supervised"].state_dict())
    for key in ("blocks.1.norm2.weight", "blocks.1.norm2.bias", "blocks.1.mlp.fc2.bias"):
        del state[key]
    state["pre_logits.fc.weight"] = torch.zeros(128, 128)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(MaelensError) as info:
        load_model(path)
    message = str(info.value)
    assert "3 missing key(s) [blocks.1.mlp.fc2.bias, blocks.1.norm2.bias, " in message
    assert "1 unexpected key(s) [pre_logits.fc.weight]" in message


def test_shape_mismatch_names_the_tensor_and_both_shapes(models):
    state = dict(models["mae_pretrain"].state_dict())
    state["blocks.1.mlp.fc1.weight"] = torch.zeros(100, 128)
    with pytest.raises(MaelensError, match=r"`blocks\.1\.mlp\.fc1\.weight`: checkpoint "
                                           r"\(100, 128\), model expects \(256, 128\)"):
        load_model((ENC, state))


def test_directories_without_weights(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MaelensError, match="directory without a usable checkpoint"):
        load_model(empty)
    (empty / "config.json").write_text(json.dumps({"model_type": "vit_mae"}))
    with pytest.raises(MaelensError, match=r"without a usable checkpoint.*config\.json"):
        load_model(empty)


def test_unsupported_transformers_model_type(models, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"embeddings.word_embeddings.weight": torch.zeros(4, 4)},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(MaelensError, match="unsupported transformers model type 'bert'"):
        load_model(tmp_path)


def test_other_bad_sources(tmp_path):
    with pytest.raises(MaelensError, match="no such file or directory"):
        load_model(tmp_path / "missing.pth")
    with pytest.raises(MaelensError, match="cannot load a model from a int"):
        load_model(42)
    path = tmp_path / "epoch.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(MaelensError, match="no state dict found"):
        load_model(path)
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(MaelensError, match="not a ViT/MAE state dict"):
        load_model(path)


def test_bad_dtype(models):
    with pytest.raises(MaelensError, match="`dtype`"):
        load_model(models["mae_pretrain"], dtype="int8")
