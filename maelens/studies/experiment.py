"""Experiment files: one YAML file says which models, which images, which analyses.

Validated with pydantic; an error names the field and the line of the file it came from
("experiment.yaml line 12, robustness.severities: ..."). Every field has a default, so the
smallest valid file is `models: {mae: demo:mae}`. `maelens init` writes commented templates
(see `maelens.studies.templates`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from maelens.errors import MaelensError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    """A checkpoint (any `load_model` source) and what it cannot state about itself."""

    source: str
    arch: dict[str, Any] = Field(default_factory=dict)


class Models(Strict):
    """Which checkpoint plays which role; any may be left out."""

    mae: ModelSpec | None = None          # pre-trained MAE: layer-wise analyses
    finetuned: ModelSpec | None = None    # fine-tuned MAE: robustness
    vit: ModelSpec | None = None          # supervised ViT: the comparison

    @field_validator("mae", "finetuned", "vit", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value


class Data(Strict):
    images: str = "mnist:test"            # folder, ImageNet layout, mnist[:split], photos
    second_images: str | None = "photos"  # the second image set (attention distance, examples)
    imagenet_c: str | None = None         # an on-disk ImageNet-C tree <corruption>/<sev>/...
    crop_pct: float = Field(0.875, gt=0, le=1)


class Selection(Strict):
    classes: int | None = Field(None, ge=2)
    per_class: int | None = Field(None, ge=1)


class TSNE(Selection):
    classes: int | None = Field(3, ge=2)
    per_class: int | None = Field(30, ge=2)
    perplexity: float = Field(30.0, gt=0)
    iterations: int = Field(750, ge=50)
    patch_tokens: int = Field(2000, ge=10)


class Subspaces(Selection):
    classes: int | None = Field(10, ge=2)
    per_class: int | None = Field(50, ge=2)
    k: int = Field(10, ge=1)
    centred: bool = False


class Attention(Strict):
    cls_policy: Literal["exclude", "raw"] = "exclude"


class Layerwise(Strict):
    enabled: bool = True
    mask_ratio: float = Field(0.75, ge=0, lt=1)
    layers: str = "all"
    tsne: TSNE = TSNE()
    subspaces: Subspaces = Subspaces()
    attention: Attention = Attention()
    separability: Selection = Selection()


class Robustness(Selection):
    enabled: bool = True
    blur: Literal["paper"] | list[tuple[int, float]] = "paper"
    occlusion: list[float] = Field(default_factory=lambda: [10.0 * i for i in range(10)])
    occlusion_fill: Literal["zero", "mean", "noise"] = "zero"
    corruptions: Literal["all"] | list[str] = "all"
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    masks: int = Field(100, ge=2)
    mask_ratio: float = Field(0.75, ge=0, lt=1)
    top_k: int = Field(10, ge=1)
    threshold: float = Field(0.6, gt=0, le=1)
    bootstrap: int = Field(1000, ge=0)


class Theory(Strict):
    enabled: bool = True


class RunSettings(Strict):
    seed: int = 0
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    batch_size: int = Field(64, ge=1)
    workers: int | None = Field(None, ge=0)
    out: str = "out/run"


class Experiment(Strict):
    models: Models
    data: Data = Data()
    layerwise: Layerwise = Layerwise()
    robustness: Robustness = Robustness()
    theory: Theory = Theory()
    run: RunSettings = RunSettings()


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and validate an experiment file; one-line errors name the field and the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MaelensError(f"experiment file {path} does not exist.") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise MaelensError(f"experiment file {path} cannot be read ({type(exc).__name__}).") \
            from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MaelensError(f"{path}{where}: not valid YAML ({problem}).") from None
    if not isinstance(data, dict):
        raise MaelensError(f"{path}: expected a mapping of sections (models:, data:, ...), got "
                           f"{type(data).__name__}.")
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise MaelensError(_first_error(path, exc, _lines(node))) from None


def _first_error(path: Path, exc: ValidationError, lines: dict[tuple, int]) -> str:
    error = exc.errors()[0]
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    field = ".".join(str(part) for part in loc) or "(top level)"
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    where = f" line {line}" if line else ""
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling; `maelens init` lists every field)"
    count = len(exc.errors())
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{path}{where}, {field}: {message}{more}."


def _lines(node: yaml.Node | None, prefix: tuple = ()) -> dict[tuple, int]:
    """{path of keys/indices: 1-based line} for every mapping value and list item."""
    out: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, key.value)
            out[path] = key.start_mark.line + 1
            out.update(_lines(value, path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*prefix, i)] = item.start_mark.line + 1
            out.update(_lines(item, (*prefix, i)))
    return out
