"""Checkpoint files by URL: downloaded once into a cache folder, resumable and atomic.

A file only ever gets its final name `<cache>/<file name of the URL>` once it is complete:
the body is written to `<name>.part` (an interrupted download is resumed from there with an
HTTP Range request), checked to be a checkpoint (PyTorch zip or legacy pickle, safetensors)
of the advertised length, hashed with SHA-256, recorded in `<name>.maelens.json` (URL,
SHA-256, size), and only then renamed with `os.replace`. A later load therefore trusts any
file under a final name, and a killed download leaves at most a `.part` that nothing loads.
A 4xx answer or a body that is not a checkpoint leaves nothing in the cache. A URL may pin the
expected hash as a fragment: `https://.../x.pth#sha256=<64 hex digits>`.

Files that torch.hub or timm downloaded into the same folder (same file name) are reused; their
hash is computed once and recorded. When a second URL has the same file name, its file gets a
prefix from the URL's hash. One download of a given URL at a time: concurrent downloads of the
same URL into one cache are not coordinated.

Each network read waits at most `MAELENS_DOWNLOAD_TIMEOUT` seconds (default 10).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from maelens.errors import MaelensError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def fetch_url(url: str, cache: Path, offline: bool, name: str | None = None
              ) -> tuple[Path, str]:
    """(cached file, its SHA-256) for a checkpoint URL, downloading it unless cached. `name`
    is what the user typed (an alias), for messages."""
    name = name or url
    url, _, fragment = url.partition("#")
    pinned = fragment.removeprefix("sha256=").lower() if fragment.startswith("sha256=") else None
    target = cache_target(url, cache)
    if not target.is_file():
        if offline:
            raise not_cached(name, cache, offline)
        download(url, target, pinned)
    sha = recorded_sha256(target, url)
    if pinned and sha != pinned:
        raise MaelensError(f"the cached {target} has sha256 {sha}, but {name} pins {pinned}; "
                           "delete the file to download it again.")
    return target, sha


def not_cached(name: str, where: Path, offline: bool) -> MaelensError:
    """The one-line error for a name that is neither cached nor fetchable right now."""
    why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "the network cannot be reached"
    return MaelensError(
        f"{name} is not in the cache {where} and {why}; fetch it on a machine with internet "
        f"with `maelens download {name}` (with `--to DIR`, then point HF_HUB_CACHE and "
        "MAELENS_CACHE at DIR/hub and DIR/checkpoints here).")


def cache_target(url: str, cache: Path) -> Path:
    """`<cache>/<file name of the URL>`, with a hash prefix when another URL already owns it."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(unquote(urlsplit(url).path)).name)
    base = base.lstrip(".") or "checkpoint"
    target = cache / base
    owner = _read_record(target).get("url")
    if owner is not None and owner != url:
        target = cache / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"
    return target


def download(url: str, target: Path, pinned: str | None = None) -> None:
    """Download `url` to `target` through `target.part` (resumed when present)."""
    part = target.with_name(target.name + ".part")
    response, offset = _open(url, part)
    with response:
        total = _total_size(response, offset)
        target.parent.mkdir(parents=True, exist_ok=True)
        _stream(url, response, part, offset, total)
    _publish(url, part, target, pinned)


def _open(url: str, part: Path) -> tuple[Any, int]:
    """The response, and the byte offset its body starts at (a resumed .part, or 0)."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "maelens", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout_s("MAELENS_DOWNLOAD_TIMEOUT"))
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the .part is not a prefix of this file: start afresh
            part.unlink()
            return _open(url, part)
        if err.code < 500:  # a wrong address: keep nothing (a 5xx keeps the .part to resume)
            part.unlink(missing_ok=True)
        raise MaelensError(f"cannot download {url}: HTTP {err.code} {err.reason}; check the URL "
                           "(nothing was cached).") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or one_line(err)
        raise MaelensError(f"cannot reach {url}: {reason}; check the network, or fetch it on a "
                           f"machine with internet with `maelens download {url}`.") from None
    if offset and response.status != 206:  # the server ignored the Range request
        offset = 0
    return response, offset


def _total_size(response: Any, offset: int) -> int | None:
    """Length of the whole file: from Content-Range on a resumed (206) answer, else
    Content-Length; None when the server does not say."""
    content_range = response.headers.get("Content-Range") or ""
    if offset and content_range.rsplit("/", 1)[-1].isdigit():
        return int(content_range.rsplit("/", 1)[-1])
    length = response.headers.get("Content-Length") or ""
    return offset + int(length) if length.isdigit() else None


def _stream(url: str, response: Any, part: Path, offset: int, total: int | None) -> None:
    """Append the body to `part`; an early end keeps the .part for the next run to resume."""
    from tqdm.auto import tqdm

    done, failure = offset, None
    read = getattr(response, "read1", response.read)  # what has arrived: on disk sooner
    with open(part, "ab" if offset else "wb") as handle, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                 desc=part.name.removesuffix(".part"), disable=None, leave=False) as bar:
        try:
            while chunk := read(_CHUNK):
                handle.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:  # reset, timeout, IncompleteRead
            failure = one_line(err)
        handle.flush()
        os.fsync(handle.fileno())
    if failure is not None or (total is not None and done != total):
        why = f" ({failure})" if failure else ""
        raise MaelensError(f"download of {url} interrupted after {done} of {total or '?'} "
                           f"bytes{why}; run the same command again to resume it.")


def _publish(url: str, part: Path, target: Path, pinned: str | None) -> None:
    """Check the finished .part, record its hash, then give it its final name atomically."""
    from maelens.checkpoints.load import sniff

    try:
        sniff(part)
    except MaelensError:
        with open(part, "rb") as handle:
            head = handle.read(16)
        part.unlink()
        raise MaelensError(f"{url} is not a checkpoint (it starts with {head!r}); expected a "
                           "PyTorch checkpoint or a .safetensors file; nothing was cached."
                           ) from None
    sha = sha256_file(part)
    if pinned and sha != pinned:
        part.unlink()
        raise MaelensError(f"sha256 mismatch for {url}: expected {pinned}, got {sha}; nothing "
                           "was cached.")
    _write_record(target, {"url": url, "sha256": sha, "size": part.stat().st_size})
    os.replace(part, target)
    log.info("downloaded %s to %s (sha256 %s)", url, target, sha)


def recorded_sha256(target: Path, url: str) -> str:
    """The recorded hash while it still describes the file (same size); otherwise (a file that
    torch.hub or timm downloaded) hash it now and record it."""
    record = _read_record(target)
    size = target.stat().st_size
    if record.get("size") == size and isinstance(record.get("sha256"), str):
        return record["sha256"]
    sha = sha256_file(target)
    _write_record(target, {"url": record.get("url", url), "sha256": sha, "size": size})
    return sha


def _record_path(target: Path) -> Path:
    return target.with_name(target.name + ".maelens.json")


def _read_record(target: Path) -> dict[str, Any]:
    try:
        record = json.loads(_record_path(target).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(target: Path, record: dict[str, Any]) -> None:
    path = _record_path(target)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def timeout_s(variable: str, default: float = 10.0) -> float:
    """Seconds from an environment variable (read at call time)."""
    text = os.environ.get(variable) or ""
    try:
        return float(text) if text else default
    except ValueError:
        raise MaelensError(f"{variable} must be a number of seconds, got {text!r}.") from None


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
