"""Reading a pre-generated ImageNet-C tree (Hendrycks & Dietterich, 2019) from disk.

Layout: `<root>/<corruption>/<severity>/<class>/<image>`, e.g.
`imagenet-c/gaussian_noise/3/n01440764/ILSVRC2012_val_00000293.JPEG`; the released tar files
unpack per category, so `<root>/<category>/<corruption>/...` (category: noise, blur, weather,
digital, extra) is read as well. The released images are 224 x 224 centre crops of the
ImageNet validation images with the validation file names, so an image is paired with its
clean original by its relative path `<class>/<file>`.

`scan_imagenet_c` lists what is present, which severities are missing and which folders are
not one of the 15 corruptions (e.g. the "extra" ones: speckle_noise, spatter, ...) or not a
severity 1..5. `matching_files` gives, per (corruption, severity), the files of the images of
a clean image set, in its order (what the robustness study feeds its passes from), and
`image_set` loads one (corruption, severity) folder as an `ImageSet` on its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from maelens.data.images import IMAGE_EXTENSIONS
from maelens.errors import MaelensError
from maelens.perturb.corruptions import CORRUPTIONS, SEVERITIES

if TYPE_CHECKING:
    from maelens.studies.inputs import ImageSet

CATEGORIES = ("noise", "blur", "weather", "digital", "extra")


@dataclass
class ImageNetCTree:
    """What an ImageNet-C root holds.

    folders: (corruption, severity) -> folder of class folders; missing: corruption ->
    severities 1..5 absent; unknown: folders (relative to root) that are neither one of the 15
    corruptions, a category folder, nor a severity 1..5.
    """

    root: Path
    folders: dict[tuple[str, int], Path] = field(default_factory=dict)
    missing: dict[str, tuple[int, ...]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    @property
    def corruptions(self) -> tuple[str, ...]:
        """Corruptions present (at least one severity), in the paper's order."""
        present = {c for c, _ in self.folders}
        return tuple(c for c in CORRUPTIONS if c in present)

    def severities(self, corruption: str) -> tuple[int, ...]:
        return tuple(s for s in SEVERITIES if (corruption, s) in self.folders)

    def describe(self) -> list[str]:
        """One line per corruption present, then the missing and unknown folders."""
        lines = []
        for c in self.corruptions:
            gap = f" (missing {','.join(map(str, self.missing[c]))})" if self.missing.get(c) \
                else ""
            lines.append(f"{c}: severities {','.join(map(str, self.severities(c)))}{gap}")
        absent = [c for c in CORRUPTIONS if c not in self.corruptions]
        if absent:
            lines.append(f"corruptions absent: {', '.join(absent)}")
        if self.unknown:
            lines.append(f"ignored folders: {', '.join(self.unknown)}")
        return lines

    def require(self, corruptions: Sequence[str], severities: Sequence[int]) -> None:
        """Raise naming every requested (corruption, severity) that the tree lacks."""
        lacking = [f"{c}/{s}" for c in corruptions for s in severities
                   if (c, s) not in self.folders]
        if lacking:
            shown = ", ".join(lacking[:8]) + (f", ... ({len(lacking)} in all)"
                                              if len(lacking) > 8 else "")
            raise MaelensError(
                f"`--imagenet-c` {self.root} lacks {shown}; fix: choose the corruptions / "
                "severities it holds with `--corruptions` and `--severities`.")


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_imagenet_c(root: str | os.PathLike) -> ImageNetCTree:
    """List the corruptions and severities under `root` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise MaelensError(f"`--imagenet-c` {root} does not exist or is not a folder; give the "
                           "ImageNet-C root (<root>/<corruption>/<severity>/<class>/<image>).")
    tree = ImageNetCTree(root)
    for child in _subfolders(root):
        if child.name in CORRUPTIONS:
            _add_corruption(tree, child)
        elif child.name in CATEGORIES:
            for grandchild in _subfolders(child):
                if grandchild.name in CORRUPTIONS:
                    _add_corruption(tree, grandchild)
                else:
                    tree.unknown.append(grandchild.relative_to(root).as_posix())
        else:
            tree.unknown.append(child.name)
    if not tree.folders:
        raise MaelensError(
            f"`--imagenet-c` {root} holds no ImageNet-C corruption folder; expected "
            f"<root>/<corruption>/<severity>/<class>/<image> with corruptions such as "
            f"gaussian_noise, and severity folders 1..5 (found: "
            f"{', '.join(tree.unknown[:5]) or 'no folders'}).")
    return tree


def _add_corruption(tree: ImageNetCTree, folder: Path) -> None:
    corruption = folder.name
    if any(c == corruption for c, _ in tree.folders):
        raise MaelensError(f"`--imagenet-c` {tree.root} holds {corruption} twice (at the top "
                           "and in a category folder); keep one.")
    for sub in _subfolders(folder):
        if sub.name in {str(s) for s in SEVERITIES}:
            tree.folders[(corruption, int(sub.name))] = sub
        else:
            tree.unknown.append(sub.relative_to(tree.root).as_posix())
    tree.missing[corruption] = tuple(s for s in SEVERITIES
                                     if (corruption, s) not in tree.folders)


def matching_files(tree: ImageNetCTree, corruption: str, severity: int,
                   names: Sequence[str]) -> list[Path]:
    """The corrupted version of every clean image, by relative path `<class>/<file>` (the names
    of an `ImageSet` loaded from an ImageNet-layout folder), in the order of `names`.

    The same file name is looked up first, then the same stem with any image extension (the
    released files keep the validation names; `maelens corrupt` writes PNGs). A missing one
    is named with the fix.
    """
    tree.require([corruption], [severity])
    folder = tree.folders[(corruption, severity)]
    paths, absent = [], []
    for name in names:
        path = _find(folder, name)
        if path is None:
            absent.append(name)
        paths.append(path)
    if absent:
        raise MaelensError(
            f"`--imagenet-c` {folder} has no corrupted version of {len(absent)} of the "
            f"{len(names)} clean images (first: {absent[0]!r}); the clean `--images` must be "
            "the ImageNet validation folder (the same <class>/<file> names as ImageNet-C), with "
            "the same `--classes` / `--per-class` / `--seed` selection.")
    return paths  # type: ignore[return-value]


def _find(folder: Path, name: str) -> Path | None:
    path = folder / name
    if path.is_file():
        return path
    stem = path.with_suffix("")
    for ext in IMAGE_EXTENSIONS:
        for candidate in (stem.with_name(stem.name + ext), stem.with_name(stem.name + ext.upper())):
            if candidate.is_file():
                return candidate
    return None


def image_set(tree: ImageNetCTree, corruption: str, severity: int, image_size: int, *,
              classes: int | None = None, per_class: int | None = None, seed: int = 0
              ) -> ImageSet:
    """One (corruption, severity) folder as an `ImageSet` of its own (no clean pairing):
    crop_pct 1.0, since the files are already centre crops."""
    from maelens.studies.inputs import load_image_set

    tree.require([corruption], [severity])
    return load_image_set(tree.folders[(corruption, severity)], image_size, classes=classes,
                          per_class=per_class, seed=seed, crop_pct=1.0)
