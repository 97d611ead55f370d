"""`maelens pretrain | finetune | train-vit`: thin wrappers over `maelens.train`.

Common knobs are options; any other field of the args dataclass can be set with
`--set FIELD=VALUE` and architecture fields (ViTConfig) with `--arch FIELD=VALUE`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import typer

from maelens.cli._common import friendly, out
from maelens.errors import MaelensError

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="any other training field, FIELD=VALUE (repeatable)")]
ArchOpt = Annotated[list[str] | None, typer.Option(
    "--arch", help="architecture override, FIELD=VALUE, e.g. patch_size=2 (repeatable)")]


def _value(text: str) -> Any:
    """JSON when it parses (numbers, true/false, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(option: str, pairs: list[str] | None) -> dict[str, Any]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise MaelensError(f"`{option}` takes FIELD=VALUE, got {pair!r}.")
        out[key.strip().replace("-", "_")] = _value(value.strip())
    return out


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


def report(result: Any) -> None:
    state = "finished" if result.complete else f"stopped at step {result.steps}"
    out.print(f"{result.kind} {state} ({result.steps}/{result.total_steps} steps, "
              f"{result.elapsed_s:.0f} s, {result.images_per_s:.0f} images/s); "
              f"final loss {result.final_loss:.4f}", highlight=False)
    for name, value in result.metrics.items():
        out.print(f"  {name}: {value:.4f}", highlight=False)
    out.print(f"checkpoint: {result.checkpoint}", highlight=False)


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

        given = dict(out_dir=out, data=data, preset=preset, pool=pool, epochs=epochs,
                     batch_size=batch_size, lr=lr, seed=seed, device=device, resume=resume,
                     overrides=parse_pairs("--arch", arch))
        report(run(build_args(TrainViTArgs, given, set_)))
