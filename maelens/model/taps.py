"""What a forward pass should record (`Taps`) and what it recorded (`Capture`).

Layer numbering, used everywhere in maelens: block l (1..L) turns hidden[l-1] into hidden[l];
hidden[0] is the embedding output (CLS + patches + position), before any block; attn[l] and
heads[l] belong to block l. hidden[l] is *before* the final norm; `final` is after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from maelens._validate import resolve_layers

LayerSelection = int | Sequence[int] | None
NONE: tuple[int, ...] = ()


@dataclass(frozen=True)
class Taps:
    """A request for activations.

    Each layer field takes `()` (nothing, the default), None (all layers), an int n (the last n)
    or a list of indices (negatives count from the end). `final`, `pooled`, `logits` ask for the
    final-norm tokens, the head input and the classifier output.
    """

    hidden: LayerSelection = NONE
    attn: LayerSelection = NONE
    heads: LayerSelection = NONE
    final: bool = True
    pooled: bool = False
    logits: bool = False

    @classmethod
    def everything(cls) -> Taps:
        return cls(hidden=None, attn=None, heads=None, final=True, pooled=True, logits=True)

    def resolve(self, depth: int) -> TapPlan:
        hidden = resolve_layers("hidden", self.hidden, 0, depth)
        attn = resolve_layers("attn", self.attn, 1, depth)
        heads = resolve_layers("heads", self.heads, 1, depth)
        needs_top = self.final or self.pooled or self.logits
        last = depth if needs_top else max((*hidden, *attn, *heads, 0))
        return TapPlan(frozenset(hidden), frozenset(attn), frozenset(heads), self.final,
                       self.pooled, self.logits, last)

    def union(self, other: Taps, depth: int) -> Taps:
        """The smallest request covering both (to feed several analyses from one pass)."""
        a, b = self.resolve(depth), other.resolve(depth)
        return Taps(
            hidden=sorted(a.hidden | b.hidden), attn=sorted(a.attn | b.attn),
            heads=sorted(a.heads | b.heads), final=a.final or b.final,
            pooled=a.pooled or b.pooled, logits=a.logits or b.logits,
        )


@dataclass(frozen=True)
class TapPlan:
    """Resolved `Taps`: concrete layer sets and the last block that must run."""

    hidden: frozenset[int]
    attn: frozenset[int]
    heads: frozenset[int]
    final: bool
    pooled: bool
    logits: bool
    last_block: int


class TapStore:
    """Where tapped tensors are written.

    Fresh tensors by default. With `reuse=True` each (kind, layer) keeps one buffer across
    calls: a tapped ViT-B batch retains ~0.5 GB, and fresh memory for it costs ~140k page
    faults (~0.3 s on 2 cores) per batch, as much as the attention maths. Reused buffers are
    overwritten by the next call, so consumers must copy what they keep (streaming analyses
    do). Only valid without autograd (`out=` tensors do not record gradients).
    """

    def __init__(self, reuse: bool = False) -> None:
        self.reuse = reuse
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}

    def take(self, kind: str, layer: int, shape: tuple[int, ...], like: torch.Tensor
             ) -> torch.Tensor:
        """An uninitialised tensor of `shape` with `like`'s dtype and device."""
        if not self.reuse:
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        key = (kind, layer)
        buf = self._buffers.get(key)
        stale = buf is None or (buf.shape, buf.dtype, buf.device) != (shape, like.dtype,
                                                                        like.device)
        if stale:
            buf = self._buffers[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf


@dataclass
class Capture:
    """Activations of one batch. Shapes: B images, T = 1 + N_v tokens (CLS first), D width,
    H heads, d_head = D / H.

    keep:   (B, N_v) patch index of each visible token in token order (token i+1 <-> keep[:, i])
    hidden: {l: (B, T, D)} before the final norm
    attn:   {l: (B, H, T, T)} attention probabilities, rows sum to 1
    heads:  {l: (B, T, H, d_head)} per-head output A.V, input of the output projection
    final:  (B, T, D) after the final norm (= hidden[L] when the model has no `norm`)
    pooled: (B, D) head input (CLS after `norm`, or mean patch token after `fc_norm`)
    logits: (B, C)
    """

    keep: torch.Tensor
    grid: tuple[int, int]
    patch_size: int
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    attn: dict[int, torch.Tensor] = field(default_factory=dict)
    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    final: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    logits: torch.Tensor | None = None

    def map(self, fn) -> Capture:  # noqa: ANN001 - a tensor -> tensor callable
        """A copy with `fn` applied to every activation tensor (not to `keep`)."""
        opt = lambda t: None if t is None else fn(t)  # noqa: E731
        return Capture(
            keep=self.keep, grid=self.grid, patch_size=self.patch_size,
            hidden={k: fn(v) for k, v in self.hidden.items()},
            attn={k: fn(v) for k, v in self.attn.items()},
            heads={k: fn(v) for k, v in self.heads.items()},
            final=opt(self.final), pooled=opt(self.pooled), logits=opt(self.logits),
        )

    def select(self, plan: TapPlan) -> Capture:
        """A view holding exactly the taps of `plan` (no copies): what one analysis asked for,
        whoever else shares the pass."""
        return Capture(
            keep=self.keep, grid=self.grid, patch_size=self.patch_size,
            hidden={k: v for k, v in self.hidden.items() if k in plan.hidden},
            attn={k: v for k, v in self.attn.items() if k in plan.attn},
            heads={k: v for k, v in self.heads.items() if k in plan.heads},
            final=self.final if plan.final else None,
            pooled=self.pooled if plan.pooled else None,
            logits=self.logits if plan.logits else None,
        )

    def cpu_float(self) -> Capture:
        """Detached float32 CPU copy (what analyses and writers consume)."""
        out = self.map(lambda t: t.detach().float().cpu())
        out.keep = self.keep.detach().cpu()
        return out

    def mean_patch(self, layer: int | None = None) -> torch.Tensor:
        """(B, D) mean over visible patch tokens (CLS excluded) of hidden[layer], or of `final`
        when layer is None."""
        tokens = self.final if layer is None else self.hidden[layer]
        return tokens[:, 1:].mean(dim=1)

    def token_positions(self) -> torch.Tensor:
        """(B, N_v, 2) centre of each visible patch token in pixels, as (row, col)."""
        gw = self.grid[1]
        rows, cols = self.keep // gw, self.keep % gw
        centre = (self.patch_size - 1) / 2.0
        return torch.stack([rows, cols], dim=-1).float() * self.patch_size + centre
