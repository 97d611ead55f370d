"""The simple entry point: one pass per batch, at one mask ratio, feeding many analyses.

`run_capture` is a `PassPlan` with a single reference pass (see `maelens.engine.plan` for
conditions and paired passes). The capture's tensors live in buffers reused by the next batch:
an analysis reduces (or copies) what it keeps during `update`. Masks are drawn per image from
(seed, image index), so the numbers do not depend on batch size or order.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch
from maelens.engine.conditions import Condition, RandomMask
from maelens.engine.plan import PassPlan
from maelens.errors import MaelensError
from maelens.model.masking import num_visible
from maelens.model.vit import VisionTransformer

log = logging.getLogger(__name__)


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


def run_capture(
    model: VisionTransformer,
    batches: Iterable[Batch],
    analyses: Sequence[Analysis],
    *,
    mask_ratio: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: Callable[[int], None] | None = None,
    normalised: bool = True,
) -> list[AnalysisResult]:
    """Feed every batch through `model` once and every analysis with its own taps.

    `dtype` (float32, bfloat16 or float16) is the compute precision. `normalised`: the batches
    hold model inputs already normalised (as the data loaders give them); False for [0, 1] RGB.
    `progress(n)` is called with the number of images just processed.
    Returns the analyses' `result()` in order.
    """
    if not analyses:
        raise MaelensError("`analyses` is empty: give at least one analysis to feed.")
    num_visible(model.config.num_patches, mask_ratio)  # a bad ratio fails before any pass
    keep = RandomMask(mask_ratio, seed) if mask_ratio else None
    plan = PassPlan(model, reference=Condition("clean", keep=keep), device=device, dtype=dtype,
                    normalise=not normalised)
    for analysis in analyses:
        plan.add(analysis)
    return plan.run(batches, progress)
