"""Saving figures: every figure is written as PNG (for the report and viewers) and SVG (for
papers), atomically, from a matplotlib `Figure` built without pyplot (no global state, no
display needed)."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from maelens.results.io import atomic_write

DPI = 150


def save_figure(fig: Figure, stem: str | os.PathLike, formats: tuple[str, ...] = ("png", "svg")
                ) -> list[Path]:
    """Write `stem`.png and `stem`.svg (creating the folder); returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=DPI,
                                                            bbox_inches="tight"))
        paths.append(path)
    return paths
