"""The `maelens` command line: thin commands over the library; the only place that prints.

`app` collects the commands of the submodules; each submodule adds its own to it.
"""

from maelens.cli import checkpoints, embeddings, experiment, geometry, robustness, theory, train
from maelens.cli.app import app

train.register(app)
checkpoints.register(app)
experiment.register(app)
geometry.register(app)
embeddings.register(app)
robustness.register(app)
app.add_typer(theory.theory_app, name="theory", help="linear-MAE theory and (m, p) sweeps")

__all__ = ["app"]
