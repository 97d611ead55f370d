"""Results files: written atomically (temp file + rename, see `maelens.atomic`), so an
interrupted run never leaves a half-written file and never destroys an earlier good one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from maelens.atomic import atomic_write

SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "atomic_write", "read_npz_meta", "write_json", "write_npz"]


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]
              ) -> Path:
    """Uncompressed .npz of `arrays` plus `meta` (JSON, with the schema version) under "meta"."""
    record = {"schema_version": SCHEMA_VERSION, **meta}
    payload = {**arrays, "meta": np.asarray(json.dumps(record, default=str))}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **payload)

    return atomic_write(path, write)


def read_npz_meta(path: str | os.PathLike) -> dict[str, Any]:
    with np.load(path) as data:
        return json.loads(str(data["meta"]))


def write_json(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    text = json.dumps({"schema_version": SCHEMA_VERSION, **record}, indent=2, default=str)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))
