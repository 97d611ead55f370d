"""maelens: find out what Masked Autoencoders and Vision Transformers learn.

The data flows one way: checkpoint -> model with taps -> batched capture -> streaming analyses
-> results -> figures. The names below are the public API.
"""

from maelens.capture import Batch, iterate_batches, run_capture
from maelens.config import PRESETS, ViTConfig, preset
from maelens.errors import MaelensError
from maelens.load import load_model
from maelens.model import MAEOutput, VisionTransformer
from maelens.taps import Capture, Taps, TapStore

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
