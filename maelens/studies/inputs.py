"""Image sets for the studies: [0, 1] RGB at the model's input size, with labels.

One entry point, `load_image_set(source, ...)`, for every place that takes `--images`:
    "mnist" / "mnist:test" / "mnist:train"   the MNIST demo digits (32 x 32, offline)
    "photos"                                  the natural photos shipped in `skimage.data`
    a folder of class folders                 ImageNet layout (N classes x M images, seeded)
    a flat folder of images                   one unnamed class
The pixels are *not* normalised: the pass engine normalises with the checkpoint's mean/std
after any perturbation, which acts on [0, 1] RGB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from maelens.analyses.base import Batch
from maelens.data import ImageFolderDataset, Preprocess, load_image_folder, mnist_demo
from maelens.data.class_folders import list_class_folders
from maelens.errors import MaelensError

# Photos shipped inside scikit-image (offline; grey ones are replicated to RGB): the seed
# paper's "second image set" stand-in. Others in skimage.data need a download and are left out.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "immunohistochemistry",
          "hubble_deep_field", "retina", "camera", "brick", "grass", "gravel", "moon", "clock")


@dataclass
class ImageSet:
    """pixels (N, 3, S, S) float32 in [0, 1]; labels (N,) int64; names (N,) identifiers."""

    pixels: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    names: list[str]
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pixels)

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None
                ) -> Iterator[Batch]:
        """Batches of images [start, stop) in order; `index` is the data-set position."""
        stop = len(self) if stop is None else stop
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            yield Batch(self.pixels[lo:hi], torch.arange(lo, hi), self.labels[lo:hi])

    def subset(self, rows: np.ndarray | list[int]) -> ImageSet:
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return ImageSet(self.pixels[rows], self.labels[rows], list(self.class_names),
                        [self.names[i] for i in rows.tolist()], self.source)

    def per_class(self, classes: int | None, per_class: int | None) -> ImageSet:
        """The first `classes` classes, `per_class` images each (in data-set order)."""
        chosen: list[int] = []
        for label in range(min(classes or len(self.class_names), len(self.class_names))):
            rows = (self.labels == label).nonzero().flatten().tolist()
            chosen += rows[:per_class] if per_class else rows
        return self.subset(chosen)


def to_unit(crops: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)


def load_image_set(source: str | Path, image_size: int, *, classes: int | None = None,
                   per_class: int | None = None, seed: int = 0, crop_pct: float = 0.875,
                   strict: bool = False) -> ImageSet:
    """Load `source` (see the module docstring) at `image_size` pixels."""
    text = str(source)
    if text.startswith("mnist"):
        return _mnist(text, image_size).per_class(classes, per_class)
    if text == "photos":
        return _photos(image_size, crop_pct)
    path = Path(source)
    if not path.exists():
        raise MaelensError(f"`--images` {path} does not exist; give an image folder, an ImageNet-"
                           "layout folder, 'mnist' or 'photos'.")
    if not path.is_dir():
        raise MaelensError(f"`--images` {path} is not a folder.")
    preprocess = Preprocess(image_size, crop_pct=crop_pct)
    if _has_class_folders(path):
        data = ImageFolderDataset(path, n_classes=classes, per_class=per_class, seed=seed,
                                  preprocess=preprocess, cache=True, strict=strict)
        labeled = data.labeled_images()
        names = [p.relative_to(path).as_posix() for p in data.paths]
        return ImageSet(to_unit(labeled.images), labeled_labels(labeled.labels),
                        list(labeled.class_names), names, str(path),
                        [(str(p), why) for p, why in data.skipped])
    loaded = load_image_folder(path, strict=strict)
    crops = np.stack([preprocess.crop(image) for image in loaded.images])
    return ImageSet(to_unit(crops), torch.zeros(len(crops), dtype=torch.int64), [path.name],
                    [p.relative_to(path).as_posix() for p in loaded.paths], str(path),
                    [(str(p), why) for p, why in loaded.skipped])


def labeled_labels(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())


def _has_class_folders(path: Path) -> bool:
    try:
        return bool(list_class_folders(path))
    except MaelensError:
        return False


def _mnist(text: str, image_size: int) -> ImageSet:
    split = text.partition(":")[2] or "test"
    if split not in ("train", "test", "all"):
        raise MaelensError(f"`--images` {text!r}: the MNIST split must be train, test or all.")
    data = mnist_demo(split)  # type: ignore[arg-type]
    if data.images.shape[1] != image_size:
        raise MaelensError(f"the MNIST demo digits are {data.images.shape[1]} px but the model "
                           f"takes {image_size} px; use a model trained on them (demo:*).")
    names = [f"mnist-{split}[{i}]" for i in range(len(data))]
    return ImageSet(to_unit(data.images), labeled_labels(data.labels), list(data.class_names),
                    names, f"MNIST demo digits ({split})")


def _photos(image_size: int, crop_pct: float) -> ImageSet:
    """The RGB photos of `skimage.data`, resized and centre-cropped like ImageNet images."""
    try:
        import skimage.data as photos
    except ImportError:  # pragma: no cover - scikit-image is a dependency
        raise MaelensError("`--images photos` needs scikit-image (pip install scikit-image).") \
            from None
    preprocess = Preprocess(image_size, crop_pct=crop_pct)
    crops, names = [], []
    for name in PHOTOS:
        image = getattr(photos, name)()
        image = np.asarray(image[0] if isinstance(image, tuple) else image)  # stereo: left
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        crops.append(preprocess.crop(np.ascontiguousarray(image[..., :3]).astype(np.uint8)))
        names.append(name)
    return ImageSet(to_unit(np.stack(crops)), torch.zeros(len(crops), dtype=torch.int64),
                    ["photos"], names, "skimage.data photos")
