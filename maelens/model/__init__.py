"""The model with taps: frozen configs and presets, the compact ViT/MAE, tap requests and
captures, masking (one generator), sin-cos position embeddings."""

from maelens.model.config import PRESETS, ViTConfig, preset
from maelens.model.taps import Capture, Taps, TapStore
from maelens.model.vit import MAEOutput, VisionTransformer

__all__ = ["PRESETS", "Capture", "MAEOutput", "TapStore", "Taps", "ViTConfig",
           "VisionTransformer", "preset"]
