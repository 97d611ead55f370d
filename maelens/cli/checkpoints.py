"""`maelens models` and `maelens download`: checkpoints by name (see checkpoints/hub.py), and
the "resolves to" line of `maelens info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from maelens.cli._common import friendly, out


def _line(text: str) -> None:
    """One line on stdout, verbatim: names, paths and URLs may hold `[...]` (no markup)."""
    out.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)


def register(app: typer.Typer) -> None:
    """Add `models` and `download` to the `maelens` command."""
    app.command("models")(models)
    app.command("download")(download)


@friendly
def models() -> None:
    """List the short model names: where each resolves, its licence and ImageNet top-1."""
    from maelens.checkpoints.names import ALIASES, MAE_LICENCE, TIMM_TAGS

    width = max(len(name) for name in ALIASES) + 2
    _line(f"{'name':{width}}{'top-1 %':9}resolves to")
    for alias in ALIASES.values():
        _line(f"{alias.name:{width}}{alias.top1:9}{alias.source}")
        _line(f"{'':{width}}{alias.what}; licence {alias.licence}")
    _line(f"The MAE weights (mae-*) are {MAE_LICENCE}: non-commercial use only. Top-1: "
          "ImageNet-1k validation, as published.")
    _line("Curated timm names (architecture.tag -> Hub repository timm/architecture.tag; other "
          "timm models load as timm/NAME):")
    for arch, tags in TIMM_TAGS.items():
        _line(f"  {arch}: {', '.join(tags)}")
    _line("Also accepted: local files and folders, Hub ids org/name[@revision], https:// URLs "
          "of checkpoint files.")


@friendly
def download(
    names: Annotated[list[str], typer.Argument(
        metavar="NAME", help="aliases, timm names, Hub ids or URLs")],
    to: Annotated[Path | None, typer.Option(
        "--to", help="cache folder to fill (DIR/hub, DIR/checkpoints), e.g. on shared storage")
    ] = None,
) -> None:
    """Fetch checkpoints into the cache now, for machines without internet later."""
    from maelens.checkpoints.hub import Caches, fetch

    caches = Caches.under(to) if to is not None else Caches.from_env()
    for name in names:
        got = fetch(name, caches=caches)
        _line(f"{name}: {got.origin} -> {got.path}")
        _line(f"  sha256 {got.sha256}, licence {got.licence or 'see its model card'}")
    if to is not None:
        _line(f"To load from this folder without internet: export HF_HUB_CACHE={caches.hub} "
              f"MAELENS_CACHE={caches.files} HF_HUB_OFFLINE=1")


def print_resolution(name: str, model: Any) -> None:
    """The "resolves to" line of `maelens info`."""
    _line(resolution_line(name, getattr(model, "load_info", None) or {}))


def resolution_line(name: str, info: dict[str, Any]) -> str:
    """Where `name` was loaded from: the origin, the local file, its hash and licence."""
    if not info.get("resolved"):
        return f"resolves to the local {info.get('format', 'checkpoint')} {info.get('source')}"
    commit = f" at commit {info['commit']}" if info.get("commit") else ""
    return (f"resolves to {info['resolved']}{commit} -> {info.get('path')} (sha256 "
            f"{info.get('sha256')}, licence {info.get('licence') or 'see its model card'})")
