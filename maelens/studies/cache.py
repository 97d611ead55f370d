"""Caching and resume of analyses' states under the output folder.

Each analysis of a run is keyed by what its numbers depend on: the checkpoint's SHA-256, the
image selection, the condition it is fed by (with every parameter), its own settings, the
seeds and the code version. A finished analysis's `state_dict` is kept as
`cache/<key>.done.pt`: a rerun loads it instead of recomputing, and changing one analysis's
options recomputes only that analysis (its passes run again for it alone). While a stage runs,
the states of its unfinished analyses and the next batch are saved every `every_s` seconds to
`cache/<stage>.partial.pt` (atomically), so `--resume` after Ctrl-C, SIGTERM or kill -9 goes on
from the last save and ends with the same results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import maelens
from maelens.analyses.base import Analysis, Batch
from maelens.atomic import atomic_write
from maelens.engine.conditions import Condition
from maelens.engine.plan import PassPlan

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def code_version() -> str:
    """maelens' version and a hash of its source files (any edit changes the cache keys)."""
    digest = hashlib.sha256(maelens.__version__.encode())
    root = Path(maelens.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{maelens.__version__}+{digest.hexdigest()[:12]}"


def describe(value: Any) -> Any:
    """A JSON-ready, stable description of an analysis, condition or op (settings, not state)."""
    if isinstance(value, Analysis):
        states = set(getattr(value, "_reduce", {}))
        public = {k: describe(v) for k, v in sorted(vars(value).items())
                  if not k.startswith("_") and not k.endswith("_") and k not in states}
        return {"class": type(value).__qualname__, **public}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"class": type(value).__qualname__, **fields}
    if isinstance(value, torch.Tensor):
        return {"tensor": hashlib.sha256(value.cpu().numpy().tobytes()).hexdigest()[:16]}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return value if isinstance(value, (int, float, str, bool, type(None))) else repr(value)


def cache_key(**parts: Any) -> str:
    text = json.dumps({k: describe(v) for k, v in parts.items()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class Job:
    """One analysis, the condition that feeds it (None: the reference pass) and its key."""

    analysis: Analysis
    condition: Condition | None
    key: str


@dataclass
class StageCache:
    """States of finished and interrupted work under `root` (None: no caching)."""

    root: Path | None
    every_s: float = 30.0
    loaded: list[str] = field(default_factory=list)

    def _path(self, name: str) -> Path:
        assert self.root is not None
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root / name

    def load(self, name: str) -> dict[str, Any] | None:
        if self.root is None or not (self.root / name).is_file():
            return None
        try:
            return torch.load(self.root / name, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is recomputed
            log.warning("ignoring unreadable cache entry %s (%s)", name, exc)
            return None

    def save(self, name: str, record: dict[str, Any]) -> None:
        if self.root is not None:
            atomic_write(self._path(name), lambda tmp: torch.save(record, tmp))

    def drop(self, name: str) -> None:
        if self.root is not None:
            (self.root / name).unlink(missing_ok=True)


def run_stage(plan: PassPlan, jobs: list[Job], batches: Callable[[int], Iterable[Batch]],
              cache: StageCache, progress: Callable[[int], None] | None = None) -> None:
    """Feed `jobs` through `plan`, reusing finished states and resuming an interrupted stage.

    batches(start) yields the stage's batches from image `start` on (in order).
    """
    todo = []
    for job in jobs:
        state = cache.load(f"{job.key}.done.pt")
        if state is not None:
            job.analysis.load_state_dict(state)
            cache.loaded.append(job.key)
        else:
            todo.append(job)
    if not todo:
        return
    stage = cache_key(keys=sorted(job.key for job in todo))
    start = _resume(todo, cache.load(f"{stage}.partial.pt"))
    for job in todo:
        plan.add(job.analysis, job.condition)
    last_save = time.monotonic()
    for batch in _counted(batches(start), progress):
        plan.feed([batch])
        start = int(batch.index.max()) + 1
        if time.monotonic() - last_save > cache.every_s:
            cache.save(f"{stage}.partial.pt", _record(todo, start))
            last_save = time.monotonic()
    for job in todo:
        cache.save(f"{job.key}.done.pt", job.analysis.state_dict())
    cache.drop(f"{stage}.partial.pt")


def _resume(todo: list[Job], record: dict[str, Any] | None) -> int:
    if record is None or record.get("keys") != [job.key for job in todo]:
        return 0
    for job, state in zip(todo, record["states"], strict=True):
        job.analysis.load_state_dict(state)
    log.info("resuming a stage at image %d", record["next"])
    return int(record["next"])


def _record(todo: list[Job], start: int) -> dict[str, Any]:
    return {"keys": [job.key for job in todo], "next": start,
            "states": [job.analysis.state_dict() for job in todo]}


def _counted(batches: Iterable[Batch], progress: Callable[[int], None] | None
             ) -> Iterator[Batch]:
    for batch in batches:
        yield batch
        if progress is not None:
            progress(len(batch.index))
