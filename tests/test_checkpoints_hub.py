"""Checkpoints by name, without network: Hub caches laid out on disk by the test, a checkpoint
server on 127.0.0.1, offline mode, interrupted and killed downloads, and every bad input.

Every test points `HF_HUB_CACHE` and `MAELENS_CACHE` at its own tmp folders; servers bind
127.0.0.1 only and stop by themselves (`CheckpointServer.lifetime_s`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from maelens.checkpoints.hub import Caches, fetch, parse_source
from maelens.checkpoints.load import load_model
from maelens.checkpoints.names import ALIASES, TIMM_TAGS
from maelens.checkpoints.native import save_checkpoint
from maelens.errors import MaelensError
from tests.conftest import tiny_model
from tests.hub_fixtures import (
    COMMIT,
    COMMIT_V1,
    CheckpointServer,
    lay_out_repo,
    official_pth,
    sha256,
    timm_repo_files,
    transformers_repo_files,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def caches(tmp_path, monkeypatch) -> Caches:
    """Empty Hub and file caches in tmp; offline; no endpoint or timeouts from the caller."""
    for name in ("HF_ENDPOINT", "HF_HUB_ETAG_TIMEOUT", "MAELENS_DOWNLOAD_TIMEOUT",
                 "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("MAELENS_CACHE", str(tmp_path / "files"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return Caches.from_env()


@pytest.fixture
def server():
    srv = CheckpointServer(lifetime_s=60).start()
    yield srv
    srv.stop()


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _same_weights(model, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    for key, value in state.items():
        assert torch.equal(got[key], value), key


def _one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize(("name", "kind", "target", "revision"), [
    ("facebook/vit-mae-base", "hub", "facebook/vit-mae-base", None),
    ("facebook/vit-mae-base@v1.0", "hub", "facebook/vit-mae-base", "v1.0"),
    ("acme/model@refs/pr/1", "hub", "acme/model", "refs/pr/1"),
    ("hf://acme/model", "hub", "acme/model", None),
    ("hf-hub:timm/vit_base_patch16_224.mae", "hub", "timm/vit_base_patch16_224.mae", None),
    ("vit_base_patch16_224.mae", "hub", "timm/vit_base_patch16_224.mae", None),
    ("deit_base_patch16_224.fb_in1k", "hub", "timm/deit_base_patch16_224.fb_in1k", None),
    ("mae-base", "url", "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
     None),
    ("MAE-Base-Finetuned", "url",
     "https://dl.fbaipublicfiles.com/mae/finetune/mae_finetuned_vit_base.pth", None),
    ("vit-base-supervised", "hub", "google/vit-base-patch16-224", None),
    ("https://example.org/x/ckpt.pth", "url", "https://example.org/x/ckpt.pth", None),
])
def test_names_resolve_to_their_sources(name, kind, target, revision):
    source = parse_source(name)
    assert (source.kind, source.target, source.revision) == (kind, target, revision)


@pytest.mark.parametrize("path", ["model.pth", "runs/mae/model.safetensors", "./mae",
                                  "~/ckpt/x.bin", "/abs/dir", "a/b/c", "weights/best.pt"])
def test_path_like_strings_are_left_to_the_path_loader(path):
    assert parse_source(path) is None
    with pytest.raises(MaelensError, match="no such file or directory"):
        load_model(path)


def test_an_existing_path_always_wins_over_a_hub_id(tmp_path, monkeypatch, caches):
    """`acme/tiny` exists as a folder here: it loads from disk, with the Hub cache empty."""
    monkeypatch.chdir(tmp_path)
    model = tiny_model(decoder_depth=0)
    save_checkpoint(model, Path("acme/tiny"))
    loaded = load_model("acme/tiny")
    assert loaded.load_info["format"] == "maelens" and "resolved" not in loaded.load_info
    _same_weights(loaded, model.state_dict())


@pytest.mark.parametrize(("name", "needles"), [
    ("facebook/vit--mae", ["malformed Hub id", "org/name[@revision]"]),
    ("facebook/vit mae", ["malformed Hub id"]),
    ("acme/model@", ["malformed Hub id"]),
    ("-acme/model", ["malformed Hub id"]),
    ("hf://acme", ["malformed Hub id"]),
    ("vit_base_patch16_224.nonsense", ["unknown timm tag 'nonsense'", "augreg_in21k_ft_in1k"]),
    ("vit_gigantic_patch14_clip_224.laion2b", ["curated timm list",
                                              "timm/vit_gigantic_patch14_clip_224.laion2b"]),
    ("mae-bse", ["unknown model name", "did you mean mae-base"]),
    ("ftp://example.org/x.pth", ["unsupported URL scheme"]),
])
def test_bad_names_fail_with_one_line_and_leave_nothing(name, needles, caches):
    with pytest.raises(MaelensError) as excinfo:
        load_model(name)
    _one_line_error(excinfo, *needles)
    assert _files_in(caches.hub) == [] and _files_in(caches.files) == []


def test_alias_and_timm_tables_are_consistent():
    for alias in ALIASES.values():
        assert parse_source(alias.source) is not None, alias.name
        if alias.name.startswith("mae-") and not alias.name.endswith("-hf"):
            assert alias.licence == "CC-BY-NC 4.0", alias.name
    assert {"vit_base_patch16_224", "deit_base_patch16_224"} <= set(TIMM_TAGS)
    assert "mae" in TIMM_TAGS["vit_base_patch16_224"]


# --------------------------------------------------------------------------- Hub cache, offline
def test_transformers_repo_loads_offline_from_the_hub_cache(tmp_path, caches):
    files = transformers_repo_files(tmp_path / "saved")
    lay_out_repo(caches.hub, "acme/vit-mae-tiny", files)
    model = load_model("acme/vit-mae-tiny")
    c = model.config
    assert (c.embed_dim, c.depth, c.num_heads, c.patch_size, c.image_size) == (32, 2, 4, 8, 32)
    assert (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads) == (16, 1, 2)
    assert c.mean == (0.25, 0.5, 0.75) and c.std == (0.2, 0.3, 0.4)  # preprocessor_config
    info = model.load_info
    assert info["kind"] == "mae-pretraining" and info["format"] == "transformers:vit_mae"
    assert info["resolved"] == "hf://acme/vit-mae-tiny" and info["commit"] == COMMIT
    assert info["sha256"] == sha256(files["model.safetensors"]) and info["mask_ratio"] == 0.6
    _same_weights(model, load_model(tmp_path / "saved").state_dict())


def test_timm_repo_reads_timms_pretrained_config(caches):
    files, state = timm_repo_files(mean=0.5, crop_pct=0.9)
    lay_out_repo(caches.hub, "timm/vit_base_patch16_224.augreg_in21k_ft_in1k", files)
    for name in ("vit_base_patch16_224.augreg_in21k_ft_in1k", "vit-base-augreg",
                 "timm/vit_base_patch16_224.augreg_in21k_ft_in1k"):
        model = load_model(name)
        assert model.config.mean == (0.5, 0.5, 0.5) and model.config.std == (0.5, 0.5, 0.5)
        assert (model.config.pool, model.config.num_classes, model.config.norm_eps) == \
            ("cls", 4, 1e-6)
        pre = model.load_info["preprocessing"]
        assert pre["crop_pct"] == 0.9 and pre["input_size"] == [3, 32, 32]
        assert pre["interpolation"] == "bicubic" and pre["architecture"] == "vit_tiny_test"
        assert model.load_info["licence"] == "Apache-2.0"
        _same_weights(model, state)


def test_timm_legacy_flat_config_and_mae_licence(caches):
    files, state = timm_repo_files(mean=0.4, crop_pct=0.875, legacy=True)
    lay_out_repo(caches.hub, "timm/vit_base_patch16_224.mae", files)
    model = load_model("mae-base-timm")
    assert model.config.mean == (0.4, 0.4, 0.4)
    assert model.load_info["preprocessing"]["crop_pct"] == 0.875
    assert model.load_info["licence"] == "CC-BY-NC 4.0"
    _same_weights(model, state)


def test_revisions_branch_tag_and_commit(caches):
    main, _ = timm_repo_files(seed=1)
    tagged, state_v1 = timm_repo_files(seed=2)
    lay_out_repo(caches.hub, "acme/vit", main)
    lay_out_repo(caches.hub, "acme/vit", tagged, revision="v1", commit=COMMIT_V1)
    for name in ("acme/vit@v1", f"acme/vit@{COMMIT_V1}"):
        model = load_model(name)
        assert model.load_info["commit"] == COMMIT_V1
        _same_weights(model, state_v1)
    with pytest.raises(MaelensError) as excinfo:
        load_model("acme/vit@v2")
    _one_line_error(excinfo, "acme/vit@v2", "maelens download acme/vit@v2")


@pytest.mark.parametrize("name", ["acme/absent", "mae-large", "vit_large_patch16_224.mae",
                                  "https://example.org/weights/ckpt.pth"])
def test_missing_name_fails_fast_offline_with_one_line(name, caches):
    start = time.perf_counter()
    with pytest.raises(MaelensError) as excinfo:
        load_model(name)
    assert time.perf_counter() - start < 2.0
    _one_line_error(excinfo, name, f"maelens download {name}", "HF_HUB_OFFLINE=1")
    assert _files_in(caches.files) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_hub_uses_the_cache_and_fails_fast_without_it(caches, monkeypatch):
    """No HF_HUB_OFFLINE, and the endpoint refuses connections: cached names load, others fail
    at once (huggingface_hub's retries never start)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    files, state = timm_repo_files()
    lay_out_repo(caches.hub, "acme/vit", files)
    _same_weights(load_model("acme/vit"), state)
    start = time.perf_counter()
    with pytest.raises(MaelensError) as excinfo:
        load_model("acme/other")
    assert time.perf_counter() - start < 3.0
    _one_line_error(excinfo, "network cannot be reached", "maelens download acme/other")


def test_unanswering_hub_times_out_quickly(caches, monkeypatch):
    """A server that accepts connections and never answers: the reachability check gives up
    after HF_HUB_ETAG_TIMEOUT seconds instead of huggingface_hub's minutes of retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes; nobody ever answers
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
        start = time.perf_counter()
        with pytest.raises(MaelensError, match="network cannot be reached"):
            load_model("acme/vit")
        assert time.perf_counter() - start < 5.0


def test_hub_download_through_the_endpoint_then_offline(caches, server, monkeypatch):
    """The online path: huggingface_hub fetches from HF_ENDPOINT (the local server speaking the
    Hub's resolve protocol) into the cache; offline afterwards, nothing is requested."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", server.url(""))
    files, state = timm_repo_files()
    server.repos["acme/vit"] = files
    _same_weights(load_model("acme/vit"), state)
    with pytest.raises(MaelensError) as excinfo:
        load_model("acme/not-there")
    _one_line_error(excinfo, "acme/not-there not found")
    server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = len(server.requests)
    _same_weights(load_model("acme/vit"), state)
    assert len(server.requests) == seen


# --------------------------------------------------------------------------- URLs
def test_url_is_downloaded_once_cached_hashed_and_loaded(caches, server, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    data, state = official_pth()
    server.files["/mae/mae_tiny.pth"] = data
    url = server.url("/mae/mae_tiny.pth")
    model = load_model(url)
    assert model.load_info["sha256"] == sha256(data) and model.load_info["resolved"] == url
    assert model.load_info["format"] == "timm" and model.load_info["kind"] == "encoder"
    _same_weights(model, state)
    assert (caches.files / "mae_tiny.pth").read_bytes() == data
    assert _files_in(caches.files) == ["mae_tiny.pth", "mae_tiny.pth.maelens.json"]
    server.stop()  # a second load must not need the server
    seen = len(server.requests)
    again = load_model(url)
    assert len(server.requests) == seen == 1 and again.load_info["sha256"] == sha256(data)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and works offline
    _same_weights(load_model(url), state)


def test_interrupted_download_leaves_only_a_part_then_resumes(caches, server, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    data, state = official_pth()
    server.files["/ckpt.pth"] = data
    server.tricks["/ckpt.pth"] = "cut"
    url = server.url("/ckpt.pth")
    with pytest.raises(MaelensError) as excinfo:
        load_model(url)
    _one_line_error(excinfo, "interrupted after", "run the same command again to resume")
    assert _files_in(caches.files) == ["ckpt.pth.part"]  # nothing a later load would trust
    model = load_model(url)
    assert server.requests[-1] == ("/ckpt.pth", f"bytes={len(data) // 2}-")
    assert model.load_info["sha256"] == sha256(data)
    _same_weights(model, state)
    assert _files_in(caches.files) == ["ckpt.pth", "ckpt.pth.maelens.json"]


def test_resume_restarts_when_the_server_ignores_range(caches, server, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    data, state = official_pth()
    server.files["/ckpt.pth"] = data
    server.tricks["/ckpt.pth"] = "cut"
    with pytest.raises(MaelensError):
        load_model(server.url("/ckpt.pth"))
    server.ignore_range = True
    assert load_model(server.url("/ckpt.pth")).load_info["sha256"] == sha256(data)


@pytest.mark.slow
def test_killed_download_leaves_no_trusted_file(caches, server, monkeypatch):
    """SIGKILL in the middle of a download: only the .part remains; the next load resumes
    from it and gets the exact file."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    data, state = official_pth()
    server.files["/big.pth"] = data
    server.tricks["/big.pth"] = "stall"
    url = server.url("/big.pth")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = "import sys; from maelens.checkpoints.hub import fetch; fetch(sys.argv[1])"
    child = subprocess.Popen([sys.executable, "-c", code, url], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = caches.files / "big.pth.part"
    try:
        deadline = time.monotonic() + 60
        while not (part.is_file() and part.stat().st_size >= len(data) // 2):
            assert child.poll() is None and time.monotonic() < deadline, "download never began"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait(timeout=30)
    server.release.set()
    assert _files_in(caches.files) == ["big.pth.part"]
    model = load_model(url)
    assert server.requests[-1] == ("/big.pth", f"bytes={len(data) // 2}-")
    assert model.load_info["sha256"] == sha256(data)
    _same_weights(model, state)


@pytest.mark.parametrize(("path", "body", "needles"), [
    ("/missing.pth", None, ["HTTP 404", "nothing was cached"]),
    ("/page.pth", b"<!doctype html><html>Sign in</html>", ["is not a checkpoint",
                                                          "nothing was cached"]),
    ("/arrays.npz", b"PK\x03\x04" + b"\x00" * 60, ["is not a checkpoint"]),
])
def test_bad_urls_fail_with_one_line_and_leave_nothing(path, body, needles, caches, server,
                                                       monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    if body is not None:
        server.files[path] = body
    with pytest.raises(MaelensError) as excinfo:
        load_model(server.url(path))
    _one_line_error(excinfo, server.url(path), *needles)
    assert _files_in(caches.files) == []


def test_404_also_removes_a_stale_part(caches, server, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    caches.files.mkdir(parents=True)
    (caches.files / "gone.pth.part").write_bytes(b"\x80\x02half")
    with pytest.raises(MaelensError, match="HTTP 404"):
        load_model(server.url("/gone.pth"))
    assert _files_in(caches.files) == []


def test_pinned_sha256_is_checked(caches, server, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    data, _ = official_pth()
    server.files["/ckpt.pth"] = data
    with pytest.raises(MaelensError) as excinfo:
        load_model(server.url("/ckpt.pth") + "#sha256=" + "0" * 64)
    _one_line_error(excinfo, "sha256 mismatch", "nothing was cached")
    assert _files_in(caches.files) == []
    model = load_model(server.url("/ckpt.pth") + f"#sha256={sha256(data)}")
    assert model.load_info["sha256"] == sha256(data)


def test_file_already_in_torch_hub_cache_is_reused(tmp_path, monkeypatch, caches):
    """Without MAELENS_CACHE the file cache is torch hub's; a file torch.hub put there is used
    as is (hashed once, recorded), with no request at all."""
    monkeypatch.delenv("MAELENS_CACHE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert Caches.from_env().files == folder
    data, state = official_pth()
    folder.mkdir(parents=True)
    (folder / "mae_pretrain_vit_base.pth").write_bytes(data)
    model = load_model("mae-base")  # offline: any network use would fail
    assert model.load_info["sha256"] == sha256(data) and model.load_info["source"] == "mae-base"
    assert model.load_info["licence"] == "CC-BY-NC 4.0"
    _same_weights(model, state)
    assert (folder / "mae_pretrain_vit_base.pth.maelens.json").is_file()


def test_same_file_name_from_two_urls_does_not_collide(caches, server, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    first, state_a = official_pth(seed=0)
    second, state_b = official_pth(seed=3)
    server.files["/a/ckpt.pth"] = first
    server.files["/b/ckpt.pth"] = second
    _same_weights(load_model(server.url("/a/ckpt.pth")), state_a)
    _same_weights(load_model(server.url("/b/ckpt.pth")), state_b)
    _same_weights(load_model(server.url("/a/ckpt.pth")), state_a)


def test_fetch_into_a_given_folder(tmp_path, caches, server, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    data, _ = official_pth()
    server.files["/ckpt.pth"] = data
    got = fetch(server.url("/ckpt.pth"), caches=Caches.under(tmp_path / "shared"))
    assert got.path == tmp_path / "shared" / "checkpoints" / "ckpt.pth"
    assert got.sha256 == sha256(data) and _files_in(caches.files) == []
