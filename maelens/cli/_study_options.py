"""Options shared by the analysis commands (tsne, subspaces, attention, separability,
robustness, run): one spelling and one help text for each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelsOpt = Annotated[list[str], typer.Option(
    "--model", help="checkpoint (file, folder, name); give twice to compare two models")]
ModelOpt = Annotated[str, typer.Option("--model", help="checkpoint: file, folder or name")]
ImagesOpt = Annotated[str, typer.Option(
    "--images", help="image folder, ImageNet-layout folder, 'mnist[:split]' or 'photos'")]
ClassesOpt = Annotated[int | None, typer.Option(
    "--classes", min=1, help="use N classes of an ImageNet-layout folder (seeded pick)")]
PerClassOpt = Annotated[int | None, typer.Option(
    "--per-class", min=1, help="use M images per class (seeded sample)")]
MaskRatioOpt = Annotated[float, typer.Option(
    "--mask-ratio", help="random masking ratio in [0, 1) of the analysed pass")]
SeedOpt = Annotated[int, typer.Option("--seed", help="seed of masks, subsamples, t-SNE")]
LayersOpt = Annotated[str, typer.Option("--layers", help="'all', 'lastN' or e.g. '0,6,-1'")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 | bfloat16 | float16")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="images per forward pass")]
OutDirOpt = Annotated[Path, typer.Option("--out", help="output folder (results + figures)")]
