"""The robustness study's tables, laid out like the seed paper's, from a `ResultSet` alone:

    table1_blur            Table I: blur level, kernel, sigma, top-1 %, PSNR dB, SSIM
    table2_imagenet_c      Table II: severity x corruption top-1 %, mean per corruption, CE,
                           mCE / relative mCE (AlexNet-normalised; ImageNet-C proper only)
    table3_<curve>         Table III: Eq. 1 cosine per level (all / correct / wrong), norm
                           differences, ΔC; one per family (blur, each occlusion curve)
    table3_imagenet_c      the Eq. 1 cosine per corruption x severity
    table_mask_invariance  random-mask invariance (III-B2, first paragraph)

Each is written as CSV and Markdown (atomically), and all of them into `tables.md`. Numbers are
printed at fixed precision (top-1 and PSNR 2 decimals, SSIM and cosines 3), so the same
results give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maelens.errors import MaelensError
from maelens.results.io import atomic_write
from maelens.results.store import ResultSet

SHORT = {"gaussian_noise": "Gauss.", "shot_noise": "Shot", "impulse_noise": "Impulse",
         "defocus_blur": "Defocus", "glass_blur": "Glass", "motion_blur": "Motion",
         "zoom_blur": "Zoom", "snow": "Snow", "frost": "Frost", "fog": "Fog",
         "brightness": "Bright", "contrast": "Contrast", "elastic_transform": "Elastic",
         "pixelate": "Pixel", "jpeg_compression": "JPEG"}
CURVE_TITLES = {"pixels-rollout": "attention-guided occlusion (rollout-ranked patches, pixel "
                                  "fill)",
                "tokens-rollout": "attention-guided token dropping (rollout-ranked patches)",
                "pixels-random": "random-patch control (pixel fill)"}


@dataclass
class Table:
    """One table: file stem, title, header and rows of printed cells, notes below it."""

    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buffer.getvalue()

    def markdown(self) -> str:
        cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - a pipe ends a cell
        lines = [f"**{self.title}**", "", "| " + " | ".join(map(cell, self.header)) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(map(cell, row)) + " |" for row in self.rows]
        lines += [""] + [f"{note}" for note in self.notes] if self.notes else []
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- reading rows
def pick_model(results: ResultSet, model: str | None) -> str:
    """`model`, or the only model of the results; a clear error otherwise."""
    models = sorted({r["model"] for r in results.rows})
    if model is None:
        if len(models) != 1:
            raise MaelensError(f"the results hold {len(models)} models ({', '.join(models)}); "
                               "name one with `model`.")
        return models[0]
    if model not in models:
        raise MaelensError(f"the results hold no model {model!r}; present: {', '.join(models)}.")
    return model


def value(results: ResultSet, model: str, analysis: str, condition: str, metric: str,
          **extra: Any) -> dict | None:
    """The one row (analysis, condition, metric[, extra fields]) or None."""
    for row in results.select(model=model, analysis=analysis, condition=condition,
                              metric=metric):
        if all((row.get("extra") or {}).get(k) == v for k, v in extra.items()):
            return row
    return None


def conditions(results: ResultSet, family: str) -> list[dict]:
    return [c for c in results.meta.get("conditions", []) if c["family"] == family]


def fmt(row_or_value: dict | float | None, digits: int) -> str:
    """A row's value (or a number) at fixed precision; "–" when missing."""
    v = row_or_value["value"] if isinstance(row_or_value, dict) else row_or_value
    if v is None:
        return "–"
    return "inf" if v == float("inf") else f"{v:.{digits}f}"


def fmt_ci(row: dict | None, digits: int) -> str:
    if row is None or row.get("ci_low") is None or row.get("ci_high") is None:
        return "–"
    return f"[{row['ci_low']:.{digits}f}, {row['ci_high']:.{digits}f}]"


# --------------------------------------------------------------------------- the tables
def table_blur(results: ResultSet, model: str) -> Table | None:
    """Table I, one row per blur level (clean first), PSNR rank added."""
    levels = conditions(results, "blur")
    if not levels:
        return None
    order = results.meta.get("blur_order", {})
    rank = {lv: i + 1 for i, lv in enumerate(order.get("psnr_order", []))}
    clean = value(results, model, "accuracy", "clean", "top1")
    rows = [["clean", "–", "–", fmt(clean, 2), fmt_ci(clean, 2), "inf", "1.000", "–"]]
    for c in levels:
        acc = value(results, model, "accuracy", c["name"], "top1")
        rows.append([c["level"], str(c["kernel_size"]), f"{c['sigma']:g}", fmt(acc, 2),
                     fmt_ci(acc, 2),
                     fmt(value(results, model, "image_quality", c["name"], "psnr_db_mean"), 2),
                     fmt(value(results, model, "image_quality", c["name"], "ssim_mean"), 3),
                     str(rank.get(c["level"], "–"))])
    notes = [f"Model {model}; {_images(results)}. Gaussian blur (torchvision-equal) of the "
             "[0, 1] RGB input at the model's resolution; kernel k and sigma in pixels; PSNR "
             "and SSIM against the clean input (scikit-image definitions); 95 % bootstrap CI."]
    if order:
        notes.append(f"Blur order: {order['note']}.")
    return Table("table1_blur", "Table I: top-1 accuracy, PSNR and SSIM per Gaussian blur level",
                 ["Blur level", "k (px)", "sigma (px)", "Top-1 (%)", "95 % CI", "PSNR (dB)",
                  "SSIM", "PSNR rank"], rows, notes)


def _corruption_grid(results: ResultSet) -> tuple[list[str], list[int], dict]:
    grid: dict[tuple[str, int], dict] = {}
    for c in conditions(results, "corruption"):
        grid[(c["corruption"], c["severity"])] = c
    names = list(dict.fromkeys(c for c, _ in grid))
    severities = sorted({s for _, s in grid})
    return names, severities, grid


def table_imagenet_c(results: ResultSet, model: str) -> Table | None:
    """Table II: rows severity 1..5, then mean, CE and relative CE; columns corruptions."""
    names, severities, grid = _corruption_grid(results)
    if not names:
        return None
    rows = []
    for s in severities:
        rows.append([str(s)] + [fmt(value(results, model, "accuracy", grid[(n, s)]["name"],
                                          "top1"), 1) if (n, s) in grid else "–"
                                for n in names])
    for label, metric in (("mean", "top1_mean"), ("CE (%)", "ce"),
                          ("rel. CE (%)", "relative_ce")):
        cells = [fmt(_summary(results, model, metric, n), 1) for n in names]
        if any(cell != "–" for cell in cells):
            rows.append([label] + cells)
    return Table("table2_imagenet_c", "Table II: top-1 accuracy (%) per corruption and severity",
                 ["Severity"] + [SHORT.get(n, n) for n in names], rows,
                 _imagenet_c_notes(results, model))


def _summary(results: ResultSet, model: str, metric: str, level: str) -> dict | None:
    for row in results.select(model=model, analysis="imagenet_c", metric=metric):
        if row["level"] == level:
            return row
    return None


def _imagenet_c_notes(results: ResultSet, model: str) -> list[str]:
    source = next((c.get("source") for c in conditions(results, "corruption")), "")
    clean = value(results, model, "accuracy", "clean", "top1")
    notes = [f"Model {model}; {_images(results)}; corruptions: {source}. Clean top-1: "
             f"{fmt(clean, 1)} %; mean over every corruption and severity: "
             f"{fmt(_summary(results, model, 'top1_mean', 'all'), 1)} %."]
    mce, rel = _summary(results, model, "mce", "all"), _summary(results, model, "relative_mce",
                                                                  "all")
    if mce is not None:
        extra = mce.get("extra") or {}
        verdict = ("comparable with published ImageNet-C numbers" if extra.get("comparable")
                   else "NOT comparable with published ImageNet-C numbers (not ImageNet-C "
                        "proper)")
        notes.append(f"mCE {fmt(mce, 1)} %, relative mCE {fmt(rel, 1)} % over "
                     f"{extra.get('corruptions')} corruptions, AlexNet-normalised (Hendrycks "
                     f"& Dietterich 2019): {verdict}. {extra.get('note', '')}.")
    return notes


def table_alignment(results: ResultSet, model: str, family: str, group: str | None = None
                    ) -> Table | None:
    """Table III for one family (blur) or occlusion curve: levels as columns."""
    levels = [c for c in conditions(results, family) if group is None or c["group"] == group]
    if not levels:
        return None
    columns = [(c["level"], c["name"]) for c in levels]
    if family == "occlusion":  # p = 0 is the clean pass
        columns = [("0%", None)] + sorted(columns, key=lambda lc: float(lc[0].rstrip("%")))
    rows = []
    for label, metric, split, digits in (
            ("Mean sim. (all)", "cosine_mean", "all", 3),
            ("Mean sim. (correct)", "cosine_mean", "correct", 3),
            ("Mean sim. (wrong)", "cosine_mean", "wrong", 3),
            ("Mean norm diff. (all)", "norm_diff_mean", "all", 2),
            ("Mean norm diff. (correct)", "norm_diff_mean", "correct", 2),
            ("Mean norm diff. (wrong)", "norm_diff_mean", "wrong", 2),
            ("Images correct", "count", "correct", 0), ("Images wrong", "count", "wrong", 0)):
        rows.append([label] + [_alignment_cell(results, model, name, metric, split, digits)
                               for _, name in columns])
    rows.append(["Top-1 (%)"] + [fmt(value(results, model, "accuracy", name or "clean",
                                           "top1"), 2) for _, name in columns])
    rows.append(["ΔC (features)"] + [
        "0.000" if name is None else
        fmt(value(results, model, "head_features", name, "delta_c_mean"), 3)
        for _, name in columns])
    curve = (group or "").removeprefix("occlusion/").removesuffix(
        "-" + str(levels[0].get("fill"))) if family == "occlusion" else "blur"
    title = CURVE_TITLES.get(curve, "Gaussian blur")
    stem = "table3_" + (group or family).replace("/", "_")
    notes = [f"Model {model}; {_images(results)}. Eq. 1 cosine between the clean and perturbed "
             "mean patch embeddings (last block, before the final norm), split by the "
             "perturbed pass's top-1; norm diff. = | |z_pert| - |z_clean| |; ΔC = mean over "
             "layers, heads and classes of C_clean - C_common (top-k common features)."]
    if family == "occlusion":
        notes.append("p = 0 % is the clean pass: cosine 1 and ΔC 0 by definition.")
    return Table(stem, f"Table III: mean cosine similarity, clean vs perturbed — {title}",
                 ["Level"] + [label for label, _ in columns], rows, notes)


def _alignment_cell(results: ResultSet, model: str, condition: str | None, metric: str,
                    split: str, digits: int) -> str:
    if condition is None:  # the clean pass: identical embeddings
        correct = value(results, model, "accuracy", "clean", "top1")
        n = (correct or {}).get("extra", {}) or {}
        counts = {"correct": n.get("correct"), "wrong": (n.get("images") or 0)
                  - (n.get("correct") or 0), "all": n.get("images")}
        if metric == "count":
            return "–" if counts[split] is None else str(counts[split])
        if not counts[split]:
            return "–"
        return fmt(1.0 if metric == "cosine_mean" else 0.0, digits)
    row = value(results, model, "alignment", condition, metric, split=split)
    return "–" if row is None or row["value"] is None else fmt(row, digits)


def table_alignment_corruptions(results: ResultSet, model: str) -> Table | None:
    """Eq. 1 cosine (all images) per corruption (columns) and severity (rows)."""
    names, severities, grid = _corruption_grid(results)
    if not names:
        return None
    rows = [[str(s)] + [_alignment_cell(results, model, grid[(n, s)]["name"], "cosine_mean",
                                        "all", 3) if (n, s) in grid else "–" for n in names]
            for s in severities]
    return Table("table3_imagenet_c", "Table III (ImageNet-C): mean cosine similarity, clean vs "
                 "corrupted", ["Severity"] + [SHORT.get(n, n) for n in names], rows,
                 [f"Model {model}; {_images(results)}; all images."])


def table_mask_invariance(results: ResultSet, model: str) -> Table | None:
    rows_of = {r["metric"]: r for r in results.select(model=model, analysis="mask_invariance")}
    if not rows_of:
        return None
    info = results.meta.get("mask_invariance") or {}
    cells = [f"{info.get('ratio', float('nan')):.2f}", str(info.get("k_masks", "–")),
             str((rows_of["pairwise_cosine_mean"].get("extra") or {}).get("images", "–"))]
    for metric, digits in (("pairwise_cosine_mean", 3), ("cosine_to_unmasked_mean", 3),
                           ("norm_range_mean", 2), ("norm_range_relative_mean", 3),
                           ("unmasked_norm_mean", 2)):
        cells += [fmt(rows_of.get(metric), digits), fmt_ci(rows_of.get(metric), digits)]
    return Table("table_mask_invariance", "Random-mask invariance of the embedding direction "
                 "and norm", ["Mask ratio", "K masks", "Images", "Pairwise cos", "95 % CI",
                              "Cos to unmasked", "95 % CI", "Norm range", "95 % CI",
                              "Norm range / norm", "95 % CI", "Unmasked norm", "95 % CI"],
                 [cells], [f"Model {model}; {_images(results)}. Per image: K random masks at "
                           "the ratio; mean pairwise cosine among the K masked-view embeddings, "
                           "mean cosine to the unmasked embedding, max - min of the K norms."])


def _images(results: ResultSet) -> str:
    info = results.meta.get("images", {})
    return f"{info.get('count', '?')} images of {info.get('source', '?')}"


def robustness_tables(results: ResultSet, model: str | None = None) -> list[Table]:
    """Every table the results support, in paper order."""
    model = pick_model(results, model)
    groups = list(dict.fromkeys(c["group"] for c in conditions(results, "occlusion")))
    tables = [table_blur(results, model), table_imagenet_c(results, model),
              table_alignment(results, model, "blur"),
              *[table_alignment(results, model, "occlusion", g) for g in groups],
              table_alignment_corruptions(results, model), table_mask_invariance(results, model)]
    return [t for t in tables if t is not None]


def write_robustness_tables(results: ResultSet, out_dir: str | os.PathLike,
                            model: str | None = None) -> list[Path]:
    """Write <name>.csv and <name>.md per table and tables.md with all, atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    tables = robustness_tables(results, model)
    for table in tables:
        for suffix, text in ((".csv", table.csv()), (".md", table.markdown())):
            path = out / f"{table.name}{suffix}"
            atomic_write(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
            paths.append(path)
    combined = "\n".join(t.markdown() for t in tables)
    paths.append(atomic_write(out / "tables.md",
                              lambda tmp: tmp.write_text(combined, encoding="utf-8")))
    return paths
