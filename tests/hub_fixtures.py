"""Offline stand-ins for the Hugging Face Hub and for checkpoint URLs, shared by
test_checkpoints_hub.py and test_cli_checkpoints.py.

- `lay_out_repo` writes a repository into a huggingface_hub cache folder exactly as
  huggingface_hub lays it out: `models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> ->
  ../../blobs/<sha256>, refs/<revision>}`.
- `CheckpointServer` serves files over HTTP on 127.0.0.1 only (with Range requests), logs every
  request, can cut or stall a body once, and shuts itself down after `lifetime_s`.
- tiny checkpoints: an official-MAE-layout .pth, timm-layout safetensors with timm's
  `config.json`, and a transformers ViTMAE repository.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
import transformers
from safetensors.torch import save as save_safetensors

from tests.conftest import tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMMIT_V1 = "fedcba9876543210fedcba9876543210fedcba98"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lay_out_repo(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "main",
                 commit: str = COMMIT) -> Path:
    """Write `files` as snapshot `commit` of `repo_id`, with `refs/<revision>` pointing at it.
    Returns the snapshot folder."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = root / "blobs" / sha256(data)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../..", *[".."] * name.count("/"), "blobs", blob.name))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    return snapshot


# --------------------------------------------------------------------------- tiny checkpoints
# Width 64: one 64-dim head, what maelens assumes for files that do not state heads.
WIDE = {"embed_dim": 64, "num_heads": 1, "mlp_dim": 128, "decoder_depth": 0}


def official_pth(seed: int = 0) -> tuple[bytes, dict[str, torch.Tensor]]:
    """An official-MAE-layout encoder file ({"model": timm-named state}) and its state."""
    state = tiny_model(seed, **WIDE).state_dict()
    buffer = io.BytesIO()
    torch.save({"model": state, "epoch": 799}, buffer)
    return buffer.getvalue(), state


def timm_repo_files(mean: float = 0.5, crop_pct: float = 0.9, legacy: bool = False,
                    seed: int = 1) -> tuple[dict[str, bytes], dict[str, torch.Tensor]]:
    """model.safetensors (timm layout, CLS-pool 4-class head) and timm's Hub config.json. The
    current format states the heads in `model_args` (width 32, 4 heads); the legacy flat
    format does not (width 64, one 64-dim head, the default guess)."""
    shape = WIDE if legacy else {"decoder_depth": 0}
    state = tiny_model(seed, num_classes=4, **shape).state_dict()
    pretrained = {"tag": "test", "custom_load": False, "input_size": [3, 32, 32],
                  "fixed_input_size": True, "interpolation": "bicubic", "crop_pct": crop_pct,
                  "crop_mode": "center", "mean": [mean] * 3, "std": [mean] * 3,
                  "num_classes": 4, "pool_size": None, "first_conv": "patch_embed.proj",
                  "classifier": "head"}
    if legacy:  # timm < 0.9: one flat dict
        config = {"architecture": "vit_tiny_test", "num_features": 32, **pretrained}
    else:
        config = {"architecture": "vit_tiny_test", "num_classes": 4, "num_features": 32,
                  "global_pool": "token", "model_args": {"embed_dim": 32, "num_heads": 4},
                  "pretrained_cfg": pretrained}
    files = {"config.json": json.dumps(config).encode(),
             "model.safetensors": save_safetensors({k: v.contiguous() for k, v in state.items()})}
    return files, state


def transformers_repo_files(folder: Path, seed: int = 0) -> dict[str, bytes]:
    """A tiny ViTMAEForPreTraining as `save_pretrained` writes it, plus a preprocessor config
    with non-ImageNet statistics."""
    config = transformers.ViTMAEConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, decoder_hidden_size=16, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=32, mask_ratio=0.6)
    torch.manual_seed(seed)
    transformers.ViTMAEForPreTraining(config).save_pretrained(folder)
    processor = {"image_mean": [0.25, 0.5, 0.75], "image_std": [0.2, 0.3, 0.4],
                 "size": {"height": 32, "width": 32}, "image_processor_type": "ViTImageProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# --------------------------------------------------------------------------- HTTP server
class _Handler(BaseHTTPRequestHandler):
    server: CheckpointServer

    def do_HEAD(self) -> None:  # noqa: N802 - the http.server hook name
        self.server.requests.append((f"HEAD {self.path}", None))
        body = self._body()
        if body is not None:
            self._status(200, body)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = self._body()
        if body is None:
            return
        start = self._start(body)
        if start is None:
            return
        data = body[start:]
        trick = srv.tricks.pop(self.path, None)
        if trick == "cut":  # promise the whole body, send half, hang up
            self.wfile.write(data[: len(data) // 2])
            return
        if trick == "stall":  # send half, then wait (bounded) until released
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            srv.release.wait(srv.lifetime_s)
            return
        self.wfile.write(data)

    def _body(self) -> bytes | None:
        """The file at this path, or None after answering 404. Hub paths
        `/{org}/{name}/resolve/{revision}/{file}` answer as the Hub does (X-Error-Code)."""
        if "/resolve/" not in self.path:
            if self.path not in self.server.files:
                self.send_error(404, "Not Found")
                return None
            return self.server.files[self.path]
        repo, _, rest = self.path.lstrip("/").partition("/resolve/")
        files = self.server.repos.get(repo)
        filename = rest.partition("/")[2]
        if files is None or filename not in files:
            self.send_response(404)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Error-Code", "RepoNotFound" if files is None else "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return files[filename]

    def _status(self, code: int, body: bytes) -> None:
        self.send_response(code)
        if "/resolve/" in self.path:
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{sha256(body)}"')

    def _start(self, body: bytes) -> int | None:
        """Send the status and headers; the body offset, or None when nothing follows."""
        wanted = self.headers.get("Range")
        start = 0
        if wanted and not self.server.ignore_range:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return None
            self._status(206, body)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self._status(200, body)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        return start

    def log_message(self, *args: object) -> None:
        pass


class CheckpointServer(ThreadingHTTPServer):
    """Files by path on 127.0.0.1 (`files`), Hub repositories as the Hub serves them (`repos`,
    with `HF_ENDPOINT` pointing here); `tricks[path]` = "cut" / "stall" misbehaves once."""

    daemon_threads = True

    def __init__(self, lifetime_s: float = 60.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.repos: dict[str, dict[str, bytes]] = {}  # Hub repositories: id -> {file: bytes}
        self.tricks: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.release = threading.Event()
        self.lifetime_s = lifetime_s
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._watchdog = threading.Timer(lifetime_s, self.stop)
        self._watchdog.daemon = True

    def start(self) -> CheckpointServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def stop(self) -> None:
        self.release.set()
        self._watchdog.cancel()
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()
