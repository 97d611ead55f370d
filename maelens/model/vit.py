"""The ViT / MAE model with taps, in plain PyTorch.

Parameter names equal those of timm and the official MAE code (`patch_embed.proj`, `blocks.{i}.
norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2`, `norm`, `fc_norm`, `head`, `decoder_*`), so
their weights load with an identity key map. Why our own model rather than timm's or
transformers': a tapped attention must materialise its probabilities while untapped layers keep
fused attention, the pass must stop after the last layer anyone needs, and masking must never
shuffle tokens. None of the published implementations does all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maelens._validate import check_image_batch
from maelens.errors import MaelensError
from maelens.model.config import ViTConfig
from maelens.model.masking import check_keep, keep_to_mask, patchify, random_keep
from maelens.model.posembed import resample_pos_embed, sincos_2d
from maelens.model.taps import Capture, TapPlan, Taps, TapStore


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, need_weights: bool = False, store: TapSlots | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """x (B, T, D) -> (output (B, T, D), probabilities (B, H, T, T) or None,
        per-head output A.V (B, T, H, d_head)). `store` supplies the tensors that tapped
        results are written into (no autograd)."""
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, d_head)
        if not need_weights and fused_attention_is_faster(q):
            out = F.scaled_dot_product_attention(q, k, v)  # fused: A is never materialised
            return self._project(out), None, out.transpose(1, 2)
        shape = (B, self.num_heads, T, T)
        if store is None and torch.is_grad_enabled():
            attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
            out = torch.matmul(attn, v)  # (B, H, T, d_head)
        else:
            heads = (B, self.num_heads, T, self.head_dim)
            attn = torch.matmul(q * self.scale, k.transpose(-2, -1),
                                out=None if store is None else store.attn(shape, q))
            _softmax_(attn)
            out = torch.matmul(attn, v, out=None if store is None else store.heads(heads, q))
        return self._project(out), attn if need_weights else None, out.transpose(1, 2)

    def _project(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, T, d_head) -> (B, T, D) through the output projection."""
        B, _, T, _ = out.shape
        return self.proj(out.transpose(1, 2).reshape(B, T, -1))


def fused_attention_is_faster(q: torch.Tensor) -> bool:
    """Which attention path an untapped layer takes, chosen by measurement, not by default.

    `bench/bench_capture.py` ("attention path") times both for a ViT-B/16 layer: on this
    2-core CPU the fused SDPA kernel takes ~49 ms vs ~96 ms explicit in float32, but ~57 ms vs
    ~26 ms in bfloat16, where it runs no faster than in float32. On CUDA the fused (flash /
    memory-efficient) kernels win in every dtype. With autograd the fused path is kept: the
    explicit one normalises in place.
    """
    explicit = q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
    return not (explicit and not torch.is_grad_enabled())


def _softmax_(scores: torch.Tensor) -> torch.Tensor:
    """In-place softmax over the last axis (no new memory), bit-equal to `Tensor.softmax`.

    On the CPU, torch's own softmax kernel writes its output over its input (it reads a row's
    max and sum before it writes the row): the same numbers as `Tensor.softmax` (which
    normalises half precision in float32 internally) at a quarter of the time of the
    float32 round trip. Elsewhere the kernel may not allow aliasing, so it writes a copy.
    """
    if scores.device.type == "cpu":
        return torch.ops.aten._softmax.out(scores, -1, False, out=scores)
    return scores.copy_(scores.softmax(dim=-1))


class TapSlots:
    """One block's view of a `TapStore` during a no-grad pass."""

    def __init__(self, store: TapStore, layer: int) -> None:
        self.store, self.layer = store, layer

    def attn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return self.store.take("attn", self.layer, shape, like)

    def heads(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return self.store.take("heads", self.layer, shape, like)

    def hidden(self, like: torch.Tensor) -> torch.Tensor:
        return self.store.take("hidden", self.layer, tuple(like.shape), like)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's residual branch with probability `p` while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], 1, 1, device=x.device, dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, qkv_bias: bool, eps: float,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, need_weights: bool = False, store: TapSlots | None = None,
        keep_hidden: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        out, attn, heads = self.attn(self.norm1(x), need_weights, store)
        x = x + self.drop_path(out)
        branch = self.drop_path(self.mlp(self.norm2(x)))
        if store is not None and keep_hidden:
            return torch.add(x, branch, out=store.hidden(x)), attn, heads
        return x + branch, attn, heads


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D), patches row-major."""
        return self.proj(pixels).flatten(2).transpose(1, 2)


@dataclass
class MAEOutput:
    """loss: scalar masked-patch MSE; pred: (B, N, p*p*C) for every patch; mask: (B, N) with
    0 = keep, 1 = remove; keep: (B, N_v); latent: (B, T, D) encoder output after `norm`."""

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    keep: torch.Tensor
    latent: torch.Tensor


class VisionTransformer(nn.Module):
    """ViT encoder with optional classifier head and optional MAE decoder (see `ViTConfig`)."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        c = self.config = config
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + 1, c.embed_dim),
                                      requires_grad=c.pos_embed == "learned")
        rates = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_dim, c.qkv_bias, c.norm_eps, rate)
            for rate in rates
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if c.final_norm else nn.Identity()
        self.fc_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if c.fc_norm else nn.Identity()
        self.head = nn.Linear(c.embed_dim, c.num_classes) if c.num_classes else None
        if c.has_decoder:
            self._build_decoder(c)
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.reset_parameters()

    def _build_decoder(self, c: ViTConfig) -> None:
        dd = c.decoder_embed_dim
        self.decoder_embed = nn.Linear(c.embed_dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + 1, dd),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(dd, c.decoder_num_heads, c.decoder_mlp_dim, True, c.norm_eps)
            for _ in range(c.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=c.norm_eps)
        self.decoder_pred = nn.Linear(dd, c.patch_size**2 * c.in_chans)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The MAE initialisation: sin-cos tables, xavier Linear/patch weights, N(0, .02) tokens."""
        c = self.config
        grid = (c.grid_size, c.grid_size)
        if c.pos_embed == "sincos":
            self.pos_embed.copy_(sincos_2d(c.embed_dim, grid))
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        if c.has_decoder:
            self.decoder_pos_embed.copy_(sincos_2d(c.decoder_embed_dim, grid))
            nn.init.normal_(self.mask_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self._pos_cache = {}

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def grid_of(self, pixels: torch.Tensor) -> tuple[int, int]:
        p = self.config.patch_size
        return pixels.shape[-2] // p, pixels.shape[-1] // p

    def _pos_for(self, table: torch.Tensor, grid: tuple[int, int], sincos: bool) -> torch.Tensor:
        """The (1, 1 + gh*gw, D) table for `grid`: the stored one at the native grid, otherwise
        regenerated (sin-cos, exact) or bicubically resampled (learned)."""
        native = self.config.grid_size
        if grid == (native, native):
            return table
        if sincos:
            key = (id(table), grid, table.device, table.dtype)
            if key not in self._pos_cache:
                self._pos_cache[key] = sincos_2d(table.shape[-1], grid).to(table)
            return self._pos_cache[key]
        return resample_pos_embed(table, grid)

    # ----------------------------------------------------------------------------- encoder
    def embed(self, pixels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixels and (B, N_v) visible indices -> (B, 1 + N_v, D) tokens."""
        grid = self.grid_of(pixels)
        pos = self._pos_for(self.pos_embed, grid, self.config.pos_embed == "sincos")
        x = self.patch_embed(pixels) + pos[:, 1:]  # (B, N, D)
        if keep.shape[1] != x.shape[1] or not _is_identity(keep):
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))  # (B, N_v, D)
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def resolve_keep(
        self, pixels: torch.Tensor, keep: torch.Tensor | None, mask_ratio: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Caller-given `keep`, else random keep indices at `mask_ratio` (0: all, in order)."""
        B = pixels.shape[0]
        gh, gw = self.grid_of(pixels)
        if keep is not None:
            return check_keep(keep, B, gh * gw).to(pixels.device)
        return random_keep(B, gh * gw, mask_ratio, generator, pixels.device)

    def forward(
        self,
        pixels: torch.Tensor,
        *,
        taps: Taps | None = None,
        keep: torch.Tensor | None = None,
        mask_ratio: float = 0.0,
        generator: torch.Generator | None = None,
        store: TapStore | None = None,
    ) -> Capture:
        """One pass recording what `taps` asks for (default: `final` only).

        pixels: (B, C, H, W) normalised images, H and W multiples of the patch size.
        keep: visible patch indices (B, N_v) or (N_v,) in the token order wanted; otherwise
        `mask_ratio` masks at random with `generator` (0 keeps every patch, in spatial order).
        Blocks after the last one needed are not run. `store` (no-grad passes only) decides
        where tapped tensors live; see `TapStore`.
        """
        c = self.config
        check_image_batch("pixels", pixels, c.in_chans, c.patch_size)
        plan = (taps or Taps()).resolve(self.depth)
        if plan.logits and self.head is None:
            raise MaelensError("`logits` requested from a model without a classifier head.")
        keep = self.resolve_keep(pixels, keep, mask_ratio, generator)
        x = self.embed(pixels, keep)
        cap = Capture(keep=keep, grid=self.grid_of(pixels), patch_size=c.patch_size)
        if store is not None and torch.is_grad_enabled():
            store = None  # out= tensors cannot carry gradients
        self._run_blocks(x, plan, cap, store)
        return cap

    def _run_blocks(self, x: torch.Tensor, plan: TapPlan, cap: Capture, store: TapStore | None
                    ) -> None:
        if 0 in plan.hidden:
            cap.hidden[0] = x
        for layer in range(1, plan.last_block + 1):
            slots = None if store is None else TapSlots(store, layer)
            x, attn, heads = self.blocks[layer - 1](
                x, need_weights=layer in plan.attn, store=slots, keep_hidden=layer in plan.hidden)
            if layer in plan.hidden:
                cap.hidden[layer] = x
            if attn is not None:
                cap.attn[layer] = attn
            if layer in plan.heads:
                cap.heads[layer] = heads
        if plan.last_block < self.depth:
            return
        normed = self.norm(x)
        if plan.final:
            cap.final = normed
        if plan.pooled or plan.logits:
            cap.pooled = self.pool(normed)
        if plan.logits:
            cap.logits = self.head(cap.pooled)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) tokens after `norm` -> (B, D) head input: mean of the patch tokens (CLS
        excluded) or the CLS token, then `fc_norm` (identity when absent)."""
        pooled = tokens[:, 1:].mean(dim=1) if self.config.pool == "avg" else tokens[:, 0]
        return self.fc_norm(pooled)

    def classify(self, pixels: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> logits (B, num_classes)."""
        return self(pixels, taps=Taps(final=False, logits=True), keep=keep).logits

    # ----------------------------------------------------------------------------- decoder
    def decode(self, latent: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int]
               ) -> torch.Tensor:
        """Encoder output (B, 1 + N_v, D) after `norm` -> pixel predictions (B, N, p*p*C)."""
        if not self.config.has_decoder:
            raise MaelensError("this model has no MAE decoder (an encoder-only checkpoint).")
        x = self.decoder_embed(latent)  # (B, 1 + N_v, Dd)
        B, _, dd = x.shape
        n = grid[0] * grid[1]
        full = self.mask_token.to(x.dtype).expand(B, n, dd)
        full = full.scatter(1, keep[..., None].expand(-1, -1, dd), x[:, 1:])  # (B, N, Dd)
        x = torch.cat([x[:, :1], full], dim=1)
        x = x + self._pos_for(self.decoder_pos_embed, grid, sincos=True)
        for block in self.decoder_blocks:
            x, _, _ = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def reconstruction_loss(self, pixels: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
                            ) -> torch.Tensor:
        """Mean over removed patches of the per-patch MSE; with `norm_pix_loss` the target patch
        is standardised by its own mean and (unbiased) variance, as in the MAE code."""
        target = patchify(pixels, self.config.patch_size)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, N)
        return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)

    def forward_mae(
        self,
        pixels: torch.Tensor,
        *,
        mask_ratio: float = 0.75,
        keep: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        """The MAE objective on a batch: mask, encode the visible patches, decode, score."""
        cap = self(pixels, keep=keep, mask_ratio=mask_ratio, generator=generator)
        grid = self.grid_of(pixels)
        pred = self.decode(cap.final, cap.keep, grid)
        mask = keep_to_mask(cap.keep, grid[0] * grid[1])
        loss = self.reconstruction_loss(pixels, pred, mask)
        return MAEOutput(loss=loss, pred=pred, mask=mask, keep=cap.keep, latent=cap.final)


def _is_identity(keep: torch.Tensor) -> bool:
    """Whether every row of `keep` is 0..N-1 in order (then no gather is needed)."""
    return bool((keep == torch.arange(keep.shape[1], device=keep.device)).all())
