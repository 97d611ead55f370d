"""Checkpoints by name: aliases, timm names, Hugging Face Hub ids and URLs -> local files.

How a string `source` is read (`resolve_named`, called first by `load_model`):
1. an existing local path (file or directory) always wins, whatever it looks like;
2. `demo:NAME` is left to `load_model` (the shipped demo models);
3. an alias from `maelens models` (`mae-base`, ...) is replaced by its source (`names.py`);
4. `https://...` (or `http://...`): a checkpoint file, downloaded once into the file cache;
5. `org/name[@revision]` (exactly one `/`, the name not ending in a file suffix such as `.pth`),
   also written `hf://org/name` or `hf-hub:org/name` (timm's spelling): a Hub repository;
6. `architecture.tag` with a curated timm architecture (`vit_base_patch16_224.mae`): the Hub
   repository `timm/architecture.tag` (resolved without importing timm);
7. anything else holding a `/` or a file suffix is a missing local path (`load_model`'s
   error); any other word is an unknown name (an error listing close matches).

Caches:
- Hub repositories live in huggingface_hub's own cache, located at call time the way
  huggingface_hub does it: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
  `~/.cache/huggingface/hub`. Tokens (`HF_TOKEN`, `hf auth login`), `HF_ENDPOINT` and
  revisions (`@v1.0`, `@<commit>`) work as in huggingface_hub.
- URL files live in `$MAELENS_CACHE` if set, else in torch hub's folder
  `$TORCH_HOME/hub/checkpoints` (default `~/.cache/torch/hub/checkpoints`), under the URL's
  file name, so files torch.hub or timm already fetched there are reused. Downloads are
  resumable and atomic (see `urls.py`); a URL may pin its hash: `...pth#sha256=<hex>`.

Offline: with `HF_HUB_OFFLINE=1` (or `TRANSFORMERS_OFFLINE=1`) nothing touches the network;
a cached name loads and a missing one fails at once with one line that names
`maelens download NAME`. Without it, one HEAD request first checks that the Hub answers
within `HF_HUB_ETAG_TIMEOUT` seconds (default 10; a refused connection or a failed DNS lookup
fails at once); when it does not, only the cache is used, so huggingface_hub's minutes of
retries never start. URL reads wait at most `MAELENS_DOWNLOAD_TIMEOUT` seconds (default 10).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maelens.checkpoints.names import ALIASES, TIMM_TAGS, Alias, close_names, timm_licence
from maelens.checkpoints.urls import fetch_url, not_cached, one_line, sha256_file, timeout_s
from maelens.errors import MaelensError

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".npz", ".npy", ".json",
                 ".tar", ".pkl", ".h5", ".zip")
HUB_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "pytorch_model.bin.index.json")
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"^(?P<repo>{_HUB_PART}/{_HUB_PART})(?:@(?P<rev>[\w.\-/]+))?$")
_TIMM_NAME = re.compile(r"^(?P<arch>[a-z][a-z0-9_]*)\.(?P<tag>[a-z0-9_]+)$")
_ABSENT, _UNAVAILABLE = "absent", "unavailable"  # a Hub file the repo lacks / we cannot reach


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Caches:
    """Where fetched checkpoints live: `hub` (huggingface_hub cache layout), `files` (URLs)."""

    hub: Path
    files: Path

    @classmethod
    def from_env(cls) -> Caches:
        env = os.environ
        hub = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
        if not hub:
            home = env.get("HF_HOME") or os.path.join(
                env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
            hub = os.path.join(home, "hub")
        files = env.get("MAELENS_CACHE")
        if not files:
            torch_home = env.get("TORCH_HOME") or os.path.join(
                env.get("XDG_CACHE_HOME") or "~/.cache", "torch")
            files = os.path.join(torch_home, "hub", "checkpoints")
        return cls(_expand(hub), _expand(files))

    @classmethod
    def under(cls, root: str | os.PathLike) -> Caches:
        """Both caches below one folder (`maelens download --to DIR`)."""
        root = _expand(root)
        return cls(root / "hub", root / "checkpoints")


@dataclass(frozen=True)
class Source:
    """A parsed name: `kind` "url" (target = URL) or "hub" (target = repository id)."""

    kind: str
    target: str
    revision: str | None = None
    licence: str | None = None


@dataclass(frozen=True)
class Resolved:
    """A name fetched to local files: `path` is what `load_model` reads (a weights file, or a
    transformers snapshot folder). `preprocessing` is the published input pipeline (timm's
    pretrained config: mean, std, input_size, crop_pct, interpolation)."""

    name: str
    origin: str
    path: Path
    kind: str
    sha256: str | None = None
    licence: str | None = None
    commit: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)  # stated by the config (load_model)

    def info(self) -> dict[str, Any]:
        """The fields `load_model` adds to `model.load_info`."""
        return {"source": self.name, "resolved": self.origin, "path": str(self.path),
                "sha256": self.sha256, "licence": self.licence, "commit": self.commit,
                "preprocessing": dict(self.preprocessing)}

    def apply(self, config: Any, state: Any, info: dict[str, Any]) -> tuple[Any, Any, dict]:
        """Fold the published mean / std into the inferred config and the origin into info."""
        stats = {k: tuple(float(v) for v in self.preprocessing[k]) for k in ("mean", "std")
                 if k in self.preprocessing}
        config = config.replace(**stats) if stats else config
        size = self.preprocessing.get("input_size")
        if size and int(size[-1]) != config.image_size:
            log.warning("%s: the published input size %s differs from the %d pixels the weights "
                        "were built for; using %d", self.name, size, config.image_size,
                        config.image_size)
        return config, state, {**info, **self.info()}


# --------------------------------------------------------------------------- entry points
def resolve_named(source: Any) -> Resolved | None:
    """Fetch `source` when it is a name, Hub id or URL; None for anything `load_model` reads
    itself (objects, `os.PathLike`, `demo:NAME`, existing paths, missing local paths)."""
    if not isinstance(source, str) or source.startswith("demo:") or _exists(source):
        return None  # an existing path always wins
    if parse_source(source) is None:
        return None
    return fetch(source)


def fetch(name: str, caches: Caches | None = None, offline: bool | None = None) -> Resolved:
    """Local files for a name (alias, timm name, Hub id or URL), downloading what the cache
    lacks unless offline (default: `HF_HUB_OFFLINE`)."""
    source = parse_source(name)
    if source is None:
        raise MaelensError(f"{name} is a local path that does not exist, not a model name, Hub "
                           "id or URL; check the path, or run `maelens models` for the names.")
    caches = caches or Caches.from_env()
    offline = is_offline() if offline is None else offline
    if source.kind == "url":
        path, sha = fetch_url(source.target, caches.files, offline, name)
        return Resolved(name, source.target.partition("#")[0], path, "url", sha, source.licence)
    return _fetch_hub(name, source, caches.hub, offline)


def parse_source(name: str) -> Source | None:
    """What `name` refers to, without touching disk or network; None for a local path.
    Malformed Hub ids, unknown timm names or tags and unknown bare words raise."""
    name = name.strip()
    alias = ALIASES.get(name.lower())
    if alias is not None:
        return _from_alias(alias)
    if re.match(r"^[a-z][a-z0-9+.-]*://", name, re.IGNORECASE) and not name.startswith("hf://"):
        if not name.lower().startswith(("https://", "http://")):
            raise MaelensError(f"unsupported URL scheme in {name!r}; expected https://.")
        return Source("url", name)
    for prefix in ("hf://", "hf-hub:"):
        if name.startswith(prefix):
            return _hub_source(name[len(prefix):], name)
    if _looks_like_path(name):
        return None
    if "/" in name or "@" in name:
        return _hub_source(name, name)
    if _TIMM_NAME.match(name):
        return _timm_source(name)
    near = close_names(name)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise MaelensError(f"unknown model name {name!r}: not a local file, alias, timm name, Hub id "
                       f"or URL; {hint}`maelens models` lists the names.")


def is_offline() -> bool:
    """huggingface_hub's rule, read at call time: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE true."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


# --------------------------------------------------------------------------- parsing
def _from_alias(alias: Alias) -> Source:
    source = parse_source(alias.source)
    if source is None:  # the alias table holds only URLs, Hub ids and timm names
        raise MaelensError(f"alias {alias.name!r} points to {alias.source!r}, not a name.")
    return Source(source.kind, source.target, source.revision, alias.licence)


def _looks_like_path(name: str) -> bool:
    """A local path rather than a name: starts like one, has a backslash or two `/` before any
    `@revision`, or ends in a checkpoint file suffix."""
    stem = name.split("@", 1)[0]
    if name.startswith(("/", ".", "~")) or "\\" in name or stem.count("/") > 1:
        return True
    return stem.lower().endswith(FILE_SUFFIXES)


def _hub_source(text: str, name: str) -> Source:
    match = _HUB_ID.match(text)
    repo = match.group("repo") if match else ""
    if not match or "--" in repo or ".." in repo or repo.endswith(".git"):
        raise MaelensError(
            f"malformed Hub id {name!r}: expected org/name[@revision] made of letters, digits, "
            "'-', '_' and '.' (no '--' or '..'), e.g. facebook/vit-mae-base@main.")
    org, _, model = repo.partition("/")
    arch, _, tag = model.partition(".")
    curated = org == "timm" and tag in TIMM_TAGS.get(arch, ())
    return Source("hub", repo, match.group("rev"), timm_licence(tag) if curated else None)


def _timm_source(name: str) -> Source:
    arch, tag = name.split(".", 1)
    tags = TIMM_TAGS.get(arch)
    if tags is None:
        raise MaelensError(
            f"{name!r} is not in maelens' curated timm list (`maelens models` shows it); if the "
            f"model exists on the Hub, pass its repository id: timm/{name}.")
    if tag not in tags:
        raise MaelensError(f"unknown timm tag {tag!r} for {arch}; known tags: {', '.join(tags)} "
                           f"(or pass a Hub id such as timm/{arch}.TAG).")
    return Source("hub", f"timm/{name}", None, timm_licence(tag))


# --------------------------------------------------------------------------- Hugging Face Hub
def _fetch_hub(name: str, source: Source, cache: Path, offline: bool) -> Resolved:
    local_only = offline or not hub_reachable()
    config_path = _hub_file(source, cache, local_only, "config.json")
    if not isinstance(config_path, Path):
        if config_path == _UNAVAILABLE:
            raise not_cached(name, cache, offline)
        raise MaelensError(f"Hub repository {source.target} has no config.json: maelens loads "
                           "transformers ViT / ViTMAE repositories and timm ViT repositories.")
    config = _read_json(config_path)
    # Pin the commit just resolved: the other files of a cached snapshot then load without
    # another request, and all files come from the same commit.
    pinned = Source("hub", source.target, config_path.parent.name, source.licence)
    weights = _hub_weights(pinned, cache, local_only)
    if not isinstance(weights, Path):
        if weights == _UNAVAILABLE:
            raise not_cached(name, cache, offline)
        raise MaelensError(f"Hub repository {source.target} has no weights file: expected one "
                           f"of {', '.join(HUB_WEIGHTS)}.")
    if "model_type" in config:  # transformers: load_model reads the snapshot folder
        _hub_file(pinned, cache, local_only, "preprocessor_config.json")  # optional
        path, kind, published = config_path.parent, "transformers", {}
    elif "architecture" in config:
        path, kind, published = weights, "timm", timm_preprocessing(config, source.target)
    else:
        raise MaelensError(f"config.json of {source.target} is neither a transformers config "
                           "(`model_type`) nor a timm config (`architecture`).")
    revision = f"@{source.revision}" if source.revision else ""
    return Resolved(name, f"hf://{source.target}{revision}", path, kind, _blob_sha256(weights),
                    source.licence, pinned.revision, published, _timm_heads(config))


def hub_reachable() -> bool:
    """Whether the Hub endpoint answers an HTTP request within `HF_HUB_ETAG_TIMEOUT`.

    Asked once before any huggingface_hub call: when the Hub cannot be reached and a file is
    not cached, huggingface_hub retries with back-off and a 60 s timeout per try (minutes
    without an answer). Unreachable here means cache only, and a clear error at once."""
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    request = urllib.request.Request(endpoint + "/", method="HEAD",
                                     headers={"User-Agent": "maelens"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s("HF_HUB_ETAG_TIMEOUT")):
            return True
    except urllib.error.HTTPError:  # an answer, even an error status, means it is reachable
        return True
    except (OSError, ValueError, http.client.HTTPException) as err:
        log.info("the Hub at %s cannot be reached (%s): using the cache only", endpoint,
                 one_line(err))
        return False


def _hub_file(source: Source, cache: Path, local_only: bool, filename: str) -> Path | str:
    """The cached / downloaded file, or _ABSENT (the repository lacks it), or _UNAVAILABLE
    (offline or unreachable, and not in the cache)."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(
            source.target, filename, revision=source.revision, cache_dir=cache,
            local_files_only=local_only, etag_timeout=timeout_s("HF_HUB_ETAG_TIMEOUT"),
            endpoint=os.environ.get("HF_ENDPOINT") or None, library_name="maelens"))
    except hf_errors.LocalEntryNotFoundError:
        return _UNAVAILABLE
    except hf_errors.EntryNotFoundError:
        return _ABSENT
    except hf_errors.GatedRepoError:
        raise MaelensError(f"{source.target} is gated: accept its terms on huggingface.co and log "
                           "in (`hf auth login` or HF_TOKEN).") from None
    except hf_errors.RepositoryNotFoundError:
        raise MaelensError(f"Hub repository {source.target} not found (or private: log in with "
                           "`hf auth login` or set HF_TOKEN); check the id.") from None
    except hf_errors.RevisionNotFoundError:
        raise MaelensError(f"revision {source.revision!r} not found in Hub repository "
                           f"{source.target}; check the branch, tag or commit.") from None
    except (hf_errors.HFValidationError, ValueError) as err:
        raise MaelensError(f"malformed Hub id {source.target!r}: {one_line(err)}") from None
    except OSError as err:  # other HTTP errors of the Hub, disk errors
        raise MaelensError(f"cannot fetch {filename} of Hub repository {source.target}: "
                           f"{one_line(err)}") from None


def _hub_weights(source: Source, cache: Path, local_only: bool) -> Path | str:
    """The first weights file of `HUB_WEIGHTS` the repository has (with its shards)."""
    unavailable = False
    for filename in HUB_WEIGHTS:
        found = _hub_file(source, cache, local_only, filename)
        if isinstance(found, Path):
            if filename.endswith(".index.json"):
                for shard in sorted(set(_read_json(found).get("weight_map", {}).values())):
                    got = _hub_file(source, cache, local_only, shard)
                    if not isinstance(got, Path):
                        return got
            return found
        unavailable |= found == _UNAVAILABLE
    return _UNAVAILABLE if unavailable else _ABSENT


def timm_preprocessing(config: dict[str, Any], repo: str) -> dict[str, Any]:
    """architecture, mean, std, input_size, crop_pct, crop_mode, interpolation and num_classes
    from a timm Hub `config.json` (its `pretrained_cfg`, or the older single flat dict)."""
    cfg = config.get("pretrained_cfg", config)
    if not isinstance(cfg, dict):
        raise MaelensError(f"config.json of {repo}: `pretrained_cfg` must be an object, got "
                           f"{type(cfg).__name__}.")
    out: dict[str, Any] = {"architecture": config.get("architecture")}
    for key in ("mean", "std", "input_size", "crop_pct", "crop_mode", "interpolation"):
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    for key in ("mean", "std", "input_size"):
        value = out.get(key)
        if value is not None and not (isinstance(value, list | tuple) and value and
                                      all(isinstance(v, int | float) for v in value)):
            raise MaelensError(f"config.json of {repo}: `{key}` must be a list of numbers, got "
                               f"{value!r}.")
    num_classes = config.get("num_classes", cfg.get("num_classes"))
    if num_classes is not None:
        out["num_classes"] = int(num_classes)
    return out


def _timm_heads(config: dict[str, Any]) -> dict[str, int]:
    """The head count newer timm exports record in `model_args` (weights do not show it)."""
    args = config.get("model_args")
    heads = args.get("num_heads") if isinstance(args, dict) else None
    return {"num_heads": heads} if isinstance(heads, int) and heads > 0 else {}


def _blob_sha256(path: Path) -> str:
    """SHA-256 of a Hub file: the cache names large (LFS) blobs by it; others are hashed."""
    blob = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return blob.name
    return sha256_file(blob)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MaelensError(f"cannot read {path}: {one_line(err)}; expected a JSON file.") from None
    if not isinstance(data, dict):
        raise MaelensError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def _expand(path: str | os.PathLike) -> Path:
    return Path(os.path.expandvars(os.fspath(path))).expanduser()


def _exists(text: str) -> bool:
    try:
        return Path(text).expanduser().exists()
    except (OSError, ValueError):  # e.g. a name too long for the file system
        return False
