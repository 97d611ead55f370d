"""t-SNE of per-layer embeddings (seed paper, Fig. 1 and Fig. 2), with openTSNE.

A post-processing step on result arrays, not a streaming analysis: t-SNE needs every point at
once. `tsne_layers` maps (L, N, D) features to (L, N, 2) maps, one independent t-SNE per layer;
`tsne_result` builds the "tsne" result (CLS, mean patch, patch tokens) that the results store
writes as arrays.npz plus the JSON index in results.json, for figures and outside tools.

Determinism: openTSNE with `n_jobs=1`, a fixed `random_state` and PCA initialisation gives
bit-identical maps for the same input (more threads reorder floating-point sums). Layer l's
random state is derived from (seed, "tsne", l). t-SNE axes carry no units: only neighbourhoods
are meaningful, not distances between clusters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from maelens.analyses.base import AnalysisResult
from maelens.analyses.separability import stratified_subsample
from maelens.errors import MaelensError
from maelens.seeds import derive_seed

log = logging.getLogger(__name__)

KINDS = ("cls", "mean_patch", "patch")


@dataclass(frozen=True)
class TSNESettings:
    """openTSNE settings. `n_iter`: iterations after the `early_exaggeration_iter` early-
    exaggeration phase (openTSNE's split; 250 + 500 by default). A perplexity above
    (N - 1) / 3 is lowered to it (openTSNE's own limit), and the value used is recorded."""

    seed: int = 0
    perplexity: float = 30.0
    n_iter: int = 500
    early_exaggeration_iter: int = 250

    def __post_init__(self) -> None:
        if not self.perplexity > 0:
            raise MaelensError(f"`perplexity` must be > 0, got {self.perplexity}.")
        for name in ("n_iter", "early_exaggeration_iter"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < (name == "n_iter"):
                raise MaelensError(f"`{name}` must be an integer >= {int(name == 'n_iter')}, "
                                   f"got {value!r}.")


def _opentsne():  # noqa: ANN202 - the module
    try:
        import openTSNE
    except ImportError:  # pragma: no cover - a declared dependency
        raise MaelensError("t-SNE needs openTSNE; fix: pip install openTSNE.") from None
    return openTSNE


def effective_perplexity(perplexity: float, n_points: int) -> float:
    """The perplexity openTSNE can use for `n_points`: at most (N - 1) / 3."""
    return float(min(perplexity, (n_points - 1) / 3.0))


def tsne_embedding(x: np.ndarray, settings: TSNESettings = TSNESettings(), key: int = 0
                   ) -> np.ndarray:
    """(N, D) features -> (N, 2) float64 t-SNE map; NaN when all rows are one point (e.g. the
    CLS token before any block), where t-SNE is undefined. `key` varies the random state."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if x.ndim != 2 or len(x) < 4:
        raise MaelensError(f"t-SNE needs (N, D) features with N >= 4, got shape {x.shape}; fix: "
                           "use more images.")
    if not np.all(np.isfinite(x)):
        raise MaelensError("t-SNE features hold NaN or inf; check the model and dtype.")
    if float(np.max(np.ptp(x, axis=0))) <= 1e-7 * max(float(np.max(np.abs(x))), 1e-30):
        return np.full((len(x), 2), np.nan)
    tsne = _opentsne().TSNE(
        perplexity=effective_perplexity(settings.perplexity, len(x)), n_iter=settings.n_iter,
        early_exaggeration_iter=settings.early_exaggeration_iter, initialization="pca",
        n_jobs=1, random_state=derive_seed(settings.seed, "tsne", key) % 2**32)
    return np.asarray(tsne.fit(x), dtype=np.float64)


def tsne_layers(arrays: np.ndarray, seed: int = 0, perplexity: float = 30.0, n_iter: int = 500,
                *, layers: Sequence[int] | None = None, early_exaggeration_iter: int = 250,
                seconds: list[float] | None = None, cpu_seconds: list[float] | None = None
                ) -> np.ndarray:
    """(L, N, D) features -> (L, N, 2) float32 t-SNE maps, one per layer.

    `layers` (L,) numbers key each layer's random state (default 0..L-1); `seconds`, when
    given, receives the wall time of each layer's t-SNE, `cpu_seconds` its process CPU time
    (seconds; the CPU time does not grow when other processes share the machine).
    """
    arrays = np.asarray(arrays)
    if arrays.ndim != 3:
        raise MaelensError(f"`arrays` must be (L, N, D), got shape {arrays.shape}.")
    layers = list(range(len(arrays))) if layers is None else [int(k) for k in layers]
    if len(layers) != len(arrays):
        raise MaelensError(f"{len(layers)} layer numbers for {len(arrays)} layers of `arrays`.")
    settings = TSNESettings(seed, perplexity, n_iter, early_exaggeration_iter)
    out = np.empty((*arrays.shape[:2], 2), dtype=np.float32)
    for i, layer in enumerate(layers):
        start, cpu = time.perf_counter(), time.process_time()
        out[i] = tsne_embedding(arrays[i], settings, key=layer)
        elapsed = time.perf_counter() - start
        log.info("t-SNE of layer %d (%d points): %.2f s", layer, arrays.shape[1], elapsed)
        if seconds is not None:
            seconds.append(elapsed)
        if cpu_seconds is not None:
            cpu_seconds.append(time.process_time() - cpu)
    return out


def tsne_result(embeddings: dict[str, np.ndarray], patches: dict[str, np.ndarray] | None,
                settings: TSNESettings = TSNESettings(), *, patch_total: int | None = 1500,
                progress: Callable[[str], None] | None = None) -> AnalysisResult:
    """The "tsne" result from `LayerEmbeddings` arrays (and `PatchTokenSample` arrays).

    arrays: "layers" (L,); "cls", "mean_patch" (L, N, 2) float32 with "index", "labels" (N,);
    "patch" (L, M, 2) with "patch_image", "patch_labels", "patch_position" (M,), the patch
    tokens first cut to `patch_total`, stratified by class (seeded by `settings.seed`).
    meta: the settings, the perplexity used per kind, wall and CPU seconds per layer per kind.
    """
    layers = np.asarray(embeddings["layers"], dtype=np.int64)
    arrays: dict[str, np.ndarray] = {"layers": layers, "index": embeddings["index"]}
    if "labels" in embeddings:
        arrays["labels"] = embeddings["labels"]
    meta: dict = {"settings": asdict(settings), "perplexity_used": {}, "seconds": {},
                  "cpu_seconds": {},
                  "opentsne": _opentsne().__version__, "patch_total": patch_total}
    sources = [(kind, embeddings[kind]) for kind in KINDS[:2] if kind in embeddings]
    if patches is not None:
        labels = patches.get("labels", np.zeros(len(patches["image"]), np.int64))
        rows = stratified_subsample(labels, patch_total, settings.seed, "tsne-patch")
        arrays.update(patch_image=patches["image"][rows], patch_labels=labels[rows],
                      patch_position=patches["patch"][rows])
        if not np.array_equal(patches["layers"], layers):
            raise MaelensError("patch tokens and embeddings come from different layers: "
                               f"{patches['layers'].tolist()} vs {layers.tolist()}.")
        sources.append(("patch", patches["tokens"][:, rows]))
    for kind, features in sources:
        if progress is not None:
            progress(kind)
        seconds: list[float] = []
        cpu: list[float] = []
        arrays[kind] = tsne_layers(features, settings.seed, settings.perplexity, settings.n_iter,
                                   layers=layers, seconds=seconds, cpu_seconds=cpu,
                                   early_exaggeration_iter=settings.early_exaggeration_iter)
        meta["perplexity_used"][kind] = effective_perplexity(settings.perplexity,
                                                             features.shape[1])
        meta["seconds"][kind], meta["cpu_seconds"][kind] = seconds, cpu
    return AnalysisResult("tsne", arrays=arrays, meta=meta)
