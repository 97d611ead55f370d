"""An (m, p) sweep of small trained MAEs: loss, frozen-feature accuracy and Jacobian spread.

For every masking ratio m and patch size p the sweep pre-trains a small MAE with
`maelens.train.pretrain`, scores its frozen mean-patch features on the held-out split (k-NN and
linear probe), and averages the reconstruction Jacobian over a few held-out images under masks
at the training ratio (`maelens.studies.jacobian`). Layout under `out_dir`:

    m0.50_p4/model/       checkpoint and resume state of that point's training run
    m0.50_p4/point.json   the point's record (written last: its presence means "done")
    sweep.json            all finished points, rewritten after each point

Re-running skips points whose point.json matches the settings, and resumes interrupted
training (the loop's resume state), so a killed sweep continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maelens._validate import check_positive_int, check_ratio
from maelens.errors import MaelensError
from maelens.model.config import PRESETS, ViTConfig, preset
from maelens.results.io import write_json
from maelens.studies.jacobian import average_jacobian

log = logging.getLogger(__name__)

# Small enough for a CPU sweep (~0.1 M parameters); width 64, 3 encoder blocks, 1 decoder block.
SMALL_MAE: dict[str, Any] = {
    "embed_dim": 64, "depth": 3, "num_heads": 2, "mlp_dim": 256, "decoder_embed_dim": 64,
    "decoder_depth": 1, "decoder_num_heads": 2, "decoder_mlp_dim": 256,
}
POINT_FILE = "point.json"
SWEEP_FILE = "sweep.json"
# Settings that do not change a point's numbers: a re-run may differ in these.
RUN_ONLY = ("out_dir", "mask_ratios", "patch_sizes", "device", "progress")


@dataclass(frozen=True, kw_only=True)
class SweepSettings:
    """What to train and measure. Sizes in pixels; ratios in [0, 1).

    overrides: ViTConfig fields on top of `preset` (patch_size is set per point);
    epochs / batch_size / lr / warmup_epochs: the pre-training recipe (see `PretrainArgs`);
    jacobian_images: held-out images whose Jacobians are averaged (one mask each, at the
    point's training ratio); output_pixels: Jacobian rows per image (None: all H·W).
    """

    out_dir: str
    mask_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    patch_sizes: tuple[int, ...] = (4, 8)
    preset: str = "mae_demo"
    overrides: dict[str, Any] = field(default_factory=lambda: dict(SMALL_MAE))
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1.5e-3
    warmup_epochs: float = 0.5
    seed: int = 0
    jacobian_images: int = 4
    output_pixels: int | None = None
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise MaelensError(f"`out_dir` must be a non-empty path, got {self.out_dir!r}.")
        if self.preset not in PRESETS:
            raise MaelensError(f"unknown `preset` {self.preset!r}; choose one of "
                               f"{sorted(PRESETS)}.")
        object.__setattr__(self, "mask_ratios", _ratios(self.mask_ratios))
        unknown = sorted(set(self.overrides) - {f.name for f in dataclasses.fields(ViTConfig)})
        if unknown:
            raise MaelensError(f"`overrides` has unknown ViTConfig field(s) {unknown}.")
        size = preset(self.preset, **{**self.overrides, "patch_size": 1}).image_size
        object.__setattr__(self, "patch_sizes", _patches(self.patch_sizes, size))
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("jacobian_images", self.jacobian_images)
        if self.output_pixels is not None:
            check_positive_int("output_pixels", self.output_pixels)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["mask_ratios"], out["patch_sizes"] = list(self.mask_ratios), list(self.patch_sizes)
        return out

    def point_key(self, mask_ratio: float, patch_size: int) -> dict[str, Any]:
        """Everything that determines one point's numbers (compared on re-runs)."""
        fixed = {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY}
        return json.loads(json.dumps({**fixed, "mask_ratio": mask_ratio,
                                      "patch_size": patch_size}))


def _ratios(values: Sequence[float]) -> tuple[float, ...]:
    ratios = tuple(check_ratio("mask_ratios", v) for v in values)
    if not ratios or len(set(ratios)) != len(ratios):
        raise MaelensError(f"`mask_ratios` must list distinct ratios in [0, 1), got {values!r}.")
    return ratios


def _patches(values: Sequence[int], image_size: int) -> tuple[int, ...]:
    patches = tuple(check_positive_int("patch_sizes", v) for v in values)
    bad = [p for p in patches if image_size % p]
    if bad or not patches or len(set(patches)) != len(patches):
        raise MaelensError(
            f"`patch_sizes` must list distinct divisors of the {image_size}-pixel image side, "
            f"got {list(values)!r}. Fix: choose from "
            f"{[p for p in range(1, image_size + 1) if image_size % p == 0]}."
        )
    return patches


@dataclass
class SweepPoint:
    """One trained MAE. Accuracies are fractions of the held-out split; losses are the
    masked-patch MSE in normalised pixel units (last epoch's mean); times in seconds;
    Jacobian spread as `JacobianSpread` (pixels, nats, fractions; profile: mean |J| of
    masked outputs by distance)."""

    mask_ratio: float
    patch_size: int
    final_loss: float
    steps: int
    knn_accuracy: float
    linear_probe_accuracy: float
    mean_distance_px: float
    spatial_entropy: float
    out_of_patch_mass: float
    decay_length_px: float
    effective_rank: float
    participation_ratio: float
    profile: dict[str, Any]
    train_s: float
    jacobian_s: float
    wall_s: float
    checkpoint: str
    key: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPoint:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SweepResult:
    """settings (SweepSettings.to_dict()) and the finished points, in grid order (p, then m)."""

    settings: dict[str, Any]
    points: list[SweepPoint]

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "points": [p.to_dict() for p in self.points]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepResult:
        return cls(data["settings"], [SweepPoint.from_dict(p) for p in data["points"]])

    def table(self, metric: str) -> dict[int, dict[float, float]]:
        """{patch_size: {mask_ratio: value}} of one SweepPoint field."""
        out: dict[int, dict[float, float]] = {}
        for point in self.points:
            out.setdefault(point.patch_size, {})[point.mask_ratio] = getattr(point, metric)
        return out


def point_dir(out_dir: str | Path, mask_ratio: float, patch_size: int) -> Path:
    return Path(out_dir) / f"m{mask_ratio:.2f}_p{patch_size}"


def run_sweep(
    settings: SweepSettings,
    *,
    data: Any | None = None,
    eval_data: Any | None = None,
    on_point: Callable[[SweepPoint, bool], None] | None = None,
) -> SweepResult:
    """Train and measure every (m, p) of `settings`; write point.json files and sweep.json.

    data / eval_data: in-memory `maelens.train.TrainData` (default: the MNIST demo train and
    test splits). on_point(point, reused) is called after each point (reused: loaded from an
    earlier run, not retrained).
    """
    from maelens.train import load_eval_data, load_training_data

    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = preset(settings.preset, **settings.overrides)
    if data is None:
        data = load_training_data("mnist", "train", config.image_size)
    if eval_data is None:
        eval_data = load_eval_data("mnist", None, config.replace(mean=data.mean, std=data.std))
    points = []
    for patch in settings.patch_sizes:
        for ratio in settings.mask_ratios:
            point, reused = _load_point(settings, ratio, patch)
            if point is None:
                point = _train_point(settings, ratio, patch, data, eval_data)
            points.append(point)
            result = SweepResult(settings.to_dict(), points)
            write_json(out / SWEEP_FILE, result.to_dict())
            if on_point is not None:
                on_point(point, reused)
    return SweepResult(settings.to_dict(), points)


def _load_point(settings: SweepSettings, ratio: float, patch: int
                ) -> tuple[SweepPoint | None, bool]:
    path = point_dir(settings.out_dir, ratio, patch) / POINT_FILE
    if not path.exists():
        return None, False
    point = SweepPoint.from_dict(json.loads(path.read_text()))
    if point.key != settings.point_key(ratio, patch):
        raise MaelensError(
            f"{path} was produced with other settings than this sweep's; expected "
            f"{settings.point_key(ratio, patch)}, got {point.key}. Fix: use another `out_dir`, "
            "or delete that point's folder to retrain it."
        )
    log.info("reusing finished point m=%g p=%d from %s", ratio, patch, path)
    return point, True


def _train_point(settings: SweepSettings, ratio: float, patch: int, data: Any, eval_data: Any
                 ) -> SweepPoint:
    from maelens.checkpoints.load import load_model
    from maelens.train import PretrainArgs, pretrain

    started = time.perf_counter()
    folder = point_dir(settings.out_dir, ratio, patch)
    args = PretrainArgs(
        out_dir=str(folder / "model"), preset=settings.preset,
        overrides={**settings.overrides, "patch_size": patch}, mask_ratio=ratio,
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
        warmup_epochs=settings.warmup_epochs, seed=settings.seed, device=settings.device,
        progress=settings.progress, resume=True,  # continue a run that was interrupted
    )
    trained = pretrain(args, data=data, eval_data=eval_data)
    model = load_model(str(trained.checkpoint), device=settings.device)
    jac_started = time.perf_counter()
    spread = _jacobian_spread(model, settings, ratio, eval_data.images)
    point = SweepPoint(
        mask_ratio=ratio, patch_size=patch, final_loss=trained.final_loss, steps=trained.steps,
        knn_accuracy=trained.metrics.get("knn_accuracy", float("nan")),
        linear_probe_accuracy=trained.metrics.get("linear_probe_accuracy", float("nan")),
        **{k: v for k, v in spread.items() if k != "n_samples"},
        train_s=trained.elapsed_s, jacobian_s=time.perf_counter() - jac_started,
        wall_s=time.perf_counter() - started, checkpoint=str(trained.checkpoint),
        key=settings.point_key(ratio, patch),
    )
    write_json(folder / POINT_FILE, point.to_dict())
    log.info("m=%g p=%d: %s", ratio, patch, point.to_dict())
    return point


def _jacobian_spread(model: Any, settings: SweepSettings, ratio: float,
                     images: torch.Tensor) -> dict[str, float]:
    """Spread of the Jacobian averaged over `jacobian_images` held-out images chosen with the
    seed, one mask each at the training ratio."""
    n = min(settings.jacobian_images, len(images))
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(settings.seed))
    average = average_jacobian(model, images[chosen[:n]], mask_ratio=ratio, seed=settings.seed,
                               output_pixels=settings.output_pixels)
    return average.spread().to_dict()


def read_sweep(path: str | Path) -> SweepResult:
    """A sweep.json (or the folder holding it) back as a `SweepResult`."""
    path = Path(path)
    path = path / SWEEP_FILE if path.is_dir() else path
    if not path.is_file():
        raise MaelensError(f"no sweep results at {path}; run the sweep first.")
    return SweepResult.from_dict(json.loads(path.read_text()))


def plot_sweep(sweep: SweepResult | dict, path: str | Path, metrics: Sequence[str],
               predicted: dict[int, dict[float, float]] | None = None) -> Path:
    """One panel per SweepPoint field in `metrics`: value against m, one line per patch size.

    predicted: {patch_size: {mask_ratio: value}} of the linear theory (e.g. the predicted W*
    spread), drawn first in a panel of its own with the same colour per patch size.
    """
    from matplotlib.figure import Figure

    result = SweepResult.from_dict(sweep) if isinstance(sweep, dict) else sweep
    panels = [("linear theory: W* spread (px)", predicted)] if predicted else []
    panels += [(metric.replace("_", " "), result.table(metric)) for metric in metrics]
    fig = Figure(figsize=(3.6 * len(panels), 3.2))
    patches = sorted({q.patch_size for q in result.points} | set(predicted or {}))
    colours = {p: f"C{i}" for i, p in enumerate(patches)}
    for index, (title, table) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        for patch, values in sorted(table.items()):
            ratios = sorted(values)
            ax.plot(ratios, [values[m] for m in ratios], marker="o", color=colours[patch],
                    ls="--" if predicted and index == 0 else "-", label=f"p={patch}")
        ax.set_xlabel("masking ratio m")
        ax.set_title(title if predicted and index == 0 else f"trained: {title}", fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_measured_profiles(sweep: SweepResult | dict, path: str | Path) -> Path:
    """Mean |J| of masked outputs against distance (log scale, each normalised to its largest
    bin). Distance 0 is left out: a masked output's own pixel is never visible."""
    from matplotlib.figure import Figure

    result = SweepResult.from_dict(sweep) if isinstance(sweep, dict) else sweep
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    styles = {p: ls for p, ls in zip(sorted({q.patch_size for q in result.points}),
                                     ("-", "--", ":", "-."), strict=False)}
    for point in result.points:
        distance = np.asarray(point.profile["distance_px"], dtype=np.float64)
        values = np.asarray(point.profile["mean_abs"], dtype=np.float64)
        far = (distance > 0) & (values > 0)
        ax.semilogy(distance[far], values[far] / values[far].max(),
                    ls=styles.get(point.patch_size, "-"),
                    label=f"m={point.mask_ratio:g}, p={point.patch_size} "
                          f"(decay {point.decay_length_px:.1f} px)")
    ax.set_xlabel("distance from masked output pixel (px)")
    ax.set_ylabel("mean |∂x̂/∂x| / largest bin")
    ax.legend(fontsize=6)
    return _save(fig, path)


def plot_adaptive_basis(example: dict, path: str | Path) -> Path:
    """The image (masked patches in blue), then the top input singular vectors of its Jacobian
    (`AdaptiveBasis.to_dict(vectors=True)` plus "image" and "visible" (H, W), "mask_ratio",
    "patch_size"), then the singular values."""
    import matplotlib
    from matplotlib.figure import Figure

    vectors = example["input_vectors"]
    values = example["singular_values"]
    n = len(vectors)
    fig = Figure(figsize=(1.6 * (n + 2), 2.2))
    ax = fig.add_subplot(1, n + 2, 1)
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="#6fa8dc")  # masked patches: blue
    visible = np.asarray(example["visible"], dtype=bool)
    ax.imshow(np.ma.masked_where(~visible, np.asarray(example["image"])), cmap=cmap)
    ax.set_title(f"input, m={example['mask_ratio']:g}\np={example['patch_size']}", fontsize=7)
    for index, vector in enumerate(vectors):
        ax = fig.add_subplot(1, n + 2, index + 2)
        limit = max(abs(min(map(min, vector))), abs(max(map(max, vector)))) or 1.0
        ax.imshow(vector, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"v{index + 1}: σ={values[index]:.2g}\n"
                     f"extent {example['extent_px'][index]:.1f} px", fontsize=7)
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(1, n + 2, n + 2)
    ax.semilogy(range(1, len(values) + 1), [max(v, 1e-12) for v in values])
    ax.set_title(f"singular values\neff. rank {example['effective_rank']:.0f}", fontsize=7)
    ax.tick_params(labelsize=6)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
