"""Scale-out on `torch.distributed`: shard the images across ranks, merge analyses' states.

Launch with torchrun (`torchrun --nproc-per-node G -m maelens run EXPERIMENT.yaml`); each rank
runs the same pass plan on its contiguous shard of image indices, then every analysis's
`state_dict` is gathered to rank 0 and merged there. Per-image masks, corruptions and bootstrap
draws depend only on (seed, image index) and "cat" states are keyed by image index, so the
numbers do not depend on the number of ranks. Backends: gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from maelens.analyses.base import Analysis
from maelens.errors import MaelensError

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 600  # a rank that waits this long on its peers ends the run


@dataclass(frozen=True)
class World:
    """This process's place: rank in [0, size); size 1 when not distributed."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def init_from_env(device: str | torch.device = "cpu", timeout_s: float | None = None) -> World:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR/PORT).

    Without those variables (a plain run) this is a 1-process world. The timeout bounds every
    collective, so a rank that died cannot leave the others waiting for ever.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return current_world()
    if not dist.is_available():
        raise MaelensError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    timeout = timeout_s or float(os.environ.get("MAELENS_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    world = current_world()
    log.info("rank %d of %d joined (%s)", world.rank, world.size, backend)
    return world


def shard_range(num_images: int, world: World) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous shard; the first N % size ranks get one more."""
    base, extra = divmod(num_images, world.size)
    start = world.rank * base + min(world.rank, extra)
    return start, start + base + (1 if world.rank < extra else 0)


def merge_state(analysis: Analysis, state: dict[str, torch.Tensor]) -> Analysis:
    """Merge another shard's `state_dict` into `analysis` (same class and settings)."""
    other = copy.copy(analysis)  # same settings; its declared states are replaced below
    other._reduce = dict(analysis._reduce)
    other.load_state_dict(state)
    return analysis.merge(other)


def gather_to_main(analyses: Sequence[Analysis], world: World | None = None) -> bool:
    """Merge every rank's state of each analysis into rank 0's; returns whether this is rank 0.

    Uses `all_gather_object` on the CPU state dicts (works on gloo and NCCL); only reduced
    states cross the wire, never activations.
    """
    world = world or current_world()
    if world.size == 1:
        return True
    for analysis in analyses:
        states: list[dict[str, torch.Tensor] | None] = [None] * world.size
        dist.all_gather_object(states, analysis.state_dict())
        if world.is_main:
            for rank, state in enumerate(states):
                if rank != world.rank and state is not None:
                    merge_state(analysis, state)
    return world.is_main


def finish(world: World) -> None:
    """Leave the process group (a barrier first, so rank 0 writes before the others exit)."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
