"""`maelens extract` and `maelens info` end to end, including every bad-input path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from maelens.checkpoints.native import save_checkpoint
from maelens.cli import app
from maelens.results.io import read_npz_meta
from tests.conftest import tiny_model

runner = CliRunner()


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_model(num_classes=3, pool="avg", fc_norm=True, final_norm=False)
    return save_checkpoint(model, tmp_path / "tiny.safetensors"), model


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 255, (36, 36), dtype=np.uint8)).save(root / "b_gray.png")
    Image.fromarray(rng.integers(0, 255, (33, 40, 4), dtype=np.uint8)).save(root / "c_rgba.png")
    Image.fromarray(rng.integers(0, 65535, (32, 32), dtype=np.uint16)).save(root / "d16.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *needles):
    """Exit 2 and the error as the last line, one line, no traceback (notices of skipped
    files may precede it)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    text = result.output.strip().splitlines()[-1]
    assert text.startswith("error:"), result.output
    for needle in needles:
        assert needle in text, text


def test_extract_folder_writes_every_array_and_skips_unreadable(checkpoint, folder, tmp_path):
    path, model = checkpoint
    out = tmp_path / "acts.npz"
    result = run("extract", "--model", path, "--images", folder, "--out", out)
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "broken.jpg" in result.output
    with np.load(out) as data:
        n, T, D, H, L = 4, 17, 32, 4, 2
        assert data["hidden"].shape == (L + 1, n, T, D)
        assert data["final"].shape == (n, T, D)
        assert data["attn"].shape == (L, n, H, T, T)
        assert data["heads"].shape == (L, n, T, H, D // H)
        assert data["keep"].shape == (n, T - 1)
        assert data["logits"].shape == (n, 3)
        assert data["hidden"].dtype == np.float32
        np.testing.assert_allclose(data["attn"].sum(-1), 1.0, atol=1e-5)
        assert data["hidden_layers"].tolist() == [0, 1, 2]
    meta = read_npz_meta(out)
    assert meta["names"] == ["a.png", "b_gray.png", "c_rgba.png", "d16.png"]
    assert meta["skipped"][0].endswith("broken.jpg")


def test_strict_fails_on_the_unreadable_file_and_writes_nothing(checkpoint, folder, tmp_path):
    out = tmp_path / "acts.npz"
    result = run("extract", "--model", checkpoint[0], "--images", folder, "--out", out, "--strict")
    one_line_error(result, "broken.jpg")
    assert not out.exists() and not list(tmp_path.glob(".acts.npz*"))


def test_extract_npy_with_mask_and_layers_matches_the_model(checkpoint, tmp_path):
    import torch

    path, model = checkpoint
    pixels = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", pixels)
    out = tmp_path / "m.npz"
    result = run("extract", "--model", path, "--images", tmp_path / "x.npy", "--out", out,
                 "--no-preprocess", "--mask-ratio", "0.75", "--seed", "7", "--layers", "-1",
                 "--taps", "hidden,final", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    with np.load(out) as data:
        assert set(data.files) >= {"hidden", "final", "keep", "hidden_layers"}
        assert "attn" not in data.files
        assert data["hidden_layers"].tolist() == [2]
        keep = torch.from_numpy(data["keep"])
        assert keep.shape == (5, 4)
        with torch.inference_mode():
            ref = model(torch.from_numpy(pixels), keep=keep)
        np.testing.assert_allclose(data["final"], ref.final.numpy(), atol=1e-5)


@pytest.mark.parametrize("args, needles", [
    (["--layers", "9"], ["contains 9", "0..2"]),
    (["--layers", "x"], ["--layers"]),
    (["--mask-ratio", "1.0"], ["mask_ratio"]),
    (["--taps", "hidden,colour"], ["colour"]),
    (["--dtype", "int8"], ["--dtype"]),
])
def test_bad_options_are_one_line_errors(checkpoint, folder, tmp_path, args, needles):
    result = run("extract", "--model", checkpoint[0], "--images", folder,
                 "--out", tmp_path / "o.npz", *args)
    one_line_error(result, *needles)


def test_bad_files_are_one_line_errors(checkpoint, folder, tmp_path):
    text = tmp_path / "weights.pth"
    text.write_text("hello")
    one_line_error(run("extract", "--model", text, "--images", folder, "--out",
                       tmp_path / "o.npz"), "weights.pth")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(checkpoint[0].read_bytes()[:500])
    one_line_error(run("info", cut), "cut.safetensors")
    one_line_error(run("extract", "--model", checkpoint[0], "--images", tmp_path / "nope",
                       "--out", tmp_path / "o.npz"), "nope")
    bad = np.zeros((2, 3, 16, 16), np.float32)
    np.save(tmp_path / "small.npy", bad)
    one_line_error(run("extract", "--model", checkpoint[0], "--images", tmp_path / "small.npy",
                       "--out", tmp_path / "o.npz", "--no-preprocess"), "small.npy")
    one_line_error(run("extract", "--model", checkpoint[0], "--images", folder,
                       "--out", tmp_path / "o.txt"), "--out")


def test_info_prints_the_inferred_architecture(checkpoint):
    result = run("info", checkpoint[0])
    assert result.exit_code == 0, result.output
    assert "embed_dim" in result.output and "32" in result.output


def test_output_size_estimate_matches_the_arrays_and_guards_memory(checkpoint, folder, tmp_path,
                                                                    monkeypatch):
    import maelens.studies.extract as ex
    from maelens.studies.extract import ExtractSettings, output_bytes

    path, model = checkpoint
    estimate = output_bytes(model, ExtractSettings(), (32, 32))
    out = tmp_path / "acts.npz"
    assert run("extract", "--model", path, "--images", folder, "--out", out).exit_code == 0
    with np.load(out) as data:
        for name, per_image in estimate.items():
            assert data[name].nbytes == 4 * per_image  # the folder holds 4 readable images
    monkeypatch.setattr(ex, "available_memory", lambda: 10_000)
    one_line_error(run("extract", "--model", path, "--images", folder, "--out",
                       tmp_path / "big.npz"), "KiB", "--taps")
    assert not (tmp_path / "big.npz").exists()
