"""Human-readable class names for class folders, e.g. ImageNet WordNet ids -> "tench".

Three file formats are read:
  * a JSON object {"n01440764": "tench", ...};
  * the Keras / timm `imagenet_class_index.json`: {"0": ["n01440764", "tench"], ...};
  * a text file with one `folder_name readable name` per line (the first whitespace separates
    them, the rest of the line is the name), e.g. ImageNet's LOC_synset_mapping.txt.
    Blank lines and lines starting with "#" are ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from maelens.errors import MaelensError


def _from_json(path: Path, data: object) -> dict[str, str]:
    if not isinstance(data, dict):
        raise MaelensError(
            f"class-name file {path}: expected a JSON object mapping folder names to names, "
            f"got a JSON {type(data).__name__}."
        )
    names: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, str):
            names[str(key)] = value
        elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            names[value[0]] = value[1]  # Keras format: index -> [wnid, name]
        else:
            raise MaelensError(
                f"class-name file {path}: entry {key!r} is {value!r}; expected a name string "
                'or a [folder_name, name] pair as in imagenet_class_index.json.'
            )
    return names


def _from_text(path: Path, text: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise MaelensError(
                f"class-name file {path}, line {number}: expected 'folder_name readable name', "
                f"got {line!r}."
            )
        names[parts[0]] = parts[1].strip()
    return names


def read_class_names(source: str | os.PathLike[str] | Mapping[str, str]) -> dict[str, str]:
    """Folder name -> readable class name, from a file (formats above) or a mapping as is."""
    if isinstance(source, Mapping):
        return {str(key): str(value) for key, value in source.items()}
    path = Path(source)
    if not path.is_file():
        raise MaelensError(f"class-name file {path} does not exist (or is not a file).")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MaelensError(f"cannot read class-name file {path}: {exc}.") from exc
    if path.suffix.lower() == ".json":
        try:
            names = _from_json(path, json.loads(text))
        except json.JSONDecodeError as exc:
            raise MaelensError(f"class-name file {path} is not valid JSON: {exc}.") from exc
    else:
        names = _from_text(path, text)
    if not names:
        raise MaelensError(f"class-name file {path} holds no entries.")
    return names
