"""The `maelens` command: thin commands over the library; the only place that prints.

Every command turns a `MaelensError` (and unreadable files) into one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from maelens.cli._common import err, friendly, out, parse_layers, progress_bar, torch_dtype
from maelens.errors import MaelensError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="maelens: find out what MAEs and ViTs learn.")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    from maelens.engine.capture import keep_freed_memory

    keep_freed_memory()  # this process is ours: see its docstring
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
@friendly
def extract(
    model: Annotated[str, typer.Option(help="checkpoint: file, directory or maelens preset")],
    images: Annotated[Path, typer.Option(help="image folder or .npy array")],
    out_path: Annotated[Path, typer.Option("--out", help="output .npz")],
    mask_ratio: Annotated[float, typer.Option(help="random masking ratio in [0, 1)")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of the per-image random masks")] = 0,
    layers: Annotated[str, typer.Option(help="'all', 'lastN' or e.g. '1,6,-1'")] = "all",
    taps: Annotated[str, typer.Option(help="comma list of hidden,final,attn,heads,logits")] = (
        "hidden,final,attn,heads,logits"),
    no_preprocess: Annotated[bool, typer.Option(
        "--no-preprocess", help=".npy holds (N,3,H,W) float32 already normalised")] = False,
    strict: Annotated[bool, typer.Option(help="fail on an unreadable image")] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
) -> None:
    """Export activations of every image to one .npz (see README for the arrays)."""
    from maelens.checkpoints.load import load_model
    from maelens.results.io import write_npz
    from maelens.studies.extract import ExtractSettings, load_inputs
    from maelens.studies.extract import extract as run_extract

    if out_path.suffix != ".npz":
        raise MaelensError(f"`--out` must end in .npz, got {out_path}.")
    settings = ExtractSettings(kinds=tuple(t.strip() for t in taps.split(",") if t.strip()),
                               layers=parse_layers(layers), mask_ratio=mask_ratio, seed=seed,
                               batch_size=batch_size, dtype=torch_dtype(dtype), device=device)
    net = load_model(model, device=device)
    settings.taps(net).resolve(net.depth)  # fail on a bad selection before reading images
    pixels, names, skipped = load_inputs(images, net, preprocessed=no_preprocess, strict=strict)
    for path, why in skipped:
        err.print(f"skipped {path}: {why}", highlight=False, soft_wrap=True)
    bar, advance = progress_bar(len(pixels), "extracting")
    with bar:
        arrays = run_extract(net, pixels, settings, progress=advance)
    meta = {"model": model, "images": str(images), "names": names, "mask_ratio": mask_ratio,
            "seed": seed, "dtype": dtype, "config": net.config.to_dict(),
            "skipped": [p for p, _ in skipped],
            "hidden_convention": "hidden[l] after block l, before the final norm; 0 = embeddings"}
    write_npz(out_path, arrays, meta)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items() if v.ndim > 1)
    out.print(f"wrote {out_path}: {len(pixels)} images; {shapes}", highlight=False)


@app.command()
@friendly
def info(model: Annotated[str, typer.Argument(help="checkpoint: file, directory or preset")]
         ) -> None:
    """Print the architecture maelens inferred from a checkpoint."""
    from maelens.checkpoints.load import load_model

    net = load_model(model)
    c = net.config
    params = sum(p.numel() for p in net.parameters())
    out.print(f"{model}: {params / 1e6:.2f} M parameters")
    for key, value in c.to_dict().items():
        out.print(f"  {key:18s} {value}", highlight=False)


@app.command()
@friendly
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="output folder")] = Path("out/demo"),
) -> None:
    """The whole pipeline on the shipped demo models and the MNIST demo digits."""
    from rich.table import Table

    from maelens.studies.demo import run_demo

    bar, advance = progress_bar(3 * 2 * 5000, "demo")
    with bar:
        summary = run_demo(out_dir, progress=advance)
    for name, entry in summary["models"].items():
        title = f"{name}: {entry['kind']}"
        if "test_accuracy" in entry:
            title += f", test accuracy {100 * entry['test_accuracy']:.2f} %"
        table = Table(title=title, title_justify="left")
        for column in ("layer", "k-NN CLS %", "k-NN mean patch %"):
            table.add_column(column, justify="right")
        for row in entry["layers"]:
            table.add_row(str(row["layer"]), f"{100 * row['knn_cls']:.1f}",
                          f"{100 * row['knn_mean_patch']:.1f}")
        out.print(table)
        probe = entry["layers"][-1]["linear_probe_mean_patch"]
        out.print(f"  linear probe on last-layer mean patch: {100 * probe:.2f} %")
    out.print(f"wrote {out_dir / 'summary.json'} in {summary['elapsed_s']:.0f} s")
