"""The small demo models that ship with maelens (trained on the MNIST demo split by the
commands in the README) and the `demo:NAME` aliases that `load_model` accepts."""

from __future__ import annotations

from pathlib import Path

from maelens.errors import MaelensError

ASSETS = Path(__file__).parent.parent / "assets"

DEMO_MODELS = {
    "mae": "mae_demo_pretrained.safetensors",  # MAE pre-trained, ratio 0.75, with decoder
    "finetuned": "mae_demo_finetuned.safetensors",  # that MAE fine-tuned (avg pool + fc_norm)
    "vit": "vit_demo_supervised.safetensors",  # same shape, supervised from scratch
}


def demo_model_path(name: str) -> Path:
    """Path of a shipped demo model: "mae", "finetuned" or "vit"."""
    if name not in DEMO_MODELS:
        raise MaelensError(f"unknown demo model {name!r}; choose one of {sorted(DEMO_MODELS)}.")
    path = ASSETS / DEMO_MODELS[name]
    if not path.is_file():
        raise MaelensError(
            f"demo model {name!r} is missing ({path}); regenerate it with the commands in the "
            "README section 'Demo models'."
        )
    return path
