"""The analysis contract: streaming accumulators fed by the pass engine.

An analysis declares the `taps` it needs and implements

    update(capture, batch) -> self          # one batch; capture holds exactly its own taps
    merge(other) -> self                    # combine two shards (any order)
    state_dict() / load_state_dict(state)   # tensors only: cache, resume, cross-process merge
    result() -> AnalysisResult              # long-table rows + named arrays, JSON-ready

Paired analyses (clean vs perturbed) implement `update_pair(clean, perturbed, batch)` instead.

Why not `torchmetrics.Metric`: its list ("cat") states concatenate in arrival order, so a
result would depend on how images were sharded across ranks or batches; ours key every
per-image state by the image's data-set index and sort on read, so strided shards, uneven
shards and resumed runs give bit-identical arrays. The rest mirrors its contract: states are
declared with `add_state(name, default, reduce)`, merged by their reduction, and reduced on
the compute device (sums in float64 where they are Gram or covariance sums).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps

Reduce = Literal["sum", "max", "min", "cat"]


@dataclass
class Batch:
    """One batch as the engine sees it.

    pixels: (B, 3, H, W) float RGB in [0, 1] at the model's input size, *not* normalised
    (perturbations act here; the engine normalises with the checkpoint's mean/std);
    index: (B,) int64 position of each image in its data set; labels: (B,) int64 or None;
    reference: in a condition's pass, the reference pass's pixels (B, 3, H, W) (for image-quality
    metrics such as PSNR / SSIM of a perturbation), else None.
    """

    pixels: torch.Tensor
    index: torch.Tensor
    labels: torch.Tensor | None = None
    reference: torch.Tensor | None = None


@dataclass
class Row:
    """One number of a long results table (see `maelens.results`)."""

    metric: str
    value: float
    unit: str = ""
    layer: int | None = None
    head: int | None = None
    level: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnalysisResult:
    """What an analysis returns: long-table rows, named arrays, and free-form JSON metadata."""

    name: str
    rows: list[Row] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class Analysis:
    """Base class: declared states, generic merge and (de)serialisation.

    Subclasses call `add_state` in `__init__`, set `taps`, and implement `update` (or
    `update_pair` with `paired = True`) and `result`. "cat" states hold per-image rows keyed by
    data-set index (`append_rows`), read back in index order with `rows_of`.
    """

    taps: Taps = Taps(final=False)
    paired: bool = False
    name: str = "analysis"

    def __init__(self) -> None:
        self._reduce: dict[str, Reduce] = {}

    # -- declared state --------------------------------------------------------------------
    def add_state(self, name: str, default: torch.Tensor | None, reduce: Reduce) -> None:
        """Declare a state: a tensor merged by `reduce`, or (reduce="cat") per-image rows."""
        if reduce not in ("sum", "max", "min", "cat"):
            raise MaelensError(f"state `{name}`: reduce must be sum/max/min/cat, got {reduce!r}.")
        self._reduce[name] = reduce
        if reduce == "cat":
            setattr(self, name, {"index": [], "rows": []})
        else:
            setattr(self, name, default)

    def append_rows(self, name: str, index: torch.Tensor, rows: torch.Tensor,
                    copy: bool = True) -> None:
        """Keep `rows` (B, ...) of images `index` (B,) in the "cat" state `name`.

        Copies by default: captures live in buffers that the next batch overwrites.
        """
        store = getattr(self, name)
        store["index"].append(index.detach().to("cpu", torch.int64, copy=True))
        store["rows"].append(rows.detach().clone() if copy else rows.detach())

    def rows_of(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(index (M,), rows (M, ...)) of a "cat" state, sorted by index, on the CPU."""
        store = getattr(self, name)
        if not store["index"]:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0)
        index = torch.cat(store["index"])
        rows = torch.cat([r.cpu() for r in store["rows"]])
        order = torch.argsort(index, stable=True)
        return index[order], rows[order]

    # -- contract ----------------------------------------------------------------------------
    def update(self, capture: Capture, batch: Batch) -> Analysis:
        raise NotImplementedError

    def update_pair(self, clean: Capture, perturbed: Capture, batch: Batch) -> Analysis:
        raise NotImplementedError

    def result(self) -> AnalysisResult:
        raise NotImplementedError

    def merge(self, other: Analysis) -> Analysis:
        """Fold `other`'s state into this one (same class and settings); returns self."""
        if type(other) is not type(self):
            raise MaelensError(f"cannot merge {type(other).__name__} into {type(self).__name__}.")
        for name, reduce in self._reduce.items():
            mine, theirs = getattr(self, name), getattr(other, name)
            if reduce == "cat":
                mine["index"] += theirs["index"]
                mine["rows"] += [r.to(_device_of(mine["rows"], r)) for r in theirs["rows"]]
            elif theirs is None:
                continue
            elif mine is None:
                setattr(self, name, theirs.clone())
            else:
                setattr(self, name, _combine(mine, theirs.to(mine.device), reduce))
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every state as CPU tensors ("cat" states as `name.index` / `name.rows`)."""
        out: dict[str, torch.Tensor] = {}
        for name, reduce in self._reduce.items():
            if reduce == "cat":
                out[f"{name}.index"], out[f"{name}.rows"] = self.rows_of(name)
            elif getattr(self, name) is not None:
                out[name] = getattr(self, name).detach().cpu()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Analysis:
        """Restore from `state_dict()` output (replaces the current state); returns self."""
        for name, reduce in self._reduce.items():
            if reduce == "cat":
                index, rows = state.get(f"{name}.index"), state.get(f"{name}.rows")
                has = index is not None and len(index) > 0
                setattr(self, name, {"index": [index] if has else [],
                                     "rows": [rows] if has else []})
            else:
                setattr(self, name, state.get(name))
        return self


def _device_of(rows: list[torch.Tensor], fallback: torch.Tensor) -> torch.device:
    return rows[0].device if rows else fallback.device


def _combine(a: torch.Tensor, b: torch.Tensor, reduce: Reduce) -> torch.Tensor:
    if a.shape != b.shape:
        raise MaelensError(f"cannot merge states of shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    if reduce == "sum":
        return a + b
    return torch.maximum(a, b) if reduce == "max" else torch.minimum(a, b)


def as_numpy(value: torch.Tensor | None) -> np.ndarray:
    """A CPU NumPy copy (float64 stays float64)."""
    return np.zeros(0) if value is None else value.detach().cpu().numpy().copy()
