"""Pure key-map converters and architecture inference (no files, no transformers)."""

from __future__ import annotations

import pytest
import torch

from maelens.checkpoints.convert import (
    check_hf_sizes,
    default_decoder_heads,
    default_num_heads,
    detect_layout,
    hf_config_fields,
    hf_to_timm,
    infer_config,
    preprocessing_fields,
    strip_prefix,
    to_timm_layout,
)
from maelens.errors import MaelensError
from maelens.model.config import ViTConfig
from maelens.model.posembed import sincos_2d
from maelens.model.vit import VisionTransformer

TINY = ViTConfig(image_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=1, mlp_dim=128,
                 decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=1, decoder_mlp_dim=48)


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return VisionTransformer(TINY).state_dict()


def _hf_names(state, in_memory: bool, prefix: str = "vit.") -> dict[str, torch.Tensor]:
    """A maelens/timm dict renamed to transformers' layout (by hand, independent of convert)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("blocks", "decoder_blocks"):
            i, rest = parts[1], ".".join(parts[2:])
            if parts[0] == "blocks":
                base = f"{prefix}layers.{i}." if in_memory else f"{prefix}encoder.layer.{i}."
            else:
                base = (f"decoder.decoder_layers.{i}." if in_memory
                        else f"decoder.decoder_encoder.layer.{i}.")
            out.update(_hf_block(base, rest, value, in_memory))
        else:
            out[_HF_FLAT.get(key, f"decoder.{key}")] = value
    return {(k if k.startswith(("decoder.", "classifier.")) or k.startswith(prefix)
             else prefix + k): v for k, v in out.items()}


_HF_FLAT = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
            "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
            "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
            "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias",
            "head.weight": "classifier.weight", "head.bias": "classifier.bias"}


def _hf_block(base, rest, value, in_memory):
    module, param = rest.rsplit(".", 1)
    if module == "attn.qkv":
        q, k, v = value.chunk(3, dim=0)
        names = ("q_proj", "k_proj", "v_proj") if in_memory else (
            "attention.query", "attention.key", "attention.value")
        return {f"{base}attention.{n}.{param}": t for n, t in zip(names, (q, k, v), strict=True)}
    table = {"attn.proj": ("o_proj", "output.dense"), "mlp.fc1": ("mlp.fc1", "intermediate.dense"),
             "mlp.fc2": ("mlp.fc2", "output.dense"), "norm1": ("layernorm_before",) * 2,
             "norm2": ("layernorm_after",) * 2}
    name = table[module][0 if in_memory else 1]
    if module == "attn.proj":
        name = "attention." + name
    return {f"{base}{name}.{param}": value}


def test_detect_layout(tiny_state):
    assert detect_layout(tiny_state) == "timm"
    assert detect_layout(_hf_names(tiny_state, in_memory=True)) == "transformers"
    with pytest.raises(MaelensError, match="not a ViT/MAE state dict.*encoder.weight"):
        detect_layout({"encoder.weight": torch.zeros(1)})


def test_strip_prefix_removes_module_and_model_prefixes(tiny_state):
    for prefix in ("module.", "model.", "module.encoder."):
        wrapped = {prefix + k: v for k, v in tiny_state.items()}
        assert strip_prefix(wrapped, "patch_embed.proj.weight").keys() == tiny_state.keys()


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("prefix", ["vit.", ""])
def test_transformers_layouts_map_back_to_timm(tiny_state, in_memory, prefix):
    hf = _hf_names(tiny_state, in_memory, prefix)
    hf[prefix + "pooler.dense.weight"] = torch.zeros(64, 64)
    out, dropped = hf_to_timm(hf)
    assert dropped == ["pooler.dense.weight"]
    assert out.keys() == tiny_state.keys()
    for key, value in tiny_state.items():
        assert torch.equal(out[key], value), key


def test_transformers4_decoder_layout_also_maps(tiny_state):
    # transformers 4 kept `decoder.decoder_layers.{i}` with the old sub-module names.
    hf = _hf_names(tiny_state, in_memory=False)
    hf = {k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."): v
          for k, v in hf.items()}
    out = to_timm_layout(hf)[0]
    assert out.keys() == tiny_state.keys()


def test_incomplete_qkv_names_the_tensor(tiny_state):
    hf = _hf_names(tiny_state, in_memory=True)
    del hf["vit.layers.1.attention.k_proj.weight"]
    with pytest.raises(MaelensError, match=r"blocks\.1\.attn\.qkv\.weight.*\['k'\]"):
        hf_to_timm(hf)


def test_distilled_deit_is_rejected(tiny_state):
    state = dict(tiny_state, dist_token=torch.zeros(1, 1, 64))
    with pytest.raises(MaelensError, match="distilled DeiT"):
        to_timm_layout(state)


@pytest.mark.parametrize(("width", "heads"), [(192, 3), (384, 6), (768, 12), (1024, 16),
                                              (1280, 16), (64, 1), (32, None), (48, None)])
def test_default_heads(width, heads):
    assert default_num_heads(width) == heads  # None: no rule; infer_config then refuses


def test_default_decoder_heads_match_official_mae():
    assert default_decoder_heads(512) == 16


def _shapes_only(width, depth, patch, grid, mlp, head=0):
    """A timm-layout dict with the right shapes; big tensors live on the meta device."""
    meta = {"device": "meta"}
    state = {"patch_embed.proj.weight": torch.empty(width, 3, patch, patch, **meta),
             "cls_token": torch.empty(1, 1, width, **meta),
             "pos_embed": sincos_2d(width, (grid, grid)), "norm.weight": torch.empty(width)}
    for i in range(depth):
        state[f"blocks.{i}.mlp.fc1.weight"] = torch.empty(mlp, width, **meta)
        state[f"blocks.{i}.attn.qkv.bias"] = torch.empty(3 * width, **meta)
    if head:
        state["head.weight"] = torch.empty(head, width, **meta)
    return state


@pytest.mark.parametrize(
    ("width", "depth", "patch", "grid", "mlp", "heads"),
    [(768, 12, 16, 14, 3072, 12), (1024, 24, 16, 14, 4096, 16), (1280, 32, 14, 16, 5120, 16),
     (192, 12, 16, 14, 768, 3)],
)
def test_infer_published_shapes(width, depth, patch, grid, mlp, heads):
    config = infer_config(_shapes_only(width, depth, patch, grid, mlp, head=1000))
    assert (config.embed_dim, config.depth, config.num_heads, config.patch_size,
            config.image_size, config.mlp_dim) == (width, depth, heads, patch, grid * patch, mlp)
    assert config.pos_embed == "sincos" and config.num_classes == 1000 and config.pool == "cls"
    assert config.qkv_bias and config.norm_eps == 1e-6 and not config.has_decoder


def test_infer_decoder_pooling_and_overrides(tiny_state):
    config = infer_config(tiny_state, num_heads=4, decoder_num_heads=2, norm_eps=1e-12)
    decoder = (config.decoder_embed_dim, config.decoder_depth, config.decoder_num_heads,
               config.decoder_mlp_dim)
    assert config.has_decoder and decoder == (32, 1, 2, 48)
    assert config.num_heads == 4 and config.norm_eps == 1e-12
    learned = dict(tiny_state, pos_embed=torch.randn(1, 17, 64), **{
        "fc_norm.weight": torch.ones(64), "fc_norm.bias": torch.zeros(64)})
    del learned["norm.weight"], learned["norm.bias"]
    config = infer_config(learned)
    assert config.pos_embed == "learned" and config.pool == "avg"
    assert config.fc_norm and not config.final_norm


def test_half_precision_sincos_is_still_recognised(tiny_state):
    state = {k: v.half() for k, v in tiny_state.items()}
    assert infer_config(state).pos_embed == "sincos"


def test_position_table_without_cls_row_is_refused(tiny_state):
    state = dict(tiny_state, pos_embed=torch.zeros(1, 16, 64))
    with pytest.raises(MaelensError, match=r"`pos_embed`.*\(1, 16, 64\)"):
        infer_config(state)


def test_missing_required_keys_are_named(tiny_state):
    state = {k: v for k, v in tiny_state.items() if k != "cls_token"}
    with pytest.raises(MaelensError, match=r"missing \['cls_token'\]"):
        infer_config(state)


def test_hf_config_fields():
    fields = hf_config_fields({"model_type": "vit_mae", "num_attention_heads": 4,
                               "decoder_num_attention_heads": 2, "norm_pix_loss": True,
                               "architectures": ["ViTMAEForPreTraining"]})
    assert fields == {"num_heads": 4, "norm_eps": 1e-12, "decoder_num_heads": 2,
                      "norm_pix_loss": True}
    with pytest.raises(MaelensError, match="unsupported transformers model type 'bert'"):
        hf_config_fields({"model_type": "bert"})
    with pytest.raises(MaelensError, match="ViTForMaskedImageModeling"):
        hf_config_fields({"model_type": "vit", "architectures": ["ViTForMaskedImageModeling"]})
    with pytest.raises(MaelensError, match="gelu_new"):
        hf_config_fields({"model_type": "vit", "hidden_act": "gelu_new"})


def test_hf_sizes_must_agree_with_the_weights():
    with pytest.raises(MaelensError, match="`hidden_size`=768 but the weights say 64"):
        check_hf_sizes({"hidden_size": 768}, TINY)
    check_hf_sizes({"hidden_size": 64, "num_hidden_layers": 2}, TINY)


def test_preprocessing_fields():
    assert preprocessing_fields(None)["mean"] == (0.485, 0.456, 0.406)
    got = preprocessing_fields({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]})
    assert got == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
