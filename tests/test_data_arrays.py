"""`load_array_images`: raw uint8 and preprocessed float .npy files, and their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maelens.data import Preprocess, load_array_images
from maelens.errors import MaelensError
from maelens.model.config import ViTConfig

CONFIG = ViTConfig(image_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_dim=64)


def _npy(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return path


def test_raw_rgb_runs_the_config_preprocess(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    out = load_array_images(_npy(tmp_path, "raw.npy", images), False, CONFIG)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, Preprocess.from_config(CONFIG)(images), rtol=0, atol=0)


def test_raw_gray_becomes_rgb(tmp_path):
    gray = np.full((2, 16, 16), 200, dtype=np.uint8)
    prep = Preprocess(16, crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    out = load_array_images(_npy(tmp_path, "gray.npy", gray), False, CONFIG, preprocess=prep)
    assert out.shape == (2, 3, 16, 16)
    assert torch.all(out == np.float32(200 / 255))


def test_preprocessed_floats_pass_through(tmp_path):
    pixels = np.random.default_rng(1).standard_normal((4, 3, 16, 16)).astype(np.float64)
    out = load_array_images(_npy(tmp_path, "pre.npy", pixels), True, CONFIG)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.from_numpy(pixels.astype(np.float32)))


def test_wrong_size_names_file_expected_and_got(tmp_path):
    path = _npy(tmp_path, "big.npy", np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(MaelensError) as info:
        load_array_images(path, True, CONFIG)
    message = str(info.value)
    assert "big.npy" in message and "(N, 3, 16, 16)" in message and "(2, 3, 32, 32)" in message


@pytest.mark.parametrize(
    ("array", "preprocessed", "message"),
    [(np.zeros((2, 16, 16, 3), np.float32), False, "uint8"),
     (np.zeros((2, 3, 16, 16), np.uint8), False, r"\(N, H, W, 3\)"),
     (np.zeros((2, 16, 16, 3), np.uint8), True, "float32"),
     (np.zeros((2, 16, 16, 3), np.float32), True, r"\(2, 16, 16, 3\)"),
     (np.full((1, 3, 16, 16), np.nan, np.float32), True, "NaN"),
     (np.zeros((0, 16, 16, 3), np.uint8), False, "no images")],
)
def test_bad_arrays_are_explained(tmp_path, array, preprocessed, message):
    path = _npy(tmp_path, "bad.npy", array)
    with pytest.raises(MaelensError, match=message) as info:
        load_array_images(path, preprocessed, CONFIG)
    assert "bad.npy" in str(info.value)


def test_missing_or_corrupt_file(tmp_path):
    with pytest.raises(MaelensError, match="gone.npy.*does not exist"):
        load_array_images(tmp_path / "gone.npy", False, CONFIG)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy at all")
    with pytest.raises(MaelensError, match="junk.npy"):
        load_array_images(junk, False, CONFIG)
    objects = tmp_path / "obj.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MaelensError, match="obj.npy"):
        load_array_images(objects, False, CONFIG)
