"""`maelens tsne` and `maelens separability`: the layer-wise embedding studies (seed paper
III-A2, Fig. 1 and Fig. 2), thin commands over `maelens.studies.layerwise_embeddings`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from maelens.cli._common import (
    check_options,
    friendly,
    load_checkpoint,
    out,
    progress_bar,
    say,
    torch_dtype,
)
from maelens.cli._study_options import (
    BatchOpt,
    ClassesOpt,
    DeviceOpt,
    DtypeOpt,
    ImagesOpt,
    LayersOpt,
    MaskRatioOpt,
    ModelOpt,
    ModelsOpt,
    OutDirOpt,
    PerClassOpt,
    SeedOpt,
)
from maelens.errors import MaelensError

PerImageOpt = Annotated[int, typer.Option(
    "--per-image", min=1, help="visible patch tokens sampled per image (seeded)")]


def register(app: typer.Typer) -> None:
    """Add `tsne` and `separability` to the `maelens` command."""
    app.command("tsne")(tsne)
    app.command("separability")(separability)


def _prepare(models: list[str], images: str, classes: int | None, per_class: int | None,
             mask_ratio: float, seed: int, layers: str, device: str, dtype: str,
             batch_size: int, per_image: int, out_dir: Path) -> tuple[list, Any, Any]:
    """Check the options, load the models and the images: (named models, images, settings)."""
    from maelens._validate import check_ratio, resolve_layers
    from maelens.studies.layerwise_embeddings import PassSettings, load_study_images

    opts = check_options(device=device, layers=layers, out_folder=out_dir)
    check_ratio("--mask-ratio", mask_ratio)
    compute = torch_dtype(dtype)
    nets = [(name, load_checkpoint(name, device=opts.device)) for name in models]
    chosen = [resolve_layers("--layers", opts.layers, 0, net.depth) for _, net in nets]
    sizes = {(net.config.image_size, net.config.patch_size) for _, net in nets}
    if len(sizes) > 1:
        raise MaelensError(f"`--model`: the two models take different inputs (image size, "
                           f"patch size) {sorted(sizes)}; CKA needs the same images and "
                           "patches; fix: compare models of one input size.")
    image_set = load_study_images(images, nets[0][1], classes, per_class, seed)
    settings = PassSettings(mask_ratio=mask_ratio, seed=seed, layers=list(chosen[0]),
                            device=opts.device, dtype=compute, batch_size=batch_size,
                            per_image=per_image)
    if len(nets) == 2 and chosen[0] != chosen[1]:
        raise MaelensError(f"`--layers {layers}` selects layers {list(chosen[0])} of "
                           f"{models[0]} but {list(chosen[1])} of {models[1]}; fix: give "
                           "explicit layers both models have.")
    return nets, image_set, settings


@friendly
def tsne(
    model: ModelOpt,
    images: ImagesOpt = "mnist:test",
    classes: ClassesOpt = 3,
    per_class: PerClassOpt = 30,
    mask_ratio: MaskRatioOpt = 0.75,
    seed: SeedOpt = 0,
    layers: LayersOpt = "all",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    batch_size: BatchOpt = 64,
    out_dir: OutDirOpt = Path("out/tsne"),
    perplexity: Annotated[float, typer.Option(help="t-SNE perplexity (lowered to (N-1)/3 "
                                                   "when larger)")] = 30.0,
    iterations: Annotated[int, typer.Option(min=1, help="t-SNE iterations after the 250 "
                                                        "early-exaggeration ones")] = 500,
    patch_tokens: Annotated[int, typer.Option(
        "--patch-tokens", min=4, help="patch tokens in the t-SNE, stratified by class")] = 1500,
    per_image: PerImageOpt = 16,
) -> None:
    """t-SNE per layer of CLS, mean-patch and patch tokens (seed paper Fig. 1 and Fig. 2).

    Default: 3 classes x 30 images and 75 % masking, as in the paper's Fig. 1-2.
    """
    from maelens.analyses.tsne import TSNESettings
    from maelens.studies.layerwise_embeddings import run_tsne_study

    tsne_settings = TSNESettings(seed=seed, perplexity=perplexity, n_iter=iterations)
    nets, image_set, settings = _prepare([model], images, classes, per_class, mask_ratio, seed,
                                         layers, device, dtype, batch_size, per_image, out_dir)
    bar, advance = progress_bar(len(image_set), "embedding")
    with bar:
        results = run_tsne_study(nets[0][1], image_set, settings, tsne_settings,
                                 model_name=model, patch_total=patch_tokens, out_dir=out_dir,
                                 progress=advance, stage=lambda kind: say(f"t-SNE of {kind}"))
    meta = next(iter(results.meta["analyses"].values()))
    for kind, seconds in meta["seconds"].items():
        cpu = meta["cpu_seconds"][kind]
        say(f"t-SNE of {kind}: {len(seconds)} layers, {sum(seconds) / len(seconds):.2f} s per "
            f"layer ({sum(cpu) / len(cpu):.2f} s CPU; perplexity "
            f"{meta['perplexity_used'][kind]:.1f})")
    say(f"wrote {out_dir / 'results.json'} and {len(results.meta['figures'])} figure files")


@friendly
def separability(
    model: ModelsOpt,
    images: ImagesOpt = "mnist:test",
    train_images: Annotated[str | None, typer.Option(
        "--train-images", help="fit k-NN / probe on these images (else a seeded split of "
                               "--images)")] = None,
    classes: ClassesOpt = None,
    per_class: PerClassOpt = None,
    mask_ratio: MaskRatioOpt = 0.0,
    seed: SeedOpt = 0,
    layers: LayersOpt = "all",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    batch_size: BatchOpt = 64,
    out_dir: OutDirOpt = Path("out/separability"),
    test_fraction: Annotated[float, typer.Option(
        "--test-fraction", help="held-out share of each class without --train-images")] = 0.25,
    k: Annotated[int, typer.Option("--k", min=1, help="neighbours of the k-NN")] = 20,
    probe: Annotated[str, typer.Option(
        "--probe", help="linear probe: logistic (lbfgs) | ridge (closed form, faster)")
    ] = "logistic",
    patch_tokens: Annotated[int, typer.Option(
        "--patch-tokens", min=4, help="patch-token rows per side, stratified by class")] = 4000,
    per_image: PerImageOpt = 16,
) -> None:
    """k-NN, probe, silhouette and Fisher ratio per layer; linear CKA (give two --model to
    compare them, e.g. an MAE and a ViT)."""
    from maelens.analyses.separability import SeparabilitySettings
    from maelens.studies.layerwise_embeddings import SeparabilityPlan, run_separability_study

    if not 1 <= len(model) <= 2:
        raise MaelensError(f"`--model` takes one model, or two to compare, got {len(model)}.")
    if probe not in ("logistic", "ridge"):
        raise MaelensError(f"`--probe` must be 'logistic' or 'ridge', got {probe!r}.")
    plan = SeparabilityPlan(SeparabilitySettings(k=k, probe=probe, test_fraction=test_fraction,
                                                 seed=seed), patch_total=patch_tokens)
    if not 0 < test_fraction < 1:
        raise MaelensError(f"`--test-fraction` must lie in (0, 1), got {test_fraction}.")
    nets, image_set, settings = _prepare(model, images, classes, per_class, mask_ratio, seed,
                                         layers, device, dtype, batch_size, per_image, out_dir)
    train = None
    if train_images is not None:
        from maelens.studies.layerwise_embeddings import load_study_images

        train = load_study_images(train_images, nets[0][1], classes, per_class, seed)
    total = len(nets) * (len(image_set) + (len(train) if train is not None else 0))
    bar, advance = progress_bar(total, "embedding")
    with bar:
        results = run_separability_study(nets, image_set, settings, plan, train_images=train,
                                         out_dir=out_dir, progress=advance)
    print_tables(results)
    say(f"wrote {out_dir / 'results.json'} and {len(results.meta['figures'])} figure files")


def print_tables(results: Any) -> None:
    """One narrow table per (model, kind): the four measures per layer; CKA same-layer values
    between the two models."""
    from rich.table import Table

    from maelens.report.fig_layerwise_embeddings import cka_panels, separability_table

    metrics = ("knn_accuracy", "probe_accuracy", "silhouette", "fisher_ratio")
    for (model, kind), values in separability_table(results).items():
        grid = Table(title=f"{model}, {kind}: separability per layer", title_justify="left")
        for column in ("layer", "k-NN acc.", "probe acc.", "silhouette", "Fisher ratio"):
            grid.add_column(column, justify="right")
        by_layer = {m: dict(values.get(m, [])) for m in metrics}
        for layer in sorted(by_layer["knn_accuracy"]):
            grid.add_row(str(layer), *[_fmt(by_layer[m].get(layer)) for m in metrics])
        out.print(grid)
    for model, analysis, matrix, layers_a, layers_b in cka_panels(results):
        if "between" in analysis:
            same = [f"{a}:{matrix[i, list(layers_b).index(a)]:.3f}"
                    for i, a in enumerate(layers_a) if a in list(layers_b)]
            say(f"{analysis} {model}, same layer: {' '.join(same)}")


def _fmt(value: float) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"
