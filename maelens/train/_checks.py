"""Validation of training arguments (STYLE habit 7): `MaelensError` with expected / got / fix."""

from __future__ import annotations

import math

import torch

from maelens._validate import check_positive_int
from maelens.errors import MaelensError

SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_nonneg_float(name: str, value: float, *, positive: bool = False) -> float:
    """`value` as a finite float >= 0 (> 0 with `positive`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MaelensError(f"`{name}` must be a number, got {value!r}.")
    value = float(value)
    bad = not math.isfinite(value) or value < 0 or (positive and value == 0)
    if bad:
        rule = "> 0" if positive else ">= 0"
        raise MaelensError(f"`{name}` must be a finite number {rule}, got {value}.")
    return value


def check_nonneg_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MaelensError(f"`{name}` must be an integer >= 0, got {value!r}.")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise MaelensError(f"`{name}` must be one of {list(choices)}, got {value!r}.")
    return value


def check_betas(value: tuple[float, float]) -> tuple[float, float]:
    try:
        b1, b2 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise MaelensError(f"`betas` must be two numbers (beta1, beta2), got {value!r}.") from None
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise MaelensError(f"`betas` must lie in [0, 1), got ({b1}, {b2}); MAE uses (0.9, 0.95).")
    return b1, b2


def check_positive(name: str, value: int) -> int:
    return check_positive_int(name, value)


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cpu", "cuda", "cuda:1" as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise MaelensError(f"`device` must be 'auto', 'cpu' or 'cuda[:i]', got {name!r}.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MaelensError(
            f"`device`={name!r} but CUDA is not available here; use device='cpu' or 'auto'."
        )
    if device.type not in ("cpu", "cuda"):
        raise MaelensError(f"`device` must be 'auto', 'cpu' or 'cuda[:i]', got {name!r}.")
    return device
