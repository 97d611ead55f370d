"""Pass plans: every batch runs once through the reference pass and once per condition.

    plan = PassPlan(model, device="cuda", dtype=torch.bfloat16)
    plan.add(LayerEmbeddings(...))                       # fed by the reference (clean) pass
    plan.add(Accuracy(), condition=blur)                 # fed by the blurred pass
    plan.add(EmbeddingAlignment(), condition=blur)       # paired: clean and blurred captures
    results = plan.run(batches)

The reference pass taps the union of what its analyses, the paired analyses and the conditions'
policies need (attention for rollout-guided occlusion); each condition pass taps the union of
its own analyses' requests. Each analysis then receives a view holding exactly its own taps.
Tapped tensors stay on the compute device in the compute dtype: analyses reduce there and only
their reduced state ever reaches the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch
from maelens.engine.conditions import CLEAN, Condition
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps, TapStore
from maelens.model.vit import VisionTransformer

log = logging.getLogger(__name__)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass
class _Stage:
    """The analyses fed by one condition (single-pass and paired)."""

    condition: Condition
    single: list[Analysis] = field(default_factory=list)
    paired: list[Analysis] = field(default_factory=list)

    def taps(self, depth: int) -> Taps:
        return _union([a.taps for a in self.single + self.paired], depth)


class PassPlan:
    """Runs a model over batches under a reference condition and any number of conditions.

    normalise: batches carry [0, 1] RGB and the plan normalises with the model's mean/std
    (False: batches are already normalised; then no pixel condition is allowed).
    A condition without a keep policy inherits the reference's (e.g. its random mask).
    """

    def __init__(self, model: VisionTransformer, *, reference: Condition = CLEAN,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 normalise: bool = True) -> None:
        if dtype not in DTYPES:
            raise MaelensError(f"`dtype` must be float32, bfloat16 or float16, got {dtype}.")
        if reference.pixels is not None:
            raise MaelensError("the reference condition may set a keep policy, not pixels.")
        self.device, self.dtype, self.normalise = torch.device(device), dtype, normalise
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.reference = _Stage(reference)
        self.stages: dict[str, _Stage] = {}
        self.forward_calls = 0
        c = model.config
        self._mean = torch.tensor(c.mean, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(c.std, device=self.device).view(1, -1, 1, 1)
        self._stores = (TapStore(reuse=True), TapStore(reuse=True))

    def add(self, analysis: Analysis, condition: Condition | None = None) -> Analysis:
        """Feed `analysis` from `condition`'s pass (None: the reference pass). A paired
        analysis needs a condition: it receives the reference and that condition's capture."""
        if condition is None or condition.name == self.reference.condition.name:
            if analysis.paired:
                raise MaelensError(f"{analysis.name} is paired: give it a condition to pair "
                                   "with the reference pass.")
            self.reference.single.append(analysis)
            return analysis
        if condition.pixels is not None and not self.normalise:
            raise MaelensError(f"condition {condition.name!r} changes pixels, but the batches "
                               "are already normalised; give [0, 1] images instead.")
        stage = self.stages.setdefault(condition.name, _Stage(condition))
        if stage.condition != condition:
            raise MaelensError(f"two different conditions are named {condition.name!r}.")
        (stage.paired if analysis.paired else stage.single).append(analysis)
        return analysis

    @property
    def analyses(self) -> list[Analysis]:
        """Every analysis once, in the order added (one analysis may feed on several
        conditions, e.g. random-mask invariance over K masks)."""
        stages = [self.reference, *self.stages.values()]
        unique = {id(a): a for s in stages for a in s.single + s.paired}
        return list(unique.values())

    def run(self, batches: Iterable[Batch], progress: Callable[[int], None] | None = None
            ) -> list[AnalysisResult]:
        """Feed every batch; returns the results of `analyses`, in the order added."""
        self.feed(batches, progress)
        return [a.result() for a in self.analyses]

    def feed(self, batches: Iterable[Batch], progress: Callable[[int], None] | None = None
             ) -> None:
        """Update every analysis with `batches` (no results: call again, or merge, later)."""
        if not self.analyses:
            raise MaelensError("the pass plan has no analyses; add at least one.")
        with torch.inference_mode():
            for batch in batches:
                self._feed_batch(batch)
                if progress is not None:
                    progress(len(batch.index))

    def _feed_batch(self, batch: Batch) -> None:
        batch = Batch(batch.pixels.to(self.device), batch.index, batch.labels)
        depth = self.model.depth
        ref_taps = _union([self.reference.taps(depth)]
                          + [a.taps for s in self.stages.values() for a in s.paired]
                          + [need for s in self.stages.values() for need in s.condition.needs],
                          depth)
        ref_keep = self._keep(self.reference.condition, batch, None)
        ref = self._forward(batch.pixels, ref_keep, ref_taps, self._stores[0])
        for analysis in self.reference.single:
            analysis.update(_view(ref, analysis, depth), batch)
        for stage in self.stages.values():
            cond = stage.condition
            pixels = batch.pixels if cond.pixels is None else cond.pixels(batch, ref)
            keep = self._keep(cond, batch, ref) if cond.keep is not None else ref_keep
            cap = self._forward(pixels, keep, stage.taps(depth), self._stores[1])
            seen = Batch(pixels, batch.index, batch.labels, reference=batch.pixels)
            for analysis in stage.single:
                analysis.update(_view(cap, analysis, depth), seen)
            for analysis in stage.paired:
                analysis.update_pair(_view(ref, analysis, depth), _view(cap, analysis, depth),
                                     seen)

    def _keep(self, condition: Condition, batch: Batch, ref: Capture | None
              ) -> torch.Tensor | None:
        if condition.keep is None:
            return None
        gh, gw = self.model.grid_of(batch.pixels)
        return condition.keep(batch, ref, gh * gw).to(self.device)

    def _forward(self, pixels: torch.Tensor, keep: torch.Tensor | None, taps: Taps,
                 store: TapStore) -> Capture:
        self.forward_calls += 1
        x = pixels.to(torch.float32)
        if self.normalise:
            x = (x - self._mean) / self._std
        return self.model(x.to(self.dtype), taps=taps, keep=keep, store=store)


def _union(requests: list[Taps], depth: int) -> Taps:
    out = Taps(final=False)
    for taps in requests:
        out = out.union(taps, depth)
    return out


def _view(capture: Capture, analysis: Analysis, depth: int) -> Capture:
    return capture.select(analysis.taps.resolve(depth))
