"""`maelens robustness` (the seed paper's robustness study of a fine-tuned classifier: tables,
figures, results) and `maelens corrupt` (an ImageNet-C-layout folder from any image set)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from maelens.cli._common import (
    ArchOpt,
    check_options,
    friendly,
    load_checkpoint,
    note,
    progress_bar,
    say,
)
from maelens.cli._study_options import (
    BatchOpt,
    ClassesOpt,
    DeviceOpt,
    DtypeOpt,
    ImagesOpt,
    ModelOpt,
    OutDirOpt,
    PerClassOpt,
    SeedOpt,
)
from maelens.errors import MaelensError

BlurOpt = Annotated[str, typer.Option(
    "--blur", help="blur levels: 'paper' (Table I), 'none' or KERNEL:SIGMA pairs, e.g. 5:1,7:2")]
OcclusionOpt = Annotated[str, typer.Option(
    "--occlusion", help="occlusion levels in %, e.g. 0,10,...,90 ('paper'), or 'none'")]
CurvesOpt = Annotated[str, typer.Option(
    "--curves", help="occlusion curves: pixels (rollout, pixel fill), tokens (rollout, tokens "
    "dropped), random (control)")]
FillOpt = Annotated[str, typer.Option("--fill", help="occluded pixels: zero | mean | noise")]
CorruptionsOpt = Annotated[str, typer.Option(
    "--corruptions", help="ImageNet-C corruptions: 'all', 'none' or names, e.g. fog,snow")]
SeveritiesOpt = Annotated[str, typer.Option("--severities", help="severities, e.g. 1,3,5 or all")]
ImagenetCOpt = Annotated[Path | None, typer.Option(
    "--imagenet-c", help="pre-generated ImageNet-C root (<corruption>/<severity>/<class>/<file>)"
    "; the corrupted files replace the synthetic corruptions")]
MasksOpt = Annotated[int, typer.Option(
    "--masks", min=0, help="K random masks per image for the invariance study (0: skip)")]
MaskRatioOpt = Annotated[float, typer.Option(
    "--mask-ratio", help="masking ratio of the K random masks, in (0, 1)")]

TopKOpt = Annotated[int, typer.Option("--top-k", help="active features per head")]
ThresholdOpt = Annotated[float, typer.Option(
    "--threshold", help="fraction of a class's images a common feature is active in")]
BootstrapOpt = Annotated[int, typer.Option(
    "--bootstrap", help="bootstrap draws of the 95 % CIs (0: none)")]
RestrictOpt = Annotated[bool, typer.Option(
    "--restrict", help="argmax over the evaluated classes only (default: all logits)")]


def register(app: typer.Typer) -> None:
    """Add `robustness` and `corrupt` to the `maelens` command."""
    app.command("robustness")(robustness)
    app.command("corrupt")(corrupt_folder)


def _settings(blur: str, occlusion: str, curves: str, fill: str, corruptions: str,
              severities: str, imagenet_c: Path | None, **rest: Any) -> Any:
    """Parse and validate every study option (before any model or image is read)."""
    from maelens.engine.condition_sets import (
        parse_blur_levels,
        parse_corruptions,
        parse_percents,
        parse_severities,
    )
    from maelens.studies.robustness import CURVES, RobustnessSettings

    names = tuple(c.strip() for c in curves.split(",") if c.strip())
    if not names or set(names) - set(CURVES):
        raise MaelensError(f"`--curves` must list some of {', '.join(CURVES)}, got {curves!r}.")
    parsed = {"blur_levels": parse_blur_levels(blur), "percents": parse_percents(occlusion),
              "corruptions": parse_corruptions(corruptions),
              "severities": parse_severities(severities)}
    if imagenet_c is not None:
        from maelens.studies.imagenet_c import scan_imagenet_c

        tree = scan_imagenet_c(imagenet_c)
        for line in tree.describe():
            note(f"imagenet-c: {line}")
        tree.require(parsed["corruptions"], parsed["severities"])
    try:
        return RobustnessSettings(curves=names, fill=fill, imagenet_c=None if imagenet_c is None
                                  else str(imagenet_c), **parsed, **rest)
    except MaelensError as exc:  # name the command-line spelling of a settings field
        raise MaelensError(re.sub(r"^`(\w+)`", lambda m: f"`--{m[1].replace('_', '-')}`",
                                  str(exc))) from None


@friendly
def robustness(
    model: ModelOpt,
    images: ImagesOpt,
    out_dir: OutDirOpt,
    classes: ClassesOpt = None,
    per_class: PerClassOpt = None,
    blur: BlurOpt = "paper",
    occlusion: OcclusionOpt = "paper",
    curves: CurvesOpt = "pixels,tokens,random",
    fill: FillOpt = "zero",
    corruptions: CorruptionsOpt = "all",
    severities: SeveritiesOpt = "all",
    imagenet_c: ImagenetCOpt = None,
    masks: MasksOpt = 100,
    mask_ratio: MaskRatioOpt = 0.75,
    top_k: TopKOpt = 10,
    threshold: ThresholdOpt = 0.6,
    bootstrap: BootstrapOpt = 1000,
    restrict: RestrictOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    batch_size: BatchOpt = 64,
    arch: ArchOpt = None,
) -> None:
    """The robustness study of a fine-tuned classifier (seed paper Tables I-III, Fig. 5-8)."""
    from maelens.report.fig_robustness import write_robustness_figures
    from maelens.report.tables_robustness import write_robustness_tables
    from maelens.studies.inputs import load_image_set
    from maelens.studies.robustness import check_classifier, logit_classes, run_robustness

    opts = check_options(device=device, seed=seed, out_folder=out_dir, arch=arch or [])
    settings = _settings(blur, occlusion, curves, fill, corruptions, severities, imagenet_c,
                         masks=masks, mask_ratio=mask_ratio, top_k=top_k, threshold=threshold,
                         bootstrap=bootstrap, seed=seed, device=opts.device, dtype=dtype,
                         batch_size=batch_size, restrict=restrict)
    net = load_checkpoint(model, opts.arch, opts.device)
    check_classifier(net, model)
    data = load_image_set(images, net.config.image_size, classes=classes, per_class=per_class,
                          seed=seed)
    for path, why in data.skipped:
        note(f"skipped {path}: {why}")
    settings = _with_classes(settings, logit_classes(data, net.config.num_classes))
    from maelens.engine.distributed import finish, init_from_env

    world = init_from_env(opts.device)  # torchrun: one shard per rank
    bar, advance = progress_bar(len(data), "robustness")
    with bar:
        results = run_robustness(net, data, settings, out_dir if world.is_main else None,
                                 model_name=model, progress=advance)
    finish(world)
    if results is None:
        return
    tables = write_robustness_tables(results, out_dir / "tables")
    figures = write_robustness_figures(results, out_dir / "figures")
    _report(results, model)
    say(f"wrote {out_dir}/results.json, {len(tables)} table files in {out_dir}/tables, "
        f"{len(figures)} figure files in {out_dir}/figures")


def _with_classes(settings: Any, classes: tuple[int, ...] | None) -> Any:
    import dataclasses

    return dataclasses.replace(settings, classes=classes)


def _report(results: Any, model: str) -> None:
    """A few headline numbers on stdout (the tables hold the rest)."""
    from maelens.report.tables_robustness import value

    clean = value(results, model, "accuracy", "clean", "top1")
    say(f"{model}: clean top-1 {clean['value']:.2f} % on {results.meta['images']['count']} "
        f"images of {results.meta['images']['source']}")
    order = results.meta.get("blur_order")
    if order:
        say(f"  blur: {order['note']}")
    for row in results.select(model=model, analysis="imagenet_c", level="all"):
        extra = row.get("extra") or {}
        tag = "" if row["metric"] == "top1_mean" or extra.get("comparable") else \
            " (not ImageNet-C proper: not comparable with published numbers)"
        say(f"  corruptions: {row['metric']} {row['value']:.2f} %{tag}")
    for row in results.select(model=model, analysis="mask_invariance",
                              metric="pairwise_cosine_mean"):
        say(f"  random masks: mean pairwise cosine {row['value']:.3f}")


@friendly
def corrupt_folder(
    images: ImagesOpt,
    out_dir: OutDirOpt,
    size: Annotated[int, typer.Option("--size", min=8, help="image side in pixels (ImageNet-C: "
                                      "224, resize 256 + centre crop)")] = 224,
    corruptions: CorruptionsOpt = "all",
    severities: SeveritiesOpt = "all",
    classes: ClassesOpt = None,
    per_class: PerClassOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 32,
) -> None:
    """Write <out>/<corruption>/<severity>/<class>/<image>.png from any image set."""
    from maelens.engine.condition_sets import parse_corruptions, parse_severities
    from maelens.studies.inputs import load_image_set

    check_options(seed=seed, out_folder=out_dir)
    names, levels = parse_corruptions(corruptions), parse_severities(severities)
    if not names:
        raise MaelensError("`--corruptions` names none; give 'all' or names such as fog,snow.")
    data = load_image_set(images, size, classes=classes, per_class=per_class, seed=seed)
    for path, why in data.skipped:
        note(f"skipped {path}: {why}")
    targets = _targets(data)
    bar, advance = progress_bar(len(data) * len(names) * len(levels), "corrupting")
    with bar:
        for name in names:
            for severity in levels:
                _write_corrupted(data, name, severity, seed, batch_size,
                                 out_dir / name / str(severity), targets, advance)
    say(f"wrote {len(data)} images x {len(names)} corruptions x {len(levels)} severities "
        f"({size} px, seed {seed}) into {out_dir}")


def _targets(data: Any) -> list[str]:
    """`<class>/<stem>.png` per image; the stem keeps letters, digits, '.', '_' and '-'."""
    out = []
    for name, label in zip(data.names, data.labels.tolist(), strict=True):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem) or "image"
        folder = re.sub(r"[^A-Za-z0-9._-]", "_", data.class_names[label]) or "class"
        out.append(f"{folder}/{stem}.png")
    if len(set(out)) != len(out):
        raise MaelensError("two input images map to the same output file name (same class and "
                           "file stem, e.g. a.jpg and a.png); rename one of them.")
    return out


def _write_corrupted(data: Any, name: str, severity: int, seed: int, batch_size: int,
                     folder: Path, targets: list[str], advance: Any) -> None:
    import numpy as np
    from PIL import Image

    from maelens.atomic import atomic_write
    from maelens.perturb.corruptions import corrupt

    for batch in data.batches(batch_size):
        pixels = corrupt(batch.pixels, name, severity, batch.index, seed)  # 8-bit levels
        uint8 = (pixels * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        for i, image in zip(batch.index.tolist(), uint8, strict=True):
            path = folder / targets[i]
            path.parent.mkdir(parents=True, exist_ok=True)
            picture = Image.fromarray(np.ascontiguousarray(image))
            atomic_write(path, lambda tmp, pic=picture: pic.save(tmp, format="PNG"))
        advance(len(batch.index))
