"""AdamW parameter groups: weight decay on weights only, optional layer-wise lr decay.

As in MAE (`optim_factory.param_groups_weight_decay` and `util/lr_decay.py`): biases and
normalisation parameters (every 1-D tensor) and the position / CLS / mask tokens get no weight
decay; with layer decay d, block i (0-based) learns at d ** (depth - i) times the base rate,
the patch embedding and tokens at d ** (depth + 1), and the final norms and head at 1.
Each group carries `lr_scale`; the training loop sets lr = schedule(step) * lr_scale.
"""

from __future__ import annotations

import torch
from torch import nn

# Parameters (by their last name component) that are never decayed even when not 1-D.
NO_DECAY_NAMES = frozenset({"pos_embed", "cls_token", "mask_token", "decoder_pos_embed"})


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether `param` called `name` gets weight decay."""
    return param.ndim > 1 and name.split(".")[-1] not in NO_DECAY_NAMES


def layer_id(name: str, depth: int) -> int:
    """0 for the embedding and tokens, i + 1 for `blocks.i.*`, depth + 1 for everything else
    (final norms, head); MAE's `get_layer_id_for_vit`."""
    if name in ("cls_token", "pos_embed", "mask_token") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(
    model: nn.Module, weight_decay: float, layer_decay: float = 1.0, depth: int | None = None,
) -> list[dict]:
    """Trainable parameters of `model` in groups {params, param_names, weight_decay, lr_scale}.

    Frozen parameters (requires_grad False, e.g. sin-cos tables or a frozen encoder) are left
    out. `depth` (number of encoder blocks) is needed for layer_decay < 1; it defaults to
    `len(model.blocks)`.
    """
    if layer_decay < 1.0 and depth is None:
        depth = len(model.blocks)
    groups: dict[tuple[bool, int], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = decays(name, param)
        layer = layer_id(name, depth) if layer_decay < 1.0 else 0
        scale = layer_decay ** (depth + 1 - layer) if layer_decay < 1.0 else 1.0
        group = groups.setdefault((decay, layer), {
            "params": [], "param_names": [], "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": scale,
        })
        group["params"].append(param)
        group["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]


def build_adamw(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
    layer_decay: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, ...)`; `lr` is only the initial value (the loop sets it
    every step)."""
    groups = param_groups(model, weight_decay, layer_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
