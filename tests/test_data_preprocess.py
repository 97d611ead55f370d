"""`Preprocess` against independent computations: constants, crop offsets, resize sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maelens.data import Preprocess, denormalize
from maelens.errors import MaelensError
from maelens.model.config import IMAGENET_MEAN, IMAGENET_STD, ViTConfig


def test_constant_image_normalises_to_the_formula():
    image = np.full((40, 50, 3), (12, 128, 250), dtype=np.uint8)
    out = Preprocess(16)(image)
    assert out.shape == (1, 3, 16, 16) and out.dtype == torch.float32
    for channel, value in enumerate((12, 128, 250)):
        expected = np.float32((value / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel])
        assert torch.all(out[0, channel] == torch.tensor(expected))  # exact, not approximate


def test_imagenet_convention_resize_256_crop_224():
    prep = Preprocess(224)
    assert prep.resize_size == 256
    # torchvision Resize(256): shorter side 256, longer int(256 * 400 / 300) = 341.
    assert prep.resized_shape(300, 400) == (256, 341)
    assert prep.resized_shape(400, 300) == (341, 256)
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    assert prep(np.stack([image, image])).shape == (2, 3, 224, 224)


def test_resize_size_floors_like_timm():
    assert Preprocess(32, crop_pct=0.875).resize_size == 36  # 36.57 -> 36
    assert Preprocess(384, crop_pct=1.0).resize_size == 384


@pytest.mark.parametrize(("width", "left"), [(40, 4), (37, 2), (39, 4)])
def test_centre_crop_offsets_follow_torchvision(width, left):
    # Shorter side already 32 with crop_pct 1.0: no resampling, so the crop is read directly.
    # Offsets are round((W - 32) / 2) with Python's round: 2.5 -> 2, 3.5 -> 4.
    columns = np.broadcast_to(np.arange(width, dtype=np.uint8)[None, :, None], (32, width, 3))
    crop = Preprocess(32, crop_pct=1.0).crop(np.ascontiguousarray(columns))
    assert crop.shape == (32, 32, 3)
    np.testing.assert_array_equal(crop[0, :, 0], np.arange(left, left + 32))


def test_vertical_crop_and_list_of_sizes():
    rows = np.broadcast_to(np.arange(44, dtype=np.uint8)[:, None, None], (44, 32, 3))
    prep = Preprocess(32, crop_pct=1.0)
    np.testing.assert_array_equal(prep.crop(np.ascontiguousarray(rows))[:, 0, 0], np.arange(6, 38))
    batch = prep([np.zeros((32, 40, 3), np.uint8), np.zeros((50, 32, 3), np.uint8)])
    assert batch.shape == (2, 3, 32, 32)


def test_bicubic_resize_is_close_to_torch_antialiased_bicubic():
    # An independent resampler: torch's antialiased bicubic matches Pillow up to rounding.
    y, x = np.mgrid[0:64, 0:64]
    smooth = (127 + 100 * np.sin(x / 9.0) * np.cos(y / 7.0)).astype(np.uint8)
    image = np.repeat(smooth[..., None], 3, axis=-1)
    prep = Preprocess(28, crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    ours = prep(image)[0] * 255.0
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    reference = F.interpolate(tensor, size=(28, 28), mode="bicubic", antialias=True)[0]
    assert (ours.double() - reference).abs().max() < 3.0  # pixels, out of 255


def test_denormalize_inverts_normalise():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    prep = Preprocess(16, crop_pct=1.0)
    back = denormalize(prep(image), prep.mean, prep.std)[0]
    expected = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(back, expected, atol=1e-6, rtol=0)
    assert prep.denormalize(torch.full((3, 2, 2), 100.0)).max() == 1.0  # clamped
    with pytest.raises(MaelensError, match=r"\(3, H, W\)"):
        denormalize(torch.zeros(2, 4, 4), prep.mean, prep.std)


def test_from_config_uses_size_mean_std():
    config = ViTConfig(image_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                       mlp_dim=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    prep = Preprocess.from_config(config, crop_pct=1.0)
    assert (prep.size, prep.mean, prep.std, prep.crop_pct) == (32, (0.5,) * 3, (0.25,) * 3, 1.0)
    out = prep(np.full((32, 32, 3), 255, np.uint8))
    assert torch.all(out == 2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"size": 0}, "size"), ({"size": 8, "crop_pct": 0.0}, "crop_pct"),
     ({"size": 8, "crop_pct": 1.2}, "crop_pct"), ({"size": 8, "std": (1, 0, 1)}, "std"),
     ({"size": 8, "mean": (0.5,)}, "mean"), ({"size": 8, "interpolation": "cubic"}, "interp")],
)
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(MaelensError, match=message):
        Preprocess(**kwargs)


@pytest.mark.parametrize(
    ("images", "message"),
    [(np.zeros((8, 8), np.uint8), "gray"), (np.zeros((8, 8, 3), np.float32), "uint8"),
     (np.zeros((8, 8, 4), np.uint8), r"\(H, W, 3\)"), ([], "empty")],
)
def test_bad_images_say_what_was_expected(images, message):
    with pytest.raises(MaelensError, match=message):
        Preprocess(8)(images)
