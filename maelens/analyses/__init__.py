"""Streaming analyses: each declares its `taps` and implements `update(capture, batch)` and
`result()` (see `maelens.engine.capture`)."""

from maelens.analyses.embeddings import LayerEmbeddings, Predictions
from maelens.analyses.stack import StackActivations

__all__ = ["LayerEmbeddings", "Predictions", "StackActivations"]
