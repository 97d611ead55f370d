"""`maelens theory ...`: thin commands over `maelens.theory` (predict, sweep, study).

Registered by the main CLI as `app.add_typer(theory_app, name="theory")`. Errors follow the
house rule of `maelens.cli._common.friendly` (one line on stderr, exit status 2).
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from maelens.cli._common import check_options, friendly, note, say
from maelens.errors import MaelensError

theory_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Linear-MAE theory: predict (m, p), train sweeps, the MNIST study.")


def _floats(name: str, text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise MaelensError(f"`--{name}` must be comma-separated numbers, got {text!r}.") from None


def _ints(name: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise MaelensError(f"`--{name}` must be comma-separated integers, got {text!r}.") from None


def _print(text: str) -> None:
    say(text)


def _point_line(point: Any, reused: bool) -> None:
    note(f"{'reused' if reused else 'trained'} m={point.mask_ratio:g} p={point.patch_size}:"
         f" loss {point.final_loss:.4f}, k-NN {point.knn_accuracy:.3f}, probe "
         f"{point.linear_probe_accuracy:.3f}, spread {point.mean_distance_px:.2f} px "
         f"({point.wall_s:.0f} s)")


def _check_target(target_px: float | None) -> None:
    if target_px is not None and not (math.isfinite(target_px) and target_px > 0):
        raise MaelensError(
            f"`--target-px` must be a positive number of pixels, got {target_px:g}; fix: give "
            "the feature scale you want, or leave it out to use the data's correlation length."
        )


RATIOS_HELP = "comma-separated masking ratios in [0, 1)"
GRID_RATIOS = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
PATCHES_HELP = "comma-separated patch sizes (pixels) dividing the image side"


@theory_app.command()
@friendly
def predict(
    ratios: Annotated[str, typer.Option(help=RATIOS_HELP)] = GRID_RATIOS,
    patches: Annotated[str, typer.Option(help=PATCHES_HELP)] = "1,2,4,8",
    rank: Annotated[int, typer.Option(help="code size k of the rank-k optimum")] = 32,
    ridge: Annotated[float, typer.Option(help="ridge, times mean(diag Σ)")] = 1e-2,
    scheme: Annotated[str, typer.Option(help="fixed | bernoulli")] = "fixed",
    target_px: Annotated[float | None, typer.Option(
        help="target spread in pixels (default: the data's correlation length)")] = None,
    out_path: Annotated[Path | None, typer.Option("--out", help="write prediction JSON")] = None,
) -> None:
    """Predict the spatial spread of a linear MAE over an (m, p) grid for the MNIST digits."""
    from maelens.results.io import write_json
    from maelens.studies.mnist_study import StudySettings, predict_mnist
    from maelens.theory.predict import recommend

    _check_target(target_px)
    check_options(out_file=out_path)
    settings = StudySettings(mask_ratios=_floats("ratios", ratios),
                             patch_sizes=_ints("patches", patches), rank=rank, ridge=ridge,
                             scheme=scheme, detail_ratios=(0.5,),
                             detail_patch=_ints("patches", patches)[-1])
    result = predict_mnist(settings)
    if target_px is not None:
        result["recommendation"] = recommend(result["grid"], target_px).to_dict()
    grid = result["grid"]
    _print("predicted |W*|-weighted spread (px); rows p, columns m = "
           + " ".join(f"{m:g}" for m in grid["mask_ratios"]))
    for p, row in zip(grid["patch_sizes"], grid["mean_distance_px"], strict=True):
        _print(f"  p={p:<3d} " + " ".join(f"{v:5.2f}" for v in row))
    _print(result["recommendation"]["text"])
    if out_path is not None:
        write_json(out_path, result)
        _print(f"wrote {out_path}")


def _sweep_settings(out_dir: Path, ratios: str, patches: str, epochs: int, batch_size: int,
                    jacobian_images: int, seed: int, width: int, depth: int) -> Any:
    from maelens.studies.theory_sweep import SMALL_MAE, SweepSettings

    overrides = {**SMALL_MAE, "embed_dim": width, "mlp_dim": 4 * width, "depth": depth}
    return SweepSettings(out_dir=str(out_dir), mask_ratios=_floats("ratios", ratios),
                         patch_sizes=_ints("patches", patches), overrides=overrides,
                         epochs=epochs, batch_size=batch_size,
                         jacobian_images=jacobian_images, seed=seed)


@theory_app.command()
@friendly
def sweep(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for checkpoints and JSON")],
    ratios: Annotated[str, typer.Option(help=RATIOS_HELP)] = "0.25,0.5,0.75",
    patches: Annotated[str, typer.Option(help=PATCHES_HELP)] = "4,8",
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    jacobian_images: Annotated[int, typer.Option(min=1)] = 3,
    width: Annotated[int, typer.Option(help="encoder width (2 heads)")] = 64,
    depth: Annotated[int, typer.Option(help="encoder blocks")] = 3,
    seed: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Train small MAEs on the MNIST digits per (m, p); record accuracy and Jacobian spread.
    Re-running skips finished points and resumes an interrupted one."""
    from maelens.studies.theory_sweep import run_sweep

    check_options(out_folder=out_dir)
    settings = _sweep_settings(out_dir, ratios, patches, epochs, batch_size, jacobian_images,
                               seed, width, depth)
    result = run_sweep(settings, on_point=_point_line)
    _print(f"wrote {out_dir / 'sweep.json'}: {len(result.points)} points")


@theory_app.command()
@friendly
def study(
    out_dir: Annotated[Path, typer.Option("--out", help="folder for JSON, PNG and summary.md")],
    work_dir: Annotated[Path, typer.Option(help="folder for the sweep's checkpoints")] = Path(
        "runs/theory_mnist"),
    ratios: Annotated[str, typer.Option(help="trained ratios; " + RATIOS_HELP)] = "0.25,0.5,0.75",
    patches: Annotated[str, typer.Option(help="trained patch sizes")] = "4,8",
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    jacobian_images: Annotated[int, typer.Option(min=1)] = 3,
    width: Annotated[int, typer.Option(help="encoder width (2 heads)")] = 64,
    depth: Annotated[int, typer.Option(help="encoder blocks")] = 3,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    no_sweep: Annotated[bool, typer.Option("--no-sweep", help="linear theory only")] = False,
    reference: Annotated[str | None, typer.Option(
        help="a further trained MAE checkpoint to measure like the sweep's points")] = None,
    render_only: Annotated[bool, typer.Option(
        "--render-only", help="redraw figures and summary.md from the JSON in --out")] = False,
) -> None:
    """The MNIST study: predicted (m, p) grid, trained sweep, figures and summary.md."""
    from maelens.studies.mnist_study import StudySettings, render_study, run_study

    args = sys.argv[1:]
    args = args[1:] if args[:1] == ["theory"] else args
    command = "maelens theory " + " ".join(shlex.quote(a) for a in args)
    check_options(out_folder=out_dir)
    if not (render_only or no_sweep):
        check_options(out_folder=work_dir)
    if render_only:
        path = render_study(out_dir)  # keeps the command recorded by the run
    else:
        settings = None if no_sweep else _sweep_settings(
            work_dir, ratios, patches, epochs, batch_size, jacobian_images, seed, width, depth)
        path = run_study(out_dir, StudySettings(), settings, command=command,
                         on_point=_point_line, reference=reference)
    _print(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    theory_app()
