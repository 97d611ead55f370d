"""Checkpoint sniffing and pure key-map converters (dict -> dict, nothing read from disk).

Every supported layout is turned into the timm / official-MAE names that `VisionTransformer`
uses (`patch_embed.proj`, `blocks.{i}.attn.qkv`, `norm`, `fc_norm`, `head`, `decoder_*`), and the
architecture is then inferred from the tensor shapes alone (`infer_config`), so one inference
path serves every source. Layouts, by their telltale keys:

- timm / official MAE: `patch_embed.proj.weight`, `blocks.{i}.attn.qkv.weight` (any key prefix
  such as `module.` or `model.` is stripped);
- transformers as published and as `save_pretrained` writes it (and transformers 4 in memory):
  `[vit.]encoder.layer.{i}.attention.attention.query/key/value`, `attention.output.dense`,
  `intermediate.dense`, `output.dense`, `layernorm_before/after`; decoder
  `decoder.decoder_layers.{i}.*` (transformers 4) or `decoder.decoder_encoder.layer.{i}.*`
  (what transformers 5.23 `save_pretrained` writes);
- transformers 5 in memory: `[vit.]layers.{i}.attention.q_proj/k_proj/v_proj/o_proj`,
  `mlp.fc1/fc2`, decoder `decoder.decoder_layers.{i}.*`.
Separate q/k/v projections are concatenated into one `qkv` (rows q, then k, then v).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from maelens.errors import MaelensError
from maelens.model.config import IMAGENET_MEAN, IMAGENET_STD, ViTConfig
from maelens.model.posembed import is_sincos

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

TIMM_TELLTALE = "patch_embed.proj.weight"
HF_TELLTALE = "embeddings.patch_embeddings.projection.weight"

# transformers block sub-module -> timm name ("q"/"k"/"v" are concatenated into attn.qkv).
_HF_BLOCK = {
    "attention.attention.query": "q", "attention.attention.key": "k",
    "attention.attention.value": "v", "attention.q_proj": "q", "attention.k_proj": "k",
    "attention.v_proj": "v", "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2", "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2", "layernorm_before": "norm1", "layernorm_after": "norm2",
}
_HF_FLAT = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight", "classifier.bias": "head.bias",
    "decoder.mask_token": "mask_token", "decoder.decoder_pos_embed": "decoder_pos_embed",
}
_HF_DECODER_FLAT = ("decoder_embed", "decoder_norm", "decoder_pred")
# Present in transformers files but not part of the maelens model: the ViTModel pooler
# (dense + tanh, unused by classifiers) and ViTModel's optional mask token.
_HF_IGNORED = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.mask_token")
_HF_ENCODER_BLOCK = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")
_HF_DECODER_BLOCK = re.compile(
    r"^decoder\.(?:decoder_layers|decoder_encoder\.layer)\.(\d+)\.(.+)\.(weight|bias)$"
)

# Widths whose published models do not use 64-dim heads (ViT-H/14, ViT-g, ViT-G: 16 heads).
_KNOWN_HEADS = {1280: 16, 1408: 16, 1664: 16}
# Sizes named in official model names ("mae_vit_large_patch16"): (width, heads).
_NAMED_SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12), "large": (1024, 16),
                "huge": (1280, 16)}
_OFFICIAL_DECODER_HEADS = 16  # every official MAE decoder: 512 wide, 16 heads


def detect_layout(state: StateDict) -> str:
    """'timm' (also official MAE) or 'transformers', from the telltale keys."""
    if any(k.endswith(TIMM_TELLTALE) for k in state):
        return "timm"
    if any(k.endswith(HF_TELLTALE) for k in state):
        return "transformers"
    raise MaelensError(
        f"not a ViT/MAE state dict: expected a key ending in `{TIMM_TELLTALE}` (timm / official "
        f"MAE) or `{HF_TELLTALE}` (transformers), got {len(state)} keys starting "
        f"{preview_keys(state)}; pass a ViT or MAE checkpoint."
    )


def to_timm_layout(state: StateDict) -> tuple[StateDict, str, list[str]]:
    """Any supported layout -> (state dict with maelens/timm names, layout name, dropped keys)."""
    layout = detect_layout(state)
    if layout == "timm":
        out, dropped = strip_prefix(state, TIMM_TELLTALE), []
    else:
        out, dropped = hf_to_timm(state)
    _reject_distilled(out)
    _fill_decoder_qkv_bias(out)
    return out, layout, dropped


def strip_prefix(state: StateDict, telltale: str) -> StateDict:
    """Remove the prefix (e.g. `module.`, `model.`) that precedes `telltale` from every key that
    carries it; keys without it are kept as they are."""
    key = next(k for k in state if k.endswith(telltale))
    prefix = key[: len(key) - len(telltale)]
    if not prefix:
        return dict(state)
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def hf_to_timm(state: StateDict) -> tuple[StateDict, list[str]]:
    """transformers ViT / ViTMAE names (any of the layouts above, with or without the `vit.`
    prefix) -> timm names. Returns the converted dict and the keys deliberately dropped."""
    state = strip_prefix(state, HF_TELLTALE)  # `vit.` (and e.g. `module.vit.`) -> ""
    out: StateDict = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    dropped = []
    for key, value in state.items():
        if key in _HF_IGNORED:
            dropped.append(key)
            continue
        target, part = _hf_key(key)
        if part is None:
            out[target] = value  # unknown keys keep their name, for the key check to report
        else:
            qkv.setdefault(target, {})[part] = value
    for key, parts in qkv.items():
        missing = [p for p in "qkv" if p not in parts]
        if missing:
            raise MaelensError(
                f"cannot build `{key}`: the query/key/value projections are incomplete "
                f"(missing {missing}); the checkpoint is damaged or of another architecture."
            )
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out, dropped


def _hf_key(key: str) -> tuple[str, str | None]:
    """(timm name, None) for one transformers key, or (`*.attn.qkv.{param}`, "q"|"k"|"v") for a
    separate query/key/value projection; unknown keys come back unchanged."""
    if key in _HF_FLAT:
        return _HF_FLAT[key], None
    for name in _HF_DECODER_FLAT:
        if key.startswith(f"decoder.{name}."):
            return key[len("decoder."):], None
    for pattern, blocks in ((_HF_ENCODER_BLOCK, "blocks"), (_HF_DECODER_BLOCK, "decoder_blocks")):
        match = pattern.match(key)
        if match and match.group(2) in _HF_BLOCK:
            index, module, param = match.groups()
            target = _HF_BLOCK[module]
            if target in ("q", "k", "v"):
                return f"{blocks}.{index}.attn.qkv.{param}", target
            return f"{blocks}.{index}.{target}.{param}", None
    return key, None


def _reject_distilled(state: StateDict) -> None:
    if "dist_token" in state or any(k.startswith("head_dist.") for k in state):
        raise MaelensError(
            "distilled DeiT checkpoints (`dist_token`, `head_dist`) are not supported: their "
            "second prefix token changes every token index; use the non-distilled "
            "DeiT weights (deit_*_patch16_224) instead."
        )


def _fill_decoder_qkv_bias(state: StateDict) -> None:
    """maelens decoder blocks always carry a qkv bias; a bias-free decoder equals zero bias."""
    for key in [k for k in state if k.startswith("decoder_blocks.") and
                k.endswith(".attn.qkv.weight")]:
        bias = key[: -len("weight")] + "bias"
        if bias not in state:
            state[bias] = torch.zeros(state[key].shape[0], dtype=state[key].dtype)


# --------------------------------------------------------------------------- architecture
def default_num_heads(width: int) -> int | None:
    """Attention heads for a width when the checkpoint does not say: 64-dim heads (ViT-T/S/B/L),
    16 heads for ViT-H/g/G widths; None when the width is not a multiple of 64 (no rule)."""
    if width in _KNOWN_HEADS:
        return _KNOWN_HEADS[width]
    return width // 64 if width % 64 == 0 else None


def default_decoder_heads(width: int) -> int | None:
    """MAE decoders use 32-dim heads (512 wide, 16 heads in every official model); None when
    the width is not a multiple of 32."""
    return width // 32 if width % 32 == 0 else None


def heads_from_model_name(name: str, width: int, decoder_width: int | None
                          ) -> dict[str, int]:
    """Head counts named by the `args.model` of the official MAE scripts (models_mae.py,
    models_vit.py), e.g. 'mae_vit_large_patch16' -> 16 heads and 16 decoder heads. {} for a
    name without a known size, or one whose width disagrees with the weights (the name is then
    not trusted, and the width rules of `default_num_heads` apply)."""
    match = re.search(r"vit_(tiny|small|base|large|huge)", str(name))
    if not match:
        return {}
    named_width, heads = _NAMED_SIZES[match.group(1)]
    if named_width != width:
        log.info("`args.model`=%r names width %d but the weights are %d wide; ignoring it",
                 name, named_width, width)
        return {}
    found = {"num_heads": heads}
    if decoder_width is not None and decoder_width % _OFFICIAL_DECODER_HEADS == 0:
        found["decoder_num_heads"] = _OFFICIAL_DECODER_HEADS
    return found


def _heads(width: int, given: int | None, decoder: bool) -> int:
    if given is not None:
        return given
    guess = default_decoder_heads(width) if decoder else default_num_heads(width)
    if guess is None:
        field, size = ("decoder_num_heads", 32) if decoder else ("num_heads", 64)
        raise MaelensError(
            f"cannot tell the number of {'decoder ' if decoder else ''}attention heads: the "
            f"{'decoder ' if decoder else ''}width {width} is not a multiple of {size} and the "
            f"checkpoint does not state it; fix: pass `--arch {field}=N` ({field}=N in "
            f"load_model), with N dividing {width}."
        )
    return guess


def count_blocks(state: StateDict, prefix: str) -> int:
    """1 + the largest i among keys `{prefix}{i}.*` (0 when there are none)."""
    indices = {int(k[len(prefix):].split(".", 1)[0]) for k in state
               if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
    return max(indices) + 1 if indices else 0


def infer_config(
    state: StateDict,
    *,
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    **fields: Any,
) -> ViTConfig:
    """The `ViTConfig` that fits a timm-layout state dict (see `to_timm_layout`).

    Shapes give width, depth, patch size, channels, image size (from the position table:
    1 CLS row + (image/patch)^2), MLP width, qkv bias, final norm / fc_norm / head (pooling:
    "avg" when `fc_norm` exists, else "cls") and decoder sizes; whether the position table is
    the fixed sin-cos one is checked numerically. Heads cannot be read from shapes: they come
    from `num_heads` / `decoder_num_heads` or `default_num_heads` / `default_decoder_heads`; a
    width those rules do not cover is an error that says how to state the heads.
    `fields` override anything else (e.g. `norm_eps`, `mean`, `std`, `norm_pix_loss`).
    """
    _require(state, (TIMM_TELLTALE, "cls_token", "pos_embed", "blocks.0.mlp.fc1.weight"))
    width, in_chans, patch, _ = state[TIMM_TELLTALE].shape
    grid = _grid_of("pos_embed", state["pos_embed"])
    arch: dict[str, Any] = dict(
        image_size=grid * patch, patch_size=patch, in_chans=in_chans, embed_dim=width,
        depth=count_blocks(state, "blocks."), mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0],
        num_heads=_heads(width, num_heads, decoder=False),
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        pos_embed="sincos" if _sincos(state["pos_embed"]) else "learned",
        final_norm="norm.weight" in state, fc_norm="fc_norm.weight" in state,
        pool="avg" if "fc_norm.weight" in state else "cls",
        num_classes=state["head.weight"].shape[0] if "head.weight" in state else 0,
    )
    if "decoder_embed.weight" in state:
        _require(state, ("decoder_pos_embed", "decoder_blocks.0.mlp.fc1.weight"))
        dd = state["decoder_embed.weight"].shape[0]
        arch.update(
            decoder_embed_dim=dd, decoder_depth=count_blocks(state, "decoder_blocks."),
            decoder_num_heads=_heads(dd, decoder_num_heads, decoder=True),
            decoder_mlp_dim=state["decoder_blocks.0.mlp.fc1.weight"].shape[0],
        )
    if num_heads is None:
        log.info("inferred %d attention heads from width %d; pass num_heads= to override",
                 arch["num_heads"], width)
    arch.update(fields)
    return ViTConfig(**arch)


def _sincos(table: torch.Tensor) -> bool:
    # Half-precision storage rounds the table: loosen the tolerance to its resolution.
    atol = 1e-4 if table.dtype in (torch.float32, torch.float64) else 1e-2
    return is_sincos(table, atol=atol)


def _grid_of(name: str, table: torch.Tensor) -> int:
    """Patches per side of a (1, 1 + g*g, D) position table."""
    n = table.shape[1] - 1 if table.ndim == 3 else -1
    grid = int(round(max(n, 0) ** 0.5))
    if table.ndim != 3 or grid * grid != n or n < 1:
        raise MaelensError(
            f"`{name}` must have shape (1, 1 + g*g, D) (a CLS row plus a square patch grid), got "
            f"{tuple(table.shape)}; position tables without a CLS row are not supported."
        )
    return grid


def _require(state: StateDict, keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise MaelensError(
            f"not a ViT/MAE state dict: missing {missing}; got {len(state)} keys starting "
            f"{preview_keys(state)}."
        )


def preview_keys(keys: Any, n: int = 5) -> str:
    names = sorted(keys)
    more = f", ... ({len(names)} in all)" if len(names) > n else ""
    return "[" + ", ".join(names[:n]) + more + "]"


# --------------------------------------------------------------------------- transformers config
SUPPORTED_HF = {
    "vit_mae": ("ViTMAEModel", "ViTMAEForPreTraining"),
    "vit": ("ViTModel", "ViTForImageClassification"),
}


def hf_config_fields(config: dict[str, Any], architecture: str | None = None) -> dict[str, Any]:
    """transformers config (config.json as a dict) -> `infer_config` keyword arguments:
    heads, eps (transformers' default is 1e-12, not timm's 1e-6), norm_pix_loss. Rejects model
    types and architectures maelens cannot reproduce."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_HF:
        raise MaelensError(
            f"unsupported transformers model type {model_type!r}; expected one of "
            f"{sorted(SUPPORTED_HF)} (ViTMAE / ViT); convert the weights to timm layout first."
        )
    names = [architecture] if architecture else config.get("architectures") or []
    unknown = [n for n in names if n not in SUPPORTED_HF[model_type]]
    if unknown:
        raise MaelensError(
            f"unsupported transformers architecture {unknown[0]!r} for model type "
            f"{model_type!r}; expected one of {list(SUPPORTED_HF[model_type])}."
        )
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise MaelensError(f"unsupported `hidden_act`={act!r} in the transformers config; "
                           "maelens blocks use exact GELU ('gelu').")
    fields: dict[str, Any] = {
        "num_heads": int(config.get("num_attention_heads", 12)),
        "norm_eps": float(config.get("layer_norm_eps", 1e-12)),
    }
    if model_type == "vit_mae":
        fields["decoder_num_heads"] = int(config.get("decoder_num_attention_heads", 16))
        fields["norm_pix_loss"] = bool(config.get("norm_pix_loss", False))
    return fields


def check_hf_sizes(config: dict[str, Any], inferred: ViTConfig) -> None:
    """config.json and the weights must agree on the sizes both state."""
    pairs = (("hidden_size", inferred.embed_dim), ("num_hidden_layers", inferred.depth),
             ("patch_size", inferred.patch_size), ("intermediate_size", inferred.mlp_dim))
    for name, from_weights in pairs:
        stated = config.get(name)
        if stated is not None and int(stated) != from_weights:
            raise MaelensError(
                f"config.json says `{name}`={stated} but the weights say {from_weights}; "
                "the config does not belong to these weights."
            )


def preprocessing_fields(processor: dict[str, Any] | None) -> dict[str, Any]:
    """`mean`/`std` from a transformers preprocessor_config.json (ImageNet defaults otherwise)."""
    processor = processor or {}
    mean = processor.get("image_mean", IMAGENET_MEAN)
    std = processor.get("image_std", IMAGENET_STD)
    return {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std)}
