"""Condition sets for the robustness study (seed paper III-B1, IV-B): Gaussian blur levels,
ImageNet-C corruptions, occlusion (rollout-guided pixel fill, token dropping, random
control), stored images (pre-generated ImageNet-C read from disk) and the K random masks of
the mask-invariance study.

Every builder returns engine `Condition`s named "<family>/<setting>" with a `group` (the table
or curve they belong to) and a `level` (the label a table prints: roman I..X for blur, as the
paper's Table I). `condition_params` recovers the numbers (kernel, sigma, percent, corruption,
severity) from a condition, so the study can record them next to the results.

Occlusion at p = 0 % hides nothing: that pass *is* the clean reference pass, so no condition
is built for it (the study reads p = 0 from the clean pass; cosine 1, ΔC 0 by definition).
This saves three passes (pixel fill, token drop, random control) that would repeat the clean one.

The `parse_*` helpers turn command-line text into validated values; their errors name the
command-line option.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maelens.analyses.base import Batch
from maelens.engine.conditions import (
    Condition,
    DropTokens,
    OccludePixels,
    PatchRanking,
    PixelOp,
    RandomMask,
)
from maelens.errors import MaelensError
from maelens.model.taps import Capture
from maelens.perturb.blur import PAPER_BLUR_LEVELS, check_blur_params, gaussian_blur
from maelens.perturb.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from maelens.perturb.occlusion import FILLS, check_percent

PAPER_PERCENTS: tuple[float, ...] = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90)
MODES = ("pixels", "tokens")
RANKINGS = ("rollout", "random")
HEAD_FUSIONS = ("mean", "max", "min")
ROLLOUT_SOURCES = ("cls", "mean_patch")

_ROMAN = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
          (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))


def roman(number: int) -> str:
    """1 -> "I", 10 -> "X" (the paper's blur-level labels)."""
    out = []
    for value, letters in _ROMAN:
        count, number = divmod(number, value)
        out.append(letters * count)
    return "".join(out)


# --------------------------------------------------------------------------- pixel ops
@dataclass(frozen=True)
class BlurPixels(PixelOp):
    """torchvision-equal Gaussian blur (kernel_size, sigma in pixels) of the [0, 1] images."""

    kernel_size: int
    sigma: float

    def __call__(self, batch: Batch, reference: Capture | None) -> torch.Tensor:
        return gaussian_blur(batch.pixels, self.kernel_size, self.sigma)


@dataclass(frozen=True)
class CorruptPixels(PixelOp):
    """One ImageNet-C corruption at one severity; image i's draws keyed by (seed, name,
    severity, i), 8-bit quantised unless `quantize` is False."""

    corruption: str
    severity: int
    seed: int = 0
    quantize: bool = True

    def __call__(self, batch: Batch, reference: Capture | None) -> torch.Tensor:
        return corrupt(batch.pixels, self.corruption, self.severity, batch.index, self.seed,
                       self.quantize)


@dataclass(frozen=True)
class StoredPixels(PixelOp):
    """Images read from disk in place of the batch's: image i of the data set is
    `paths[i]`, resized and centre-cropped to the batch's size (crop_pct 1.0: pre-generated
    ImageNet-C files are already 224 x 224 centre crops). `key` names the set (comparisons
    and hashing use it, not the paths)."""

    key: str
    paths: tuple[Path, ...] = field(compare=False, repr=False)

    def __call__(self, batch: Batch, reference: Capture | None) -> torch.Tensor:
        from maelens.data import Preprocess, read_image

        crop = Preprocess(batch.pixels.shape[-1], crop_pct=1.0)
        images = np.stack([crop.crop(read_image(self.paths[int(i)])) for i in batch.index])
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        return pixels.to(batch.pixels.device, batch.pixels.dtype)


# --------------------------------------------------------------------------- builders
def blur_label(kernel_size: int, sigma: float) -> str:
    return f"k{kernel_size}-s{sigma:g}"


def blur_conditions(levels: Sequence[tuple[int, float]] = PAPER_BLUR_LEVELS) -> list[Condition]:
    """One condition per (kernel size, sigma) level, in the given order: name "blur/k5-s1",
    group "blur", level "I", "II", ... (Table I's labels)."""
    levels = check_blur_levels(levels)
    return [Condition(f"blur/{blur_label(k, s)}", pixels=BlurPixels(k, s), group="blur",
                      level=roman(i + 1)) for i, (k, s) in enumerate(levels)]


def check_blur_levels(levels: Sequence[tuple[int, float]], option: str = "levels"
                      ) -> tuple[tuple[int, float], ...]:
    """Validated (kernel_size, sigma) pairs: odd positive kernels, sigma > 0, no repeats."""
    out = []
    for pair in levels:
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise MaelensError(f"`{option}` must hold (kernel_size, sigma) pairs, got {pair!r}.")
        k, s = pair
        try:
            check_blur_params(k, float(s) if not isinstance(s, bool) else s)
        except (MaelensError, TypeError, ValueError) as exc:
            raise MaelensError(f"`{option}` level {pair!r}: {exc}") from None
        out.append((int(k), float(s)))
    if len(set(out)) != len(out):
        raise MaelensError(f"`{option}` repeats a (kernel_size, sigma) level: {out}; give each "
                           "level once.")
    return tuple(out)


def corruption_conditions(names: Sequence[str] = CORRUPTIONS,
                          severities: Sequence[int] = SEVERITIES, seed: int = 0,
                          quantize: bool = True) -> list[Condition]:
    """One condition per (corruption, severity), corruption-major: name
    "corrupt/gaussian_noise/3", group "corruption", level "gaussian_noise/3"."""
    names, severities = check_corruptions(names), check_severities(severities)
    return [Condition(f"corrupt/{c}/{s}", pixels=CorruptPixels(c, s, int(seed), bool(quantize)),
                      group="corruption", level=f"{c}/{s}") for c in names for s in severities]


def stored_conditions(sets: dict[tuple[str, int], Sequence[str | os.PathLike]]
                      ) -> list[Condition]:
    """Pre-generated corrupted images per (corruption, severity): `sets[(c, s)]` lists one
    file per image of the clean set, in its order. Named like `corruption_conditions`
    ("imagenet-c/gaussian_noise/3", group "imagenet-c")."""
    out = []
    for (c, s), paths in sets.items():
        key = f"imagenet-c/{c}/{s}"
        out.append(Condition(key, pixels=StoredPixels(key, tuple(Path(p) for p in paths)),
                             group="imagenet-c", level=f"{c}/{s}"))
    return out


def occlusion_group(mode: str, ranking: str, fill: str) -> str:
    """The curve an occlusion condition belongs to, e.g. "occlusion/pixels-rollout-zero"."""
    return f"occlusion/{mode}-{ranking}" + (f"-{fill}" if mode == "pixels" else "")


def occlusion_conditions(percents: Sequence[float] = PAPER_PERCENTS, mode: str = "pixels",
                         fill: str = "zero", ranking: str = "rollout", head_fusion: str = "mean",
                         source: str = "cls", seed: int = 0, patch_size: int = 16,
                         mean: tuple[float, float, float] | None = None) -> list[Condition]:
    """Occlusion of the top-p % patches (by attention rollout of the clean pass, or the seeded
    random control) for every p > 0 in `percents` (p = 0 is the clean pass, see the module
    docstring). mode "pixels": hidden patches overwritten with `fill` (zero / mean colour
    `mean` in [0, 1] / uniform noise); "tokens": the encoder drops them. Names
    "<group>/p50", group `occlusion_group(...)`, level "50%"."""
    percents = check_percents(percents)
    _check_choice("mode", mode, MODES)
    _check_choice("ranking", ranking, RANKINGS)
    _check_choice("fill", fill, FILLS)
    _check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    _check_choice("source", source, ROLLOUT_SOURCES)
    if fill == "mean" and mode == "pixels" and mean is None:
        raise MaelensError("occlusion `fill`='mean' needs `mean`, the per-channel colour in "
                           "[0, 1] (e.g. the model's normalisation mean).")
    order = PatchRanking(ranking, head_fusion, source, int(seed))
    group = occlusion_group(mode, ranking, fill)
    out = []
    for p in percents:
        if p == 0:
            continue
        if mode == "pixels":
            op = OccludePixels(p, patch_size, order, fill, None if mean is None else
                               tuple(float(m) for m in mean), int(seed))
            cond = Condition(f"{group}/p{p:g}", pixels=op, group=group, level=f"{p:g}%")
        else:
            cond = Condition(f"{group}/p{p:g}", keep=DropTokens(p, order), group=group,
                             level=f"{p:g}%")
        out.append(cond)
    return out


def condition_params(condition: Condition) -> dict[str, Any]:
    """The numbers behind a condition, JSON-ready: family and e.g. kernel_size/sigma,
    corruption/severity, percent/mode/ranking/fill."""
    op = condition.pixels if condition.pixels is not None else condition.keep
    base: dict[str, Any] = {"name": condition.name, "group": condition.group,
                            "level": condition.level}
    if isinstance(op, BlurPixels):
        return {**base, "family": "blur", "kernel_size": op.kernel_size, "sigma": op.sigma}
    if isinstance(op, CorruptPixels):
        return {**base, "family": "corruption", "corruption": op.corruption,
                "severity": op.severity, "source": "synthetic", "seed": op.seed}
    if isinstance(op, StoredPixels):
        corruption, severity = condition.level.split("/")
        return {**base, "family": "corruption", "corruption": corruption,
                "severity": int(severity), "source": "imagenet-c files"}
    if isinstance(op, OccludePixels | DropTokens):
        mode = "pixels" if isinstance(op, OccludePixels) else "tokens"
        return {**base, "family": "occlusion", "percent": op.p, "mode": mode,
                "ranking": op.ranking.scores, "fill": getattr(op, "fill", None),
                "head_fusion": op.ranking.head_fusion, "rollout_source": op.ranking.source}
    return {**base, "family": condition.group}


# --------------------------------------------------------------------------- validation
def _check_choice(option: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise MaelensError(f"`{option}` must be one of {', '.join(choices)}, got {value!r}.")


def check_percents(percents: Sequence[float], option: str = "percents") -> tuple[float, ...]:
    """Percentages in [0, 100], each once."""
    out = []
    for p in percents:
        try:
            out.append(check_percent(p))
        except MaelensError:
            raise MaelensError(f"`{option}` must hold percentages in [0, 100], got {p!r}; "
                               "e.g. 0,10,...,90.") from None
    if len(set(out)) != len(out):
        raise MaelensError(f"`{option}` repeats a percentage: {out}; give each once.")
    return tuple(out)


def check_corruptions(names: Sequence[str], option: str = "corruptions") -> tuple[str, ...]:
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise MaelensError(f"`{option}`: unknown corruption {unknown[0]!r}; expected 'all' or "
                           f"names from: {', '.join(CORRUPTIONS)}.")
    if len(set(names)) != len(names):
        raise MaelensError(f"`{option}` repeats a corruption: {list(names)}.")
    return tuple(names)


def check_severities(severities: Sequence[int], option: str = "severities") -> tuple[int, ...]:
    out = []
    for s in severities:
        if isinstance(s, bool) or s not in SEVERITIES or int(s) != s:
            raise MaelensError(f"`{option}` must hold ImageNet-C severities 1..5, got {s!r}.")
        out.append(int(s))
    if len(set(out)) != len(out):
        raise MaelensError(f"`{option}` repeats a severity: {out}.")
    return tuple(out)


# --------------------------------------------------------------------------- parsing
def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _none(text: str) -> bool:
    return text.strip().lower() in ("", "none", "off")


def parse_blur_levels(text: str, option: str = "--blur") -> tuple[tuple[int, float], ...]:
    """'paper' -> the ten levels of Table I; '5:1,7:2' -> ((5, 1.0), (7, 2.0)); 'none' -> ()."""
    if text.strip().lower() == "paper":
        return PAPER_BLUR_LEVELS
    if _none(text):
        return ()
    levels = []
    for item in _items(text):
        k, sep, s = item.partition(":")
        try:
            if not sep:
                raise ValueError(item)
            levels.append((int(k), float(s)))
        except ValueError:
            raise MaelensError(f"`{option}` takes 'paper', 'none' or KERNEL:SIGMA pairs such as "
                               f"'5:1,7:2' (pixels), got {item!r}.") from None
    return check_blur_levels(levels, option)


def parse_percents(text: str, option: str = "--occlusion") -> tuple[float, ...]:
    """'0,10,...,90' style lists; 'paper' -> 0..90 in steps of 10; 'none' -> ()."""
    if text.strip().lower() == "paper":
        return PAPER_PERCENTS
    if _none(text):
        return ()
    try:
        values = [float(item) for item in _items(text)]
    except ValueError:
        raise MaelensError(f"`{option}` takes comma-separated percentages in [0, 100] such as "
                           f"'0,10,20', got {text!r}.") from None
    return check_percents(values, option)


def parse_corruptions(text: str, option: str = "--corruptions") -> tuple[str, ...]:
    """'all' -> the 15 ImageNet-C corruptions; 'none' -> (); else comma-separated names."""
    if text.strip().lower() == "all":
        return CORRUPTIONS
    if _none(text):
        return ()
    return check_corruptions(_items(text), option)


def parse_severities(text: str, option: str = "--severities") -> tuple[int, ...]:
    """'1,2,3' or 'all' (1..5)."""
    if text.strip().lower() == "all":
        return SEVERITIES
    try:
        values = [int(item) for item in _items(text)]
    except ValueError:
        raise MaelensError(f"`{option}` takes comma-separated severities 1..5, got "
                           f"{text!r}.") from None
    if not values:
        raise MaelensError(f"`{option}` names no severity; give e.g. '1,3,5' or 'all'.")
    return check_severities(values, option)


def check_masks(k_masks: int, option: str = "masks") -> int:
    """0 (no mask-invariance study) or K >= 2 random masks per image."""
    if isinstance(k_masks, bool) or int(k_masks) != k_masks or k_masks < 0 or k_masks == 1:
        raise MaelensError(f"`{option}` must be 0 (skip the random-mask study) or K >= 2 masks "
                           f"per image (pairwise cosines need two views), got {k_masks!r}.")
    return int(k_masks)


def mask_invariance_conditions(ratio: float, k_masks: int = 100, seed: int = 0
                               ) -> list[Condition]:
    """K conditions "mask-invariance/k00".. each masking every image at `ratio` with its own
    seeded mask (purpose ("invariance", k)): image i's k-th mask depends on (seed, k, i) only."""
    if isinstance(k_masks, bool) or not isinstance(k_masks, int | np.integer) or k_masks < 2:
        raise MaelensError(f"`k_masks` must be an integer >= 2 (pairwise cosines need two "
                           f"masked views), got {k_masks!r}.")
    if not 0.0 < float(ratio) < 1.0:
        raise MaelensError(f"mask-invariance `ratio` must lie in (0, 1) (e.g. 0.75), got "
                           f"{ratio}.")
    width = max(2, len(str(k_masks - 1)))
    return [Condition(f"mask-invariance/k{k:0{width}d}",
                      keep=RandomMask(float(ratio), seed, purpose=("invariance", k)),
                      group="mask-invariance", level=f"k{k:0{width}d}")
            for k in range(int(k_masks))]
