"""Resume state, derived random streams and the architecture checks of training runs.

Why derived streams: a resumed run must draw exactly the random numbers the uninterrupted run
would have drawn. Rather than saving and restoring long-lived generators, every random draw of
the loop comes from a generator seeded by (seed, stream, index): the shuffling of epoch e from
(seed, PERMUTATION, e), the masks and augmentations of step s from (seed, STEP, s), and the
global generator used by stochastic depth from (seed, GLOBAL, s). Resuming at step s therefore
needs only s, the weights and the optimizer state.
"""

from __future__ import annotations

import dataclasses
import platform
import re
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maelens.atomic import atomic_write
from maelens.errors import MaelensError
from maelens.model.config import ViTConfig

STATE_FILE = "train_state.pt"
STATE_FORMAT = 1

# Encoder fields that decide whether weights can be loaded into an architecture.
ENCODER_FIELDS = ("image_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                  "mlp_dim", "qkv_bias", "pos_embed")


class Stream(IntEnum):
    PERMUTATION = 1
    STEP = 2
    GLOBAL = 3


def derive_seed(seed: int, stream: Stream, index: int) -> int:
    """A 63-bit seed for (seed, stream, index), mixed by numpy's SeedSequence (no correlation
    between neighbouring indices, unlike seed + index)."""
    words = np.random.SeedSequence([seed, int(stream), index]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def generator_for(seed: int, stream: Stream, index: int) -> torch.Generator:
    """A CPU generator for (seed, stream, index)."""
    return torch.Generator().manual_seed(derive_seed(seed, stream, index))


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order (n,) in which epoch `epoch` visits the training images."""
    return torch.randperm(n, generator=generator_for(seed, Stream.PERMUTATION, epoch))


@dataclass
class LoopState:
    """Progress of a run: `step` optimizer steps done, their losses, per-epoch records, wall
    time (seconds) summed over sessions."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


def save_state(path: Path, *, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
               loop: LoopState, header: dict[str, Any]) -> None:
    """Write the resume state to `path` atomically (temporary file + rename)."""
    record = {"format": STATE_FORMAT, **header, "loop": dataclasses.asdict(loop),
              "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
              "optimizer": optimizer.state_dict()}
    atomic_write(path, lambda tmp: torch.save(record, tmp))


def load_state(path: Path) -> dict[str, Any]:
    """The record written by `save_state` (tensors on the CPU)."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise MaelensError(
            f"cannot read the resume state {path}: {_load_failure(err)}; fix: delete it (and "
            "drop `--resume`) to start over."
        ) from None
    if not isinstance(record, dict) or record.get("format") != STATE_FORMAT:
        raise MaelensError(f"{path} is not a maelens resume state (format {STATE_FORMAT}); "
                           "fix: delete it (and drop `--resume`) to start over.")
    return record


def _load_failure(err: BaseException) -> str:
    """Why torch.load refused a file, in a few words. torch's own message runs over many lines
    and advises loading with `weights_only=False`, which would run the file's pickled code:
    never repeat that advice."""
    text = str(err)
    if "weights_only" in text or "Unsupported global" in text:
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds objects other than tensors and plain data{what}, which are not "
                "loaded because loading them could run code")
    lines = text.strip().splitlines()
    return f"the file is damaged ({type(err).__name__}: {lines[0] if lines else ''})"


def differences(found: dict[str, Any], requested: dict[str, Any],
                fields: tuple[str, ...] | None = None) -> list[str]:
    """'name=found, requested value' phrases for each differing field."""
    names = fields if fields is not None else tuple(sorted(set(found) | set(requested)))
    return [f"{name}={found.get(name)!r}, requested {requested.get(name)!r}"
            for name in names if _norm(found.get(name)) != _norm(requested.get(name))]


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_architecture(found: ViTConfig, requested: ViTConfig, *, source: str,
                       fields: tuple[str, ...] = ENCODER_FIELDS) -> None:
    """Raise `MaelensError` naming every field in `fields` where `found` (from `source`)
    differs from `requested`, e.g. "checkpoint embed_dim=192, requested 384"."""
    diffs = differences(found.to_dict(), requested.to_dict(), fields)
    if diffs:
        raise MaelensError(
            f"{source} architecture does not match the requested one: {source} "
            + f"; {source} ".join(diffs)
            + ". Fix: request the checkpoint's architecture or use a matching checkpoint."
        )


def check_resume(record: dict[str, Any], path: Path, kind: str, config: ViTConfig,
                 args: dict[str, Any]) -> None:
    """A saved run can be continued only by the same kind of run with the same architecture and
    the same result-determining arguments (`args`, from `result_fields`)."""
    problems = []
    if record.get("kind") != kind:
        problems.append(f"kind={record.get('kind')!r}, requested {kind!r}")
    problems += differences(record.get("config", {}), config.to_dict())
    problems += differences(record.get("args", {}), args, tuple(sorted(args)))
    if problems:
        raise MaelensError(
            f"cannot resume from {path}: the saved run has " + "; ".join(problems)
            + ". Fix: resume with the saved run's arguments, or use another `out_dir`."
        )


def library_versions() -> dict[str, str]:
    """Versions of python, torch, numpy and maelens (for checkpoint metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        maelens_version = version("maelens")
    except PackageNotFoundError:
        maelens_version = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "maelens": maelens_version}
