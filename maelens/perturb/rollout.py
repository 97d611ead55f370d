"""Attention rollout (Abnar & Zuidema, 2020), batched, and the per-patch scores read from it.

For each layer l (in forward order) the heads are fused (mean, max or min over H), the identity
is added for the residual path, and each row is renormalised to sum 1:
    A_l' = (fuse(A_l) + I) / rowsum(fuse(A_l) + I)          (row sums kept as a column)
and the rollout is the product R = A_L' ... A_2' A_1' (B, T, T): row q says how much of token
q's final representation flows from each input token. Two slips of a widely copied public
implementation are avoided on purpose: dividing by the row sum without keepdim (which divides
columns, not rows) and handling only batch element 0.

Tokens are T = 1 + N with CLS first (index 0), patches in row-major grid order; the attention
probabilities must come from the identity token order (no MAE shuffling), else patch scores
land on the wrong patches. Computed in float64; returned float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from maelens.errors import MaelensError

HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")
SCORE_SOURCES: tuple[str, ...] = ("cls", "mean_patch")


def _check_attentions(attentions: Sequence[torch.Tensor]) -> None:
    if isinstance(attentions, torch.Tensor) or len(attentions) == 0:
        raise MaelensError(
            "rollout `attentions` must be a non-empty list of per-layer (B, H, T, T) tensors, "
            f"got {type(attentions).__name__}; pass one tensor per layer, in forward order.")
    first = attentions[0]
    for l, attn in enumerate(attentions):
        if not isinstance(attn, torch.Tensor) or attn.ndim != 4 \
                or attn.shape[-1] != attn.shape[-2]:
            got = tuple(attn.shape) if isinstance(attn, torch.Tensor) else type(attn).__name__
            raise MaelensError(
                f"rollout `attentions[{l}]` must be attention probabilities (B, H, T, T), "
                f"got {got}; capture the attention pattern, not the attention output.")
        if attn.shape[0] != first.shape[0] or attn.shape[-1] != first.shape[-1]:
            raise MaelensError(
                f"rollout `attentions[{l}]` has shape {tuple(attn.shape)}, layer 0 has "
                f"{tuple(first.shape)}; every layer needs the same batch B and tokens T.")


def fuse_heads(attention: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Fuse one layer's heads, add the identity and renormalise rows: (B, H, T, T) -> (B, T, T).

    Returns float64 rows that sum to 1 (the A_l' of the module docstring).
    """
    if head_fusion not in HEAD_FUSIONS:
        raise MaelensError(
            f"unknown rollout `head_fusion` {head_fusion!r}; expected one of: "
            f"{', '.join(HEAD_FUSIONS)}.")
    attn = attention.to(torch.float64)
    if head_fusion == "mean":
        fused = attn.mean(dim=1)
    elif head_fusion == "max":
        fused = attn.amax(dim=1)
    else:
        fused = attn.amin(dim=1)
    T = fused.shape[-1]
    fused = fused + torch.eye(T, dtype=fused.dtype, device=fused.device)  # residual path
    return fused / fused.sum(dim=-1, keepdim=True)  # (B, T, T), rows sum to 1


def attention_rollout(attentions: Sequence[torch.Tensor],
                      head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout R = A_L' ... A_1', shape (B, T, T) float64, rows summing to 1.

    attentions: per-layer attention probabilities (B, H, T, T), in forward order (layer 0
    first), T = 1 + N with CLS first; head_fusion: "mean" | "max" | "min" over heads.
    """
    _check_attentions(attentions)
    rollout = fuse_heads(attentions[0], head_fusion)
    for attn in attentions[1:]:
        rollout = fuse_heads(attn, head_fusion) @ rollout  # later layers act on the left
    return rollout


def patch_scores(rollout: torch.Tensor, source: str = "cls") -> torch.Tensor:
    """Per-patch importance (B, N) read from a rollout (B, T = 1 + N, T).

    source="cls": the CLS row over the patch columns, R[:, 0, 1:] (the usual reading, for
    models that classify from CLS); "mean_patch": the patch rows averaged, over the patch
    columns, R[:, 1:, 1:].mean(1) (for mean-pooled heads). Scores are not renormalised.
    """
    if source not in SCORE_SOURCES:
        raise MaelensError(
            f"unknown rollout `source` {source!r}; expected one of: {', '.join(SCORE_SOURCES)}.")
    if not isinstance(rollout, torch.Tensor) or rollout.ndim != 3 \
            or rollout.shape[1] != rollout.shape[2] or rollout.shape[1] < 2:
        got = tuple(rollout.shape) if isinstance(rollout, torch.Tensor) else type(rollout)
        raise MaelensError(
            f"`rollout` must be (B, T, T) with T = 1 + N >= 2, got {got}; "
            "pass the output of attention_rollout.")
    if source == "cls":
        return rollout[:, 0, 1:]
    return rollout[:, 1:, 1:].mean(dim=1)
