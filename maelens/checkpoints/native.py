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

from maelens.atomic import atomic_write
from maelens.errors import MaelensError
from maelens.model.config import ViTConfig

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
    """(config, float32 state dict, meta) from a maelens checkpoint. A damaged or foreign
    `maelens.json` or header is a `MaelensError` naming the file and the field."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    try:
        with safe_open(str(weights), "pt") as handle:
            header = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # noqa: BLE001
        raise MaelensError(f"cannot read safetensors file {weights}: {_first_line(err)}; the "
                           "file may be truncated or corrupt, re-save it.") from None
    if path.is_dir():
        where = str(path / META_FILE)
        try:
            text = (path / META_FILE).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise MaelensError(f"cannot read {where}: {_first_line(err)}.") from None
        record = _json_object(text, where)
        config, meta = record.get("config"), record.get("meta", {})
        if not isinstance(config, dict):
            raise MaelensError(f"{where} has no `config` object (got {type(config).__name__}); "
                               "expected the file that maelens writes; fix: re-save it.")
    else:
        where = f"{path} (safetensors header `maelens_config`)"
        config = _json_object(header["maelens_config"], where)
        meta = _json_object(header.get("maelens_meta", "{}"),
                            f"{path} (safetensors header `maelens_meta`)")
    try:
        built = ViTConfig.from_dict(config)
    except (MaelensError, TypeError, ValueError) as err:
        raise MaelensError(f"{where}: invalid maelens config: {_first_line(err)}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return built, state, meta if isinstance(meta, dict) else {}


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise MaelensError(f"{where} is not valid JSON ({err}); expected the JSON object that "
                           "maelens writes; fix: re-save the checkpoint.") from None
    if not isinstance(value, dict):
        raise MaelensError(f"{where} holds a JSON {type(value).__name__}, not an object; "
                           "expected the JSON object that maelens writes; fix: re-save it.")
    return value


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
