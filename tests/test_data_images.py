"""Decoding every Pillow mode to uint8 RGB, corrupt files, folder scanning and loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maelens.data import LoadedImages, Preprocess, load_image_folder, read_image, scan_images
from maelens.errors import MaelensError


def _save(image: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kw)
    return path


def _truncated(tmp_path: Path, name: str, fmt: str) -> Path:
    """A valid image file cut to half its bytes."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # noise: no tiny compressed file
    full = _save(Image.fromarray(noise), tmp_path / f"full_{name}", format=fmt)
    data = full.read_bytes()
    full.unlink()
    out = tmp_path / name
    out.write_bytes(data[: len(data) // 2])
    return out


def test_rgb_round_trip_png(tmp_path):
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    out = read_image(_save(Image.fromarray(pixels), tmp_path / "a.png"))
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, pixels)


def test_gray_l_and_bilevel_replicate_the_channel(tmp_path):
    gray = np.array([[0, 77, 255]], dtype=np.uint8)
    out = read_image(_save(Image.fromarray(gray, mode="L"), tmp_path / "g.png"))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=-1))
    bilevel = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1")
    out = read_image(_save(bilevel, tmp_path / "b.png"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 255])
    assert out.shape == (1, 2, 3)


def test_la_and_rgba_are_composited_on_black(tmp_path):
    rgba = np.array([[[200, 100, 50, 128], [10, 20, 30, 0], [1, 2, 3, 255]]], dtype=np.uint8)
    out = read_image(_save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "rgba.png"))
    # rgb * alpha / 255 rounded: 200*128/255 = 100.4 -> 100, 100*128/255 = 50.2 -> 50, ...
    np.testing.assert_array_equal(out[0], [[100, 50, 25], [0, 0, 0], [1, 2, 3]])
    la = np.array([[[255, 51], [90, 255]]], dtype=np.uint8)
    out = read_image(_save(Image.fromarray(la, mode="LA"), tmp_path / "la.png"))
    np.testing.assert_array_equal(out[0], [[51, 51, 51], [90, 90, 90]])


def test_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 128, 255] + [0] * (256 * 3 - 9))
    image.putdata([1, 2])
    out = read_image(_save(image, tmp_path / "p.png"))
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [0, 128, 255]])
    out = read_image(_save(image, tmp_path / "pt.png", transparency=1))  # index 1 transparent
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [0, 128, 255]])


def test_rgb_colour_key_transparency_becomes_black(tmp_path):
    pixels = np.array([[[1, 2, 3], [9, 9, 9]]], dtype=np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "key.png", transparency=(1, 2, 3))
    np.testing.assert_array_equal(read_image(path)[0], [[0, 0, 0], [9, 9, 9]])


def test_cmyk_follows_pillow_conversion(tmp_path):
    image = Image.new("CMYK", (2, 1))
    image.putdata([(0, 0, 0, 0), (0, 255, 255, 0)])  # white, red
    out = read_image(_save(image, tmp_path / "c.jpg", quality=100))
    assert out.shape == (1, 2, 3)
    np.testing.assert_allclose(out[0].astype(int), [[255, 255, 255], [255, 0, 0]], atol=3)


def test_16bit_png_scales_the_full_range(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = read_image(path)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])  # not clipped at 255
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_32bit_int_and_float_tiffs(tmp_path):
    ints = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert ints.mode == "I"
    np.testing.assert_array_equal(read_image(_save(ints, tmp_path / "i.tif"))[0, :, 1], [0, 255])
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    out = read_image(_save(floats, tmp_path / "f.tif"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])


@pytest.mark.parametrize(
    ("name", "values"),
    [("big.tif", np.array([[0, 70000]], dtype=np.int32)),
     ("hot.tif", np.array([[0.0, 2.0]], dtype=np.float32))],
)
def test_out_of_range_deep_images_are_refused(tmp_path, name, values):
    path = _save(Image.fromarray(values), tmp_path / name)
    with pytest.raises(MaelensError, match=name):
        read_image(path)


@pytest.mark.parametrize(("name", "fmt"), [("cut.jpg", "JPEG"), ("cut.png", "PNG")])
def test_truncated_files_raise_naming_the_file(tmp_path, name, fmt):
    with pytest.raises(MaelensError, match=name):
        read_image(_truncated(tmp_path, name, fmt))


def test_text_file_and_missing_file(tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(MaelensError, match="notes.png"):
        read_image(fake)
    with pytest.raises(MaelensError, match="nowhere.png.*does not exist"):
        read_image(tmp_path / "nowhere.png")


def test_scan_images_sorted_filtered_recursive(tmp_path):
    tiny = Image.new("RGB", (2, 2))
    for rel in ("b.PNG", "a.jpg", "sub/c.jpeg", ".hidden.png", ".cache/d.png", "read.txt"):
        if rel.endswith(".txt"):
            (tmp_path / rel).write_text("x")
        else:
            _save(tiny, tmp_path / rel, format="PNG")
    names = [p.relative_to(tmp_path).as_posix() for p in scan_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "sub/c.jpeg"]
    assert [p.name for p in scan_images(tmp_path, recursive=False)] == ["a.jpg", "b.PNG"]


def _mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    _save(Image.new("RGB", (6, 4), (10, 20, 30)), folder / "a.png")
    _save(Image.new("L", (5, 5), 99), folder / "b.jpg")
    _truncated(folder, "c_cut.jpg", "JPEG")
    _truncated(folder, "d_cut.png", "PNG")
    (folder / "e_text.png").write_text("hello")
    return folder


def test_load_image_folder_skips_and_lists_unreadable(tmp_path):
    loaded = load_image_folder(_mixed_folder(tmp_path))
    assert isinstance(loaded, LoadedImages) and len(loaded) == 2
    assert [p.name for p in loaded.paths] == ["a.png", "b.jpg"]
    assert [p.name for p, _ in loaded.skipped] == ["c_cut.jpg", "d_cut.png", "e_text.png"]
    assert all(reason for _, reason in loaded.skipped)
    assert loaded.images[0].shape == (4, 6, 3) and loaded.images[1].shape == (5, 5, 3)
    pixels = loaded.to_tensor(Preprocess(4, crop_pct=1.0))
    assert pixels.shape == (2, 3, 4, 4)


def test_load_image_folder_strict_raises_on_first_bad_file(tmp_path):
    with pytest.raises(MaelensError, match="c_cut.jpg"):
        load_image_folder(_mixed_folder(tmp_path), strict=True)


def test_load_image_folder_empty_or_missing_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(MaelensError, match="empty.*no image files"):
        load_image_folder(empty)
    with pytest.raises(MaelensError, match="missing.*does not exist"):
        load_image_folder(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_text("nope")
    with pytest.raises(MaelensError, match="none of its 1 image files"):
        load_image_folder(broken)
