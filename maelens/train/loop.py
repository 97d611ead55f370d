"""The training loop shared by pre-training, fine-tuning and the supervised baseline.

One optimizer step per batch of `batch_size` images (the last partial batch of an epoch is
dropped, as in MAE); lr set per step from `WarmupCosine`; gradient clipping; the resume state
written atomically every `checkpoint_every` steps and at each epoch end; a tqdm bar with the
loss and images/s. All randomness comes from streams derived from (seed, step) or
(seed, epoch) (see `maelens.train.state`), so `resume=True` reproduces the uninterrupted run
bit for bit on the same device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from maelens.errors import MaelensError
from maelens.model.config import ViTConfig
from maelens.train.args import TrainArgs, result_fields
from maelens.train.augment import augment_batch
from maelens.train.data import TrainData
from maelens.train.optim import set_lr
from maelens.train.schedule import WarmupCosine
from maelens.train.state import (
    STATE_FILE,
    LoopState,
    Stream,
    check_resume,
    derive_seed,
    epoch_permutation,
    generator_for,
    load_state,
    save_state,
)

log = logging.getLogger(__name__)

# (pixels (B, C, H, W) on the device, labels (B,) on the device, step generator, data-set index
# (B,) of each image, epoch) -> scalar loss. Per-image draws (MAE masks) key on (index, epoch).
StepLoss = Callable[[torch.Tensor, torch.Tensor, torch.Generator, torch.Tensor, int],
                    torch.Tensor]


@dataclass(frozen=True)
class StepReport:
    """Passed to the `callback` after every step: `step` steps are done out of `total_steps`;
    `loss` of this step; `lr` used; `images_per_s` of this step."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    images_per_s: float


@dataclass
class LoopSpec:
    """Everything the loop needs. `module` is trained and stored in the resume state;
    `evaluate` (optional) returns held-out metrics at each epoch end; `kind` names the run."""

    kind: str
    module: nn.Module
    optimizer: torch.optim.Optimizer
    step_loss: StepLoss
    data: TrainData
    args: TrainArgs
    config: ViTConfig
    device: torch.device
    evaluate: Callable[[], dict[str, float]] | None = None
    extra_header: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data) // self.args.batch_size

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.args.epochs

    @property
    def state_path(self) -> Path:
        return Path(self.args.out_dir) / STATE_FILE


@dataclass
class LoopOutcome:
    state: LoopState
    total_steps: int
    steps_per_epoch: int

    @property
    def complete(self) -> bool:
        return self.state.step >= self.total_steps

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last epoch's steps (fewer if the run stopped early)."""
        recent = self.state.losses[-self.steps_per_epoch:]
        return float(sum(recent) / len(recent)) if recent else float("nan")


def run_loop(spec: LoopSpec, callback: Callable[[StepReport], None] | None = None
             ) -> LoopOutcome:
    """Train `spec.module` from the resume state (if any) up to the end or `stop_at_step`."""
    args = spec.args
    if len(spec.data) < args.batch_size:
        raise MaelensError(
            f"`batch_size`={args.batch_size} exceeds the {len(spec.data)} training images; "
            "lower batch_size."
        )
    spe, total = spec.steps_per_epoch, spec.total_steps
    schedule = WarmupCosine(args.lr, total, round(args.warmup_epochs * spe), args.min_lr)
    loop = _start(spec)
    end = total if args.stop_at_step is None else min(total, args.stop_at_step)
    bar = tqdm(total=total, initial=loop.step, desc=spec.kind, unit="step",
               disable=not args.progress, dynamic_ncols=True)
    spec.module.train()
    order, order_epoch = None, -1
    saved_at = loop.step  # a resumed state is already on disk
    try:
        for step in range(loop.step, end):
            epoch, index = divmod(step, spe)
            if epoch != order_epoch:
                order, order_epoch = epoch_permutation(args.seed, epoch, len(spec.data)), epoch
            started = time.perf_counter()
            lr = schedule(step)
            set_lr(spec.optimizer, lr)
            batch = order[index * args.batch_size:(index + 1) * args.batch_size]
            loss = _train_step(spec, batch, step, epoch)
            loop.losses.append(loss)
            loop.step = step + 1
            rate = args.batch_size / max(time.perf_counter() - started, 1e-9)
            loop.elapsed_s += time.perf_counter() - started
            if _after_step(spec, loop, epoch, index, lr):
                saved_at = loop.step
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}", refresh=False)
            if callback is not None:
                callback(StepReport(loop.step, total, epoch, loss, lr, rate))
    finally:
        bar.close()
    if saved_at != loop.step:
        _save(spec, loop)
    return LoopOutcome(loop, total, spe)


def _train_step(spec: LoopSpec, batch: torch.Tensor, step: int, epoch: int) -> float:
    args, device = spec.args, spec.device
    generator = generator_for(args.seed, Stream.STEP, step)
    pixels = spec.data.images[batch].to(device)
    labels = spec.data.labels[batch].to(device)
    pixels = augment_batch(pixels, shift=args.augment_shift, flip=args.augment_flip,
                           generator=generator)
    spec.optimizer.zero_grad(set_to_none=True)
    cuda = [device.index or 0] if device.type == "cuda" else []
    # Stochastic depth draws from the global generator: seed it per step, inside a fork so the
    # caller's global random state is left untouched.
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(derive_seed(args.seed, Stream.GLOBAL, step))
        loss = spec.step_loss(pixels, labels, generator, batch, epoch)
        if not torch.isfinite(loss):
            raise MaelensError(
                f"{spec.kind}: the loss became {float(loss)} at step {step + 1}; fix: lower "
                "`lr` or raise `warmup_epochs`."
            )
        loss.backward()
    if args.clip_grad:
        params = [p for g in spec.optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
    spec.optimizer.step()
    return float(loss.detach())


def _after_step(spec: LoopSpec, loop: LoopState, epoch: int, index: int, lr: float) -> bool:
    """Epoch-end record and evaluation, and the periodic resume state; True if saved."""
    spe, every = spec.steps_per_epoch, spec.args.checkpoint_every
    if index == spe - 1:
        started = time.perf_counter()
        record = {"epoch": epoch + 1, "step": loop.step,
                  "loss": sum(loop.losses[-spe:]) / spe, "lr": lr}
        if spec.evaluate is not None:
            spec.module.eval()
            record.update(spec.evaluate())
            spec.module.train()
        loop.history.append(record)
        loop.elapsed_s += time.perf_counter() - started
        log.info("%s epoch %d: %s", spec.kind, epoch + 1, record)
        _save(spec, loop)
        return True
    if every and loop.step % every == 0:
        _save(spec, loop)
        return True
    return False


def _header(spec: LoopSpec) -> dict[str, Any]:
    return {"kind": spec.kind, "config": spec.config.to_dict(), "args": spec.args.to_dict(),
            "data": spec.data.description, **spec.extra_header}


def _save(spec: LoopSpec, loop: LoopState) -> None:
    # No generator states: every stream is re-derived from (seed, step) or (seed, epoch).
    position = {"steps_per_epoch": spec.steps_per_epoch, "total_steps": spec.total_steps,
                "epoch": loop.step // spec.steps_per_epoch}
    save_state(spec.state_path, module=spec.module, optimizer=spec.optimizer, loop=loop,
               header={**_header(spec), **position})


def _start(spec: LoopSpec) -> LoopState:
    """A fresh `LoopState`, or the saved one (weights and optimizer restored) when resuming."""
    out = Path(spec.args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = spec.state_path
    if not path.exists():
        if spec.args.resume:
            log.info("no resume state in %s; starting from step 0", out)
        return LoopState()
    if not spec.args.resume:
        raise MaelensError(
            f"{out} already holds a training run ({STATE_FILE}); pass resume=True to continue "
            "it, or choose another `out_dir` (or delete that folder) to start over."
        )
    record = load_state(path)
    check_resume(record, path, spec.kind, spec.config, result_fields(spec.args))
    saved = (record.get("data"), record.get("steps_per_epoch"))
    if saved != (spec.data.description, spec.steps_per_epoch):
        raise MaelensError(
            f"cannot resume from {path}: the training data differ (saved {saved[0]}, "
            f"{saved[1]} steps per epoch; now {spec.data.description}, {spec.steps_per_epoch}). "
            "Fix: resume on the same data, or use another `out_dir`."
        )
    spec.module.load_state_dict(record["model"])
    spec.optimizer.load_state_dict(record["optimizer"])
    loop = LoopState(**record["loop"])
    log.info("resuming %s from step %d in %s", spec.kind, loop.step, out)
    return loop
