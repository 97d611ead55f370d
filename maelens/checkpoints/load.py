"""`load_model`: any supported checkpoint -> an eval-mode `VisionTransformer`.

Sources, tried in this order: a built maelens model; a (ViTConfig, state dict) pair; an in-memory
transformers ViT / ViTMAE model; a maelens checkpoint (file or directory); a transformers
directory (config.json + model.safetensors / pytorch_model.bin, possibly sharded); a weights file
(.pth/.pt/.bin/.safetensors, recognised by its bytes, not its name) holding a state dict bare or
under "model" / "state_dict" (official MAE files keep it under "model").

Pickled files are read by a restricted unpickler: only tensor-rebuild functions and a few plain
containers are resolved; any other global (e.g. the `argparse.Namespace` that training scripts
save under "args") becomes an inert placeholder that keeps its state, and no foreign code is
imported or called.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import json
import logging
import os
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from maelens.checkpoints.convert import (
    StateDict,
    check_hf_sizes,
    heads_from_model_name,
    hf_config_fields,
    infer_config,
    preprocessing_fields,
    preview_keys,
    to_timm_layout,
)
from maelens.checkpoints.demo_models import demo_model_path
from maelens.checkpoints.hub import resolve_named
from maelens.checkpoints.native import is_native, read_native
from maelens.errors import MaelensError
from maelens.model.config import ViTConfig
from maelens.model.posembed import is_sincos, resample_pos_embed, sincos_2d
from maelens.model.vit import VisionTransformer

log = logging.getLogger(__name__)

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
              "pytorch_model.bin.index.json")


def load_model(
    source: Any,
    *,
    image_size: int | None = None,
    num_classes: int | None = None,
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> VisionTransformer:
    """Load a ViT / MAE from a path, a model name, Hub id or URL (see `checkpoints/hub.py`), a
    transformers model, a maelens model or a (config, state dict) pair; architecture and
    preprocessing are read from the weights and any config.

    image_size: input size in pixels other than the native one; the stored position table is
    regenerated (sin-cos) or bicubically resampled (learned) once. num_classes: replace the
    classifier head by a freshly initialised one with this many classes (0 removes it).
    num_heads / decoder_num_heads: override the head counts guessed for files that do not state
    them (timm / official MAE: 64-dim heads, 32-dim decoder heads). dtype: e.g. torch.bfloat16.
    The model's `load_info` dict records the detected format, kind, source and the mask ratio
    the checkpoint was trained with, when known.
    """
    config, state, info = read_checkpoint(source, num_heads=num_heads,
                                          decoder_num_heads=decoder_num_heads)
    config, state, fresh = _adapt(config, state, image_size, num_classes)
    try:
        model = build_model(config, state, fresh=fresh)
    except MaelensError as err:  # name the file: the keys alone do not say which one
        raise MaelensError(f"{info['source']}: {err}") from None
    model.load_info = {**info, "kind": checkpoint_kind(config)}
    log.info("loaded %s (%s) from %s", info["format"], model.load_info["kind"], info["source"])
    return model.to(device=device, dtype=_dtype(dtype)).eval()


def read_checkpoint(
    source: Any, *, num_heads: int | None = None, decoder_num_heads: int | None = None
) -> tuple[ViTConfig, StateDict, dict[str, Any]]:
    """(inferred config, state dict with maelens names, load info) from any source that
    `load_model` accepts, without building the model."""
    heads = {"num_heads": num_heads, "decoder_num_heads": decoder_num_heads}
    heads = {k: v for k, v in heads.items() if v is not None}
    named = resolve_named(source)  # alias / timm name / Hub id / URL -> local files (hub.py)
    if named is not None:
        return named.apply(*_resolve(named.path, {**named.heads, **heads}))
    return _resolve(source, heads)


def build_model(config: ViTConfig, state: StateDict, fresh: tuple[str, ...] = ()
                ) -> VisionTransformer:
    """A `VisionTransformer(config)` holding `state` (maelens names). Keys starting with a
    `fresh` prefix keep the model's own initialisation. Missing / unexpected keys and shape
    mismatches raise `MaelensError` naming them."""
    model = VisionTransformer(config)
    expected = model.state_dict()
    if fresh:
        state = {**state, **{k: v for k, v in expected.items() if k.startswith(fresh)}}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise MaelensError(
            f"the state dict does not fit the architecture ({describe(config)}): "
            f"{len(missing)} missing key(s) {preview_keys(missing)}, {len(unexpected)} unexpected "
            f"key(s) {preview_keys(unexpected)}; load a ViT/MAE checkpoint of a supported layout."
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise MaelensError(
                f"shape mismatch for `{key}`: checkpoint {tuple(state[key].shape)}, model "
                f"expects {tuple(tensor.shape)} ({describe(config)}); check the checkpoint and "
                "the num_heads / image_size arguments."
            )
    model.load_state_dict(state, strict=True)
    return model


def describe(config: ViTConfig) -> str:
    """One-line architecture summary used in messages."""
    dec = f", decoder {config.decoder_embed_dim}x{config.decoder_depth}" \
        if config.has_decoder else ""
    return (f"width {config.embed_dim}, depth {config.depth}, {config.num_heads} heads, patch "
            f"{config.patch_size}, image {config.image_size}{dec}, {config.num_classes} classes")


def checkpoint_kind(config: ViTConfig) -> str:
    if config.has_decoder:
        return "mae-pretraining"
    if config.num_classes:
        return f"classifier-{config.pool}"
    return "encoder"


# --------------------------------------------------------------------------- source dispatch
def _resolve(source: Any, heads: dict[str, int]) -> tuple[ViTConfig, StateDict, dict]:
    if isinstance(source, VisionTransformer):
        return source.config, _detached(source.state_dict()), _info("maelens-model", source)
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], ViTConfig):
        state, layout, _ = to_timm_layout(dict(source[1]))
        return source[0], state, _info(f"state-dict:{layout}", "(config, state_dict)")
    if isinstance(source, torch.nn.Module) and hasattr(getattr(source, "config", None),
                                                       "model_type"):
        config = source.config.to_dict()
        return _from_transformers(config, _detached(source.state_dict()), None, heads,
                                  type(source).__name__, f"<{type(source).__name__}>")
    if not isinstance(source, str | os.PathLike):
        raise MaelensError(
            f"cannot load a model from a {type(source).__name__}; expected a path, a "
            "transformers ViT/ViTMAE model, a maelens VisionTransformer or (ViTConfig, state)."
        )
    if isinstance(source, str) and source.startswith("demo:"):
        source = demo_model_path(source.removeprefix("demo:"))
    path = Path(source).expanduser()
    if not path.exists():
        raise MaelensError(f"no such file or directory: {path}; check the checkpoint path.")
    if is_native(path):
        config, state, meta = read_native(path)
        return config, state, {**_info("maelens", path), "meta": meta,
                               "mask_ratio": _native_mask_ratio(meta)}
    if path.is_dir():
        return _from_directory(path, heads)
    return _from_weights_file(path, heads)


def _from_directory(path: Path, heads: dict[str, int]) -> tuple[ViTConfig, StateDict, dict]:
    present = sorted(p.name for p in path.iterdir())
    weights = [path / name for name in HF_WEIGHTS if (path / name).is_file()]
    if not (path / "config.json").is_file() or not weights:
        raise MaelensError(
            f"{path} is a directory without a usable checkpoint: expected config.json with "
            f"{' or '.join(HF_WEIGHTS[:2])} (transformers) or maelens.json with "
            f"model.safetensors (maelens); found {preview_keys(present)}."
        )
    config = _read_json(path / "config.json")
    processor_file = path / "preprocessor_config.json"
    processor = _read_json(processor_file) if processor_file.is_file() else None
    state = _read_hf_weights(weights[0])
    return _from_transformers(config, state, processor, heads, None, path)


def _from_transformers(config: dict, state: StateDict, processor: dict | None,
                       heads: dict[str, int], architecture: str | None, source: Any
                       ) -> tuple[ViTConfig, StateDict, dict]:
    fields = {**hf_config_fields(config, architecture), **preprocessing_fields(processor),
              **heads}
    state, _, dropped = to_timm_layout(state)
    for key in dropped:
        log.info("ignoring `%s` (not part of the maelens model)", key)
    inferred = infer_config(state, **fields)
    check_hf_sizes(config, inferred)
    info = _info(f"transformers:{config.get('model_type')}", source)
    return inferred, state, {**info, "mask_ratio": config.get("mask_ratio"), "ignored": dropped}


def _from_weights_file(path: Path, heads: dict[str, int]) -> tuple[ViTConfig, StateDict, dict]:
    state, args = read_weights(path)
    state, layout, dropped = to_timm_layout(state)
    if layout == "transformers":  # weights without their config.json: transformers' defaults
        fields: dict[str, Any] = {"norm_eps": 1e-12}
        log.info("transformers-layout weights without config.json: eps 1e-12, heads guessed")
    else:
        fields = {"norm_eps": 1e-6}
    train_args = _train_args(args)
    if "norm_pix_loss" in train_args:
        fields["norm_pix_loss"] = bool(train_args["norm_pix_loss"])
    try:
        named = {} if "num_heads" in heads else _named_heads(train_args, state)
        config = infer_config(state, **fields, **{**named, **heads})
    except MaelensError as err:
        raise MaelensError(f"{path}: {err}") from None
    info = _info(layout, path)
    return config, state, {**info, "mask_ratio": train_args.get("mask_ratio"), "ignored": dropped}


def _named_heads(train_args: dict[str, Any], state: StateDict) -> dict[str, int]:
    """Head counts from the architecture name that official MAE files carry in `args.model`
    (e.g. 'mae_vit_large_patch16'); {} without one."""
    name = train_args.get("model")
    if not isinstance(name, str) or "patch_embed.proj.weight" not in state:
        return {}
    decoder = state.get("decoder_embed.weight")
    return heads_from_model_name(name, state["patch_embed.proj.weight"].shape[0],
                                 None if decoder is None else decoder.shape[0])


def _native_mask_ratio(meta: dict[str, Any]) -> float | None:
    """The masking ratio that a maelens pre-training run recorded in its metadata."""
    args = meta.get("args") if isinstance(meta, dict) else None
    value = args.get("mask_ratio") if isinstance(args, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _info(fmt: str, source: Any) -> dict[str, Any]:
    name = source if isinstance(source, str | Path) else type(source).__name__
    return {"format": fmt, "source": str(name), "mask_ratio": None, "ignored": []}


def _detached(state: dict[str, torch.Tensor]) -> StateDict:
    return {k: v.detach() for k, v in state.items()}


def _train_args(args: Any) -> dict[str, Any]:
    """Plain values saved with the training arguments (an `argparse.Namespace` arrives as an
    inert placeholder holding the same attributes)."""
    values = args if isinstance(args, dict) else getattr(args, "__dict__", {})
    return {k: v for k, v in values.items() if isinstance(v, bool | int | float | str)}


# --------------------------------------------------------------------------- adapting
def _adapt(config: ViTConfig, state: StateDict, image_size: int | None,
           num_classes: int | None) -> tuple[ViTConfig, StateDict, tuple[str, ...]]:
    """Apply `image_size` (position tables rebuilt once) and `num_classes` (fresh head)."""
    state = dict(state)
    fresh: tuple[str, ...] = ()
    if image_size is not None and image_size != config.image_size:
        config = config.replace(image_size=int(image_size))
        grid = (config.grid_size, config.grid_size)
        state["pos_embed"] = _new_table(state["pos_embed"], grid, config.pos_embed == "sincos")
        if "decoder_pos_embed" in state:
            table = state["decoder_pos_embed"]
            state["decoder_pos_embed"] = _new_table(table, grid, is_sincos(table, atol=1e-2))
    if num_classes is not None and num_classes != config.num_classes:
        log.info("replacing the %d-class head by a new %d-class head", config.num_classes,
                 num_classes)
        config = config.replace(num_classes=int(num_classes))
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        fresh = ("head.",)
    return config, state, fresh


def _new_table(table: torch.Tensor, grid: tuple[int, int], sincos: bool) -> torch.Tensor:
    if sincos:
        return sincos_2d(table.shape[-1], grid)
    return resample_pos_embed(table.float(), grid)


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise MaelensError(f"`dtype` must be a floating torch dtype such as 'bfloat16', "
                           f"got {dtype!r}.")
    return value


# --------------------------------------------------------------------------- reading files
def read_weights(path: str | os.PathLike) -> tuple[StateDict, Any]:
    """(tensors, saved training args or None) from a .pth/.pt/.bin/.safetensors file, by
    content. The state dict may be bare or under "model" / "state_dict"."""
    path = Path(path)
    kind = sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path), None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False,
                         pickle_module=RESTRICTED_PICKLE)
    except MaelensError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure becomes one clear line
        raise MaelensError(
            f"cannot read PyTorch checkpoint {path}: {_one_line(err)}; the file may be truncated "
            "or corrupt, re-download or re-save it."
        ) from None
    return _unwrap(obj, path)


def sniff(path: Path) -> str:
    """'torch' or 'safetensors' from the first bytes; anything else is a `MaelensError`."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            raise MaelensError(
                f"{path} is a damaged zip archive (a PyTorch checkpoint is a zip): the file is "
                "truncated or corrupt; re-download or re-save it."
            ) from None
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        raise MaelensError(f"unknown file format: {path} is a zip archive without data.pkl "
                           f"(e.g. a NumPy .npz), not a PyTorch checkpoint; {_SUPPORTED}")
    if len(head) >= 9 and head[8:9] == b"{":  # 8-byte header length, then the JSON header
        return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol >= 2: PyTorch's legacy (pre-1.6) format
        return "torch"
    raise MaelensError(f"unknown file format: {path} (starts with {head[:8]!r}); {_SUPPORTED}")


_SUPPORTED = ("expected a PyTorch checkpoint (.pth/.pt/.bin), a .safetensors file, a transformers "
              "directory or a maelens checkpoint.")


def _read_safetensors(path: Path) -> StateDict:
    try:
        with safe_open(str(path), "pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # noqa: BLE001
        raise MaelensError(
            f"cannot read safetensors file {path}: {_one_line(err)}; the file may be truncated "
            "or corrupt, re-download or re-save it."
        ) from None


def _read_hf_weights(path: Path) -> StateDict:
    if not path.name.endswith(".index.json"):
        return read_weights(path)[0]
    shards = sorted(set(_read_json(path).get("weight_map", {}).values()))
    state: StateDict = {}
    for shard in shards:
        state.update(read_weights(path.parent / shard)[0])
    return state


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MaelensError(f"cannot read {path}: {_one_line(err)}; expected a JSON file.") from None


def _unwrap(obj: Any, path: Path) -> tuple[StateDict, Any]:
    """The tensors of a loaded checkpoint, bare or under "model" / "state_dict"."""
    args = obj.get("args") if isinstance(obj, dict) else None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and _tensors(obj[key]):
            obj = obj[key]
            break
    state = _tensors(obj) if isinstance(obj, dict) else {}
    if state:
        _refuse_non_tensors(obj, path)
    if not state:
        top = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise MaelensError(
            f"no state dict found in {path}: top level is {top}; expected a dict of tensors, "
            "bare or under 'model' / 'state_dict'."
        )
    return state, args


_TOP_LEVEL_PARAMS = ("cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "dist_token")


def _refuse_non_tensors(obj: dict, path: Path) -> None:
    """A weight stored as something other than a tensor (a numpy array, a list, an unknown
    pickled object) is an error naming it, rather than a key silently dropped, which would
    surface later as some other missing or unexpected key."""
    bad = {str(k): v for k, v in obj.items() if not isinstance(v, torch.Tensor)
           and ("." in str(k) or str(k) in _TOP_LEVEL_PARAMS)}
    if bad:
        key, value = next(iter(bad.items()))
        kind = value.pickled_as if isinstance(value, Opaque) else type(value).__name__
        more = f" (and {len(bad) - 1} more: {preview_keys(list(bad)[1:])})" if len(bad) > 1 else ""
        raise MaelensError(
            f"{path}: `{key}` holds a {kind}, not a tensor{more}; expected every weight as a "
            "torch tensor; fix: re-save the state dict with tensors (torch.from_numpy for "
            "numpy arrays)."
        )


def _tensors(obj: dict) -> StateDict:
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------- safe unpickling
class Opaque:
    """Stands in for a pickled object outside the allowlist: constructing it records the
    arguments, its state is kept as attributes, and nothing of the original class runs."""

    pickled_as = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict) and all(isinstance(k, str) for k in state):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<not unpickled: {self.pickled_as}>"


_TORCH_DTYPES = {name for name, value in vars(torch).items() if isinstance(value, torch.dtype)}
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor, ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("_codecs", "encode"): codecs.encode,
    **{("torch._utils", n): getattr(torch._utils, n) for n in (
        "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
        "_rebuild_parameter_with_state") if hasattr(torch._utils, n)},
    **{("builtins", n): getattr(builtins, n) for n in (
        "set", "frozenset", "slice", "range", "complex", "bytearray", "bytes", "int", "float",
        "str", "bool", "tuple", "list", "dict")},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allowlisted globals; every other one becomes an `Opaque` subclass."""

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        return type(name, (Opaque,), {"pickled_as": f"{module}.{name}"})


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) wants a module-like object with `Unpickler` and `load`.
RESTRICTED_PICKLE = types.ModuleType("maelens_restricted_pickle")
RESTRICTED_PICKLE.Unpickler = RestrictedUnpickler
RESTRICTED_PICKLE.load = _restricted_load
