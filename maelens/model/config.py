"""Frozen model configurations and a few presets.

A config fully determines the architecture and the preprocessing that goes with the weights
(input size, mean, std), so checkpoints can carry it as JSON (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from maelens.errors import MaelensError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a ViT encoder with optional classifier head and MAE decoder.

    Sizes are in pixels (`image_size`, `patch_size`) and channels (`embed_dim`, `mlp_dim`).
    `pool`: "cls" classifies from the CLS token after `norm`; "avg" averages the patch tokens
    (CLS excluded) and applies `fc_norm` (the MAE fine-tuning convention). `final_norm` /
    `fc_norm` say whether those LayerNorms exist (official MAE fine-tuned files have `fc_norm`
    and no `norm`). `decoder_depth` = 0 means encoder only.
    """

    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    pos_embed: Literal["sincos", "learned"] = "sincos"
    pool: Literal["cls", "avg"] = "cls"
    final_norm: bool = True
    fc_norm: bool = False
    num_classes: int = 0
    drop_path_rate: float = 0.0
    decoder_embed_dim: int = 512
    decoder_depth: int = 0
    decoder_num_heads: int = 16
    decoder_mlp_dim: int = 2048
    norm_pix_loss: bool = False
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                     "mlp_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise MaelensError(f"config `{name}` must be a positive int, got {value!r}.")
        if self.embed_dim % self.num_heads:
            raise MaelensError(
                f"config `embed_dim`={self.embed_dim} is not divisible by "
                f"`num_heads`={self.num_heads}."
            )
        if self.image_size % self.patch_size:
            raise MaelensError(
                f"config `image_size`={self.image_size} is not a multiple of "
                f"`patch_size`={self.patch_size}."
            )
        if self.pos_embed not in ("sincos", "learned"):
            raise MaelensError(
                f"config `pos_embed` must be 'sincos' or 'learned', got {self.pos_embed!r}."
            )
        if self.pool not in ("cls", "avg"):
            raise MaelensError(f"config `pool` must be 'cls' or 'avg', got {self.pool!r}.")
        if self.has_decoder and self.decoder_embed_dim % self.decoder_num_heads:
            raise MaelensError(
                f"config `decoder_embed_dim`={self.decoder_embed_dim} is not divisible by "
                f"`decoder_num_heads`={self.decoder_num_heads}."
            )
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise MaelensError(
                f"config `mean`/`std` need {self.in_chans} values, got {self.mean} / {self.std}."
            )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def grid_size(self) -> int:
        """Patches per side at `image_size`."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def has_decoder(self) -> bool:
        return self.decoder_depth > 0

    def replace(self, **changes: Any) -> ViTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MaelensError(f"unknown config field(s) {unknown}; valid fields: {sorted(names)}.")
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)


def _preset(**kw: Any) -> ViTConfig:
    return ViTConfig(**kw)


PRESETS: dict[str, ViTConfig] = {
    "vit_tiny_patch16_224": _preset(embed_dim=192, depth=12, num_heads=3, mlp_dim=768),
    "vit_small_patch16_224": _preset(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_base_patch16_224": _preset(),
    "vit_large_patch16_224": _preset(embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
    "vit_huge_patch14_224": _preset(
        patch_size=14, embed_dim=1280, depth=32, num_heads=16, mlp_dim=5120
    ),
    "mae_vit_base_patch16": _preset(decoder_depth=8),
    "mae_vit_large_patch16": _preset(
        embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096, decoder_depth=8
    ),
    # The demo models: ViT-Tiny-like width on 32x32 digits with 4-pixel patches (8x8 grid).
    "mae_demo": _preset(
        image_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_dim=768,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4, decoder_mlp_dim=512,
    ),
}


def preset(name: str, **changes: Any) -> ViTConfig:
    """A named preset, optionally with fields replaced."""
    if name not in PRESETS:
        raise MaelensError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]
