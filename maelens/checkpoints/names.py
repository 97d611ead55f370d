"""Short names for the models researchers ask for, and the curated timm tag table.

`ALIASES` maps a short name (`mae-base`, `vit-base-supervised`, ...) to its official source: an
`https://` URL of the MAE release, a Hugging Face Hub repository, or a timm name. Each entry
carries the licence of the weights and the ImageNet-1k top-1 its publisher reports.

`TIMM_TAGS` is a curated list, not timm's registry: the ViT / DeiT / MAE architectures that
maelens loads exactly (pre-norm ViT with a CLS token, no layer scale, no distillation token),
each with the pretrained tags timm publishes for it. `architecture.tag` resolves to the Hub
repository `timm/architecture.tag` without importing timm. A timm model missing here still
loads by its Hub id, `timm/architecture.tag`.

Top-1 sources: the MAE README (fine-tuned MAE), the DeiT paper (DeiT), timm's
`results-imagenet.csv` (augreg ViTs, and 81.8 for the original ViT-B/16 weights that
`google/vit-base-patch16-224` also holds). "-" means the checkpoint has no ImageNet-1k classifier.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

MAE_URL = "https://dl.fbaipublicfiles.com/mae"
MAE_LICENCE = "CC-BY-NC 4.0"  # the MAE release: non-commercial use only
APACHE = "Apache-2.0"


@dataclass(frozen=True)
class Alias:
    """One short name: `source` is a URL, a Hub repository id or a timm name."""

    name: str
    source: str
    what: str
    licence: str
    top1: str = "-"


def _mae_aliases() -> list[Alias]:
    sizes = {"base": ("ViT-B/16", "83.6"), "large": ("ViT-L/16", "85.9"),
             "huge": ("ViT-H/14", "86.9")}
    timm_arch = {"base": "vit_base_patch16_224", "large": "vit_large_patch16_224",
                 "huge": "vit_huge_patch14_224"}
    out = []
    for size, (arch, top1) in sizes.items():
        out += [
            Alias(f"mae-{size}", f"{MAE_URL}/pretrain/mae_pretrain_vit_{size}.pth",
                  f"MAE {arch} pre-trained encoder (official)", MAE_LICENCE),
            Alias(f"mae-{size}-full", f"{MAE_URL}/pretrain/mae_pretrain_vit_{size}_full.pth",
                  f"MAE {arch} encoder + decoder as pre-trained (normalised-pixel target)",
                  MAE_LICENCE),
            Alias(f"mae-{size}-visualize", f"{MAE_URL}/visualize/mae_visualize_vit_{size}.pth",
                  f"MAE {arch} encoder + decoder with a plain-pixel target (for visualisation)",
                  MAE_LICENCE),
            Alias(f"mae-{size}-finetuned", f"{MAE_URL}/finetune/mae_finetuned_vit_{size}.pth",
                  f"MAE {arch} fine-tuned on ImageNet-1k (official)", MAE_LICENCE, top1),
            Alias(f"mae-{size}-hf", f"facebook/vit-mae-{size}",
                  f"MAE {arch} encoder + decoder, transformers ViTMAEForPreTraining",
                  f"{APACHE} on its model card; converted from the {MAE_LICENCE} MAE release"),
            Alias(f"mae-{size}-timm", f"{timm_arch[size]}.mae",
                  f"MAE {arch} pre-trained encoder, timm safetensors on the Hub", MAE_LICENCE),
        ]
    return out


_SUPERVISED = [
    Alias("vit-base-supervised", "google/vit-base-patch16-224",
          "ViT-B/16 supervised, ImageNet-21k then 1k at 224 (transformers)", APACHE, "81.8"),
    Alias("vit-base-augreg", "vit_base_patch16_224.augreg_in21k_ft_in1k",
          "ViT-B/16 supervised with AugReg, ImageNet-21k then 1k (timm)", APACHE, "84.5"),
    Alias("vit-large-augreg", "vit_large_patch16_224.augreg_in21k_ft_in1k",
          "ViT-L/16 supervised with AugReg, ImageNet-21k then 1k (timm)", APACHE, "85.8"),
    Alias("deit-small", "deit_small_patch16_224.fb_in1k",
          "DeiT-S/16 supervised on ImageNet-1k only (timm)", APACHE, "79.9"),
    Alias("deit-base", "deit_base_patch16_224.fb_in1k",
          "DeiT-B/16 supervised on ImageNet-1k only (timm)", APACHE, "81.8"),
]

ALIASES: dict[str, Alias] = {a.name: a for a in _mae_aliases() + _SUPERVISED}

# Curated: architecture -> pretrained tags published as `timm/architecture.tag` on the Hub.
TIMM_TAGS: dict[str, tuple[str, ...]] = {
    "vit_tiny_patch16_224": ("augreg_in21k_ft_in1k", "augreg_in21k"),
    "vit_small_patch16_224": ("augreg_in21k_ft_in1k", "augreg_in21k", "augreg_in1k", "dino"),
    "vit_small_patch16_384": ("augreg_in21k_ft_in1k", "augreg_in1k"),
    "vit_base_patch16_224": ("augreg2_in21k_ft_in1k", "augreg_in21k_ft_in1k", "augreg_in21k",
                             "augreg_in1k", "orig_in21k_ft_in1k", "mae", "dino"),
    "vit_base_patch16_384": ("augreg_in21k_ft_in1k", "augreg_in1k", "orig_in21k_ft_in1k"),
    "vit_base_patch8_224": ("augreg2_in21k_ft_in1k", "augreg_in21k_ft_in1k", "augreg_in21k",
                            "dino"),
    "vit_base_patch32_224": ("augreg_in21k_ft_in1k", "augreg_in21k", "augreg_in1k"),
    "vit_large_patch16_224": ("augreg_in21k_ft_in1k", "augreg_in21k", "mae"),
    "vit_large_patch16_384": ("augreg_in21k_ft_in1k",),
    "vit_huge_patch14_224": ("mae", "orig_in21k"),
    "deit_tiny_patch16_224": ("fb_in1k",),
    "deit_small_patch16_224": ("fb_in1k",),
    "deit_base_patch16_224": ("fb_in1k",),
    "deit_base_patch16_384": ("fb_in1k",),
}


def timm_licence(tag: str) -> str:
    """Licence of a curated timm tag: the MAE weights are non-commercial, the rest Apache-2.0."""
    return MAE_LICENCE if tag == "mae" else APACHE


def timm_names() -> list[str]:
    """Every curated `architecture.tag`."""
    return [f"{arch}.{tag}" for arch, tags in TIMM_TAGS.items() for tag in tags]


def close_names(name: str, n: int = 3) -> list[str]:
    """Aliases and curated timm names that look like `name` (for "did you mean")."""
    return difflib.get_close_matches(name, [*ALIASES, *timm_names()], n=n, cutoff=0.6)
