"""Export of raw activations: images -> model with taps -> arrays in one .npz."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maelens._validate import check_positive_int, check_ratio
from maelens.analyses.stack import StackActivations
from maelens.data import Preprocess, load_array_images, load_image_folder
from maelens.engine.capture import run_capture
from maelens.errors import MaelensError
from maelens.model.masking import num_visible
from maelens.model.taps import Taps
from maelens.model.vit import VisionTransformer

TAP_KINDS = ("hidden", "final", "attn", "heads", "logits")


@dataclass(frozen=True)
class ExtractSettings:
    """What to record and how: `kinds` among TAP_KINDS, `layers` (None = all; see Taps),
    random masking at `mask_ratio` seeded per image by `seed`, compute `dtype`."""

    kinds: tuple[str, ...] = TAP_KINDS
    layers: Sequence[int] | None = None
    mask_ratio: float = 0.0
    seed: int = 0
    batch_size: int = 32
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_ratio("mask_ratio", self.mask_ratio)
        check_positive_int("batch_size", self.batch_size)

    def taps(self, model: VisionTransformer) -> Taps:
        unknown = sorted(set(self.kinds) - set(TAP_KINDS))
        if unknown:
            raise MaelensError(f"unknown tap kind(s) {unknown}; choose from {list(TAP_KINDS)}.")
        none: tuple[int, ...] = ()
        return Taps(
            hidden=self.layers if "hidden" in self.kinds else none,
            attn=self.layers if "attn" in self.kinds else none,
            heads=self.layers if "heads" in self.kinds else none,
            final="final" in self.kinds,
            logits="logits" in self.kinds and model.head is not None,
        )


def load_inputs(images: str | Path, model: VisionTransformer, preprocessed: bool = False,
                strict: bool = False) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
    """(N, C, S, S) model inputs from an image folder or a .npy array, their names, and the
    skipped (file, reason) pairs. Folder images are resized / cropped / normalised for `model`."""
    path = Path(images)
    if path.is_dir():
        if preprocessed:
            raise MaelensError("`--no-preprocess` applies to .npy arrays, not image folders.")
        loaded = load_image_folder(path, strict=strict)
        pixels = loaded.to_tensor(Preprocess.from_config(model.config))
        names = [p.relative_to(path).as_posix() for p in loaded.paths]
        return pixels, names, [(str(p), why) for p, why in loaded.skipped]
    if path.suffix == ".npy":
        pixels = load_array_images(path, preprocessed, model.config)
        return pixels, [f"{path.name}[{i}]" for i in range(len(pixels))], []
    if not path.exists():
        raise MaelensError(f"images {path} do not exist; give an image folder or a .npy file.")
    raise MaelensError(f"images {path}: expected an image folder or a .npy file.")


def output_bytes(model: VisionTransformer, settings: ExtractSettings, image_hw: tuple[int, int]
                 ) -> dict[str, int]:
    """Bytes per image of each float32 output array (the .npz is about N times their sum)."""
    c = model.config
    n = (image_hw[0] // c.patch_size) * (image_hw[1] // c.patch_size)
    tokens = 1 + num_visible(n, settings.mask_ratio)
    plan = settings.taps(model).resolve(model.depth)
    sizes = {"hidden": len(plan.hidden) * tokens * c.embed_dim,
             "attn": len(plan.attn) * c.num_heads * tokens**2,
             "heads": len(plan.heads) * tokens * c.embed_dim,
             "final": tokens * c.embed_dim if plan.final else 0,
             "logits": c.num_classes if plan.logits else 0}
    return {name: 4 * size for name, size in sizes.items() if size}


def available_memory() -> int | None:
    """Free physical memory in bytes (Linux), None where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def check_fits(model: VisionTransformer, settings: ExtractSettings, pixels: torch.Tensor) -> None:
    """Refuse, before any work, an export whose arrays exceed 80 % of the free memory."""
    per_image = output_bytes(model, settings, tuple(pixels.shape[-2:]))
    need, free = len(pixels) * sum(per_image.values()), available_memory()
    if free is not None and need > 0.8 * free:
        parts = ", ".join(f"{k} {_size(v)}" for k, v in per_image.items())
        raise MaelensError(
            f"the requested arrays need {_size(need)} for {len(pixels)} images "
            f"(per image: {parts}) but only {_size(free)} of memory is free; fix: "
            "fewer `--layers`, drop `attn` from `--taps`, or export fewer images at a time."
        )


def extract(model: VisionTransformer, pixels: torch.Tensor, settings: ExtractSettings,
            progress: Callable[[int], Any] | None = None) -> dict[str, np.ndarray] | None:
    """Arrays as documented in `StackActivations`, for every image of `pixels` (N, C, S, S).

    Under torchrun each rank extracts its shard; rank 0 gathers every row and returns the
    arrays, the other ranks return None."""
    from maelens.analyses.base import Batch
    from maelens.engine.distributed import current_world, gather_to_main, shard_range

    check_fits(model, settings, pixels)
    stack = StackActivations(len(pixels), settings.taps(model))
    world = current_world()
    start, stop = shard_range(len(pixels), world)
    step = settings.batch_size
    batches = (Batch(pixels[i:min(i + step, stop)], torch.arange(i, min(i + step, stop)))
               for i in range(start, stop, step))
    run_capture(model, batches, [stack], mask_ratio=settings.mask_ratio, seed=settings.seed,
                device=settings.device, dtype=settings.dtype, progress=progress)
    if not gather_to_main([stack], world):
        return None
    arrays = stack.result().arrays
    del arrays["index"]  # images are in order 0..N-1: the row is the index
    return arrays
