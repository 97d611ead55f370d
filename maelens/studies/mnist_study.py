"""The end-to-end theory run on the MNIST demo digits: prediction, trained sweep, figures, summary.

1. `predict_mnist`: the grey 32x32 covariance of the train split, the data's correlation length,
   the linear-MAE prediction over an (m, p) grid (`predict_grid`), the recommendation, and, at a
   few (m, p), influence profiles of W*, boundary emphasis of the rank-k encoder and the
   spectra of M = Σ Q⁻¹ Σ  -> prediction.json.
2. `run_sweep` (maelens.studies.theory_sweep): small MAEs trained per (m, p)  -> sweep.json.
3. `basis_example`: the Jacobian of one held-out digit under one trained MAE, its SVD
   (the adaptive basis)  -> jacobian_example.json.
4. `render_study`: every PNG and summary.md, from those JSON files only.

Two covariances on purpose: the correlation length is estimated without the ridge (the ridge
makes MNIST's constant border pixels look like uncorrelated live pixels and halves the
estimate), while the closed form needs the ridge (Q must be positive definite).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from maelens._validate import check_positive_int, check_ratio
from maelens.atomic import atomic_write
from maelens.errors import MaelensError
from maelens.report.theory_figures import (
    plot_boundary_emphasis,
    plot_eigen_spectra,
    plot_influence_profiles,
    plot_spread_heatmap,
)
from maelens.results.io import write_json
from maelens.studies.theory_sweep import (
    SweepResult,
    SweepSettings,
    plot_adaptive_basis,
    plot_measured_profiles,
    plot_sweep,
    run_sweep,
)
from maelens.theory.closed_form import full_rank_optimum, linear_mae_optimum, mae_spectrum
from maelens.theory.covariance import empirical_covariance
from maelens.theory.partition import tiles_2d
from maelens.theory.predict import GRID_METRICS, SpreadGrid, predict_grid, recommend
from maelens.theory.spatial import (
    boundary_emphasis,
    correlation_length,
    influence_profile,
    pixel_distances,
)

log = logging.getLogger(__name__)

PREDICTION_FILE = "prediction.json"
SWEEP_COPY = "sweep.json"
EXAMPLE_FILE = "jacobian_example.json"
REFERENCE_FILE = "reference.json"
IMAGE_SIDE = 32  # the MNIST demo digits are 32x32


@dataclass(frozen=True, kw_only=True)
class StudySettings:
    """The linear-theory side of the study (the trained side is a `SweepSettings`).

    mask_ratios, patch_sizes: the predicted grid; rank: k of the rank-k optimum (boundary
    emphasis, spectra); ridge: added as ridge · mean(diag Σ) · I for the closed form; scheme:
    "fixed" (MAE code: exactly int(N(1-m)) patches kept) or "bernoulli"; detail_patch: the
    patch size whose influence profiles / boundary emphasis / spectra are drawn at
    detail_ratios.
    """

    mask_ratios: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    patch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    rank: int = 32
    ridge: float = 1e-2
    scheme: str = "fixed"
    detail_patch: int = 4
    detail_ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9)

    def __post_init__(self) -> None:
        for name in ("mask_ratios", "detail_ratios"):
            values = tuple(check_ratio(name, m) for m in getattr(self, name))
            if not values:
                raise MaelensError(f"`{name}` must list at least one ratio in [0, 1).")
            object.__setattr__(self, name, values)
        for p in (*self.patch_sizes, self.detail_patch):
            name = "patch_sizes" if p in self.patch_sizes else "detail_patch"
            if IMAGE_SIDE % check_positive_int(name, p):
                raise MaelensError(
                    f"`{name}` must divide the {IMAGE_SIDE}-pixel image side, got {p}. "
                    "Fix: choose from 1, 2, 4, 8, 16.")
        object.__setattr__(self, "patch_sizes", tuple(int(p) for p in self.patch_sizes))
        if self.scheme not in ("fixed", "bernoulli"):
            raise MaelensError(f'`scheme` must be "fixed" or "bernoulli", got {self.scheme!r}.')
        if not self.ridge >= 0:
            raise MaelensError(f"`ridge` must be >= 0, got {self.ridge}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def predict_mnist(settings: StudySettings, images: np.ndarray | None = None) -> dict[str, Any]:
    """Everything the linear theory says about the digits (JSON-ready, see module).

    images: (N, H, W, C) uint8 or float in [0, 1] (default: the MNIST demo train split).
    """
    if images is None:
        from maelens.data import mnist_demo

        images = mnist_demo("train").images
    raw = empirical_covariance(images, gray=True)
    shape = raw.image_shape  # (H, W, 1)
    coords = tiles_2d(shape[0], shape[1], 1).coords
    length = correlation_length(raw.covariance, coords)
    ridged = empirical_covariance(images, gray=True, ridge=settings.ridge)
    sigma = ridged.covariance
    with threadpool_limits(1, user_api="blas"):  # see maelens.studies.jacobian.adaptive_basis
        grid = predict_grid(sigma, shape, settings.mask_ratios, settings.patch_sizes,
                            settings.rank, scheme=settings.scheme)
        details = _details(sigma, shape, settings)
    ridged_length = grid.correlation_length_px
    grid.correlation_length_px = (length.e_folding_px if np.isfinite(length.e_folding_px)
                                  else length.fitted_px)
    advice = recommend(_masked_only(grid))
    return {
        "settings": settings.to_dict(),
        "covariance": {"n_samples": raw.n_samples, "image_shape": list(shape),
                       "units": "grey pixel values in [0, 1]", "ridge": settings.ridge},
        "correlation_length": length.to_dict(),
        "correlation_length_with_ridge_px": ridged_length,
        "grid": grid.to_dict(),
        "recommendation": advice.to_dict(),
        **details,
    }


def _masked_only(grid: SpreadGrid) -> SpreadGrid:
    """The grid without m = 0 (a plain autoencoder, spread 0): the recommendation is for an
    MAE. Falls back to the whole grid when it has no positive ratio."""
    keep = [j for j, m in enumerate(grid.mask_ratios) if m > 0] or list(
        range(len(grid.mask_ratios)))
    data = grid.to_dict()
    data["mask_ratios"] = [grid.mask_ratios[j] for j in keep]
    for name in (*GRID_METRICS, "tied"):
        data[name] = [[row[j] for j in keep] for row in data[name]]
    return SpreadGrid.from_dict(data)


def _details(sigma: np.ndarray, shape: tuple[int, ...], settings: StudySettings
             ) -> dict[str, Any]:
    """Influence profiles of W*, boundary emphasis of A, spectra of M at detail_ratios."""
    p = settings.detail_patch
    partition = tiles_2d(shape[0], shape[1], p)
    distances = pixel_distances(partition.coords)
    profiles, emphases, spectra = {}, {}, {}
    for m in settings.detail_ratios:
        label = f"m={m:g}, p={p}"
        if m > 0:  # at m = 0, W* = I: no profile to show
            full = full_rank_optimum(sigma, m, partition, settings.scheme)
            profiles[label] = influence_profile(full.T, distances).to_dict()
        solution = linear_mae_optimum(sigma, m, partition, settings.rank, scheme=settings.scheme)
        emphases[f"m={m:g}"] = boundary_emphasis(solution.A, partition).to_dict()
        name = f"M at {label}" + (" (= Σ: PCA)" if m == 0 else "")
        spectra[name] = mae_spectrum(sigma, m, partition, settings.scheme)
    return {"influence_profiles": profiles, "boundary_emphasis": emphases,
            "spectra": {k: np.asarray(v)[:200].tolist() for k, v in spectra.items()}}


def basis_example(checkpoint: str, mask_ratio: float, *, seed: int = 0, n_vectors: int = 6
                  ) -> dict[str, Any]:
    """Adaptive basis of one held-out digit (test split, index chosen by `seed`) under the
    trained MAE at `checkpoint`, one random mask at `mask_ratio`."""
    import torch

    from maelens.checkpoints.load import load_model
    from maelens.data import mnist_tensors
    from maelens.model.masking import keep_for_images
    from maelens.studies.jacobian import adaptive_basis, mae_jacobian

    model = load_model(checkpoint)
    images, _ = mnist_tensors("test")
    generator = torch.Generator().manual_seed(seed)
    chosen = int(torch.randint(len(images), (1,), generator=generator))
    image = images[chosen]
    gh, gw = model.grid_of(image[None])
    keep = keep_for_images([chosen], gh * gw, mask_ratio, seed, ("basis",))[0]
    jac = mae_jacobian(model, image, keep)
    H, W = jac.image_hw
    basis = adaptive_basis(jac.signed, (H, W), n_vectors)
    return {**basis.to_dict(vectors=True), "mask_ratio": mask_ratio,
            "patch_size": model.config.patch_size, "checkpoint": checkpoint,
            "image": np.round(image.mean(dim=0).numpy(), 4).tolist(),
            "visible": jac.visible.reshape(H, W).tolist(),
            "visible_fraction": float(jac.visible.mean())}


def reference_spread(checkpoint: str, *, mask_ratio: float | None = None, images: int = 3,
                     seed: int = 0, test_images: Any | None = None) -> dict[str, Any]:
    """Jacobian spread of any trained MAE checkpoint (e.g. the 50-epoch demo model) measured as
    in the sweep: `images` test digits chosen by `seed`, one mask each at `mask_ratio` (default:
    the ratio recorded in the checkpoint, else 0.75). test_images: (N, C, H, W) normalised
    images to choose from (default: the MNIST demo test split)."""
    import torch

    from maelens.checkpoints.load import load_model
    from maelens.data import mnist_tensors
    from maelens.studies.jacobian import average_jacobian

    model = load_model(checkpoint)
    meta = model.load_info.get("meta") or {}
    recorded = [r for r in (mask_ratio, model.load_info.get("mask_ratio"), meta.get("mask_ratio"))
                if r is not None]
    ratio = recorded[0] if recorded else 0.75
    test = mnist_tensors("test")[0] if test_images is None else test_images
    chosen = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:images]
    spread = average_jacobian(model, test[chosen], mask_ratio=ratio, seed=seed).spread()
    c = model.config
    return {"checkpoint": checkpoint, "mask_ratio": float(ratio), "patch_size": c.patch_size,
            "embed_dim": c.embed_dim, "depth": c.depth, "steps": meta.get("steps"),
            "final_loss": meta.get("final_loss"), "metrics": meta.get("metrics", {}),
            **spread.to_dict()}


def run_study(out_dir: str | Path, settings: StudySettings, sweep: SweepSettings | None, *,
              command: str = "", on_point: Callable[..., None] | None = None,
              reference: str | None = None) -> Path:
    """Steps 1-4 of the module into `out_dir` (created). `sweep` None skips the trained side;
    `reference`: a further trained MAE checkpoint measured like the sweep's points
    (reference.json). Returns the path of summary.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PREDICTION_FILE, {**predict_mnist(settings), "command": command})
    log.info("prediction written to %s", out / PREDICTION_FILE)
    if sweep is not None:
        result = run_sweep(sweep, on_point=on_point)
        write_json(out / SWEEP_COPY, result.to_dict())
        point = max(result.points, key=lambda q: (q.patch_size == 4, q.mask_ratio))
        example = basis_example(point.checkpoint, point.mask_ratio, seed=sweep.seed)
        write_json(out / EXAMPLE_FILE, example)
    if reference is not None:
        seed = sweep.seed if sweep is not None else 0
        images = sweep.jacobian_images if sweep is not None else 3
        write_json(out / REFERENCE_FILE, reference_spread(reference, images=images, seed=seed))
    return render_study(out, command=command)


FIGURES = ("predicted_mean_distance_px.png", "predicted_out_of_patch_mass.png",
           "predicted_boundary_emphasis.png", "predicted_spatial_entropy.png",
           "predicted_profiles.png", "predicted_boundary.png", "eigen_spectra.png",
           "sweep_spread.png", "sweep_accuracy.png", "sweep_profiles.png", "adaptive_basis.png")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def render_study(out_dir: str | Path, *, command: str = "") -> Path:
    """Figures and summary.md from the JSON files in `out_dir` (no model needed)."""
    out = Path(out_dir)
    prediction = _read(out / PREDICTION_FILE)
    if prediction is None:
        raise MaelensError(f"no {PREDICTION_FILE} in {out}; run the study first.")
    grid = prediction["grid"]
    for metric in ("mean_distance_px", "out_of_patch_mass", "boundary_emphasis",
                   "spatial_entropy"):
        plot_spread_heatmap(grid, out / f"predicted_{metric}.png", metric)
    plot_influence_profiles(prediction["influence_profiles"], out / "predicted_profiles.png")
    plot_boundary_emphasis(prediction["boundary_emphasis"], out / "predicted_boundary.png")
    plot_eigen_spectra(prediction["spectra"], out / "eigen_spectra.png", n_show=200)
    sweep, example = _read(out / SWEEP_COPY), _read(out / EXAMPLE_FILE)
    if sweep is not None:
        result = SweepResult.from_dict(sweep)
        plot_sweep(result, out / "sweep_spread.png",
                   ["mean_distance_px", "out_of_patch_mass", "effective_rank"],
                   predicted=_predicted_table(grid, result))
        plot_sweep(result, out / "sweep_accuracy.png",
                   ["knn_accuracy", "linear_probe_accuracy", "final_loss"])
        plot_measured_profiles(result, out / "sweep_profiles.png")
    if example is not None:
        plot_adaptive_basis(example, out / "adaptive_basis.png")
    figures = [name for name in FIGURES if (out / name).is_file()]
    command = command or prediction.get("command", "")
    text = summary_markdown(prediction, sweep, example, command, figures,
                            _read(out / REFERENCE_FILE))
    return atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text))


def _predicted_table(grid: dict[str, Any], result: SweepResult) -> dict[int, dict[float, float]]:
    """Predicted W* spread at the sweep's patch sizes (ratios of the grid within its range)."""
    trained = {q.patch_size for q in result.points}
    ratios = [q.mask_ratio for q in result.points]
    low, high = min(ratios), max(ratios)
    return {p: {m: grid["mean_distance_px"][i][j] for j, m in enumerate(grid["mask_ratios"])
                if low - 1e-9 <= m <= high + 1e-9}
            for i, p in enumerate(grid["patch_sizes"]) if p in trained}


def _table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _grid_table(grid: dict[str, Any], metric: str, fmt: str = "{:.2f}") -> str:
    rows = [[f"p={p}"] + [fmt.format(v) for v in grid[metric][i]]
            for i, p in enumerate(grid["patch_sizes"])]
    return _table(rows, ["", *[f"m={m:g}" for m in grid["mask_ratios"]]])


def summary_markdown(prediction: dict[str, Any], sweep: dict[str, Any] | None,
                     example: dict[str, Any] | None, command: str,
                     figures: list[str] | None = None,
                     reference: dict[str, Any] | None = None) -> str:
    """The study's numbers as Markdown tables, with the command that produced them and links
    to `figures` (file names beside summary.md)."""
    grid, length = prediction["grid"], prediction["correlation_length"]
    cov, rec = prediction["covariance"], prediction["recommendation"]
    parts = [
        "# Linear-MAE theory vs small trained MAEs on the MNIST demo digits",
        f"Produced by:\n\n```\n{command or '(library call)'}\n```",
        f"Data: {cov['n_samples']} train digits, grey {cov['image_shape'][0]}x"
        f"{cov['image_shape'][1]}, pixel values in [0, 1]. Correlation length of the data "
        f"(ridge-free covariance): e-folding {length['e_folding_px']:.2f} px, fitted exponential "
        f"{length['fitted_px']:.2f} px.",
        f"## Predicted spread of the full-rank linear MAE map W* (px)\n\nClosed form with "
        f"{grid['scheme']} masks, ridge {cov['ridge']:g}·mean(diag Σ)·I; |W*|-weighted mean "
        f"distance from output to input pixel.\n\n" + _grid_table(grid, "mean_distance_px"),
        "## Predicted out-of-own-patch mass of W*\n\n" + _grid_table(grid, "out_of_patch_mass"),
        f"## Predicted boundary emphasis of the rank-{grid['rank']} encoder (edge / mean)\n\n"
        + _grid_table(grid, "boundary_emphasis"),
        f"## Recommendation (linear theory)\n\n```\n{rec['text']}\n```",
    ]
    if sweep is not None:
        parts.append(_sweep_section(sweep))
    if reference is not None:
        parts.append(_reference_section(reference))
    if example is not None:
        parts.append(
            f"## Adaptive basis of one digit\n\nJacobian of one held-out digit under the MAE "
            f"trained at m={example['mask_ratio']:g}, p={example['patch_size']} "
            f"({example['visible_fraction']:.0%} of pixels visible): effective rank "
            f"{example['effective_rank']:.1f} (exp of the entropy of the normalised singular "
            f"values), participation ratio {example['participation_ratio']:.1f}; radius of "
            f"gyration of the top input singular vectors: "
            + ", ".join(f"{v:.1f}" for v in example["extent_px"]) + " px.")
    parts.append(DEFINITIONS)
    if figures:
        parts.append("## Figures\n\n" + "\n\n".join(f"![{name}]({name})" for name in figures))
    return "\n\n".join(parts) + "\n"


DEFINITIONS = """## How the numbers are defined

- Linear theory: W* = q1 Q⁻¹ Σ is the full-rank optimum of the all-pixel loss of x̂ = (r ⊙ x) W
  (`maelens.theory.predict`); spread = mean over output pixels of the |W*|-weighted distance to
  the input pixels (pixels); out-of-patch mass = share of |W*| linking different patches;
  boundary emphasis = encoder row energy on patch-border pixels / mean (rank-k optimum; 1 by
  definition for p ≤ 2, where every pixel of a patch is on its border).
- Trained MAEs: J = ∂x̂/∂x of the decoder's prediction for every patch w.r.t. the grey input
  (`maelens.studies.jacobian`, "grey" channels), averaged as E[|J_ji| | input i visible]. Spread
  and decay length use the masked outputs only (the pixels the loss trains; their own patch is
  never visible, so their spread is at least the distance to the nearest visible patch);
  out-of-patch mass uses all outputs; effective rank = exp of the entropy of the normalised
  singular values of each image's J (visible inputs), averaged over images.
- Accuracies: k-NN (k = 20, cosine, temperature-weighted) and logistic-regression probes on
  frozen mean-patch features, trained on the 4000 train digits, scored on the 1000 test digits.
"""


def _reference_section(ref: dict[str, Any]) -> str:
    metrics = ref.get("metrics") or {}
    scores = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in metrics.items())
    return (
        f"## A longer-trained MAE for comparison\n\n`{ref['checkpoint']}`: width "
        f"{ref['embed_dim']}, depth {ref['depth']}, p={ref['patch_size']}, trained at "
        f"m={ref['mask_ratio']:g} for {ref.get('steps')} steps (final loss "
        f"{ref.get('final_loss') or float('nan'):.4f}{'; ' + scores if scores else ''}). "
        f"Jacobian measured as in the sweep: spread {ref['mean_distance_px']:.2f} px, "
        f"out-of-patch mass {ref['out_of_patch_mass']:.3f}, effective rank "
        f"{ref['effective_rank']:.1f}, decay length {ref['decay_length_px']:.1f} px.")


def _sweep_section(sweep: dict[str, Any]) -> str:
    settings = sweep["settings"]
    rows = [[f"{q['mask_ratio']:g}", str(q["patch_size"]), f"{q['final_loss']:.4f}",
             f"{q['knn_accuracy']:.3f}", f"{q['linear_probe_accuracy']:.3f}",
             f"{q['mean_distance_px']:.2f}", f"{q['out_of_patch_mass']:.3f}",
             f"{q['effective_rank']:.1f}", f"{q['wall_s']:.0f}"] for q in sweep["points"]]
    header = ["m", "p", "final loss", "k-NN acc", "linear probe acc", "Jacobian spread (px)",
              "out-of-patch mass", "effective rank", "wall (s)"]
    total = sum(q["wall_s"] for q in sweep["points"])
    model = ", ".join(f"{k} {v}" for k, v in settings["overrides"].items())
    return (
        f"## Trained sweep\n\nPreset {settings['preset']} with {model}; {settings['epochs']} "
        f"epochs, batch {settings['batch_size']}, lr {settings['lr']:g}, seed {settings['seed']};"
        f" accuracies of frozen mean-patch features on the 1000 test digits; Jacobian over "
        f"{settings['jacobian_images']} test digits, one mask each at the training ratio "
        f"(spread: masked outputs from visible inputs; out-of-patch mass: all outputs). "
        f"Total wall time {total / 60:.1f} min on this machine.\n\n" + _table(rows, header))

