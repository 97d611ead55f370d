"""maelens: find out what Masked Autoencoders and Vision Transformers learn.

The data flows one way: checkpoint -> model with taps -> batched capture -> streaming analyses
-> results -> figures. The names below are the public API.
"""

from maelens.checkpoints.load import load_model
from maelens.engine.capture import Batch, iterate_batches, run_capture
from maelens.errors import MaelensError
from maelens.model.config import PRESETS, ViTConfig, preset
from maelens.model.taps import Capture, Taps, TapStore
from maelens.model.vit import MAEOutput, VisionTransformer

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Batch",
    "Capture",
    "MAEOutput",
    "MaelensError",
    "TapStore",
    "Taps",
    "ViTConfig",
    "VisionTransformer",
    "iterate_batches",
    "load_model",
    "preset",
    "run_capture",
]
