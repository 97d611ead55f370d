"""maelens' own checkpoint format: weights in safetensors, the config that built them in JSON.

A checkpoint is either a single `.safetensors` file whose header metadata carries
`maelens_config` (and optional `maelens_meta`) as JSON, or a directory holding `model.safetensors`
and `maelens.json` ({"config": ..., "meta": ...}). Both are written together by
`save_checkpoint`, so the weights never travel without the architecture and preprocessing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from maelens.errors import MaelensError
from maelens.model.config import ViTConfig
from maelens.results.io import atomic_write

META_FILE = "maelens.json"
WEIGHTS_FILE = "model.safetensors"


def save_checkpoint(
    model: torch.nn.Module, path: str | os.PathLike, meta: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` (a VisionTransformer) to `path`: a directory (model.safetensors +
    maelens.json) unless `path` ends in `.safetensors`. `dtype` (e.g. torch.float16) shrinks
    floating tensors for storage. Files are written to a temporary name and renamed, so an
    interrupted save never leaves a half-written checkpoint."""
    path = Path(path)
    config: ViTConfig = model.config
    tensors = {k: _stored(v, dtype) for k, v in model.state_dict().items()}
    header = {"maelens_config": json.dumps(config.to_dict()),
              "maelens_meta": json.dumps(meta or {}, default=str)}
    if path.suffix == ".safetensors":
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
        return path
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    text = json.dumps({"config": config.to_dict(), "meta": meta or {}}, indent=2, default=str)
    atomic_write(path / META_FILE, lambda tmp: tmp.write_text(text))
    return path


def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().cpu().contiguous()
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor


def is_native(path: str | os.PathLike) -> bool:
    """Whether `path` is a maelens checkpoint (file with maelens metadata, or directory)."""
    path = Path(path)
    if path.is_dir():
        return (path / META_FILE).is_file() and (path / WEIGHTS_FILE).is_file()
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with safe_open(str(path), "pt") as handle:
            return "maelens_config" in (handle.metadata() or {})
    except Exception:  # noqa: BLE001 - a broken file is simply not ours; the caller reports it
        return False


def read_native(path: str | os.PathLike) -> tuple[ViTConfig, dict[str, torch.Tensor], dict]:
    """(config, float32 state dict, meta) from a maelens checkpoint."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    try:
        with safe_open(str(weights), "pt") as handle:
            header = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # noqa: BLE001
        raise MaelensError(f"cannot read safetensors file {weights}: {err}") from None
    if path.is_dir():
        record = json.loads((path / META_FILE).read_text())
        config, meta = record["config"], record.get("meta", {})
    else:
        config, meta = json.loads(header["maelens_config"]), json.loads(
            header.get("maelens_meta", "{}"))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return ViTConfig.from_dict(config), state, meta
