"""Seeded orderings that never change across library versions.

A hash (BLAKE2b) of the seed and an item's name ranks the items; taking the first k is a
seeded random sample. Unlike numpy's generators, whose streams may change between releases,
this ranking is fixed forever, and an item's rank does not depend on which other items exist.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from maelens.errors import MaelensError


def check_seed(seed: int) -> int:
    """A seed must be a non-negative int (not a bool)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise MaelensError(f"`seed` must be a non-negative int, got {seed!r}.")
    return seed


def seeded_rank(seed: int, *parts: object) -> bytes:
    """Sort key of one item: BLAKE2b of the seed and the item's identifying parts."""
    text = ":".join(str(part) for part in (seed, *parts))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def seeded_order(items: Iterable[str], seed: int, salt: str = "") -> list[str]:
    """`items` in a seeded random order (by seeded rank of (salt, item))."""
    return sorted(items, key=lambda item: seeded_rank(seed, salt, item))


def seeded_sample(items: Iterable[str], k: int, seed: int, salt: str = "") -> list[str]:
    """The `k` items with the smallest seeded rank, returned sorted (a seeded random sample)."""
    return sorted(seeded_order(items, seed, salt)[:k])
