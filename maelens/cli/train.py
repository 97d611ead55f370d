"""`maelens pretrain | finetune | train-vit`: thin wrappers over `maelens.train`.

Common knobs are options; any other field of the args dataclass can be set with
`--set FIELD=VALUE` and architecture fields (ViTConfig) with `--arch FIELD=VALUE` (the option
that the checkpoint-reading commands share, see `maelens.cli._common`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from maelens.cli._common import ArchOpt, check_options, friendly, parse_pairs, say
from maelens.errors import MaelensError

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="any other training field, FIELD=VALUE (repeatable)")]


def build_args(cls: type, given: dict[str, Any], extra: list[str] | None) -> Any:
    """`cls(**given, **extra)` with unknown fields named."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in given.items() if v is not None}
    more = parse_pairs("--set", extra)
    unknown = sorted(set(more) - fields)
    if unknown:
        raise MaelensError(f"`--set` names unknown field(s) {unknown}; valid: {sorted(fields)}.")
    if "betas" in more:
        more["betas"] = tuple(more["betas"])
    return cls(**{**values, **more})


def check_run(out: str, device: str, seed: int, resume: bool) -> None:
    """Options of a training command, before any data is read: the device, the seed, an output
    folder that can be written, and `--resume` only where a resume state exists (and a resume
    state only continued with `--resume`)."""
    from maelens.train.state import STATE_FILE

    check_options(device=device, allow_auto=True, seed=seed, min_seed=0, out_folder=out)
    state = Path(out) / STATE_FILE
    if resume and not state.is_file():
        raise MaelensError(
            f"`--resume`: {out} holds no resume state ({STATE_FILE}), so there is nothing to "
            "continue; fix: drop `--resume` to start a new run, or give the run's `--out`."
        )
    if not resume and state.is_file():
        raise MaelensError(
            f"`--out` {out} already holds a training run ({STATE_FILE}); fix: add `--resume` "
            "to continue it, or choose another `--out` (or delete that folder) to start over."
        )


def report(result: Any) -> None:
    state = "finished" if result.complete else f"stopped at step {result.steps}"
    say(f"{result.kind} {state} ({result.steps}/{result.total_steps} steps, "
        f"{result.elapsed_s:.0f} s, {result.images_per_s:.0f} images/s); "
        f"final loss {result.final_loss:.4f}")
    for name, value in result.metrics.items():
        say(f"  {name}: {value:.4f}")
    say(f"checkpoint: {result.checkpoint}")


def register(app: typer.Typer) -> None:  # noqa: C901 - three small commands
    @app.command()
    @friendly
    def pretrain(
        out: Annotated[str, typer.Option(help="output folder (checkpoint + resume state)")],
        data: Annotated[str, typer.Option(help="'mnist' or an image folder")] = "mnist",
        preset: Annotated[str, typer.Option(help="architecture preset")] = "mae_demo",
        mask_ratio: Annotated[float | None, typer.Option()] = None,
        norm_pix_loss: Annotated[bool, typer.Option("--norm-pix-loss")] = False,
        epochs: Annotated[int | None, typer.Option()] = None,
        batch_size: Annotated[int | None, typer.Option()] = None,
        lr: Annotated[float | None, typer.Option()] = None,
        warmup_epochs: Annotated[float | None, typer.Option()] = None,
        seed: Annotated[int, typer.Option()] = 0,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
        resume: Annotated[bool, typer.Option("--resume", help="continue the last run")] = False,
        arch: ArchOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """MAE pre-training (masked-patch MSE, AdamW, warm-up + cosine); resumable."""
        from maelens.train import PretrainArgs
        from maelens.train import pretrain as run

        check_run(out, device, seed, resume)
        given = dict(out_dir=out, data=data, preset=preset, mask_ratio=mask_ratio,
                     norm_pix_loss=norm_pix_loss, epochs=epochs, batch_size=batch_size, lr=lr,
                     warmup_epochs=warmup_epochs, seed=seed, device=device, resume=resume,
                     overrides=parse_pairs("--arch", arch))
        report(run(build_args(PretrainArgs, given, set_)))

    @app.command()
    @friendly
    def finetune(
        checkpoint: Annotated[str, typer.Option(help="pre-trained encoder checkpoint")],
        out: Annotated[str, typer.Option(help="output folder")],
        data: Annotated[str, typer.Option(help="'mnist' or an image folder")] = "mnist",
        pool: Annotated[str, typer.Option(help="avg (fc_norm) | cls")] = "avg",
        linear_probe: Annotated[bool, typer.Option("--linear-probe")] = False,
        epochs: Annotated[int | None, typer.Option()] = None,
        batch_size: Annotated[int | None, typer.Option()] = None,
        lr: Annotated[float | None, typer.Option()] = None,
        seed: Annotated[int, typer.Option()] = 0,
        device: Annotated[str, typer.Option()] = "auto",
        resume: Annotated[bool, typer.Option("--resume")] = False,
        set_: SetOpt = None,
    ) -> None:
        """Fine-tune (or linear-probe) a pre-trained encoder; reports held-out accuracy."""
        from maelens.train import FinetuneArgs
        from maelens.train import finetune as run

        check_run(out, device, seed, resume)
        given = dict(checkpoint=checkpoint, out_dir=out, data=data, pool=pool,
                     linear_probe=linear_probe, epochs=epochs, batch_size=batch_size, lr=lr,
                     seed=seed, device=device, resume=resume)
        report(run(build_args(FinetuneArgs, given, set_)))

    @app.command("train-vit")
    @friendly
    def train_vit(
        out: Annotated[str, typer.Option(help="output folder")],
        data: Annotated[str, typer.Option(help="'mnist' or an image folder")] = "mnist",
        preset: Annotated[str, typer.Option()] = "mae_demo",
        pool: Annotated[str, typer.Option(help="avg (fc_norm) | cls")] = "avg",
        epochs: Annotated[int | None, typer.Option()] = None,
        batch_size: Annotated[int | None, typer.Option()] = None,
        lr: Annotated[float | None, typer.Option()] = None,
        seed: Annotated[int, typer.Option()] = 0,
        device: Annotated[str, typer.Option()] = "auto",
        resume: Annotated[bool, typer.Option("--resume")] = False,
        arch: ArchOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """A supervised ViT of the same shape trained from scratch (the baseline)."""
        from maelens.train import TrainViTArgs
        from maelens.train import train_vit as run

        check_run(out, device, seed, resume)
        given = dict(out_dir=out, data=data, preset=preset, pool=pool, epochs=epochs,
                     batch_size=batch_size, lr=lr, seed=seed, device=device, resume=resume,
                     overrides=parse_pairs("--arch", arch))
        report(run(build_args(TrainViTArgs, given, set_)))
