"""Equivalence with transformers' ViTMAE / ViT (random weights, built offline from configs).

Each model is converted twice: from the in-memory transformers 5 object (`vit.layers.{i}.
attention.q_proj`...) and from the directory `save_pretrained` writes (`vit.encoder.layer.{i}.
attention.attention.query`..., decoder `decoder.decoder_encoder.layer.{i}`). Hidden states of
every layer (transformers `hidden_states[i]` <-> maelens `hidden[i]`), attentions, the final
norm output, reconstruction loss and predictions for the same mask, and logits must agree to
1e-4 in float32. Two sizes: a tiny one and the ViT-B/16 shape (batch 1).
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
import transformers  # a test dependency: missing it must fail loudly, not skip
from safetensors.torch import load_file, save_file

from maelens.checkpoints.load import load_model, read_checkpoint
from maelens.model.masking import random_keep
from maelens.model.posembed import sincos_2d
from maelens.model.taps import Taps
from maelens.model.vit import VisionTransformer

TOL = 1e-4
MASK_RATIO = 0.75
SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, image_size=32, patch_size=8),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, image_size=224, patch_size=16),
}
DECODERS = {
    "tiny": dict(decoder_hidden_size=32, decoder_num_hidden_layers=2,
                 decoder_num_attention_heads=4, decoder_intermediate_size=64),
    "base": dict(decoder_hidden_size=512, decoder_num_hidden_layers=8,
                 decoder_num_attention_heads=16, decoder_intermediate_size=2048),
}
BATCH = {"tiny": 2, "base": 1}


def _randomize(model: torch.nn.Module, seed: int, sincos: bool, scale: float) -> None:
    """transformers initialises biases, LayerNorms and the mask token to constants: perturb
    them; scale the random weights (sharper attention makes head-order bugs visible); MAE
    position tables get the fixed sin-cos values published weights carry."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if sincos and ("position_embeddings" in name or "decoder_pos_embed" in name):
                grid = int(round((param.shape[1] - 1) ** 0.5))
                param.copy_(sincos_2d(param.shape[-1], (grid, grid)))
            elif param.ndim <= 1 or "token" in name:
                param.add_(0.05 * torch.randn_like(param))
            elif scale != 1.0:
                param.mul_(scale)


def _noise_for(keep: torch.Tensor, num_patches: int) -> torch.Tensor:
    """transformers masks by argsort(noise): rank the kept patches first, in ascending order,
    so its `ids_keep` equals maelens' `keep`."""
    noise = torch.empty(keep.shape[0], num_patches)
    for row, kept in enumerate(keep):
        rest = torch.ones(num_patches, dtype=torch.bool)
        rest[kept] = False
        order = torch.cat([kept, torch.arange(num_patches)[rest]])
        noise[row, order] = torch.arange(num_patches, dtype=torch.float)
    return noise


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, what
    diff = (got - want).abs().max().item()
    assert diff <= TOL, f"{what}: max abs difference {diff:.2e}"


def _check_encoder(cap, hf_out, final: torch.Tensor | None = None) -> None:
    assert len(hf_out.hidden_states) == len(cap.hidden)
    for layer, hidden in enumerate(hf_out.hidden_states):
        _close(cap.hidden[layer], hidden, f"hidden[{layer}]")
    assert len(hf_out.attentions) == len(cap.attn)
    for layer, attn in enumerate(hf_out.attentions, start=1):
        _close(cap.attn[layer], attn, f"attn[{layer}]")
    if final is not None:
        _close(cap.final, final, "final")


ALL = Taps(hidden=None, attn=None, logits=False)
OUTPUTS = dict(output_hidden_states=True, output_attentions=True)


SCALE = {"tiny": 4.0, "base": 1.0}


@pytest.fixture(scope="module", params=list(SIZES))
def size(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def pixels(size) -> torch.Tensor:
    side = SIZES[size]["image_size"]
    return torch.randn(BATCH[size], 3, side, side, generator=torch.Generator().manual_seed(0))


def _build_mae(size: str, root, pixels: torch.Tensor) -> dict:
    """A ViTMAEForPreTraining, its and its encoder's save_pretrained directories, and the
    transformers outputs every test compares with (computed once)."""
    config = transformers.ViTMAEConfig(**SIZES[size], **DECODERS[size], mask_ratio=MASK_RATIO,
                                       attn_implementation="eager")
    torch.manual_seed(1)
    hf = transformers.ViTMAEForPreTraining(config).eval()
    _randomize(hf, seed=1, sincos=True, scale=SCALE[size])
    hf.save_pretrained(root / "pretraining")
    hf.vit.save_pretrained(root / "encoder")  # a ViTMAEModel directory
    n = hf.vit.embeddings.patch_embeddings.num_patches
    keep = random_keep(pixels.shape[0], n, MASK_RATIO, torch.Generator().manual_seed(5))
    noise = _noise_for(keep, n)
    with torch.no_grad():
        pretraining = hf(pixels, noise=noise, **OUTPUTS)
        masked_final = hf.vit(pixels, noise=noise).last_hidden_state
        hf.config.mask_ratio = 0.0  # arange noise keeps transformers' tokens in spatial order
        encoder = hf.vit(pixels, noise=torch.arange(n).float().expand(pixels.shape[0], n),
                         **OUTPUTS)
        hf.config.mask_ratio = MASK_RATIO
    return dict(hf=hf, dir=root / "pretraining", encoder_dir=root / "encoder", keep=keep,
                pretraining=pretraining, masked_final=masked_final, encoder=encoder)


@pytest.fixture(scope="module")
def mae(size, pixels, tmp_path_factory) -> dict:
    return _build_mae(size, tmp_path_factory.mktemp(f"mae_{size}"), pixels)


@pytest.fixture(scope="module")
def tiny_mae(tmp_path_factory) -> dict:
    return _build_mae("tiny", tmp_path_factory.mktemp("tiny_mae"), torch.randn(2, 3, 32, 32))


@pytest.fixture(scope="module")
def vit(size, pixels, tmp_path_factory) -> dict:
    """A ViTForImageClassification, its and its ViTModel's directories, transformers outputs."""
    config = transformers.ViTConfig(**SIZES[size], num_labels=10, attn_implementation="eager")
    torch.manual_seed(2)
    hf = transformers.ViTForImageClassification(config).eval()
    _randomize(hf, seed=2, sincos=False, scale=SCALE[size])
    root = tmp_path_factory.mktemp(f"vit_{size}")
    hf.save_pretrained(root / "classifier")
    hf.vit.save_pretrained(root / "encoder")
    with torch.no_grad():
        classifier = hf(pixels, **OUTPUTS)
        # ViTModel's outputs are the classifier's encoder states; `last_hidden_state` is its
        # final LayerNorm of the last one (saves a second ViT-B forward pass).
        final = hf.vit.layernorm(classifier.hidden_states[-1])
    return dict(hf=hf, dir=root / "classifier", encoder_dir=root / "encoder",
                classifier=classifier, final=final)


def _load_both(fixture: dict, part: str = "") -> VisionTransformer:
    """Convert the in-memory model and its save_pretrained directory (two key layouts): they
    must give the same config and bit-identical tensors, so one model checks both."""
    memory = read_checkpoint(fixture["hf"].vit if part == "encoder" else fixture["hf"])
    directory = read_checkpoint(fixture[f"{part}_dir" if part else "dir"])
    assert memory[0] == directory[0] and memory[1].keys() == directory[1].keys()
    for key, tensor in memory[1].items():
        assert torch.equal(tensor, directory[1][key]), key
    ours = load_model(fixture["hf"].vit if part == "encoder" else fixture["hf"])
    assert not ours.training
    return ours


@torch.no_grad()
def test_vitmae_for_pretraining(mae, pixels):
    ours = _load_both(mae)
    assert ours.config.norm_eps == 1e-12 and ours.config.pos_embed == "sincos"
    assert ours.config.has_decoder and ours.load_info["mask_ratio"] == MASK_RATIO
    keep, want = mae["keep"], mae["pretraining"]
    assert keep.shape[1] == int(ours.config.num_patches * (1 - MASK_RATIO))
    _check_encoder(ours(pixels, keep=keep, taps=ALL), want, mae["masked_final"])
    out = ours.forward_mae(pixels, keep=keep)
    assert torch.equal(out.mask, want.mask)
    _close(out.pred, want.logits, "pred")
    _close(out.loss, want.loss, "loss")


@torch.no_grad()
def test_vitmae_model_unmasked(mae, pixels):
    ours = _load_both(mae, "encoder")
    assert not ours.config.has_decoder and ours.load_info["format"] == "transformers:vit_mae"
    cap = ours(pixels, taps=ALL)
    n = ours.config.num_patches
    assert torch.equal(cap.keep, torch.arange(n).expand(pixels.shape[0], n))
    _check_encoder(cap, mae["encoder"], mae["encoder"].last_hidden_state)


@torch.no_grad()
def test_vit_for_image_classification(vit, pixels):
    ours = _load_both(vit)
    assert ours.config.num_classes == 10 and ours.config.pool == "cls"
    assert ours.config.pos_embed == "learned" and ours.config.norm_eps == 1e-12
    cap = ours(pixels, taps=Taps(hidden=None, attn=None, logits=True))
    _check_encoder(cap, vit["classifier"], vit["final"])
    _close(cap.logits, vit["classifier"].logits, "logits")


@torch.no_grad()
def test_vit_model(vit, pixels):
    ours = _load_both(vit, "encoder")
    assert ours.head is None and ours.load_info["format"] == "transformers:vit"
    _check_encoder(ours(pixels, taps=ALL), vit["classifier"], vit["final"])


@pytest.mark.parametrize("source", ["memory", "directory"])
@torch.no_grad()
def test_vitmae_norm_pix_loss(tiny_mae, source, tmp_path):
    hf = tiny_mae["hf"]
    pixels = torch.randn(2, 3, 32, 32)
    hf.config.norm_pix_loss = True
    try:
        if source == "directory":
            hf.save_pretrained(tmp_path / "npl")
        ours = load_model(hf if source == "memory" else tmp_path / "npl")
        keep = random_keep(2, 16, MASK_RATIO, torch.Generator().manual_seed(6))
        want = hf(pixels, noise=_noise_for(keep, 16))
    finally:
        hf.config.norm_pix_loss = False
    assert ours.config.norm_pix_loss
    out = ours.forward_mae(pixels, keep=keep)
    _close(out.loss, want.loss, "norm_pix loss")
    _close(out.pred, want.logits, "pred")


@torch.no_grad()
def test_vit_model_pooler_is_ignored_with_a_log_line(tmp_path, caplog):
    config = transformers.ViTConfig(**SIZES["tiny"], attn_implementation="eager")
    hf = transformers.ViTModel(config).eval()  # with its pooler
    _randomize(hf, seed=3, sincos=False, scale=SCALE["tiny"])
    hf.save_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 32, 32)
    want = hf(pixels, **OUTPUTS)
    for source in (hf, tmp_path):
        with caplog.at_level(logging.INFO, logger="maelens.checkpoints.load"):
            ours = load_model(source)
        assert sorted(ours.load_info["ignored"]) == ["pooler.dense.bias", "pooler.dense.weight"]
        assert "pooler.dense.weight" in caplog.text
        _check_encoder(ours(pixels, taps=ALL), want, want.last_hidden_state)


@torch.no_grad()
def test_directory_variants_bin_shards_and_preprocessor(tiny_mae, tmp_path):
    directory = tiny_mae["dir"]
    state = load_file(str(directory / "model.safetensors"))
    config = json.loads((directory / "config.json").read_text())
    reference = load_model(directory)
    pixels = torch.randn(1, 3, 32, 32)
    keep = torch.tensor([[1, 4, 9, 12]])

    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text(json.dumps(config))
    torch.save(state, binary / "pytorch_model.bin")
    (binary / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text(json.dumps(config))
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in halves.items():
        save_file({k: state[k] for k in keys}, str(sharded / shard))
    index = {"weight_map": {k: shard for shard, keys in halves.items() for k in keys}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))

    for variant in (binary, sharded):
        ours = load_model(variant)
        _close(ours.forward_mae(pixels, keep=keep).pred,
               reference.forward_mae(pixels, keep=keep).pred, variant.name)
    assert load_model(binary).config.mean == (0.5, 0.5, 0.5)
    assert load_model(binary).config.std == (0.25, 0.25, 0.25)
    assert reference.config.mean == (0.485, 0.456, 0.406)


def test_in_memory_unsupported_transformers_model():
    from maelens.errors import MaelensError

    config = transformers.ViTConfig(**SIZES["tiny"])
    model = transformers.ViTForMaskedImageModeling(config)
    with pytest.raises(MaelensError, match="unsupported transformers architecture "
                                           "'ViTForMaskedImageModeling'"):
        load_model(model)
