"""Checkpoints: format sniffing, pure key-map converters, safe loading, maelens' own format."""

from maelens.checkpoints.load import load_model

__all__ = ["load_model"]
