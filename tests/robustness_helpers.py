"""Shared checks for the robustness analyses' tests: synthetic captures, halves-merge and
state_dict round trips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch
from maelens.model.taps import Capture

# Merging two halves sums per-image float64 values or int64 counts in another order: the
# differences are float64 rounding (~1e-16 relative), far below the contract's 1e-6.
RTOL = 1e-6


def capture(tokens: torch.Tensor | None = None, *, layer: int = 2, logits: torch.Tensor | None
            = None, heads: dict[int, torch.Tensor] | None = None, pooled: torch.Tensor | None
            = None, keep: torch.Tensor | None = None, grid: tuple[int, int] = (2, 2)
            ) -> Capture:
    """A hand-made capture: hidden[layer] = tokens (B, T, D), optional logits / heads."""
    first = next(t for t in (tokens, logits, pooled, *(heads or {}).values()) if t is not None)
    B = first.shape[0]
    n = grid[0] * grid[1]
    if keep is None:
        keep = torch.arange(n).expand(B, -1)
    return Capture(keep=keep, grid=grid, patch_size=8,
                   hidden={} if tokens is None else {layer: tokens}, heads=heads or {},
                   logits=logits, pooled=pooled)


def batch(index: list[int] | torch.Tensor, labels: list[int] | torch.Tensor | None = None
          ) -> Batch:
    index = torch.as_tensor(index, dtype=torch.int64)
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    return Batch(torch.zeros(len(index), 3, 16, 16), index, labels)


def image_batches(pixels: torch.Tensor, labels: torch.Tensor | None, part: slice,
                  size: int = 3) -> list[Batch]:
    """Batches of `size` over images[part] (data-set indices kept)."""
    idx = torch.arange(len(pixels))[part]
    return [Batch(pixels[idx[i:i + size]], idx[i:i + size],
                  None if labels is None else labels[idx[i:i + size]])
            for i in range(0, len(idx), size)]


def assert_results_equal(a: AnalysisResult, b: AnalysisResult, rtol: float = RTOL) -> None:
    """Same rows (values and CIs) and arrays, up to `rtol`."""
    assert [r.metric for r in a.rows] == [r.metric for r in b.rows]
    for ra, rb in zip(a.rows, b.rows, strict=True):
        for field in ("value", "ci_low", "ci_high"):
            va, vb = getattr(ra, field), getattr(rb, field)
            assert (va is None) == (vb is None)
            if va is not None:
                np.testing.assert_allclose(va, vb, rtol=rtol, atol=1e-12, equal_nan=True)
        assert (ra.layer, ra.head, ra.extra) == (rb.layer, rb.head, rb.extra)
    assert sorted(a.arrays) == sorted(b.arrays)
    for name in a.arrays:
        np.testing.assert_allclose(a.arrays[name], b.arrays[name], rtol=rtol, atol=1e-12,
                                   equal_nan=True, err_msg=name)


def check_halves_and_round_trip(make: Callable[[], Analysis],
                                feed: Callable[[Analysis, slice], None], n_images: int,
                                tmp_path: Path) -> AnalysisResult:
    """whole == merge(first half, second half) == merge(second, first) == reloaded state."""
    whole = make()
    feed(whole, slice(0, n_images))
    halves = [make(), make()]
    mid = n_images // 2
    feed(halves[0], slice(0, mid))
    feed(halves[1], slice(mid, n_images))
    expected = whole.result()
    assert_results_equal(make().merge(halves[1]).merge(halves[0]).result(), expected)
    assert_results_equal(halves[0].merge(halves[1]).result(), expected)
    path = tmp_path / "state.pt"
    torch.save(whole.state_dict(), path)
    reloaded = make().load_state_dict(torch.load(path, weights_only=True))
    assert_results_equal(reloaded.result(), expected)
    return expected
