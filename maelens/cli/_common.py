"""What every `maelens` command shares: the consoles, the one error printer, option parsing and
the one validation of options that runs before any model or image is read.

Nothing here interprets markup in text that holds user input: file names, key lists and
directory listings often contain `[...]`, which rich would otherwise swallow as style tags.
Every line that can hold such text goes through `say` (stdout), `note` or `print_error`
(stderr).
"""

from __future__ import annotations

import functools
import json
import math
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from typer.core import TyperGroup

from maelens._validate import parse_layers  # noqa: F401 - the CLI's layer parser
from maelens.errors import MaelensError

try:  # recent typer carries its own copy of click
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException as _ClickException

out = Console()
err = Console(stderr=True)

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}

ArchOpt = Annotated[list[str] | None, typer.Option(
    "--arch", help="architecture field, FIELD=VALUE (repeatable); for a checkpoint: what it "
    "cannot state, e.g. num_heads=12, decoder_num_heads=16, image_size=448, norm_eps=1e-6")]

# `--arch` fields that a loaded checkpoint accepts (everything else is read from the weights).
LOAD_ARCH_FIELDS = {"num_heads": int, "decoder_num_heads": int, "image_size": int,
                    "norm_eps": float}


# --------------------------------------------------------------------------- printing
def _plain(console: Console, text: str, style: str | None = None) -> None:
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True, emoji=False)


def say(text: str) -> None:
    """A line on stdout, verbatim (no markup, no highlighting, no wrapping)."""
    _plain(out, text)


def note(text: str) -> None:
    """A line on stderr, verbatim (notices such as skipped files)."""
    _plain(err, text)


def print_error(message: str, prefix: str = "error: ") -> None:
    """One line on stderr, the message verbatim (no markup, no highlighting, no wrapping)."""
    line = " ".join(f"{prefix}{message}".split("\n"))
    _plain(err, line, style="red" if prefix else None)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report bad input as one line and exit 2; SIGTERM is handled like Ctrl-C (the atomic
    writer removes its temporary file) and exits 128 + the signal number."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from maelens.atomic import sigterm_as_interrupt

        code = 2
        try:
            with sigterm_as_interrupt():
                return fn(*args, **kwargs)
        except MaelensError as exc:
            print_error(str(exc))
        except (OSError, MemoryError) as exc:
            print_error(f"{type(exc).__name__}: {exc}")
        except KeyboardInterrupt as exc:
            name = str(exc) if str(exc).startswith("SIG") else "SIGINT"
            code = 128 + int(getattr(signal, name, signal.SIGINT))
            print_error(f"interrupted by {name}; no partial output file was left behind.",
                        prefix="")
        raise typer.Exit(code)

    return wrapper


class OneLineErrors(TyperGroup):
    """The root command: usage errors (missing option, bad number, unknown command) become one
    line on stderr with exit status 2, like every other error, instead of a framed panel."""

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help was printed already
                sys.exit(exc.exit_code)
            where = exc.ctx.command_path if getattr(exc, "ctx", None) else "maelens"
            print_error(f"{exc.format_message()} (see `{where} --help`)")
            sys.exit(exc.exit_code)
        except typer.Abort:
            print_error("aborted.")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# --------------------------------------------------------------------------- option parsing
def torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise MaelensError(f"`--dtype` must be one of {sorted(DTYPES)}, got {name!r}.")
    return getattr(torch, name)


def _value(text: str) -> Any:
    """JSON when it parses (numbers, true/false, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(option: str, pairs: list[str] | None) -> dict[str, Any]:
    """['a=1', 'b=x'] -> {'a': 1, 'b': 'x'} (values parsed as JSON when they parse)."""
    values = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MaelensError(f"`{option}` takes FIELD=VALUE, got {pair!r}.")
        values[key.strip().replace("-", "_")] = _value(value.strip())
    return values


def load_arch(pairs: list[str] | None) -> dict[str, Any]:
    """`--arch` pairs for loading a checkpoint: only the fields a checkpoint cannot state."""
    values = parse_pairs("--arch", pairs)
    unknown = sorted(set(values) - set(LOAD_ARCH_FIELDS))
    if unknown:
        raise MaelensError(
            f"`--arch` field(s) {unknown} cannot be set for a checkpoint (its weights state "
            f"them); valid: {sorted(LOAD_ARCH_FIELDS)}."
        )
    for key, kind in LOAD_ARCH_FIELDS.items():
        value = values.get(key)
        if value is None:
            continue
        ok = not isinstance(value, bool) and isinstance(value, int | float) and value > 0
        ok = ok and (math.isfinite(value) if kind is float else isinstance(value, int))
        if not ok:
            rule = "a positive integer" if kind is int else "a positive number"
            raise MaelensError(f"`--arch {key}` must be {rule}, got {value!r}.")
        values[key] = kind(value)
    return values


# --------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class Checked:
    """Options after `check_options`: the device string, the parsed layer selection and the
    `--arch` fields."""

    device: str | None = None
    layers: int | list[int] | None = None
    arch: dict[str, Any] | None = None


def check_options(*, device: str | None = None, allow_auto: bool = False,
                  layers: str | None = None, seed: int | None = None, min_seed: int | None = None,
                  out_file: Path | None = None, suffix: str | None = None,
                  out_folder: str | Path | None = None, arch: list[str] | None = None
                  ) -> Checked:
    """The one validation of command-line options, run before any model or image is read:
    device (present on this machine), layers (syntax), seed (range), `--out` (a file or a
    folder that can be written) and `--arch` (loadable fields)."""
    from maelens._validate import check_device, check_out_folder
    from maelens.atomic import check_writable

    dev = check_device("--device", device, allow_auto=allow_auto) if device is not None else None
    parsed = parse_layers(layers) if layers is not None else None
    if seed is not None and min_seed is not None and seed < min_seed:
        raise MaelensError(f"`--seed` must be an integer >= {min_seed}, got {seed}.")
    if out_file is not None:
        if suffix is not None and Path(out_file).suffix != suffix:
            raise MaelensError(f"`--out` must end in {suffix}, got {out_file}.")
        check_writable(out_file, "--out")
    if out_folder is not None:
        check_out_folder("--out", out_folder)
    return Checked(device=dev, layers=parsed, arch=load_arch(arch) if arch is not None else None)


def load_checkpoint(source: str, arch: dict[str, Any] | None = None,
                    device: str = "cpu") -> Any:
    """`load_model(source)` with the `--arch` fields a checkpoint cannot state: head counts and
    image size go to `load_model`; `norm_eps` rebuilds the model with that eps."""
    from maelens.checkpoints.load import build_model, load_model

    arch = dict(arch or {})
    eps = arch.pop("norm_eps", None)
    net = load_model(source, **arch)
    for key in ("num_heads", "decoder_num_heads"):  # maelens / transformers files state them
        if key in arch and getattr(net.config, key) != arch[key]:
            raise MaelensError(
                f"`--arch {key}={arch[key]}` contradicts {source}, which states "
                f"{key}={getattr(net.config, key)}; fix: drop `--arch {key}`."
            )
    if eps is not None and eps != net.config.norm_eps:
        info = net.load_info
        net = build_model(net.config.replace(norm_eps=eps), net.state_dict()).eval()
        net.load_info = info
    return net.to(device)


def progress_bar(total: int, label: str) -> tuple[Progress, Callable[[int], None]]:
    bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeRemainingColumn(), console=err, transient=True)
    task = bar.add_task(label, total=total)
    return bar, lambda n: bar.advance(task, n)
