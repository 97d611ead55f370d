"""Parallel decoding: worker processes change nothing but the speed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maelens.data.loader import decode_batches
from maelens.data.preprocess import Preprocess
from maelens.errors import MaelensError
from maelens.studies import inputs
from maelens.studies.inputs import load_image_set


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            image = (rng.random((40 + 7 * i, 50, 3)) * 255).astype(np.uint8)
            Image.fromarray(image).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "9_broken.png").write_bytes(b"not an image")
    return tmp_path


def test_workers_keep_order_pixels_and_indices(folder):
    paths = sorted(folder.rglob("*.png"))
    runs = [list(decode_batches(paths, Preprocess(32), 3, workers=w)) for w in (0, 2)]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a.crops, b.crops) and torch.equal(a.index, b.index)
    index = torch.cat([batch.index for batch in runs[0]]).tolist()
    broken = [str(p) for p in paths].index(str(folder / "cat" / "9_broken.png"))
    assert index == [i for i in range(len(paths)) if i != broken]  # absent, not shifted
    direct = Preprocess(32).crop(np.asarray(Image.open(paths[0]).convert("RGB")))
    assert np.array_equal(runs[0][0].crops[0].numpy(), direct)


def test_strict_decoding_names_the_file(folder):
    paths = sorted(folder.rglob("*.png"))
    with pytest.raises(MaelensError, match="9_broken.png"):
        list(decode_batches(paths, Preprocess(32), 4, workers=0, strict=True))
    with pytest.raises(MaelensError, match="workers"):
        list(decode_batches(paths, Preprocess(32), 4, workers=-1))


def test_streamed_and_in_memory_sets_give_the_same_batches(folder, monkeypatch):
    memory = load_image_set(folder, 32, workers=0)
    assert len(memory) == 10 and len(memory.skipped) == 1 and memory.pixels is not None
    monkeypatch.setattr(inputs, "IN_MEMORY_LIMIT", 4)
    streamed = load_image_set(folder, 32, workers=1)
    assert streamed.pixels is None and len(streamed) == 11
    got = {int(i): px for b in streamed.batches(4) for i, px in zip(b.index, b.pixels,
                                                                    strict=True)}
    assert len(got) == 10
    by_name = dict(zip(memory.names, memory.pixels, strict=True))
    for i, pixels in got.items():
        assert torch.equal(pixels, by_name[streamed.names[i]])
