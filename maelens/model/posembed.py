"""Position embeddings: the fixed 2-D sin-cos table of MAE and resampling to other grids."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maelens.errors import MaelensError


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) as [sin(pos * w), cos(pos * w)], w = 10000^(-2i/dim)."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(embed_dim: int, grid: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table, shape (1, [1 +] gh*gw, embed_dim), float32.

    Patches are in row-major order. As in the official MAE code, the first half of the channels
    encodes the column (x) and the second half the row (y); the CLS row is all zeros.
    """
    if embed_dim % 4:
        raise MaelensError(
            f"sin-cos position embedding needs `embed_dim` divisible by 4, got {embed_dim}."
        )
    gh, gw = grid
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    emb_x = _sincos_1d(embed_dim // 2, cols.reshape(-1))
    emb_y = _sincos_1d(embed_dim // 2, rows.reshape(-1))
    table = torch.cat([emb_x, emb_y], dim=1)  # (N, D)
    if cls_token:
        table = torch.cat([torch.zeros(1, embed_dim, dtype=table.dtype), table], dim=0)
    return table.float().unsqueeze(0)


def resample_pos_embed(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix: int = 1
) -> torch.Tensor:
    """Bicubic resampling of a learned (1, prefix + gh*gw, D) table to `new_grid`.

    The old grid must be square (all published ViT/MAE weights are). Prefix (CLS) rows are kept.
    Interpolation runs in float32 with antialiasing when shrinking, as timm does.
    """
    prefix, table = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    old = int(round(table.shape[1] ** 0.5))
    if old * old != table.shape[1]:
        raise MaelensError(
            f"`pos_embed` has {table.shape[1]} patch rows, not a square grid; cannot resample."
        )
    if (old, old) == tuple(new_grid):
        return pos_embed
    dim = table.shape[-1]
    grid = table.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()  # (1, D, g, g)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", antialias=True,
                         align_corners=False)
    table = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, table], dim=1)


def is_sincos(pos_embed: torch.Tensor, atol: float = 1e-4) -> bool:
    """Whether a (1, 1 + g*g, D) table equals MAE's fixed sin-cos table (so it can be regenerated
    exactly at any grid instead of interpolated)."""
    n = pos_embed.shape[1] - 1
    g = int(round(n**0.5))
    if g * g != n or pos_embed.shape[-1] % 4:
        return False
    reference = sincos_2d(pos_embed.shape[-1], (g, g))
    return bool(torch.allclose(pos_embed.detach().float().cpu(), reference, atol=atol))
