"""The ImageNet-C tree reader on small trees made here: what is present, missing severities,
unknown folders, category folders, pairing with clean images by name, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maelens.errors import MaelensError
from maelens.studies.imagenet_c import image_set, matching_files, scan_imagenet_c

CLASSES = ("n01", "n02")


def _image(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)


def _tree(root, layout: dict[str, tuple[int, ...]], prefix: str = "") -> None:
    for corruption, severities in layout.items():
        for s in severities:
            for k, cls in enumerate(CLASSES):
                for i in range(2):
                    _image(root / prefix / corruption / str(s) / cls / f"val_{k}{i}.JPEG",
                           seed=100 * s + 10 * k + i)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "imagenet-c"
    _tree(root, {"gaussian_noise": (1, 2, 4, 5), "fog": (1, 2, 3, 4, 5)})
    (root / "gaussian_noise" / "7" / "n01").mkdir(parents=True)  # not a severity
    (root / "notes").mkdir()                                       # not a corruption
    _tree(root, {"speckle_noise": (1,)}, prefix="extra")           # an "extra" corruption
    return root


def test_scan_lists_present_missing_and_unknown(tree):
    found = scan_imagenet_c(tree)
    assert found.corruptions == ("gaussian_noise", "fog")  # the paper's order
    assert found.severities("gaussian_noise") == (1, 2, 4, 5)
    assert found.missing == {"gaussian_noise": (3,), "fog": ()}
    assert sorted(found.unknown) == ["extra/speckle_noise", "gaussian_noise/7", "notes"]
    lines = found.describe()
    assert lines[0] == "gaussian_noise: severities 1,2,4,5 (missing 3)"
    assert lines[1] == "fog: severities 1,2,3,4,5"
    assert "shot_noise" in lines[2] and "notes" in lines[3]


def test_require_names_every_missing_pair(tree):
    found = scan_imagenet_c(tree)
    found.require(["fog"], [1, 5])
    with pytest.raises(MaelensError) as info:
        found.require(["gaussian_noise", "snow"], [3])
    message = str(info.value)
    assert "gaussian_noise/3" in message and "snow/3" in message and "`--severities`" in message


def test_category_folders_are_read_like_the_released_tars(tmp_path):
    root = tmp_path / "c"
    _tree(root, {"gaussian_noise": (1,)}, prefix="noise")
    _tree(root, {"fog": (2,)}, prefix="weather")
    found = scan_imagenet_c(root)
    assert set(found.folders) == {("gaussian_noise", 1), ("fog", 2)}
    assert found.missing["fog"] == (1, 3, 4, 5)


def test_matching_files_pair_clean_names_by_name_then_stem(tree):
    found = scan_imagenet_c(tree)
    names = ["n02/val_11.JPEG", "n01/val_00.JPEG"]
    paths = matching_files(found, "fog", 3, names)
    assert [p.relative_to(tree).as_posix() for p in paths] == [
        "fog/3/n02/val_11.JPEG", "fog/3/n01/val_00.JPEG"]
    # `maelens corrupt` writes PNGs: the stem finds them.
    _image(tree / "fog" / "3" / "n01" / "photo.png", seed=1)
    assert matching_files(found, "fog", 3, ["n01/photo.jpg"])[0].name == "photo.png"
    with pytest.raises(MaelensError, match="no corrupted version of 1 of the 2"):
        matching_files(found, "fog", 3, ["n01/val_00.JPEG", "n01/absent.JPEG"])
    with pytest.raises(MaelensError, match="gaussian_noise/3"):
        matching_files(found, "gaussian_noise", 3, names)


def test_image_set_loads_one_folder_at_the_model_size(tree):
    data = image_set(scan_imagenet_c(tree), "fog", 4, 32, per_class=1, seed=0)
    assert data.pixels.shape == (2, 3, 32, 32) and data.labels.tolist() == [0, 1]
    assert data.class_names == list(CLASSES)
    assert float(data.pixels.min()) >= 0 and float(data.pixels.max()) <= 1


def test_bad_roots(tmp_path):
    with pytest.raises(MaelensError, match="does not exist"):
        scan_imagenet_c(tmp_path / "absent")
    (tmp_path / "empty" / "stuff").mkdir(parents=True)
    with pytest.raises(MaelensError, match="no ImageNet-C corruption folder"):
        scan_imagenet_c(tmp_path / "empty")
    twice = tmp_path / "twice"
    _tree(twice, {"fog": (1,)})
    _tree(twice, {"fog": (2,)}, prefix="weather")
    with pytest.raises(MaelensError, match="twice"):
        scan_imagenet_c(twice)
