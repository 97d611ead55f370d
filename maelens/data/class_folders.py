"""Which classes and files of a class-folder tree to use (no decoding here).

Layout: `root/<class folder>/**/<image>`, any folder names; the ImageNet validation layout
(`val/n01440764/ILSVRC2012_val_00000293.JPEG`) works as is. Hidden folders are not classes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maelens._validate import check_positive_int
from maelens.data._seeded import seeded_order, seeded_sample
from maelens.data.images import IMAGE_EXTENSIONS, scan_images
from maelens.errors import MaelensError


@dataclass(frozen=True)
class ClassFiles:
    """One selected class: its folder name and its candidate files in selection order."""

    folder: str
    candidates: list[Path]  # seeded random order when sampling, else sorted


def _few(names: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(repr(name) for name in names[:k])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > k else shown


def list_class_folders(root: str | os.PathLike[str]) -> list[str]:
    """Sorted names of the non-hidden sub-folders of `root` (symbolic links followed)."""
    root = Path(root)
    if not root.is_dir():
        raise MaelensError(f"class-folder root {root} does not exist (or is not a folder).")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = len(scan_images(root, recursive=False))
        hint = (f"it holds {loose} image files directly; use `load_image_folder` for unlabeled "
                "images or move them into one folder per class") if loose else \
            "fix: point to the folder whose sub-folders are the classes"
        raise MaelensError(
            f"class-folder root {root} has no class sub-folders; expected one folder per class "
            f"(e.g. ImageNet val: {root}/n01440764/*.JPEG); {hint}."
        )
    return folders


def pick_classes(
    available: list[str], root: Path, classes: Sequence[str] | None, n_classes: int | None,
    seed: int,
) -> list[str]:
    """The selected class folders, sorted: all, the named ones, or `n_classes` seeded at random."""
    if classes is not None and n_classes is not None:
        raise MaelensError(
            "give either `classes` (folder names) or `n_classes` (a count), not both."
        )
    if classes is not None:
        if isinstance(classes, str):
            raise MaelensError(
                f"`classes` must be a list of folder names, got the string {classes!r}; "
                f"fix: classes=[{classes!r}]."
            )
        wanted = [str(name) for name in classes]
        if not wanted or len(set(wanted)) != len(wanted):
            raise MaelensError(f"`classes` must list distinct folder names, got {wanted}.")
        missing = [name for name in wanted if name not in set(available)]
        if missing:
            raise MaelensError(
                f"class {missing[0]!r} not found under {root}; valid class folders include "
                f"{_few(available)}."
            )
        return sorted(wanted)
    if n_classes is None:
        return list(available)
    n_classes = check_positive_int("n_classes", n_classes)
    if n_classes > len(available):
        raise MaelensError(
            f"`n_classes`={n_classes} but {root} has only {len(available)} class folders."
        )
    return seeded_sample(available, n_classes, seed, salt="classes")


def class_files(
    root: Path, folders: list[str], per_class: int | None, seed: int
) -> list[ClassFiles]:
    """Candidate files per selected class; checks that each class has enough images.

    With `per_class` the candidates are in seeded random order (the first `per_class` readable
    ones are used); an image's rank depends only on (seed, class, file name), so adding files
    to a folder never reshuffles the others.
    """
    if per_class is not None:
        per_class = check_positive_int("per_class", per_class)
    out, short = [], []
    for folder in folders:
        files = scan_images(root / folder)
        if not files:
            raise MaelensError(
                f"class folder {root / folder} contains no image files (expected extensions: "
                f"{', '.join(IMAGE_EXTENSIONS)}); fix: add images or remove the folder."
            )
        if per_class is not None and len(files) < per_class:
            short.append(f"{folder!r} has {len(files)}")
        if per_class is not None:
            by_name = {path.relative_to(root / folder).as_posix(): path for path in files}
            files = [by_name[name] for name in seeded_order(by_name, seed, salt=folder)]
        out.append(ClassFiles(folder, files))
    if short:
        raise MaelensError(
            f"`per_class`={per_class} asks for {per_class} images in each of {len(folders)} "
            f"classes ({per_class * len(folders)} in all), but class {', '.join(short[:5])}"
            f"{' ...' if len(short) > 5 else ''} under {root}; fix: lower `per_class` or drop "
            "those classes."
        )
    return out


def readable_names(
    folders: list[str], names: dict[str, str] | None, source: object
) -> list[str]:
    """Readable class names for `folders` (the folder names themselves without a mapping)."""
    if names is None:
        return list(folders)
    missing = [folder for folder in folders if folder not in names]
    if missing:
        raise MaelensError(
            f"{source} has no class name for folder {missing[0]!r} "
            f"({len(missing)} of {len(folders)} missing); fix: add it or pass the matching file."
        )
    return [names[folder] for folder in folders]
