"""The `maelens` command: thin commands over the library; the only place that prints.

Every command turns a `MaelensError` (and unreadable files) into one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from maelens.cli._common import (
    ArchOpt,
    OneLineErrors,
    check_options,
    friendly,
    load_checkpoint,
    note,
    progress_bar,
    say,
    torch_dtype,
)
from maelens.errors import MaelensError

app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True,
                  help="maelens: find out what MAEs and ViTs learn.")

@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    from maelens.engine.capture import keep_freed_memory

    keep_freed_memory()  # this process is ours: see its docstring
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def parse_taps(text: str | None) -> tuple[str, ...] | None:
    """`--taps`: None (not given) means every kind the model has; an explicit list must name
    at least one known kind."""
    from maelens.studies.extract import TAP_KINDS

    if text is None:
        return None
    kinds = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(set(kinds) - set(TAP_KINDS))
    if unknown or not kinds:
        got = f"unknown kind(s) {unknown}" if unknown else f"{text!r}, which names none"
        raise MaelensError(f"`--taps` must list some of {','.join(TAP_KINDS)}; got {got}.")
    return kinds


def check_images(images: Path, no_preprocess: bool) -> None:
    """`--images` must be an image folder or a .npy file (checked before the model loads)."""
    if images.is_dir():
        if no_preprocess:
            raise MaelensError("`--no-preprocess` applies to .npy arrays, not image folders; "
                               f"got the folder {images}.")
        return
    if not images.exists():
        raise MaelensError(f"`--images` {images} does not exist; give an image folder or a "
                           ".npy file.")
    if images.suffix != ".npy":
        raise MaelensError(f"`--images` {images}: expected an image folder or a .npy file.")


def check_plan(net: Any, model: str, kinds: tuple[str, ...] | None, layers: str,
               settings: Any) -> None:
    """Refuse an export that would hold nothing but `keep`, and explicit `logits` without a
    classifier head, before any image is read."""
    if kinds is not None and "logits" in kinds and net.head is None:
        raise MaelensError(
            f"`--taps logits`: the model {model} has no classifier head "
            f"({net.load_info.get('kind')}); fix: drop logits from `--taps`."
        )
    plan = settings.taps(net).resolve(net.depth)
    if not (plan.hidden or plan.attn or plan.heads or plan.final or plan.logits):
        raise MaelensError(
            f"nothing to export: `--layers {layers}` with `--taps "
            f"{','.join(settings.kinds)}` selects no array; fix: select at least one layer, "
            "or add final to `--taps`."
        )


@app.command()
@friendly
def extract(
    model: Annotated[str, typer.Option(help="checkpoint: file, directory or maelens preset")],
    images: Annotated[Path, typer.Option(help="image folder or .npy array")],
    out_path: Annotated[Path, typer.Option("--out", help="output .npz")],
    mask_ratio: Annotated[float, typer.Option(help="random masking ratio in [0, 1)")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of the per-image random masks")] = 0,
    layers: Annotated[str, typer.Option(help="'all', 'lastN' or e.g. '1,6,-1'")] = "all",
    taps: Annotated[str | None, typer.Option(
        help="comma list of hidden, final, attn, heads, logits; default: all the model has")
    ] = None,
    no_preprocess: Annotated[bool, typer.Option(
        "--no-preprocess", help=".npy holds (N,3,H,W) float32 already normalised")] = False,
    strict: Annotated[bool, typer.Option(help="fail on an unreadable image")] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    dtype: Annotated[str, typer.Option(help="float32 | bfloat16 | float16")] = "float32",
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | mps")] = "cpu",
    arch: ArchOpt = None,
) -> None:
    """Export activations of every image to one .npz (see README for the arrays)."""
    from maelens.results.io import write_npz
    from maelens.studies.extract import TAP_KINDS, ExtractSettings, load_inputs
    from maelens.studies.extract import extract as run_extract

    opts = check_options(device=device, layers=layers, seed=seed, out_file=out_path,
                         suffix=".npz", arch=arch or [])
    kinds = parse_taps(taps)
    check_images(images, no_preprocess)
    settings = ExtractSettings(kinds=kinds or TAP_KINDS, layers=opts.layers,
                               mask_ratio=mask_ratio, seed=seed, batch_size=batch_size,
                               dtype=torch_dtype(dtype), device=opts.device)
    net = load_checkpoint(model, opts.arch, opts.device)
    check_plan(net, model, kinds, layers, settings)
    pixels, names, skipped = load_inputs(images, net, preprocessed=no_preprocess, strict=strict)
    for path, why in skipped:
        note(f"skipped {path}: {why}")
    from maelens.engine.distributed import finish, init_from_env

    world = init_from_env(opts.device)  # torchrun: one shard per rank, rank 0 writes
    bar, advance = progress_bar(len(pixels), "extracting")
    with bar:
        arrays = run_extract(net, pixels, settings, progress=advance)
    finish(world)
    if arrays is None:
        return
    meta = {"model": model, "images": str(images), "names": names, "mask_ratio": mask_ratio,
            "seed": seed, "dtype": dtype, "config": net.config.to_dict(),
            "skipped": [p for p, _ in skipped],
            "hidden_convention": "hidden[l] after block l, before the final norm; 0 = embeddings"}
    write_npz(out_path, arrays, meta)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in arrays.items() if v.ndim > 1)
    say(f"wrote {out_path}: {len(pixels)} images; {shapes}")


@app.command()
@friendly
def info(model: Annotated[str, typer.Argument(help="checkpoint: file, directory or preset")],
         arch: ArchOpt = None) -> None:
    """Print the architecture maelens inferred from a checkpoint."""
    from maelens.cli.checkpoints import print_resolution

    opts = check_options(arch=arch or [])
    net = load_checkpoint(model, opts.arch)
    params = sum(p.numel() for p in net.parameters())
    say(f"{model}: {params / 1e6:.2f} M parameters")
    print_resolution(model, net)  # where a name, Hub id or URL resolved (cli/checkpoints.py)
    for key, value in net.config.to_dict().items():
        say(f"  {key:18s} {value}")
