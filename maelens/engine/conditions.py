"""Conditions: what a pass changes about a batch, relative to the reference (clean) pass.

A `Condition` is a seeded pixel transform of the [0, 1] RGB images at the model's input size
(applied *before* normalisation) and/or a token-keep policy. Either may read the reference
pass's capture (attention rollout for guided occlusion); they declare what they read in `needs`
so the engine taps it on the reference pass. All randomness is keyed by (seed, purpose, image
index) through `maelens.seeds`, never by batch position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from maelens.analyses.base import Batch
from maelens.errors import MaelensError
from maelens.model.masking import keep_for_images
from maelens.model.taps import Capture, Taps
from maelens.perturb.occlusion import (
    check_percent,
    keep_after_drop,
    occlude_pixels,
    occlusion_count,
    random_patches,
    top_patches,
)
from maelens.perturb.rollout import attention_rollout, patch_scores

NOTHING = Taps(final=False)


class PixelOp:
    """A transform of the images: (batch, reference capture or None) -> (B, 3, H, W) in [0, 1]."""

    needs: Taps = NOTHING

    def __call__(self, batch: Batch, reference: Capture | None) -> torch.Tensor:
        raise NotImplementedError


class KeepOp:
    """A token-keep policy: (batch, reference capture or None, N patches) -> (B, N_v) indices."""

    needs: Taps = NOTHING

    def __call__(self, batch: Batch, reference: Capture | None, num_patches: int
                 ) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Condition:
    """A named pass. `group` and `level` label it in results (e.g. "blur", "k5-s1")."""

    name: str
    pixels: PixelOp | None = None
    keep: KeepOp | None = None
    group: str = ""
    level: str = ""

    @property
    def needs(self) -> list[Taps]:
        return [op.needs for op in (self.pixels, self.keep) if op is not None]


CLEAN = Condition("clean", group="clean", level="clean")


@dataclass(frozen=True)
class FunctionPixels(PixelOp):
    """Any seeded image function fn(pixels (B, 3, H, W), index (B,)) -> pixels."""

    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def __call__(self, batch: Batch, reference: Capture | None) -> torch.Tensor:
        return self.fn(batch.pixels, batch.index)


@dataclass(frozen=True)
class RandomMask(KeepOp):
    """MAE random masking at `ratio`, image i's mask from (seed, purpose, i)."""

    ratio: float
    seed: int = 0
    purpose: tuple[int | str, ...] = ("mask",)

    def __call__(self, batch: Batch, reference: Capture | None, num_patches: int
                 ) -> torch.Tensor:
        return keep_for_images(batch.index, num_patches, self.ratio, self.seed, self.purpose)


@dataclass(frozen=True)
class CallerKeep(KeepOp):
    """Caller-chosen visible patches: a fixed (N_v,) tensor or fn(index (B,)) -> (B, N_v)."""

    keep: torch.Tensor | Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, batch: Batch, reference: Capture | None, num_patches: int
                 ) -> torch.Tensor:
        if callable(self.keep):
            return self.keep(batch.index)
        return self.keep.expand(len(batch.index), -1)


@dataclass(frozen=True)
class PatchRanking:
    """Which patches go first: by attention rollout of the reference pass, or at random.

    scores "rollout": the CLS row of the rollout over patches (source "cls", the default: the
    CLS query is what a CLS-pooled head reads) or the mean of the patch rows ("mean_patch",
    closer to what an average-pooled head reads); "random": the seeded random-patch control.
    """

    scores: str = "rollout"
    head_fusion: str = "mean"
    source: str = "cls"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scores not in ("rollout", "random"):
            raise MaelensError(f"`scores` must be 'rollout' or 'random', got {self.scores!r}.")

    @property
    def needs(self) -> Taps:
        return Taps(attn=None, final=False) if self.scores == "rollout" else NOTHING

    def removed(self, batch: Batch, reference: Capture | None, num_patches: int, p: float
                ) -> torch.Tensor:
        """(B, count) patch indices to remove, highest priority first."""
        if self.scores == "random":
            count = occlusion_count(num_patches, p)
            return random_patches(num_patches, count, self.seed, batch.index.tolist())
        if reference is None or reference.keep.shape[1] != num_patches:
            raise MaelensError("rollout-guided occlusion needs an unmasked reference pass; "
                               "drop the reference mask (mask ratio 0).")
        layers = sorted(reference.attn)
        rollout = attention_rollout([reference.attn[k].float() for k in layers], self.head_fusion)
        return top_patches(patch_scores(rollout, self.source), p).cpu()


@dataclass(frozen=True)
class OccludePixels(PixelOp):
    """Overwrite the top-p % patches (by `ranking`) with zero, the data-set mean or noise."""

    p: float
    patch_size: int
    ranking: PatchRanking = field(default_factory=PatchRanking)
    fill: str = "zero"
    mean: tuple[float, float, float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_percent(self.p)

    @property
    def needs(self) -> Taps:  # type: ignore[override]
        return self.ranking.needs

    def __call__(self, batch: Batch, reference: Capture | None) -> torch.Tensor:
        gh, gw = (s // self.patch_size for s in batch.pixels.shape[-2:])
        removed = self.ranking.removed(batch, reference, gh * gw, self.p).to(batch.pixels.device)
        mean = None if self.mean is None else torch.tensor(self.mean, device=batch.pixels.device)
        return occlude_pixels(batch.pixels, removed, self.patch_size, self.fill, mean=mean,
                              seed=self.seed, p=self.p, image_indices=batch.index.tolist())


@dataclass(frozen=True)
class DropTokens(KeepOp):
    """Token dropping: the encoder sees only the patches left after removing the top-p %."""

    p: float
    ranking: PatchRanking = field(default_factory=PatchRanking)

    def __post_init__(self) -> None:
        check_percent(self.p)

    @property
    def needs(self) -> Taps:  # type: ignore[override]
        return self.ranking.needs

    def __call__(self, batch: Batch, reference: Capture | None, num_patches: int
                 ) -> torch.Tensor:
        if occlusion_count(num_patches, self.p) >= num_patches:
            raise MaelensError(f"dropping {self.p} % of {num_patches} patches leaves none; "
                               "lower `p`.")
        removed = self.ranking.removed(batch, reference, num_patches, self.p)
        return keep_after_drop(removed.cpu(), num_patches)
