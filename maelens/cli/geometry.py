"""`maelens subspaces` and `maelens attention`: the layer-wise geometry studies (seed paper
Fig. 4 and Fig. 3) as thin commands over `maelens.studies.layerwise_geometry`.

`register(app)` adds both commands to a Typer app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from maelens.cli._common import (
    check_options,
    friendly,
    load_checkpoint,
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

KOpt = Annotated[int, typer.Option("--k", min=1, help="dimension of each class subspace")]
CentredOpt = Annotated[bool, typer.Option(
    "--centred/--uncentred", help="subtract each class's mean first (the paper: un-centred)")]
PolicyOpt = Annotated[str, typer.Option(
    "--cls-policy", help="exclude: drop CLS as query and key and renormalise rows over patches;"
    " raw: drop the CLS column without renormalising")]


def _settings(mask_ratio: float, seed: int, device: str, dtype: str, batch_size: int) -> Any:
    from maelens._validate import check_ratio
    from maelens.studies.layerwise_geometry import PassSettings

    check_ratio("--mask-ratio", mask_ratio)
    return PassSettings(mask_ratio=mask_ratio, seed=seed, device=device,
                        dtype=torch_dtype(dtype), batch_size=batch_size)


def _load(model: str, images: str, device: str, classes: int | None, per_class: int | None,
          seed: int) -> tuple[Any, Any]:
    from maelens.studies.inputs import load_image_set

    net = load_checkpoint(model, None, device)
    return net, load_image_set(images, net.config.image_size, classes=classes,
                               per_class=per_class, seed=seed)


def _layers(parsed: Any, net: Any, first: int) -> list[int]:
    from maelens._validate import resolve_layers

    return list(resolve_layers("--layers", parsed, first, net.depth))


def subspaces(
    model: ModelOpt,
    images: ImagesOpt = "mnist:test",
    classes: ClassesOpt = None,
    per_class: PerClassOpt = None,
    mask_ratio: MaskRatioOpt = 0.75,
    seed: SeedOpt = 0,
    layers: LayersOpt = "all",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    batch_size: BatchOpt = 64,
    out_dir: OutDirOpt = Path("out/subspaces"),
    k: KOpt = 10,
    centred: CentredOpt = False,
) -> None:
    """Class subspaces per layer and the principal angles θ1 between classes (Fig. 4)."""
    from maelens.studies.layerwise_geometry import subspaces_study, theta1_medians

    opts = check_options(device=device, layers=layers, seed=seed, out_folder=out_dir)
    settings = _settings(mask_ratio, seed, opts.device, dtype, batch_size)
    net, image_set = _load(model, images, opts.device, classes, per_class, seed)
    chosen = _layers(opts.layers, net, 0)
    bar, advance = progress_bar(len(image_set), "subspaces")
    with bar:
        results = subspaces_study(net, image_set, out_dir, name=model, k=k, centred=centred,
                                  layers=chosen, settings=settings, progress=advance)
    kinds = {kind: theta1_medians(results, kind) for kind in ("patch", "cls", "mean_patch")}
    say(f"{model} on {len(image_set)} images of {image_set.source}, mask ratio {mask_ratio:g}, "
        f"k = {k}, {'centred' if centred else 'un-centred'}: median θ1 (deg) over class pairs")
    say(f"{'layer':>5} {'patch':>8} {'cls':>8} {'mean_patch':>11}")
    for layer in chosen:
        cells = [kinds[kind].get(layer) for kind in ("patch", "cls", "mean_patch")]
        text = [f"{v:.2f}" if v is not None else "n/a" for v in cells]
        say(f"{layer:>5} {text[0]:>8} {text[1]:>8} {text[2]:>11}")
    say(f"wrote {out_dir / 'results.json'} and figures in {out_dir}")


def attention(
    model: ModelsOpt,
    images: ImagesOpt = "mnist:test",
    classes: ClassesOpt = None,
    per_class: PerClassOpt = None,
    mask_ratio: MaskRatioOpt = 0.0,
    seed: SeedOpt = 0,
    layers: LayersOpt = "all",
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    batch_size: BatchOpt = 64,
    out_dir: OutDirOpt = Path("out/attention"),
    cls_policy: PolicyOpt = "exclude",
) -> None:
    """Mean attention distance (pixels) per head and layer, one or two models (Fig. 3)."""
    from maelens.analyses.attention_distance import CLS_POLICIES
    from maelens.studies.layerwise_geometry import attention_study, head_mean_distances

    if not 1 <= len(model) <= 2 or len(set(model)) != len(model):
        raise MaelensError(f"`--model` must name one model, or two different ones to compare, "
                           f"got {model}.")
    if cls_policy not in CLS_POLICIES:
        raise MaelensError(f"`--cls-policy` must be one of {', '.join(CLS_POLICIES)}, got "
                           f"{cls_policy!r}.")
    opts = check_options(device=device, layers=layers, seed=seed, out_folder=out_dir)
    settings = _settings(mask_ratio, seed, opts.device, dtype, batch_size)
    runs = []
    for name in model:
        net, image_set = _load(name, images, opts.device, classes, per_class, seed)
        runs.append((name, net, image_set))
    chosen = [_layers(opts.layers, net, 1) for _, net, _ in runs]
    total = sum(len(image_set) for _, _, image_set in runs)
    bar, advance = progress_bar(total, "attention")
    with bar:
        results = attention_study(runs, out_dir, cls_policy=cls_policy, layers=opts.layers,
                                  settings=settings, progress=advance)
    say(f"mean attention distance (px, mean over heads), {len(runs[0][2])} images of "
        f"{runs[0][2].source}, mask ratio {mask_ratio:g}, CLS policy {cls_policy}")
    for (name, _, _), picked in zip(runs, chosen, strict=True):
        by_layer = head_mean_distances(results, name)
        say(f"  {name}: " + ", ".join(f"L{layer} {by_layer[layer]:.2f}" for layer in picked))
    say(f"wrote {out_dir / 'results.json'} and figures in {out_dir}")


def register(app: typer.Typer) -> None:
    """Add `subspaces` and `attention` to `app`."""
    app.command("subspaces")(friendly(subspaces))
    app.command("attention")(friendly(attention))
