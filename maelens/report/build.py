"""Everything that is drawn after a run, from its results files alone (no model, no images):
figures (PNG + SVG) under figures/, tables (CSV + Markdown) under tables/, and report.html.

`maelens report RESULTS_DIR` calls `render_all`; so does `maelens run` at its end.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure as MplFigure

from maelens.errors import MaelensError
from maelens.report.definitions import REPORT_ORDER, SECTIONS
from maelens.report.figio import save_figure
from maelens.report.html import Figure, Section, Table, render_report
from maelens.results.store import ResultSet, read_results

log = logging.getLogger(__name__)

# Which figure stems (file names without suffix, prefix match) and tables each section shows.
SECTION_FIGURES = {
    "tsne": ("fig1a_tsne_cls", "fig1b_tsne_mean_patch"),
    "tsne-patches": ("fig2_tsne_patch_tokens",),
    "attention-distance": ("fig3_attention_distance_masked", "fig3_attention_distance_clean"),
    "attention-distance-photos": ("fig3_attention_distance_photos",),
    "subspaces": ("fig4_theta1", "subspace_spectra"),
    "separability": ("separability",),
    "cka": ("cka",),
    "blur": ("fig_examples_blur_occlusion",),
    "occlusion": ("fig5_occlusion_accuracy",),
    "imagenet-c": ("fig_examples_corruptions",),
    "head-features": ("fig6_head_features_blur", "fig7_head_features_occlusion",
                      "fig8_delta_c"),
    "theory": ("theory_predicted_spread",),
}
SECTION_TABLES = {"blur": ("table1_blur",), "imagenet-c": ("table2_imagenet_c",),
                  "alignment": ("table3_",), "mask-invariance": ("table_mask_invariance",)}


def render_all(results_dir: str | os.PathLike) -> Path:
    """Draw every figure and table the results support and write report.html; returns it."""
    root = Path(results_dir)
    results = read_results(root)
    figures, tables = root / "figures", root / "tables"
    for role in _models(results):
        _draw_model(results.where(model=role), figures / role, tables / role)
    _draw_shared(results, figures)
    sections = _sections(results, figures, tables)
    meta = _report_meta(results)
    return render_report(root / "report.html", "maelens report", sections, meta)


def _models(results: ResultSet) -> list[str]:
    return sorted({r["model"] for r in results.rows if r["model"] and " vs " not in r["model"]
                   and r["model"] != "data"})


def _draw_model(results: ResultSet, figures: Path, tables: Path) -> None:
    """The per-model figures and tables (t-SNE, subspaces, robustness)."""
    from maelens.report.fig_layerwise_embeddings import draw_tsne_figures
    from maelens.report.fig_layerwise_geometry import plot_spectra, plot_theta1, runs_of
    from maelens.report.fig_robustness import write_robustness_figures
    from maelens.report.tables_robustness import write_robustness_tables

    draw_tsne_figures(results, figures)
    subspace_runs = runs_of(results, "subspaces") if results.select(analysis="subspaces") else []
    for model, condition in subspace_runs:
        plot_theta1(results, figures / "fig4_theta1", model, condition)
        plot_spectra(results, figures / "subspace_spectra", model, condition)
    if results.select(analysis="accuracy"):
        write_robustness_figures(results, figures)
        write_robustness_tables(results, tables)


def _draw_shared(results: ResultSet, figures: Path) -> None:
    """Figures that put models side by side: attention distance, separability, CKA, theory."""
    from maelens.report.fig_layerwise_embeddings import cka_panels, plot_cka, plot_separability
    from maelens.report.fig_layerwise_geometry import plot_attention_distance, runs_of

    runs = runs_of(results, "attention_distance") if results.select(
        analysis="attention_distance") else []
    groups = {"photos": [r for r in runs if r[1] == "photos"],
              "clean": [r for r in runs if r[1] == "clean"],
              "masked": [r for r in runs if r[1] not in ("photos", "clean")]}
    for name, group in groups.items():
        if group:
            plot_attention_distance(results, figures / f"fig3_attention_distance_{name}", group)
    if results.select(analysis="separability"):
        plot_separability(results, figures / "separability")
    if cka_panels(results):
        plot_cka(results, figures / "cka")
    if results.select(analysis="theory"):
        plot_theory(results, figures / "theory_predicted_spread")


def plot_theory(results: ResultSet, stem: Path) -> list[Path]:
    """Predicted spread (px) of the linear MAE over (mask ratio, patch size), seed 002."""
    get = lambda name: results.array("data", "theory", "clean", name)  # noqa: E731
    ratios, patches, spread = get("mask_ratios"), get("patch_sizes_px"), get("mean_distance_px")
    fig = MplFigure(figsize=(5.2, 3.4), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(spread, aspect="auto", cmap="viridis", origin="lower")
    ax.set_xticks(range(len(ratios)), [f"{m:g}" for m in ratios])
    ax.set_yticks(range(len(patches)), [f"{p:g}" for p in patches])
    for (i, j), value in np.ndenumerate(spread):
        ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color="w")
    ax.set_xlabel("mask ratio m")
    ax.set_ylabel("patch size p (model px)")
    fig.colorbar(image, ax=ax, label="predicted spread (model px)")
    ax.set_title("Linear MAE: |W*|-weighted mean distance", fontsize=9)
    return save_figure(fig, stem)


def _sections(results: ResultSet, figures: Path, tables: Path) -> list[Section]:
    sections = []
    for sid in REPORT_ORDER:
        text = SECTIONS[sid]
        figs = [Figure(p, _caption(p, figures)) for stem in SECTION_FIGURES.get(sid, ())
                for p in sorted(figures.rglob(f"{stem}*.png"))]
        tabs = [Table(_caption(p, tables), csv_path=p) for stem in SECTION_TABLES.get(sid, ())
                for p in sorted(tables.rglob(f"{stem}*.csv"))]
        if figs or tabs or sid == "theory" and results.select(analysis="theory"):
            sections.append(Section(sid, text.title, text.reading, text.definition_html,
                                    figs, tabs, note=_note(results, sid)))
    if not sections:
        raise MaelensError("the results hold nothing the report can show.")
    return sections


def _caption(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return " / ".join(rel.parts)


def _note(results: ResultSet, sid: str) -> str:
    if sid == "theory":
        rows = results.select(analysis="theory")
        return "; ".join(f"{r['metric']}: {r['value']:.2f} {r['unit']}" for r in rows)
    if sid == "blur":
        order = results.meta.get("blur_order")
        return f"Levels by measured PSNR: {order}" if order else ""
    return ""


def _report_meta(results: ResultSet) -> dict[str, str]:
    meta = results.meta
    checkpoints = meta.get("checkpoints", {})
    out = {role: f"{c.get('source')} (sha256 {str(c.get('sha256'))[:16]}…)"
           for role, c in checkpoints.items()}
    out["images"] = "; ".join(f"{v['source']} ({v['count']} images at {k} px)"
                              for k, v in meta.get("image_sets", {}).items())
    out["settings"] = f"seed {meta.get('seed')}, {meta.get('device')}, {meta.get('dtype')}"
    out["maelens"] = str(meta.get("code_version", ""))
    return out
