"""Per-step learning-rate schedule: linear warm-up from 0, then half a cosine down to `min_lr`.

This is the MAE schedule (`util/lr_sched.py`) evaluated per optimizer step instead of per
fractional epoch, which is the same thing when warm-up is a whole number of steps. It is a pure
function of the step, so a resumed run needs no scheduler state beyond the step counter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from maelens.errors import MaelensError


@dataclass(frozen=True)
class WarmupCosine:
    """lr(step) for step = 0, 1, ..., total_steps - 1.

    lr(s) = base_lr * s / warmup_steps                      for s < warmup_steps
    lr(s) = min_lr + (base_lr - min_lr) * (1 + cos(pi * t)) / 2,
            t = (s - warmup_steps) / (total_steps - warmup_steps)   otherwise.
    So lr(0) = 0 with warm-up (as in MAE), lr(warmup_steps) = base_lr, lr(total_steps) = min_lr.
    """

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise MaelensError(f"schedule `total_steps` must be >= 1, got {self.total_steps}.")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise MaelensError(
                f"schedule `warmup_steps` must lie in [0, total_steps={self.total_steps}], "
                f"got {self.warmup_steps}."
            )
        if not 0.0 <= self.min_lr <= self.base_lr:
            raise MaelensError(
                f"schedule needs 0 <= min_lr <= base_lr, got min_lr={self.min_lr}, "
                f"base_lr={self.base_lr}."
            )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        span = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / span) if span else 1.0
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr + (self.base_lr - self.min_lr) * cosine
