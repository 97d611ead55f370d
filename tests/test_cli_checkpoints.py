"""`maelens models`, `maelens download NAME... [--to DIR]` and the "resolves to" line of
`maelens info`, without network (a checkpoint server on 127.0.0.1 speaks plain HTTP and the
Hub's resolve protocol), including every bad-input path: one line, exit 2, nothing cached."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from maelens.checkpoints.native import save_checkpoint
from maelens.cli import app
from tests.conftest import tiny_model
from tests.hub_fixtures import COMMIT, CheckpointServer, official_pth, sha256, timm_repo_files

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Own caches in tmp, online (against 127.0.0.1 only), no inherited endpoint settings."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("MAELENS_CACHE", str(tmp_path / "files"))
    return tmp_path


@pytest.fixture
def server(monkeypatch):
    srv = CheckpointServer(lifetime_s=60).start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url(""))
    yield srv
    srv.stop()


def test_models_lists_aliases_sources_licences_and_top1():
    result = run("models")
    assert result.exit_code == 0, result.output
    text = result.output
    for needle in ("mae-base", "mae-base-finetuned", "mae-base-full", "vit-base-supervised",
                   "https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
                   "https://dl.fbaipublicfiles.com/mae/finetune/mae_finetuned_vit_base.pth",
                   "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_base.pth",
                   "facebook/vit-mae-base", "google/vit-base-patch16-224", "83.6", "86.9",
                   "CC-BY-NC 4.0: non-commercial use only", "vit_base_patch16_224: ",
                   "deit_base_patch16_224: fb_in1k"):
        assert needle in text, needle
    line = next(li for li in text.splitlines() if li.startswith("mae-base-finetuned "))
    assert "83.6" in line and line.endswith("mae_finetuned_vit_base.pth")


def test_download_to_a_folder_then_load_offline_from_it(env, server, monkeypatch):
    data, _ = official_pth()
    server.files["/mae_tiny.pth"] = data
    files, _ = timm_repo_files()
    server.repos["acme/vit"] = files
    url = server.url("/mae_tiny.pth")
    shared = env / "shared"
    result = run("download", url, "acme/vit", "--to", shared)
    assert result.exit_code == 0, result.output
    assert f"sha256 {sha256(data)}" in result.output
    assert f"sha256 {sha256(files['model.safetensors'])}" in result.output
    assert f"HF_HUB_CACHE={shared / 'hub'}" in result.output
    assert f"MAELENS_CACHE={shared / 'checkpoints'}" in result.output
    assert (shared / "checkpoints" / "mae_tiny.pth").read_bytes() == data
    assert files_in(env / "files") == [] and files_in(env / "hub") == []
    seen = len(server.requests)
    again = run("download", url, "--to", shared)  # cached: no request
    assert again.exit_code == 0 and len(server.requests) == seen
    server.stop()
    monkeypatch.setenv("HF_HUB_CACHE", str(shared / "hub"))
    monkeypatch.setenv("MAELENS_CACHE", str(shared / "checkpoints"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = run("info", url)
    assert info.exit_code == 0, info.output
    assert f"resolves to {url} -> {shared / 'checkpoints' / 'mae_tiny.pth'}" in info.output
    hub = run("info", "acme/vit")
    assert hub.exit_code == 0, hub.output
    assert f"resolves to hf://acme/vit at commit {COMMIT}" in hub.output
    assert len(server.requests) == seen


def test_info_of_a_local_file_says_so(tmp_path):
    path = save_checkpoint(tiny_model(), tmp_path / "tiny.safetensors")
    result = run("info", path)
    assert result.exit_code == 0, result.output
    assert f"resolves to the local maelens {path}" in result.output


@pytest.mark.parametrize(("args", "needles"), [
    (["download", "facebook/vit--mae"], ["malformed Hub id"]),
    (["download", "vit_base_patch16_224.bogus"], ["unknown timm tag 'bogus'"]),
    (["info", "vit_base_patch16_224.bogus"], ["unknown timm tag 'bogus'"]),
    (["download", "mae-bse"], ["did you mean mae-base"]),
    (["download", "acme/missing"], ["acme/missing not found"]),
    (["download", "./nowhere.pth"], ["does not exist"]),
])
def test_bad_names_exit_2_with_one_line(args, needles, env, server):
    one_line_error(run(*args), *needles)
    assert files_in(env / "files") == [] and files_in(env / "hub") == []


@pytest.mark.parametrize(("path", "body", "needles"), [
    ("/missing.pth", None, ["HTTP 404"]),
    ("/index.pth", b"<html>not a checkpoint</html>", ["is not a checkpoint"]),
])
def test_bad_urls_exit_2_and_cache_nothing(path, body, needles, env, server):
    if body is not None:
        server.files[path] = body
    url = server.url(path)
    one_line_error(run("download", url), url, *needles, "nothing was cached")
    one_line_error(run("info", url), url, *needles)
    assert files_in(env / "files") == []


def test_offline_missing_name_names_the_download_command(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_line_error(run("info", "mae-base"), "mae-base", "maelens download mae-base",
                   "HF_HUB_OFFLINE=1")
    one_line_error(run("download", "facebook/vit-mae-base"), "HF_HUB_OFFLINE=1")
    assert files_in(env / "files") == [] and files_in(env / "hub") == []
