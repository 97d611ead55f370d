"""`ImageFolderDataset` on a tiny ImageNet-layout tree: selection, names, caching, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maelens.data import ImageFolderDataset, Preprocess, read_class_names
from maelens.errors import MaelensError

WNIDS = {"n01440764": "tench", "n01443537": "goldfish", "n01484850": "great white shark",
         "n01491361": "tiger shark"}
PREP = Preprocess(8, crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))


def _tree(root: Path, per_class: int = 5) -> Path:
    """root/<wnid>/ILSVRC2012_val_<k>.JPEG; image k of class c is the constant 10 * c + k."""
    for c, wnid in enumerate(sorted(WNIDS)):
        (root / wnid).mkdir(parents=True)
        for k in range(per_class):
            value = 10 * c + k
            Image.new("RGB", (10, 8), (value, value, value)).save(
                root / wnid / f"ILSVRC2012_val_{k:08d}.png")
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return _tree(tmp_path / "val")


def test_imagenet_layout_all_classes(tree):
    data = ImageFolderDataset(tree, preprocess=PREP)
    assert len(data) == 20 and data.cached and data.num_classes == 4
    assert data.class_folders == sorted(WNIDS) and data.class_names == sorted(WNIDS)
    np.testing.assert_array_equal(data.labels, np.repeat(np.arange(4), 5))
    pixels, label = data[7]
    assert pixels.shape == (3, 8, 8) and pixels.dtype == torch.float32 and label == 1
    assert torch.all(pixels == np.float32(12 / 255))  # class 1, image 2
    assert data[-1][1] == 3
    stacked, labels = data.as_tensors()
    assert stacked.shape == (20, 3, 8, 8) and labels.tolist() == data.labels.tolist()


def test_text_and_json_class_names(tree, tmp_path):
    text = tmp_path / "LOC_synset_mapping.txt"
    text.write_text("# wnid name\n" + "".join(f"{k} {v}\n" for k, v in WNIDS.items()))
    data = ImageFolderDataset(tree, preprocess=PREP, wnid_names=text)
    assert data.class_names == ["tench", "goldfish", "great white shark", "tiger shark"]
    keras = tmp_path / "imagenet_class_index.json"
    keras.write_text(json.dumps({str(i): [k, v] for i, (k, v) in enumerate(WNIDS.items())}))
    assert read_class_names(keras) == WNIDS
    plain = tmp_path / "names.json"
    plain.write_text(json.dumps(WNIDS))
    assert ImageFolderDataset(tree, preprocess=PREP, wnid_names=plain,
                              classes=["n01491361"]).class_names == ["tiger shark"]


def test_class_name_file_errors(tree, tmp_path):
    partial = tmp_path / "partial.txt"
    partial.write_text("n01440764 tench\n")
    with pytest.raises(MaelensError, match="partial.txt.*'n01443537'"):
        ImageFolderDataset(tree, preprocess=PREP, wnid_names=partial)
    bad = tmp_path / "bad.txt"
    bad.write_text("n01440764 tench\nlonely\n")
    with pytest.raises(MaelensError, match="bad.txt, line 2"):
        read_class_names(bad)
    with pytest.raises(MaelensError, match="not valid JSON"):
        (tmp_path / "x.json").write_text("{oops")
        read_class_names(tmp_path / "x.json")


def test_select_classes_by_name_and_by_count(tree):
    data = ImageFolderDataset(tree, classes=["n01484850", "n01440764"], preprocess=PREP)
    assert data.class_folders == ["n01440764", "n01484850"]  # sorted, labels 0 and 1
    assert set(data.labels.tolist()) == {0, 1} and len(data) == 10
    picks = {tuple(ImageFolderDataset(tree, n_classes=2, seed=s, preprocess=PREP).class_folders)
             for s in range(8)}
    assert len(picks) > 1 and all(list(p) == sorted(p) for p in picks)
    again = ImageFolderDataset(tree, n_classes=2, seed=3, preprocess=PREP).class_folders
    assert again == ImageFolderDataset(tree, n_classes=2, seed=3, preprocess=PREP).class_folders


def test_per_class_subset_is_seeded(tree):
    def names(seed: int) -> list[str]:
        data = ImageFolderDataset(tree, per_class=2, seed=seed, preprocess=PREP)
        assert len(data) == 8 and np.bincount(data.labels).tolist() == [2, 2, 2, 2]
        return [p.relative_to(tree).as_posix() for p in data.paths]

    assert names(0) == names(0)
    assert len({tuple(names(seed)) for seed in range(6)}) > 1
    lazy = ImageFolderDataset(tree, per_class=2, seed=0, preprocess=PREP, cache=False)
    assert [p.relative_to(tree).as_posix() for p in lazy.paths] == names(0)


def test_lazy_and_cached_items_agree(tree):
    cached = ImageFolderDataset(tree, preprocess=PREP, cache=True)
    lazy = ImageFolderDataset(tree, preprocess=PREP, cache_limit=10)  # 20 > 10: no cache
    assert cached.cached and not lazy.cached
    for index in (0, 9, 19):
        torch.testing.assert_close(cached[index][0], lazy[index][0], rtol=0, atol=0)
        assert cached[index][1] == lazy[index][1]
    np.testing.assert_array_equal(lazy.labeled_images().images, cached.labeled_images().images)


def test_unreadable_files_skipped_replaced_or_strict(tree):
    broken = tree / "n01443537" / "ILSVRC2012_val_00000099.png"
    broken.write_text("not a png")
    data = ImageFolderDataset(tree, preprocess=PREP)
    assert len(data) == 20 and [p for p, _ in data.skipped] == [broken]
    assert broken not in data.paths
    with pytest.raises(MaelensError, match="only 5 of its 6"):  # 6 files, 1 broken
        ImageFolderDataset(tree, classes=["n01443537"], per_class=6, preprocess=PREP)
    with pytest.raises(MaelensError, match="val_00000099.png"):
        ImageFolderDataset(tree, preprocess=PREP, strict=True)
    lazy = ImageFolderDataset(tree, preprocess=PREP, cache=False)
    with pytest.raises(MaelensError, match="val_00000099.png"):
        lazy[lazy.paths.index(broken)]


def test_per_class_replaces_a_broken_sample(tree):
    chosen = ImageFolderDataset(tree, per_class=3, seed=5, preprocess=PREP).paths
    victim = chosen[0]
    victim.write_text("broken now")
    again = ImageFolderDataset(tree, per_class=3, seed=5, preprocess=PREP)
    assert len(again) == 12 and victim not in again.paths
    assert [p for p, _ in again.skipped] == [victim]
    assert set(chosen[1:3]) < set(again.paths)  # the others stay


def test_root_and_class_errors(tree, tmp_path):
    with pytest.raises(MaelensError, match="nowhere.*does not exist"):
        ImageFolderDataset(tmp_path / "nowhere")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (4, 4)).save(flat / "a.png")
    with pytest.raises(MaelensError, match="no class sub-folders.*1 image files directly"):
        ImageFolderDataset(flat)
    (tree / "n09999999").mkdir()
    with pytest.raises(MaelensError, match="n09999999 contains no image files"):
        ImageFolderDataset(tree, preprocess=PREP)
    with pytest.raises(MaelensError, match="'n00000000' not found.*'n01440764'"):
        ImageFolderDataset(tree, classes=["n00000000"])
    with pytest.raises(MaelensError, match="not both"):
        ImageFolderDataset(tree, classes=["n01440764"], n_classes=1)
    with pytest.raises(MaelensError, match="only 5 class folders"):
        ImageFolderDataset(tree, n_classes=9)
    with pytest.raises(MaelensError, match="cache_limit"):
        ImageFolderDataset(tree, cache_limit=-1)
    with pytest.raises(MaelensError, match="list of folder names"):
        ImageFolderDataset(tree, classes="n01440764")


def test_per_class_larger_than_a_class(tree):
    (tree / "n01440764" / "ILSVRC2012_val_00000004.png").unlink()
    with pytest.raises(MaelensError) as info:
        ImageFolderDataset(tree, per_class=5, preprocess=PREP)
    message = str(info.value)
    assert "'n01440764' has 4" in message and "per_class`=5" in message and "20 in all" in message
