"""What every `maelens` command shares: the consoles, the one error printer, option parsers.

The error printer never interprets markup in messages: file names, key lists and directory
listings often hold `[...]`, which rich would otherwise swallow as style tags.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from maelens.errors import MaelensError

out = Console()
err = Console(stderr=True)

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def print_error(message: str, prefix: str = "error: ") -> None:
    """One line on stderr, the message verbatim (no markup, no highlighting, no wrapping)."""
    line = " ".join(f"{prefix}{message}".split("\n"))
    err.print(line, style="red" if prefix else None, markup=False, highlight=False,
              soft_wrap=True, emoji=False)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report bad input as one line and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MaelensError as exc:
            print_error(str(exc))
        except (OSError, MemoryError) as exc:
            print_error(f"{type(exc).__name__}: {exc}")
        except KeyboardInterrupt:
            print_error("interrupted; nothing was written.", prefix="")
        raise typer.Exit(2)

    return wrapper


def parse_layers(text: str) -> list[int] | None:
    """'all' -> None; '1,4,-1' -> [1, 4, -1]; 'last3' -> the last 3 (as Taps' int rule)."""
    text = text.strip().lower()
    if text in ("all", ""):
        return None
    if text.startswith("last"):
        return int(text[4:])  # type: ignore[return-value]
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise MaelensError(
            f"`--layers` must be 'all', 'lastN' or comma-separated integers, got {text!r}."
        ) from None


def torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise MaelensError(f"`--dtype` must be one of {sorted(DTYPES)}, got {name!r}.")
    return getattr(torch, name)


def progress_bar(total: int, label: str) -> tuple[Progress, Callable[[int], None]]:
    bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeRemainingColumn(), console=err, transient=True)
    task = bar.add_task(label, total=total)
    return bar, lambda n: bar.advance(task, n)


