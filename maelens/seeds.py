"""Seeds derived from (seed, purpose, image index, ...): the one place randomness is keyed.

Every random draw in maelens (masks, corruptions, bootstrap resamples, subsamples) takes its
generator from here, keyed by the user's seed and by what makes the draw unique, never by batch
position or process rank. That is what makes numbers independent of batch size, worker count
and the number of distributed ranks. Keys are hashed (BLAKE2b), so any integer seed is accepted
(negative or beyond 64 bits) and distinct purposes never collide the way `seed * K + i` does.
"""

from __future__ import annotations

import hashlib

import torch

_MASK63 = (1 << 63) - 1


def derive_seed(seed: int, *parts: int | str | float) -> int:
    """A 63-bit seed for the draw named by `parts` (e.g. ("mask", image_index))."""
    key = repr((int(seed), *parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & _MASK63


def generator(seed: int, *parts: int | str | float) -> torch.Generator:
    """A CPU `torch.Generator` seeded by `derive_seed(seed, *parts)`.

    CPU generators give the same stream on every machine; draw on the CPU and move the result
    to the compute device, so CUDA runs see the same numbers.
    """
    return torch.Generator().manual_seed(derive_seed(seed, *parts))
