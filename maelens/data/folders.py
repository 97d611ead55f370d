"""`ImageFolderDataset`: labelled images from class folders (ImageNet val layout included).

Items are (pixels (3, S, S) float32, label int). Small selections are decoded, resized and
cropped once and kept in memory as uint8 (4x smaller than float32; normalising on access is
cheap); large ones are decoded on every access.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from maelens.data._seeded import check_seed
from maelens.data.class_folders import (
    ClassFiles,
    class_files,
    list_class_folders,
    pick_classes,
    readable_names,
)
from maelens.data.class_names import read_class_names
from maelens.data.images import read_image
from maelens.data.labeled import LabeledImages
from maelens.data.preprocess import Preprocess
from maelens.errors import MaelensError

log = logging.getLogger(__name__)

DEFAULT_CACHE_LIMIT = 5000  # images; 5000 crops at 224 px are ~750 MB of uint8


class ImageFolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """Class folders under `root` -> (pixels (3, S, S) float32, label) items.

    classes: folder names to use, or None for all (labels follow the sorted folder names);
    n_classes: instead, a seeded random pick of that many classes (sorted); per_class: use M
    images per class, a seeded random sample (same seed, same files; see `class_files`);
    preprocess: defaults to `Preprocess(224)` (ImageNet eval); cache: True, False or "auto"
    (cache when at most `cache_limit` images are selected); strict: raise on the first
    unreadable file instead of skipping it; wnid_names: a class-name file or mapping
    (see `maelens.data.class_names`) for readable `class_names`.

    Unreadable files are skipped (and replaced by the next candidate of the class when
    sampling) only when caching, since decoding happens up front; without a cache they raise
    `MaelensError` on access.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        classes: Sequence[str] | None = None,
        n_classes: int | None = None,
        per_class: int | None = None,
        seed: int = 0,
        preprocess: Preprocess | None = None,
        cache: bool | Literal["auto"] = "auto",
        cache_limit: int = DEFAULT_CACHE_LIMIT,
        strict: bool = False,
        wnid_names: str | os.PathLike[str] | Mapping[str, str] | None = None,
        progress: bool = False,
    ) -> None:
        if cache not in (True, False, "auto"):
            raise MaelensError(f"`cache` must be True, False or 'auto', got {cache!r}.")
        if isinstance(cache_limit, bool) or not isinstance(cache_limit, int) or cache_limit < 0:
            raise MaelensError(f"`cache_limit` must be an int >= 0 (images), got {cache_limit!r}.")
        self.root = Path(root)
        self.seed = check_seed(seed)
        self.preprocess = preprocess if preprocess is not None else Preprocess(224)
        self.strict = strict
        folders = pick_classes(list_class_folders(self.root), self.root, classes, n_classes, seed)
        names = read_class_names(wnid_names) if wnid_names is not None else None
        self.class_folders: list[str] = folders
        source = ("the `wnid_names` mapping" if isinstance(wnid_names, Mapping)
                  else f"class-name file {wnid_names}")
        self.class_names: list[str] = readable_names(folders, names, source)
        selection = class_files(self.root, folders, per_class, self.seed)
        total = sum(per_class or len(group.candidates) for group in selection)
        self.cached = total <= cache_limit if cache == "auto" else bool(cache)
        self.skipped: list[tuple[Path, str]] = []
        self._crops: np.ndarray | None = None
        if self.cached:
            self._decode_all(selection, per_class, total, progress)
        else:
            self._list_only(selection, per_class)

    def _list_only(self, selection: list[ClassFiles], per_class: int | None) -> None:
        paths, labels = [], []
        for label, group in enumerate(selection):
            chosen = sorted(group.candidates[:per_class] if per_class else group.candidates)
            paths += chosen
            labels += [label] * len(chosen)
        self.paths: list[Path] = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    def _decode_all(
        self, selection: list[ClassFiles], per_class: int | None, total: int, progress: bool
    ) -> None:
        bar = tqdm(total=total, desc="decoding images", unit="img", disable=not progress)
        paths, labels, crops = [], [], []
        for label, group in enumerate(selection):
            kept = self._decode_class(group, per_class, bar)
            for path in sorted(kept):
                paths.append(path)
                crops.append(kept[path])
                labels.append(label)
        bar.close()
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self._crops = np.stack(crops)  # (N, S, S, 3) uint8

    def _decode_class(
        self, group: ClassFiles, per_class: int | None, bar: tqdm
    ) -> dict[Path, np.ndarray]:
        """Crops of the first `per_class` (or all) readable candidates of one class."""
        kept: dict[Path, np.ndarray] = {}
        for path in group.candidates:
            if per_class is not None and len(kept) == per_class:
                break
            try:
                kept[path] = self.preprocess.crop(read_image(path))
            except MaelensError as exc:
                if self.strict:
                    raise
                log.warning("skipping unreadable image: %s", exc)
                self.skipped.append((path, str(exc)))
                continue
            bar.update(1)
        n_files = len(group.candidates)
        if not kept:
            raise MaelensError(
                f"class folder {self.root / group.folder}: none of its {n_files} image files "
                "could be decoded; fix: replace the broken files or leave the class out."
            )
        if per_class is not None and len(kept) < per_class:
            raise MaelensError(
                f"class folder {self.root / group.folder}: only {len(kept)} of its {n_files} "
                f"image files are readable, `per_class`={per_class} needs {per_class}; "
                "fix: replace the broken files or lower `per_class`."
            )
        return kept

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """(pixels (3, S, S) float32 normalised, label)."""
        if self._crops is not None:
            pixels = self.preprocess.normalize(self._crops[index][None])[0]
        else:
            pixels = self.preprocess(read_image(self.paths[index]))[0]
        return pixels, int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.class_folders)

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All items at once: pixels (N, 3, S, S) float32 and labels (N,) int64."""
        return self.preprocess.normalize(self._uint8_crops()), torch.from_numpy(self.labels.copy())

    def labeled_images(self) -> LabeledImages:
        """The resized and centre-cropped uint8 images (N, S, S, 3) with labels and names.

        They are already at the model size: convert them with
        `Preprocess(S, crop_pct=1.0, mean=..., std=...)`, which leaves the size unchanged.
        """
        return LabeledImages(self._uint8_crops().copy(), self.labels.copy(), list(self.class_names))

    def _uint8_crops(self) -> np.ndarray:
        if self._crops is not None:
            return self._crops
        return np.stack([self.preprocess.crop(read_image(path)) for path in self.paths])
