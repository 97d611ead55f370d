"""`python -m maelens ...` (what `torchrun -m maelens` runs)."""

from maelens.cli import app

app(prog_name="maelens")
