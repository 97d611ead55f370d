"""The robustness study's figures, drawn from a `ResultSet` alone (PNG + SVG via save_figure):

    fig5_occlusion_accuracy    top-1 vs occlusion 0-90 % per curve (rollout pixel fill, token
                               drop, random control), 95 % bootstrap CI bands (Fig. 5)
    fig6_head_features_blur    (layer, head) x level heatmap of common active features: clean
                               C_clean first, then C_common = |common_clean ∩ common_pert| per
                               blur level, averaged over classes (Fig. 6)
    fig7_head_features_occlusion   the same per occlusion curve (Fig. 7)
    fig8_delta_c               ΔC per level: (a) blur, (b) occlusion curves (Fig. 8)
    fig_examples_corruptions   the example image under every corruption and severity
    fig_examples_blur_occlusion    the example image per blur level and occlusion level
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from maelens.report.figio import save_figure
from maelens.report.tables_robustness import conditions, pick_model, value
from maelens.results.store import ResultSet, array_key

CURVE_LABELS = {"pixels-rollout": "rollout-ranked, pixel fill",
                "tokens-rollout": "rollout-ranked, tokens dropped",
                "pixels-random": "random patches (control)"}


def _curve_name(group: str) -> str:
    name = group.removeprefix("occlusion/")
    for fill in ("-zero", "-mean", "-noise"):
        name = name.removesuffix(fill)
    return name


def _occlusion_groups(results: ResultSet) -> dict[str, list[dict]]:
    """Occlusion conditions per curve group, sorted by percent."""
    groups: dict[str, list[dict]] = {}
    for c in conditions(results, "occlusion"):
        groups.setdefault(c["group"], []).append(c)
    return {g: sorted(cs, key=lambda c: c["percent"]) for g, cs in groups.items()}


def fig_occlusion_accuracy(results: ResultSet, model: str) -> Figure | None:
    """Fig. 5: accuracy (%) vs occluded patches (%), one line + CI band per curve."""
    groups = _occlusion_groups(results)
    if not groups:
        return None
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    clean = value(results, model, "accuracy", "clean", "top1")
    for group, conds in groups.items():
        rows = [clean] + [value(results, model, "accuracy", c["name"], "top1") for c in conds]
        p = np.array([0.0] + [c["percent"] for c in conds])
        acc = np.array([r["value"] for r in rows], dtype=float)
        lo = np.array([np.nan if r["ci_low"] is None else r["ci_low"] for r in rows], float)
        hi = np.array([np.nan if r["ci_high"] is None else r["ci_high"] for r in rows], float)
        line, = ax.plot(p, acc, marker="o", ms=3.5,
                        label=CURVE_LABELS.get(_curve_name(group), group))
        if np.isfinite(lo).any():
            ax.fill_between(p, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
    ax.set_xlabel("occluded patches (%)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
              frameon=False)  # below the axes: the curves fill the plot
    ax.set_title(f"Occlusion vs accuracy — {model}", fontsize=10)
    return fig


def _head_matrix(results: ResultSet, model: str, conds: list[dict]
                 ) -> tuple[np.ndarray, list[str], list[str]]:
    """(L*H, 1 + levels) class-averaged counts: C_clean, then C_common per condition."""
    first = conds[0]["name"]
    get = lambda cond, name: results.array(model, "head_features", cond, name)  # noqa: E731
    layers = get(first, "layers")
    columns = [get(first, "c_clean").mean(axis=-1)] + [get(c["name"], "c_common").mean(axis=-1)
                                                       for c in conds]
    matrix = np.stack([col.reshape(-1) for col in columns], axis=1)
    heads = columns[0].shape[1]
    rows = [f"L{layer} H{h + 1}" for layer in layers.tolist() for h in range(heads)]
    return matrix, rows, ["clean"] + [c["level"] for c in conds]


def _heatmap(ax, matrix: np.ndarray, rows: list[str], cols: list[str], vmax: float,
             title: str):  # noqa: ANN001, ANN202 - matplotlib axes / image
    image = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0, vmax=vmax,
                      interpolation="nearest")
    ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=90 if len(cols) > 11 else 0)
    step = max(1, len(rows) // 48)
    ax.set_yticks(range(0, len(rows), step), rows[::step], fontsize=6)
    ax.axvline(0.5, color="white", lw=1.5)  # the clean column stands apart
    if matrix.size <= 400:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=5,
                    color="white" if v < 0.6 * vmax else "black")
    ax.set_title(title, fontsize=9)
    return image


def fig_head_features(results: ResultSet, model: str, family: str) -> Figure | None:
    """Fig. 6 (family "blur") or Fig. 7 ("occlusion", one panel per curve)."""
    if family == "blur":
        panels = {"Gaussian blur": conditions(results, "blur")}
    else:
        panels = {CURVE_LABELS.get(_curve_name(g), g): cs
                  for g, cs in _occlusion_groups(results).items()}
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    data = {title: _head_matrix(results, model, conds) for title, conds in panels.items()}
    vmax = max(float(m.max()) for m, _, _ in data.values()) or 1.0
    n_rows = next(iter(data.values()))[0].shape[0]
    fig = Figure(figsize=(2.2 + 3.0 * len(data), 1.2 + 0.22 * n_rows), layout="constrained")
    axes = fig.subplots(1, len(data), squeeze=False)[0]
    for ax, (title, (matrix, rows, cols)) in zip(axes, data.items(), strict=True):
        image = _heatmap(ax, matrix, rows, cols, vmax, title)
    fig.colorbar(image, ax=list(axes), shrink=0.8,
                 label="common active features (mean over classes)")
    fig.suptitle(f"Common active features per layer and head — {model}", fontsize=10)
    return fig


def fig_delta_c(results: ResultSet, model: str) -> Figure | None:
    """Fig. 8: ΔC (mean over layers, heads, classes) per level: (a) blur, (b) occlusion."""
    blur, groups = conditions(results, "blur"), _occlusion_groups(results)
    if not blur and not groups:
        return None
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax_blur, ax_occ = fig.subplots(1, 2)
    if blur:
        dc = [value(results, model, "head_features", c["name"], "delta_c_mean")["value"]
              for c in blur]
        ax_blur.bar(range(len(blur)), dc, color="tab:blue")
        ax_blur.set_xticks(range(len(blur)), [f"{c['level']}\nk{c['kernel_size']}\n"
                                              f"σ{c['sigma']:g}" for c in blur], fontsize=7)
    ax_blur.set_xlabel("blur level")
    ax_blur.set_ylabel("ΔC (features)")
    ax_blur.set_title("(a) Gaussian blur", fontsize=9)
    for group, conds in groups.items():
        dc = [0.0] + [value(results, model, "head_features", c["name"], "delta_c_mean")["value"]
                      for c in conds]
        ax_occ.plot([0.0] + [c["percent"] for c in conds], dc, marker="o", ms=3.5,
                    label=CURVE_LABELS.get(_curve_name(group), group))
    if groups:
        ax_occ.legend(fontsize=7)
    ax_occ.set_xlabel("occluded patches (%)")
    ax_occ.set_ylabel("ΔC (features)")
    ax_occ.set_title("(b) occlusion", fontsize=9)
    for ax in (ax_blur, ax_occ):
        ax.grid(alpha=0.3)
    fig.suptitle(f"Mean drop in common active features, ΔC = C_clean − C_common — {model}",
                 fontsize=10)
    return fig


def _examples(results: ResultSet, model: str) -> tuple[dict[str, np.ndarray], dict]:
    prefix = array_key(model, "examples", "") + "/-/"
    arrays = {k.removeprefix(prefix): v for k, v in results.arrays.items()
              if k.startswith(prefix)}
    meta = results.meta.get("analyses", {}).get(array_key(model, "examples", ""), {})
    return arrays, meta


def _thumb(ax, image: np.ndarray, title: str | None = None) -> None:  # noqa: ANN001
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7, pad=2)


def fig_examples_corruptions(results: ResultSet, model: str) -> Figure | None:
    """The example image: clean, then every severity (columns) of every corruption (rows)."""
    arrays, meta = _examples(results, model)
    grid = arrays.get("corruption")
    if grid is None:
        return None
    names = list(dict.fromkeys(c["corruption"] for c in conditions(results, "corruption")))
    severities = sorted({c["severity"] for c in conditions(results, "corruption")})
    n_c, n_s = grid.shape[:2]
    fig = Figure(figsize=(1.1 * (n_s + 1) + 1.2, 1.1 * n_c + 0.6), layout="constrained")
    axes = fig.subplots(n_c, n_s + 1, squeeze=False)
    for i in range(n_c):
        _thumb(axes[i, 0], arrays["clean"], "clean" if i == 0 else None)
        axes[i, 0].set_ylabel(names[i].replace("_", " "), fontsize=7)
        for j in range(n_s):
            _thumb(axes[i, j + 1], grid[i, j], f"severity {severities[j]}" if i == 0 else None)
    fig.suptitle(f"{meta.get('image', 'example image')} under each corruption", fontsize=9)
    return fig


def fig_examples_blur_occlusion(results: ResultSet, model: str) -> Figure | None:
    """Rows: blur levels, then each occlusion curve; the clean image first in every row."""
    arrays, meta = _examples(results, model)
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    if "blur" in arrays:
        rows.append(("blur", [(c["level"], img) for c, img in
                              zip(conditions(results, "blur"), arrays["blur"], strict=True)]))
    if "occlusion" in arrays:
        occ = list(zip(conditions(results, "occlusion"), arrays["occlusion"], strict=True))
        for group in dict.fromkeys(c["group"] for c, _ in occ):
            rows.append((_curve_name(group), [(c["level"], img) for c, img in occ
                                              if c["group"] == group]))
    if not rows:
        return None
    width = 1 + max(len(pics) for _, pics in rows)
    fig = Figure(figsize=(1.1 * width + 1.0, 1.2 * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), width, squeeze=False)
    for i, (label, pics) in enumerate(rows):
        _thumb(axes[i, 0], arrays["clean"], "clean")
        axes[i, 0].set_ylabel(label, fontsize=7)
        for j in range(width - 1):
            if j < len(pics):
                _thumb(axes[i, j + 1], pics[j][1], pics[j][0])
            else:
                axes[i, j + 1].axis("off")
    fig.suptitle(f"{meta.get('image', 'example image')} per blur and occlusion level",
                 fontsize=9)
    return fig


def write_robustness_figures(results: ResultSet, out_dir: str | os.PathLike,
                             model: str | None = None) -> list[Path]:
    """Every figure the results support, as PNG + SVG in `out_dir`; returns the paths."""
    model = pick_model(results, model)
    figures = {"fig5_occlusion_accuracy": fig_occlusion_accuracy(results, model),
               "fig6_head_features_blur": fig_head_features(results, model, "blur"),
               "fig7_head_features_occlusion": fig_head_features(results, model, "occlusion"),
               "fig8_delta_c": fig_delta_c(results, model),
               "fig_examples_corruptions": fig_examples_corruptions(results, model),
               "fig_examples_blur_occlusion": fig_examples_blur_occlusion(results, model)}
    paths: list[Path] = []
    for stem, fig in figures.items():
        if fig is not None:
            paths += save_figure(fig, Path(out_dir) / stem)
    return paths
