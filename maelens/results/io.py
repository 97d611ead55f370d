"""Results files: written atomically (temp file + rename), so an interrupted run never leaves a
half-written file and never destroys an earlier good one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from maelens.errors import MaelensError

SCHEMA_VERSION = 1


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise MaelensError(f"output folder {path.parent} does not exist; create it first.")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; honour the user's umask
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
