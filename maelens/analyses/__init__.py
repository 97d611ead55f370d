"""Streaming analyses: each declares its `taps` and implements `update(capture, batch)` and
`result()` (see `maelens.capture`)."""

from maelens.analyses.stack import StackActivations

__all__ = ["StackActivations"]
