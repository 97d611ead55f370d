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
from maelens.data import ImageFolderDataset, Preprocess, mnist_demo, read_image, scan_images
from maelens.data.class_folders import list_class_folders
from maelens.data.loader import decode_batches
from maelens.errors import MaelensError

# Photos shipped inside scikit-image (offline; grey ones are replicated to RGB): the seed
# paper's "second image set" stand-in. Others in skimage.data need a download and are left out.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "immunohistochemistry",
          "hubble_deep_field", "retina", "camera", "brick", "grass", "gravel", "moon", "clock")


IN_MEMORY_LIMIT = 5000  # images; 5000 crops at 224 px are ~3 GB as float32


@dataclass
class ImageSet:
    """labels (N,) int64; names (N,) identifiers; and either `pixels` (N, 3, S, S) float32 in
    [0, 1] held in memory, or `paths` decoded batch by batch (large folders) by `workers`
    processes with `preprocess`."""

    pixels: torch.Tensor | None
    labels: torch.Tensor
    class_names: list[str]
    names: list[str]
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    paths: list[Path] | None = None
    preprocess: Preprocess | None = None
    workers: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None,
                pin_memory: bool = False) -> Iterator[Batch]:
        """Batches of images [start, stop) in order; `index` is the data-set position."""
        stop = len(self) if stop is None else stop
        if self.pixels is not None:
            for lo in range(start, stop, batch_size):
                hi = min(lo + batch_size, stop)
                yield Batch(self.pixels[lo:hi], torch.arange(lo, hi), self.labels[lo:hi])
            return
        assert self.paths is not None and self.preprocess is not None
        for decoded in decode_batches(self.paths[:stop], self.preprocess, batch_size,
                                      start=start, workers=self.workers, pin_memory=pin_memory):
            if len(decoded.index):
                yield Batch(to_unit(decoded.crops), decoded.index, self.labels[decoded.index])

    def take(self, rows: list[int]) -> torch.Tensor:
        """(len(rows), 3, S, S) pixels of the given images."""
        if self.pixels is not None:
            return self.pixels[torch.as_tensor(rows, dtype=torch.int64)]
        assert self.paths is not None and self.preprocess is not None
        return to_unit(np.stack([self.preprocess.crop(read_image(self.paths[i])) for i in rows]))

    def subset(self, rows: np.ndarray | list[int]) -> ImageSet:
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        picked = rows_t.tolist()
        return ImageSet(None if self.pixels is None else self.pixels[rows_t], self.labels[rows_t],
                        list(self.class_names), [self.names[i] for i in picked], self.source,
                        paths=None if self.paths is None else [self.paths[i] for i in picked],
                        preprocess=self.preprocess, workers=self.workers)

    def per_class(self, classes: int | None, per_class: int | None) -> ImageSet:
        """The first `classes` classes, `per_class` images each (in data-set order)."""
        chosen: list[int] = []
        for label in range(min(classes or len(self.class_names), len(self.class_names))):
            rows = (self.labels == label).nonzero().flatten().tolist()
            chosen += rows[:per_class] if per_class else rows
        return self.subset(chosen)


def to_unit(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float32 in [0, 1]."""
    crops = torch.as_tensor(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) \
        else crops
    return crops.permute(0, 3, 1, 2).float().div_(255.0)


def load_image_set(source: str | Path, image_size: int, *, classes: int | None = None,
                   per_class: int | None = None, seed: int = 0, crop_pct: float = 0.875,
                   strict: bool = False, workers: int | None = None) -> ImageSet:
    """Load `source` (see the module docstring) at `image_size` pixels.

    Folders are listed here; their images are decoded by `workers` processes (default: from
    the CPU count), all at once when at most IN_MEMORY_LIMIT images, else batch by batch.
    """
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
                                  preprocess=preprocess, cache=False, strict=strict)
        paths, labels, class_names = list(data.paths), data.labels, list(data.class_names)
    else:
        paths = scan_images(path)
        if not paths:
            raise MaelensError(f"image folder {path} contains no image files.")
        labels, class_names = np.zeros(len(paths), dtype=np.int64), [path.name]
    images = ImageSet(None, labeled_labels(labels), class_names,
                      [p.relative_to(path).as_posix() for p in paths], str(path),
                      paths=paths, preprocess=preprocess, workers=workers)
    return _into_memory(images, strict) if len(images) <= IN_MEMORY_LIMIT else images


def _into_memory(images: ImageSet, strict: bool) -> ImageSet:
    """Decode every image now (in parallel); unreadable ones are dropped and listed."""
    assert images.paths is not None and images.preprocess is not None
    crops, kept, skipped = [], [], []
    for batch in decode_batches(images.paths, images.preprocess, 64, workers=images.workers,
                                strict=strict):
        crops.append(batch.crops)
        kept += batch.index.tolist()
        skipped += [(str(images.paths[int(i)]), why) for i, why in batch.skipped]
    if not kept:
        raise MaelensError(f"none of the {len(images)} images of {images.source} could be "
                           f"decoded (first: {skipped[0][0]}: {skipped[0][1]}).")
    out = images.subset(kept)
    out.pixels, out.skipped = to_unit(torch.cat(crops)), skipped
    return out


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
