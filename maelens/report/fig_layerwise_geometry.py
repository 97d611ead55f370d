"""Layer-wise geometry figures, drawn from a `ResultSet` alone (no model needed):

- Fig. 3 of the seed paper: mean attention distance per head by layer (one dot per head), one
  panel per model, side by side. Distances are in *input pixels*, so models with different grids
  or patch sizes share one axis; each panel names its grid and patch size, and a dashed line
  marks what uniform attention over the visible patches would give.
- Fig. 4: box plots of θ1 (degrees) over class pairs, one box per layer, one panel per kind
  (patch tokens, CLS, mean patch); a dotted line marks θ1 between random k-subspaces.
- Singular-value spectra: the top-k singular values per layer (averaged over classes, log
  scale) and the variance explained by the k directions per layer.

Every function returns the paths written by `save_figure` (PNG + SVG).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from maelens.errors import MaelensError
from maelens.report.figio import save_figure
from maelens.results.store import ResultSet, array_key

KIND_TITLES = {"patch": "patch tokens", "cls": "CLS token", "mean_patch": "mean patch token"}
POLICY_TEXT = {"exclude": "CLS excluded, rows renormalised over patches",
               "raw": "CLS column dropped, raw weights"}


def runs_of(results: ResultSet, analysis: str) -> list[tuple[str, str]]:
    """(model, condition) of every run of `analysis` in `results`, in the order they appear."""
    seen: dict[tuple[str, str], None] = {}
    for row in results.rows:
        if row["analysis"] == analysis:
            seen[(row["model"], row["condition"])] = None
    if not seen:
        raise MaelensError(f"the results hold no {analysis!r} rows; run that analysis first.")
    return list(seen)


def _meta(results: ResultSet, model: str, analysis: str, condition: str) -> dict:
    return results.meta.get("analyses", {}).get(array_key(model, analysis, condition), {})


def plot_attention_distance(results: ResultSet, stem: str | os.PathLike,
                            runs: list[tuple[str, str]] | None = None) -> list[Path]:
    """Fig. 3: one panel per (model, condition) run of `attention_distance` (all by default)."""
    runs = runs or runs_of(results, "attention_distance")
    fig = Figure(figsize=(4.2 * len(runs), 3.6), layout="constrained")
    axes = fig.subplots(1, len(runs), sharey=True, squeeze=False)[0]
    top = 0.0
    for ax, (model, condition) in zip(axes, runs, strict=True):
        get = lambda name, m=model, c=condition: results.array(  # noqa: E731
            m, "attention_distance", c, name)
        layers, distance = get("layers"), get("distance_px")  # (L,), (L, H)
        heads = distance.shape[1]
        offsets = (np.arange(heads) - (heads - 1) / 2) * min(0.5 / max(heads, 1), 0.08)
        for h in range(heads):
            ax.scatter(layers + offsets[h], distance[:, h], s=18, alpha=0.8,
                       color=_colour(h, heads), label=f"head {h}" if heads <= 6 else None)
        uniform = float(get("uniform_distance_px"))
        ax.axhline(uniform, color="0.4", linestyle="--", linewidth=1,
                   label="uniform attention")
        (gh, gw), patch = get("grid").tolist(), int(get("patch_size"))
        title = model if not condition or condition == "clean" else f"{model} ({condition})"
        ax.set_title(f"{title}\n{gh}x{gw} patches of {patch} px", fontsize=9)
        ax.set_xlabel("layer")
        ax.set_xticks(layers)
        top = max(top, float(np.nanmax(distance)), uniform)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("mean attention distance (input px)")
    axes[0].set_ylim(0, top * 1.1 + 1e-9)
    policy = _meta(results, runs[0][0], "attention_distance", runs[0][1]).get("cls_policy")
    fig.suptitle(f"Mean attention distance per head ({POLICY_TEXT.get(policy, policy)})",
                 fontsize=10)
    return save_figure(fig, stem)


def _colour(i: int, n: int) -> tuple[float, ...]:
    from matplotlib import colormaps

    return colormaps["viridis"](0.1 + 0.8 * i / max(n - 1, 1))


def _subspace_run(results: ResultSet, model: str | None, condition: str | None
                  ) -> tuple[str, str, dict]:
    runs = runs_of(results, "subspaces")
    matches = [r for r in runs if (model is None or r[0] == model)
               and (condition is None or r[1] == condition)]
    if not matches:
        raise MaelensError(f"no subspaces results for model {model!r}, condition "
                           f"{condition!r}; present: {runs}.")
    model, condition = matches[0]
    return model, condition, _meta(results, model, "subspaces", condition)


def plot_theta1(results: ResultSet, stem: str | os.PathLike, model: str | None = None,
                condition: str | None = None) -> list[Path]:
    """Fig. 4: θ1 (degrees) over class pairs, a box per layer, a panel per kind."""
    model, condition, meta = _subspace_run(results, model, condition)
    kinds = meta.get("kinds") or ["patch"]
    get = lambda name: results.array(model, "subspaces", condition, name)  # noqa: E731
    layers = get("layers")
    baseline = float(np.degrees(np.median(get("random_theta1_rad"))))
    fig = Figure(figsize=(4.0 * len(kinds), 3.6), layout="constrained")
    axes = fig.subplots(1, len(kinds), sharey=True, squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        theta = np.degrees(get(f"{kind}_theta1_rad"))  # (L, P)
        data = [row[np.isfinite(row)] for row in theta]
        kept = [i for i, d in enumerate(data) if len(d)]
        ax.boxplot([data[i] for i in kept], positions=layers[kept], widths=0.6,
                   medianprops={"color": "C1"}, flierprops={"markersize": 3},
                   manage_ticks=False)
        ax.axhline(baseline, color="0.4", linestyle=":", linewidth=1,
                   label=f"random {meta.get('k')}-subspaces")
        for i in sorted(set(range(len(layers))) - set(kept)):
            ax.text(layers[i], 2, "n/a", ha="center", fontsize=7, color="0.4")
        ax.set_xticks(layers)
        ax.set_xlim(layers.min() - 0.6, layers.max() + 0.6)
        ax.set_title(KIND_TITLES.get(kind, kind), fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("θ1 between class subspaces (deg)")
    axes[0].set_ylim(0, 90)
    centred = "centred" if meta.get("centred") else "un-centred"
    fig.suptitle(f"{model}: smallest principal angle θ1 over class pairs "
                 f"(k = {meta.get('k')}, {centred})", fontsize=10)
    return save_figure(fig, stem)


def plot_spectra(results: ResultSet, stem: str | os.PathLike, model: str | None = None,
                 condition: str | None = None, kind: str | None = None) -> list[Path]:
    """Top-k singular values per layer (mean over classes, log scale) for `kind` (default:
    patch tokens), and the variance explained by the k directions per layer for every kind."""
    model, condition, meta = _subspace_run(results, model, condition)
    kinds = meta.get("kinds") or ["patch"]
    kind = kind or ("patch" if "patch" in kinds else kinds[0])
    get = lambda name: results.array(model, "subspaces", condition, name)  # noqa: E731
    layers, sv = get("layers"), get(f"{kind}_singular_values")  # (L,), (L, C, k)
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    index = np.arange(1, sv.shape[-1] + 1)
    for li, layer in enumerate(layers):
        left.plot(index, sv[li].mean(axis=0), marker="o", markersize=3,
                  color=_colour(li, len(layers)), label=f"layer {layer}")
    left.set_yscale("log")
    left.set_xticks(index)
    left.set_xlabel("singular value index")
    left.set_ylabel("singular value (mean over classes)")
    left.set_title(f"top-{sv.shape[-1]} spectra, {KIND_TITLES.get(kind, kind)}", fontsize=9)
    left.legend(fontsize=7, ncol=2)
    for i, name in enumerate(kinds):
        explained = get(f"{name}_variance_explained")  # (L, C)
        mean = np.nanmean(explained, axis=1)
        spread = np.clip(np.stack([mean - np.nanmin(explained, axis=1),  # rounding: >= 0
                                   np.nanmax(explained, axis=1) - mean]), 0.0, None)
        right.errorbar(layers + (i - (len(kinds) - 1) / 2) * 0.1, mean, yerr=spread,
                       marker="o", markersize=3, capsize=2, label=KIND_TITLES.get(name, name))
    right.set_ylim(0, 1.02)
    right.set_xticks(layers)
    right.set_xlabel("layer (0 = embeddings)")
    right.set_ylabel("variance explained")
    right.set_title(f"share of Σσ² in the top {sv.shape[-1]}, mean over classes (bars: min-max)"
                    + ("" if meta.get("centred") else "\nun-centred: share of the second moment"),
                    fontsize=9)
    right.legend(fontsize=7)
    fig.suptitle(f"{model}: class-subspace spectra", fontsize=10)
    return save_figure(fig, stem)


def render_layerwise_geometry(results: ResultSet, out_dir: str | os.PathLike) -> list[Path]:
    """Every figure the results allow, into `out_dir`: fig3_attention_distance,
    fig4_theta1 and subspace_spectra (per subspaces run), as PNG + SVG."""
    out, paths = Path(out_dir), []
    analyses = {row["analysis"] for row in results.rows}
    if "attention_distance" in analyses:
        paths += plot_attention_distance(results, out / "fig3_attention_distance")
    if "subspaces" in analyses:
        for model, condition in runs_of(results, "subspaces"):
            tag = "" if len(runs_of(results, "subspaces")) == 1 else f"_{model}_{condition}"
            tag = "".join(ch if ch.isalnum() or ch in "_-." else "-" for ch in tag)
            paths += plot_theta1(results, out / f"fig4_theta1{tag}", model, condition)
            paths += plot_spectra(results, out / f"subspace_spectra{tag}", model, condition)
    if not paths:
        raise MaelensError("the results hold neither attention_distance nor subspaces rows.")
    return paths
