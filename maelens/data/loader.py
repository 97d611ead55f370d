"""Parallel decoding of image files with a `torch.utils.data.DataLoader`.

On a GPU the forward pass stops being the bottleneck: decoding JPEGs and resizing them in the
main process starves it. Files are decoded, resized and centre-cropped by `workers` processes
(0: in this process), in order, so image i stays image i: its data-set index, label, mask and
corruption seeds do not depend on the number of workers. Crops travel as uint8 (4x smaller
than float32) and become [0, 1] floats in the consumer. An unreadable file is skipped (its
index is simply absent from the batches) and reported, or raises with `strict`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from maelens.data.images import read_image
from maelens.data.preprocess import Preprocess
from maelens.errors import MaelensError

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Decoding processes when none are asked for: all CPUs but one, at most 8 (0 on 1 CPU)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cpus or 1) - 1))


@dataclass
class DecodedBatch:
    """crops (B, S, S, 3) uint8, index (B,) int64 data-set positions, skipped (path, why)."""

    crops: torch.Tensor
    index: torch.Tensor
    skipped: list[tuple[str, str]]


class _Crops(Dataset):
    def __init__(self, paths: Sequence[Path], preprocess: Preprocess, offset: int,
                 strict: bool) -> None:
        self.paths, self.preprocess, self.offset, self.strict = paths, preprocess, offset, strict

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str]:
        try:
            crop = torch.from_numpy(self.preprocess.crop(read_image(self.paths[i])).copy())
            return crop, self.offset + i, ""
        except MaelensError as exc:
            if self.strict:
                raise
            return None, self.offset + i, str(exc)


def _collate(items: list[tuple[torch.Tensor | None, int, str]]) -> DecodedBatch:
    ok = [(crop, i) for crop, i, _ in items if crop is not None]
    skipped = [(str(i), why) for crop, i, why in items if crop is None]
    size = 0 if not ok else ok[0][0].shape[0]
    crops = torch.stack([c for c, _ in ok]) if ok else torch.zeros(0, size, size, 3,
                                                                   dtype=torch.uint8)
    return DecodedBatch(crops, torch.tensor([i for _, i in ok], dtype=torch.int64), skipped)


def decode_batches(paths: Sequence[Path], preprocess: Preprocess, batch_size: int, *,
                   start: int = 0, workers: int | None = None, pin_memory: bool = False,
                   strict: bool = False) -> Iterator[DecodedBatch]:
    """Decode `paths[start:]` in order, `batch_size` files per batch, with `workers` processes.

    `index` counts from `start` (the position in `paths`). `pin_memory` speeds up copies to a
    CUDA device. Skipped files appear in `skipped` as (index, reason).
    """
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise MaelensError(f"`workers` must be >= 0 (0: decode in this process), got {workers}.")
    data = _Crops(list(paths[start:]), preprocess, start, strict)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, pin_memory=pin_memory,
                        prefetch_factor=4 if workers else None)
    for batch in loader:
        for index, why in batch.skipped:
            log.info("skipping unreadable image %s: %s", paths[int(index)], why)
        yield batch
