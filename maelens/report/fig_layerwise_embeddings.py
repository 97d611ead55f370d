"""Figures of the layer-wise embedding studies, drawn from a `ResultSet` alone (never a model).

- Fig. 1 (seed paper): t-SNE of the CLS (a) and mean-patch (b) embeddings, one panel per layer,
  points coloured by class; Fig. 2: the same for sampled patch tokens.
- Separability vs layer: k-NN accuracy, probe accuracy, silhouette, Fisher ratio, one line per
  (model, kind).
- CKA heat maps (layer x layer): within each model and between two models, per estimator.
Every figure is written as PNG + SVG by `save_figure`. Layer l = tokens after block l, before
the final norm (0 = the embedding layer, before any block).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from maelens.errors import MaelensError
from maelens.report.figio import save_figure
from maelens.results.store import ResultSet

KIND_LABELS = {"cls": "CLS token", "mean_patch": "mean patch token", "patch": "patch tokens",
               "tokens": "patch tokens"}
METRIC_LABELS = {"knn_accuracy": "k-NN accuracy", "probe_accuracy": "linear-probe accuracy",
                 "silhouette": "silhouette", "fisher_ratio": "Fisher ratio tr(S_B) / tr(S_W)"}
CKA_ANALYSES = ("cka", "cka_debiased", "cka_between", "cka_between_debiased")
MAX_COLUMNS = 7


def _split_key(key: str) -> tuple[str, str, str, str]:
    """"model/analysis/condition/name" -> parts (a model name may itself hold '/')."""
    model, analysis, condition, name = key.rsplit("/", 3)
    return model, analysis, condition, name


def tsne_runs(results: ResultSet) -> list[tuple[str, str]]:
    """(model, condition) of every t-SNE result, in the order stored."""
    runs = [_split_key(k)[::2] for k in results.arrays if k.count("/") >= 3
            and _split_key(k)[1] == "tsne" and k.endswith("/layers")]
    return list(dict.fromkeys(runs))


def class_names(results: ResultSet, count: int) -> list[str]:
    names = list(results.meta.get("class_names") or [])
    return [names[i] if i < len(names) else f"class {i}" for i in range(count)]


def _layer_title(layer: int) -> str:
    return "layer 0 (embeddings)" if layer == 0 else f"layer {layer}"


def plot_tsne_layers(results: ResultSet, model: str, condition: str, kind: str,
                     stem: str | os.PathLike, title: str | None = None) -> list[Path]:
    """One t-SNE panel per layer of `kind` ("cls", "mean_patch" or "patch"), coloured by class."""
    maps = results.array(model, "tsne", condition, kind)  # (L, N, 2)
    layers = results.array(model, "tsne", condition, "layers")
    labels = results.array(model, "tsne", condition,
                           "patch_labels" if kind == "patch" else "labels")
    names = class_names(results, int(labels.max()) + 1)
    cols = min(len(layers), MAX_COLUMNS)
    rows = math.ceil(len(layers) / cols)
    fig = Figure(figsize=(1.9 * cols, 1.9 * rows + 0.7), layout="constrained")
    colours = _colours(len(names))
    size = 14 if maps.shape[1] <= 300 else 4
    for i, layer in enumerate(layers):
        ax = fig.add_subplot(rows, cols, i + 1)
        if np.isnan(maps[i]).all():
            ax.text(0.5, 0.5, "every image gives\nthe same vector:\nno t-SNE", ha="center",
                    va="center", fontsize=7, transform=ax.transAxes)
        for c, name in enumerate(names):
            pts = maps[i][labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=size, color=colours[c], label=name,
                       alpha=0.8 if size > 4 else 0.6, linewidths=0)
        ax.set_title(_layer_title(int(layer)), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[c], markersize=5)
               for c in range(len(names))]
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names) + 1, 11),
               fontsize=8, frameon=False, title="class", title_fontsize=8)
    where = _condition_text(results, model, condition)
    fig.suptitle(title or f"{model}: t-SNE of the {KIND_LABELS[kind]} per layer ({where}, "
                          f"{maps.shape[1]} points)", fontsize=9)
    return save_figure(fig, stem)


def _condition_text(results: ResultSet, model: str, condition: str) -> str:
    ratio = results.meta.get("mask_ratio")
    if condition in ("clean", "-") or not ratio:
        return "no masking"
    return f"{100 * ratio:g} % random masking"


def _colours(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def draw_tsne_figures(results: ResultSet, out_dir: str | os.PathLike) -> list[Path]:
    """fig1a (CLS), fig1b (mean patch), fig2 (patch tokens) of every t-SNE run present."""
    paths: list[Path] = []
    runs = tsne_runs(results)
    for model, condition in runs:
        tag = "" if len(runs) == 1 else f"_{_safe(model)}_{_safe(condition)}"
        for kind, stem in (("cls", "fig1a_tsne_cls"), ("mean_patch", "fig1b_tsne_mean_patch"),
                           ("patch", "fig2_tsne_patch_tokens")):
            key = f"{model}/tsne/{condition}/{kind}"
            if key in results.arrays:
                paths += plot_tsne_layers(results, model, condition, kind,
                                          Path(out_dir) / f"{stem}{tag}")
    return paths


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)


def separability_table(results: ResultSet) -> dict[tuple[str, str], dict[str, list]]:
    """{(model, kind): {metric: [(layer, value), ...]}} from the "separability" rows."""
    table: dict[tuple[str, str], dict[str, list]] = {}
    for row in results.select(analysis="separability"):
        kind = (row.get("extra") or {}).get("kind", "")
        value = np.nan if row["value"] is None else row["value"]
        table.setdefault((row["model"], kind), {}).setdefault(row["metric"], []).append(
            (row["layer"], value))
    return table


def plot_separability(results: ResultSet, stem: str | os.PathLike) -> list[Path]:
    """k-NN, probe, silhouette and Fisher ratio vs layer; colour = kind, line style = model."""
    table = separability_table(results)
    if not table:
        raise MaelensError("results hold no separability rows; run `maelens separability`.")
    models = list(dict.fromkeys(model for model, _ in table))
    kinds = list(dict.fromkeys(kind for _, kind in table))
    colours, styles = _colours(len(kinds)), ["-", "--", ":", "-."]
    fig = Figure(figsize=(8.5, 6.2), layout="constrained")
    for i, metric in enumerate(METRIC_LABELS):
        ax = fig.add_subplot(2, 2, i + 1)
        for (model, kind), metrics in table.items():
            points = sorted(metrics.get(metric, []))
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3,
                        color=colours[kinds.index(kind)],
                        linestyle=styles[models.index(model) % len(styles)],
                        label=f"{model}, {KIND_LABELS.get(kind, kind)}")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(METRIC_LABELS[metric])
        if metric == "fisher_ratio":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)),
               fontsize=8, frameon=False)
    fig.suptitle(f"class separability per layer ({_evaluation_text(results)})", fontsize=10)
    return save_figure(fig, stem)


def _evaluation_text(results: ResultSet) -> str:
    meta = results.meta
    settings = meta.get("separability") or {}
    if settings.get("train_images"):
        return f"fit on {settings['train_images']}, tested on {meta.get('images')}"
    share = settings.get("test_fraction")
    held = f"{100 * share:g} % held out" if share else "held-out split"
    return f"{meta.get('images', 'images')}, seeded split by image, {held}"


def cka_panels(results: ResultSet) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """(model or "A vs B", analysis, cka (La, Lb), layers_a, layers_b) of every CKA result."""
    panels = []
    for key in results.arrays:
        if key.count("/") < 3:
            continue
        model, analysis, condition, name = _split_key(key)
        if analysis in CKA_ANALYSES and name == "cka":
            get = lambda n, m=model, a=analysis, c=condition: results.array(m, a, c, n)  # noqa: E731
            panels.append((model, analysis, get("cka"), get("layers_a"), get("layers_b")))
    return panels


def plot_cka(results: ResultSet, stem: str | os.PathLike) -> list[Path]:
    """CKA heat maps: one row per estimator (streamed biased, debiased), one panel per model
    (within) and per model pair (between)."""
    panels = cka_panels(results)
    if not panels:
        raise MaelensError("results hold no CKA arrays; run `maelens separability`.")
    estimators = [e for e in (("cka", "cka_between"), ("cka_debiased", "cka_between_debiased"))
                  if any(p[1] in e for p in panels)]
    cols = max(sum(p[1] in e for p in panels) for e in estimators)
    fig = Figure(figsize=(3.2 * cols + 0.8, 3.0 * len(estimators)), layout="constrained")
    image = None
    for r, names in enumerate(estimators):
        row = [p for p in panels if p[1] in names]
        for c, (model, analysis, matrix, layers_a, layers_b) in enumerate(row):
            ax = fig.add_subplot(len(estimators), cols, r * cols + c + 1)
            image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
            _annotate(ax, matrix, layers_a, layers_b)
            between = "between" in analysis
            first, _, second = model.partition(" vs ")
            ax.set_ylabel(f"layer of {first}" if between else "layer", fontsize=8)
            ax.set_xlabel(f"layer of {second}" if between else "layer", fontsize=8)
            estimator = "debiased" if "debiased" in analysis else "biased, streamed"
            ax.set_title(f"{model}\n({estimator})", fontsize=8)
    fig.colorbar(image, ax=fig.axes, label="linear CKA", shrink=0.8)
    kinds = {meta.get("kind") for key, meta in results.meta.get("analyses", {}).items()
             if key.rsplit("/", 2)[-2] in CKA_ANALYSES}
    kind = KIND_LABELS.get(kinds.pop(), "features") if len(kinds) == 1 else "features"
    fig.suptitle(f"linear CKA of the {kind} between layers "
                 f"({results.meta.get('num_images', '?')} images)", fontsize=10)
    return save_figure(fig, stem)


def _annotate(ax, matrix: np.ndarray, layers_a: Iterable, layers_b: Iterable) -> None:  # noqa: ANN001
    layers_a, layers_b = list(layers_a), list(layers_b)
    ax.set_yticks(range(len(layers_a)), [str(k) for k in layers_a], fontsize=7)
    ax.set_xticks(range(len(layers_b)), [str(k) for k in layers_b], fontsize=7)
    if max(matrix.shape) > 13:  # too many cells to read the numbers
        return
    for (i, j), value in np.ndenumerate(matrix):
        text = "n/a" if np.isnan(value) else f"{value:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=5.5,
                color="black" if not np.isnan(value) and value > 0.6 else "white")


def draw_all(results: ResultSet, out_dir: str | os.PathLike) -> list[Path]:
    """Every figure the results support: t-SNE figures, separability, CKA."""
    out_dir = Path(out_dir)
    paths = draw_tsne_figures(results, out_dir)
    if results.select(analysis="separability"):
        paths += plot_separability(results, out_dir / "separability")
    if cka_panels(results):
        paths += plot_cka(results, out_dir / "cka")
    return paths
