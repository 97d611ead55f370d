"""Arguments of the three training commands, as frozen, validated dataclasses.

All fields are keyword-only and have defaults except the output folder (and, for fine-tuning,
the source checkpoint). The defaults are the recipes of the demo models on the MNIST demo split
(see the README); `to_dict` is what the checkpoint metadata records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from maelens._validate import check_ratio
from maelens.errors import MaelensError
from maelens.model.config import PRESETS, ViTConfig
from maelens.train._checks import (
    SAVE_DTYPES,
    check_betas,
    check_choice,
    check_nonneg_float,
    check_nonneg_int,
    check_positive,
)

# Fields that never change the trained weights: a resumed run may differ in these.
RUN_ONLY_FIELDS = frozenset({
    "out_dir", "resume", "progress", "stop_at_step", "checkpoint_every", "device", "save_dtype",
    "evaluate_features", "export_to",
})


@dataclass(frozen=True, kw_only=True)
class TrainArgs:
    """What every training run shares.

    out_dir: folder for the checkpoint (model.safetensors + maelens.json) and the resume state.
    data: "mnist" (the demo digits, train split) or an image folder (class sub-folders, or a
      folder with train/ and val/ or test/ sub-folders). eval_data: held-out data; None means
      the natural test split of `data` ("mnist" test split, or the folder's val/test).
    lr, min_lr: peak and final learning rate of the per-step warm-up + cosine schedule.
    warmup_epochs: linear warm-up from 0, in epochs (fractions allowed).
    clip_grad: max global gradient norm; None or 0 disables clipping.
    augment_shift: random translation by up to this many pixels (edge-replicated padding);
      augment_flip: random horizontal flips (off for digits).
    checkpoint_every: write the resume state every this many steps (0: at epoch ends only).
    stop_at_step: stop after this optimizer step (the schedule still spans all epochs), e.g.
      to split a run into sessions; resume=True continues from the last resume state.
    save_dtype: storage dtype of the final weights ("float16" halves the files).
    export_to: also write the final model there, e.g. "assets/mae.safetensors" (one file with
      the metadata in its header) or a folder; the resume state stays in out_dir.
    """

    out_dir: str
    data: str = "mnist"
    eval_data: str | None = None
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = 1.0
    augment_shift: int = 0
    augment_flip: bool = False
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 100
    stop_at_step: int | None = None
    save_dtype: str = "float32"
    export_to: str | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise MaelensError(f"`out_dir` must be a non-empty path string, got {self.out_dir!r}.")
        if not isinstance(self.data, str) or not self.data:
            raise MaelensError(f"`data` must be 'mnist' or a folder path, got {self.data!r}.")
        check_positive("epochs", self.epochs)
        check_positive("batch_size", self.batch_size)
        check_nonneg_float("lr", self.lr, positive=True)
        check_nonneg_float("min_lr", self.min_lr)
        if self.min_lr > self.lr:
            raise MaelensError(f"`min_lr`={self.min_lr} exceeds `lr`={self.lr}; lower min_lr.")
        check_nonneg_float("warmup_epochs", self.warmup_epochs)
        if self.warmup_epochs > self.epochs:
            raise MaelensError(
                f"`warmup_epochs`={self.warmup_epochs} exceeds `epochs`={self.epochs}."
            )
        check_nonneg_float("weight_decay", self.weight_decay)
        object.__setattr__(self, "betas", check_betas(self.betas))
        if self.clip_grad is not None:
            check_nonneg_float("clip_grad", self.clip_grad)
        check_nonneg_int("augment_shift", self.augment_shift)
        check_nonneg_int("seed", self.seed)
        check_nonneg_int("checkpoint_every", self.checkpoint_every)
        if self.stop_at_step is not None:
            check_positive("stop_at_step", self.stop_at_step)
        check_choice("save_dtype", self.save_dtype, tuple(SAVE_DTYPES))
        if self.export_to is not None and (not isinstance(self.export_to, str)
                                           or not self.export_to):
            raise MaelensError(f"`export_to` must be a path or None, got {self.export_to!r}.")
        if not isinstance(self.device, str):
            raise MaelensError(f"`device` must be a string like 'cpu', got {self.device!r}.")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    def replace(self, **changes: Any) -> TrainArgs:
        return dataclasses.replace(self, **changes)


def _check_overrides(preset_name: str, overrides: dict[str, Any]) -> None:
    if preset_name not in PRESETS:
        raise MaelensError(f"unknown preset {preset_name!r}; choose one of {sorted(PRESETS)}.")
    names = {f.name for f in dataclasses.fields(ViTConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise MaelensError(
            f"`overrides` has unknown config field(s) {unknown}; valid fields: {sorted(names)}."
        )


@dataclass(frozen=True, kw_only=True)
class PretrainArgs(TrainArgs):
    """MAE pre-training. `preset` + `overrides` (ViTConfig fields, e.g. {"patch_size": 2})
    give the architecture; `mask_ratio` the fraction of patches removed; `norm_pix_loss` the
    per-patch standardised target; `evaluate_features`: k-NN and linear-probe accuracy of the
    frozen mean-patch features on the held-out split at the end (when labels exist)."""

    preset: str = "mae_demo"
    overrides: dict[str, Any] = field(default_factory=dict)
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    evaluate_features: bool = True
    epochs: int = 100
    lr: float = 1.5e-3
    warmup_epochs: float = 10.0
    betas: tuple[float, float] = (0.9, 0.95)
    augment_shift: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_overrides(self.preset, self.overrides)
        check_ratio("mask_ratio", self.mask_ratio)


@dataclass(frozen=True, kw_only=True)
class ClassifierArgs(TrainArgs):
    """Shared by fine-tuning and the supervised baseline.

    pool: "avg" (mean patch token + `fc_norm`, no final `norm`: the MAE fine-tuning head) or
      "cls" (CLS token after `norm`). label_smoothing: of the cross-entropy targets.
    drop_path: stochastic-depth rate of the last block (linearly from 0 at the first).
    head_init_std: std of the truncated-normal classifier weights (MAE: 2e-5; bias 0).
    """

    pool: str = "avg"
    label_smoothing: float = 0.1
    drop_path: float = 0.1
    head_init_std: float = 2e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("pool", self.pool, ("avg", "cls"))
        check_ratio("label_smoothing", self.label_smoothing)
        check_ratio("drop_path", self.drop_path)
        check_nonneg_float("head_init_std", self.head_init_std)


@dataclass(frozen=True, kw_only=True)
class FinetuneArgs(ClassifierArgs):
    """Fine-tuning (or linear probing) a pre-trained encoder.

    checkpoint: the pre-trained model (a maelens checkpoint; its decoder is dropped).
    preset: the encoder architecture you expect (None: whatever the checkpoint holds); a
      checkpoint that differs raises an error naming the fields.
    linear_probe: freeze the encoder and train only a BatchNorm (no affine) + linear head on
      the pooled features (the MAE recipe); the BatchNorm is folded into the head when saved.
    layer_decay: layer-wise lr decay (MAE: 0.65-0.75); 1.0 disables it.
    """

    checkpoint: str
    preset: str | None = None
    linear_probe: bool = False
    layer_decay: float = 0.75
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    warmup_epochs: float = 3.0
    augment_shift: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise MaelensError(f"`checkpoint` must be a path, got {self.checkpoint!r}.")
        if self.preset is not None:
            _check_overrides(self.preset, {})
        value = check_nonneg_float("layer_decay", self.layer_decay, positive=True)
        if value > 1.0:
            raise MaelensError(f"`layer_decay` must lie in (0, 1], got {value}; MAE uses 0.75.")


@dataclass(frozen=True, kw_only=True)
class TrainViTArgs(ClassifierArgs):
    """A supervised ViT trained from scratch; `preset` + `overrides` as in `PretrainArgs` (the
    decoder fields are ignored: the model is encoder-only)."""

    preset: str = "mae_demo"
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    warmup_epochs: float = 5.0
    augment_shift: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_overrides(self.preset, self.overrides)


def result_fields(args: TrainArgs) -> dict[str, Any]:
    """The arguments that determine the trained weights (all but `RUN_ONLY_FIELDS`)."""
    return {k: v for k, v in args.to_dict().items() if k not in RUN_ONLY_FIELDS}
