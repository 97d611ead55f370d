"""PNG figures from theory results (dataclasses or their `to_dict()` forms, e.g. read from JSON).

Matplotlib's object API (`Figure` + `savefig`) needs no pyplot state and no display backend.
Each function writes one PNG to `path` and returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from maelens.errors import MaelensError
from maelens.theory.predict import GRID_METRICS, SpreadGrid
from maelens.theory.spatial import BoundaryEmphasis, InfluenceProfile

LABELS = {
    "mean_distance_px": "|W*|-weighted mean distance (px)",
    "spatial_entropy": "spatial entropy (nats)",
    "out_of_patch_mass": "out-of-patch mass",
    "boundary_emphasis": "boundary emphasis (edge / mean)",
    "relative_eigengap": "relative eigengap",
    "min_loss": "minimum loss",
}


# Spatial metrics are read off the full-rank map W* (the rank-k map at m = 0 is the PCA
# projector, already spread); the encoder and spectrum metrics come from the rank-k optimum.
FULL_RANK_METRICS = ("mean_distance_px", "spatial_entropy", "out_of_patch_mass")


def plot_spread_heatmap(
    grid: SpreadGrid | Mapping, path: str | Path, metric: str = "mean_distance_px"
) -> Path:
    """Heat map of one grid metric: patch size (rows) by masking ratio (columns), annotated."""
    data = grid.to_dict() if isinstance(grid, SpreadGrid) else dict(grid)
    if metric not in GRID_METRICS:
        raise MaelensError(f"`metric` must be one of {GRID_METRICS}, got {metric!r}.")
    values = np.asarray(data[metric], dtype=np.float64)
    fig = Figure(figsize=(1.0 + 0.8 * values.shape[1], 1.4 + 0.6 * values.shape[0]))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(values.shape[1]), [f"{m:g}" for m in data["mask_ratios"]])
    ax.set_yticks(range(values.shape[0]), [str(p) for p in data["patch_sizes"]])
    ax.set_xlabel("masking ratio m")
    ax.set_ylabel("patch size p (px)")
    for (row, col), value in np.ndenumerate(values):
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(image, ax=ax, label=LABELS[metric])
    model = "full-rank W*" if metric in FULL_RANK_METRICS else f"rank {data['rank']}"
    ax.set_title(f"linear MAE, {model}, {data['scheme']} masks", fontsize=9)
    return _save(fig, path)


def plot_influence_profiles(
    profiles: Mapping[str, InfluenceProfile | Mapping], path: str | Path
) -> Path:
    """Mean |influence| against distance (log scale, each normalised to its value at 0)."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for label, profile in profiles.items():
        data = _as_dict(profile)
        values = np.asarray(data["mean_abs"], dtype=np.float64)
        length = data["decay_length_px"]
        ax.semilogy(data["distance_px"], values / values[0], marker=".",
                    label=f"{label} (decay {length:.2f} px)")
    ax.set_xlabel("distance from output pixel (px)")
    ax.set_ylabel("mean |influence| / value at 0")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_boundary_emphasis(
    emphases: Mapping[str, BoundaryEmphasis | Mapping], path: str | Path
) -> Path:
    """Encoder energy by position inside the patch: lines for 1-D blocks, maps for 2-D tiles."""
    items = [(label, _as_dict(e)) for label, e in emphases.items()]
    if not items:
        raise MaelensError("`emphases` is empty; expected at least one BoundaryEmphasis.")
    if np.ndim(items[0][1]["profile"]) == 1:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.add_subplot()
        for label, data in items:
            profile = np.asarray(data["profile"], dtype=np.float64)
            ax.plot(profile / profile.mean(), marker="o",
                    label=f"{label} (edge/mean {data['edge_over_mean']:.2f})")
        ax.set_xlabel("position inside the patch (px)")
        ax.set_ylabel("row energy / mean")
        ax.legend(fontsize=7)
        return _save(fig, path)
    fig = Figure(figsize=(2.2 * len(items), 2.6), layout="constrained")
    for index, (label, data) in enumerate(items, start=1):
        ax = fig.add_subplot(1, len(items), index)
        ax.imshow(np.asarray(data["profile"]), cmap="magma")
        ax.set_title(f"{label}\nedge/mean {data['edge_over_mean']:.2f}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path)


def plot_eigen_spectra(
    spectra: Mapping[str, Sequence[float]], path: str | Path, n_show: int | None = None
) -> Path:
    """Eigenvalues of M = Σ Q⁻¹ Σ (or any spectra), descending, on a log scale."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for label, values in spectra.items():
        values = np.sort(np.asarray(values, dtype=np.float64))[::-1][:n_show]
        ax.semilogy(np.arange(1, len(values) + 1), np.clip(values, 1e-300, None), label=label)
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _as_dict(result) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
