"""Batched forward passes feeding any number of streaming analyses.

The contract: an analysis declares the `taps` it needs and exposes `update(capture, batch)` and
`result()`. `run_capture` takes the union of all requests, runs each batch through the model
once and hands every analysis the same float32 CPU `Capture`. The capture's tensors live in
buffers reused by the next batch: an analysis copies (or reduces) what it keeps during `update`.
Masks are drawn per image from (seed, image index), so the numbers do not depend on batch size
or order.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from maelens.errors import MaelensError
from maelens.model.masking import num_visible
from maelens.model.taps import Capture, Taps, TapStore
from maelens.model.vit import VisionTransformer

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """pixels (B, C, H, W) normalised; index (B,) position of each image in its data set;
    labels (B,) or None."""

    pixels: torch.Tensor
    index: torch.Tensor
    labels: torch.Tensor | None = None


class Analysis(Protocol):
    taps: Taps

    def update(self, capture: Capture, batch: Batch) -> None: ...

    def result(self) -> Any: ...


def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed memory for reuse instead of returning it to the OS.

    A tapped batch retains hundreds of MB that are freed when the next batch starts; glibc
    hands that memory back to the OS and the next batch page-faults it in again (~110k faults
    per ViT-B/16 batch of 8, ~5 % of the pass). The setting is process-wide, so the library
    never applies it on its own: the `maelens` CLI does, in processes it owns. Set
    MAELENS_KEEP_FREED_MEMORY=0 to opt out. Returns whether the setting took effect.
    """
    if os.environ.get("MAELENS_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith(
            "linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(m_trim_threshold, 1 << 30) and
                libc.mallopt(m_mmap_threshold, 1 << 28))


def iterate_batches(
    pixels: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 64
) -> Iterator[Batch]:
    """Batches over an in-memory (N, C, H, W) tensor, in order."""
    for start in range(0, pixels.shape[0], batch_size):
        stop = min(start + batch_size, pixels.shape[0])
        yield Batch(pixels[start:stop], torch.arange(start, stop),
                    None if labels is None else labels[start:stop])


def keep_for_images(
    index: torch.Tensor, num_patches: int, mask_ratio: float, seed: int
) -> torch.Tensor:
    """(B, N_v) ascending visible indices; image i's mask depends only on (seed, i)."""
    n_keep = num_visible(num_patches, mask_ratio)
    if n_keep == num_patches:
        return torch.arange(num_patches).expand(len(index), -1).clone()
    rows = []
    for i in index.tolist():
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(i))
        rows.append(torch.rand(num_patches, generator=g).argsort()[:n_keep].sort().values)
    return torch.stack(rows)


def run_capture(
    model: VisionTransformer,
    batches: Iterable[Batch],
    analyses: Sequence[Analysis],
    *,
    mask_ratio: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Any | None = None,
) -> list[Any]:
    """Feed every batch through `model` once and every analysis with its capture.

    `dtype` (float32 or bfloat16) is the compute precision; analyses always receive float32 CPU
    tensors. `progress` is an optional callable taking the number of images just processed.
    Returns the analyses' `result()` in order.
    """
    if not analyses:
        raise MaelensError("`analyses` is empty: give at least one analysis to feed.")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise MaelensError(f"`dtype` must be float32, bfloat16 or float16, got {dtype}.")
    taps = analyses[0].taps
    for analysis in analyses[1:]:
        taps = taps.union(analysis.taps, model.depth)
    model = model.to(device=device, dtype=dtype).eval()
    store = TapStore(reuse=True)
    with torch.inference_mode():
        for batch in batches:
            cap = _forward(model, batch, taps, mask_ratio, seed, device, dtype, store)
            for analysis in analyses:
                analysis.update(cap, batch)
            if progress is not None:
                progress(len(batch.index))
    return [analysis.result() for analysis in analyses]


def _forward(model: VisionTransformer, batch: Batch, taps: Taps, mask_ratio: float, seed: int,
             device: str | torch.device, dtype: torch.dtype, store: TapStore) -> Capture:
    pixels = batch.pixels.to(device=device, dtype=dtype)
    gh, gw = model.grid_of(pixels)
    keep = keep_for_images(batch.index, gh * gw, mask_ratio, seed).to(device)
    return model(pixels, taps=taps, keep=keep, store=store).cpu_float()
