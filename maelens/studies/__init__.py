"""Experiments that combine the layers below: export, the demo, the theory sweeps and the
MNIST study, the seed-paper experiment."""
