"""Linear CKA (Kornblith et al., 2019) between the layers of one model and between two models.

For features X (N, Dx) and Y (N, Dy) of the same N samples, with column-centred X~, Y~:
    CKA(X, Y) = ||X~^T Y~||_F^2 / (||X~^T X~||_F ||Y~^T Y~||_F)          ("biased" estimator)
in [0, 1]; CKA(X, X) = 1; invariant to orthogonal transforms and isotropic scaling of X or Y.

Two ways to get it:
- *Streamed* (`StreamedCKA`, `StreamedCrossCKA`): X~^T Y~ = sum x y^T - (sum x)(sum y)^T / N,
  so float64 sums over batches suffice and no per-image feature is kept. Memory (float64, on
  the compute device): within a model L(L+1)/2 D^2 x 8 bytes (demo L = 7, D = 192: 8.3 MB;
  ViT-B, 13 layers: 0.43 GB); between two models (La Da^2 + Lb Db^2 + La Lb Da Db) x 8 bytes
  (ViT-B vs ViT-B: 0.92 GB). Choose fewer layers when that is too much (`max_state_bytes`).
  The samples are one row per image (CLS or mean patch) or every visible patch token.
- *Debiased* (`cka_matrix(..., debiased=True)`): the unbiased HSIC estimator (Song et al.,
  2012; as used by Nguyen et al., 2021 and Kornblith's notebook) needs the N x N Gram matrices,
  so it is computed from per-image features kept as result arrays ((L, N, D) CLS or mean-patch
  embeddings), 8 N^2 bytes per layer. It needs N >= 4 (smaller N divides by zero).

Between two models the samples must be the same images in the same order: two passes over the
same image set, features keyed by image index (checked), and for patch tokens the same masks
(same mask ratio and seed: masks are keyed by image index).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps

KINDS = ("cls", "mean_patch", "tokens")
DEFAULT_MAX_BYTES = 2 << 30


# --------------------------------------------------------------------------- from arrays
def _centred(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise MaelensError(f"CKA features must be (N, D), got shape {x.shape}.")
    return x - x.mean(axis=0, keepdims=True)


def unbiased_gram(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, N) linear Gram matrix with the U-statistic centring (Kornblith's
    `center_gram(unbiased=True)`): <K, L>_F of two such matrices is proportional to the
    unbiased HSIC estimate. Needs N >= 4."""
    x = _centred(x)  # centring first does not change the estimate and limits cancellation
    n = len(x)
    if n < 4:
        raise MaelensError(f"the debiased CKA needs at least 4 images, got {n}.")
    gram = x @ x.T
    np.fill_diagonal(gram, 0.0)
    means = gram.sum(axis=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None] + means[None, :]
    np.fill_diagonal(gram, 0.0)
    return gram


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """Linear CKA of (N, Dx) and (N, Dy) features of the same N samples; NaN when either
    side is constant (zero variance)."""
    if len(x) != len(y):
        raise MaelensError(f"CKA needs the same samples on both sides, got {len(x)} and "
                           f"{len(y)} rows.")
    if debiased:
        gx, gy = unbiased_gram(x), unbiased_gram(y)
        return _ratio(float(np.vdot(gx, gy)), float(np.linalg.norm(gx) * np.linalg.norm(gy)))
    xc, yc = _centred(x), _centred(y)
    cross = float(np.linalg.norm(xc.T @ yc)) ** 2
    return _ratio(cross, float(np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def cka_matrix(a: np.ndarray, b: np.ndarray | None = None, *, debiased: bool = True,
               index_a: np.ndarray | None = None, index_b: np.ndarray | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """(La, Lb) CKA of every layer of `a` (La, N, Da) against every layer of `b` (Lb, N, Db);
    b None: `a` against itself. `index_a` / `index_b` (N,): image indices, must match."""
    a = np.asarray(a)
    b = a if b is None else np.asarray(b)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1] != b.shape[1]:
        raise MaelensError(f"CKA needs (L, N, D) features of the same N images, got shapes "
                           f"{a.shape} and {b.shape}.")
    if index_a is not None and index_b is not None and not np.array_equal(index_a, index_b):
        raise MaelensError("the two models saw different images (image indices differ); fix: "
                           "run both over the same image set, in the same order.")
    if not debiased:
        return np.array([[linear_cka(x, y) for y in b] for x in a])
    need = 8 * a.shape[1] ** 2 * (len(a) + (len(b) if b is not a else 0))
    if need > max_bytes:
        raise MaelensError(f"the debiased CKA would hold {need / 2**30:.1f} GiB of Gram "
                           f"matrices ({a.shape[1]} images); fix: use fewer images or layers, "
                           "or the streamed (biased) CKA.")
    grams_a = [unbiased_gram(x) for x in a]
    grams_b = grams_a if b is a else [unbiased_gram(y) for y in b]
    norm_a = [np.linalg.norm(g) for g in grams_a]
    norm_b = [np.linalg.norm(g) for g in grams_b]
    return np.array([[_ratio(float(np.vdot(ga, gb)), float(na * nb))
                      for gb, nb in zip(grams_b, norm_b, strict=True)]
                     for ga, na in zip(grams_a, norm_a, strict=True)])


def cka_result(name: str, matrix: np.ndarray, layers_a: Sequence[int],
               layers_b: Sequence[int], kind: str, estimator: str) -> AnalysisResult:
    """Rows ("cka", layer = layer of A, extra layer_b / kind / estimator) and arrays "cka"
    (La, Lb), "layers_a", "layers_b"."""
    rows = [Row(metric="cka", value=float(matrix[i, j]), layer=int(la),
                extra={"layer_b": int(lb), "kind": kind, "estimator": estimator})
            for i, la in enumerate(layers_a) for j, lb in enumerate(layers_b)]
    arrays = {"cka": np.asarray(matrix, dtype=np.float64),
              "layers_a": np.asarray(layers_a, dtype=np.int64),
              "layers_b": np.asarray(layers_b, dtype=np.int64)}
    return AnalysisResult(name, rows=rows, arrays=arrays,
                          meta={"kind": kind, "estimator": estimator})


# --------------------------------------------------------------------------- streamed
def sample_features(capture: Capture, layer: int, kind: str) -> torch.Tensor:
    """(S, D) float64 samples of hidden[layer] on the compute device: CLS or mean patch (one
    per image, S = B), or every visible patch token (S = B N_v)."""
    tokens = capture.hidden[layer]
    if kind == "cls":
        return tokens[:, 0].double()
    if kind == "mean_patch":
        return tokens[:, 1:].double().mean(dim=1)
    return tokens[:, 1:].reshape(-1, tokens.shape[-1]).double()


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise MaelensError(f"`kind` must be one of {KINDS}, got {kind!r}.")
    return kind


class _SumStates(Analysis):
    """Lazily declared float64 sum states (declared on first sight, in merge and on load)."""

    def _sum(self, name: str, value: torch.Tensor) -> None:
        if name not in self._reduce:
            self.add_state(name, None, "sum")
        mine = getattr(self, name)
        setattr(self, name, value.clone() if mine is None else mine + value)

    def merge(self, other: Analysis) -> Analysis:
        for name in getattr(other, "_reduce", {}):
            if name not in self._reduce:
                self.add_state(name, None, "sum")
        return super().merge(other)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Analysis:
        for name in state:
            if name not in self._reduce:
                self.add_state(name, None, "sum")
        return super().load_state_dict(state)

    def _layers(self, prefix: str) -> list[int]:
        return sorted(int(k.split("@")[1]) for k in self._reduce if k.startswith(prefix + "@"))

    def _centred_cross(self, gram: str, sum_x: str, sum_y: str) -> torch.Tensor:
        """X~^T Y~ = sum x y^T - (sum x)(sum y)^T / N."""
        n = float(self.count)
        return getattr(self, gram) - torch.outer(getattr(self, sum_x), getattr(self, sum_y)) / n


def _check_bytes(need: int, limit: int) -> None:
    if need > limit:
        raise MaelensError(f"streamed CKA would hold {need / 2**30:.2f} GiB of float64 sums "
                           f"(limit {limit / 2**30:.2f} GiB); fix: select fewer `--layers` or "
                           "raise `max_state_bytes`.")


class StreamedCKA(_SumStates):
    """Linear CKA between every pair of the requested layers of one model, from float64 sums.

    `result()`: arrays "cka" (L, L), "layers_a" = "layers_b" (L,); rows as `cka_result`.
    """

    name = "cka"

    def __init__(self, layers: int | Sequence[int] | None = None, kind: str = "mean_patch",
                 max_state_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__()
        self.kind, self.max_state_bytes = _check_kind(kind), max_state_bytes
        self.taps = Taps(hidden=layers, final=False)
        self.add_state("count", None, "sum")

    def update(self, capture: Capture, batch: Batch) -> StreamedCKA:
        layers = sorted(capture.hidden)
        feats = {k: sample_features(capture, k, self.kind) for k in layers}
        if self.count is None:
            width = feats[layers[0]].shape[1]
            _check_bytes(8 * width**2 * len(layers) * (len(layers) + 1) // 2,
                         self.max_state_bytes)
        self._sum("count", torch.tensor(float(len(feats[layers[0]])), dtype=torch.float64,
                                        device=feats[layers[0]].device))
        for i, la in enumerate(layers):
            self._sum(f"sum@{la}", feats[la].sum(dim=0))
            for lb in layers[i:]:
                self._sum(f"gram@{la}@{lb}", feats[la].T @ feats[lb])
        return self

    def result(self) -> AnalysisResult:
        layers = self._layers("sum")
        cov = {(a, b): self._centred_cross(f"gram@{a}@{b}", f"sum@{a}", f"sum@{b}")
               for i, a in enumerate(layers) for b in layers[i:]}
        norms = {a: float(torch.linalg.matrix_norm(cov[a, a])) for a in layers}
        matrix = np.full((len(layers), len(layers)), np.nan)
        for (a, b), c in cov.items():
            i, j = layers.index(a), layers.index(b)
            matrix[i, j] = matrix[j, i] = _ratio(float(torch.linalg.matrix_norm(c)) ** 2,
                                                 norms[a] * norms[b])
        return cka_result(self.name, matrix, layers, layers, self.kind, "biased, streamed")


class StreamedCrossCKA(_SumStates):
    """Linear CKA between every layer of model A and every layer of model B, streamed.

    Add `side_a` to model A's pass plan and `side_b` to model B's, and feed every batch to A
    first, then to B (the same images in the same order): side A holds its batch's features
    until side B has paired them. `result()`: arrays "cka" (La, Lb), "layers_a", "layers_b".
    """

    name = "cka_between"

    def __init__(self, layers_a: int | Sequence[int] | None = None,
                 layers_b: int | Sequence[int] | None = None, kind: str = "mean_patch",
                 max_state_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__()
        self.kind, self.max_state_bytes = _check_kind(kind), max_state_bytes
        self.side_a, self.side_b = _Side(self, "a", layers_a), _Side(self, "b", layers_b)
        self._pending: tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]] | None = None
        self.add_state("count", None, "sum")

    def update_side(self, side: str, capture: Capture, batch: Batch) -> None:
        feats = {k: sample_features(capture, k, self.kind) for k in sorted(capture.hidden)}
        for layer, value in feats.items():
            self._sum(f"sum_{side}@{layer}", value.sum(dim=0))
            self._sum(f"gram_{side}@{layer}", value.T @ value)
        if side == "a":
            self._pending = (batch.index.cpu(), capture.keep.cpu(), feats)
            return
        pending, self._pending = self._pending, None
        if pending is None or not torch.equal(pending[0], batch.index.cpu()) or (
                self.kind == "tokens" and not torch.equal(pending[1], capture.keep.cpu())):
            raise MaelensError("cross-model CKA: model B got a batch model A has not seen "
                               "(or other masks); fix: feed each batch to A, then to B, over "
                               "the same images in the same order with the same masks.")
        if self.count is None:
            self._check_memory(pending[2], feats)
        any_b = next(iter(feats.values()))
        self._sum("count", torch.tensor(float(len(any_b)), dtype=torch.float64,
                                        device=any_b.device))
        for la, xa in pending[2].items():
            for lb, xb in feats.items():
                self._sum(f"cross@{la}@{lb}", xa.to(xb.device).T @ xb)

    def _check_memory(self, feats_a: dict[int, torch.Tensor], feats_b: dict[int, torch.Tensor]
                      ) -> None:
        da, db = next(iter(feats_a.values())).shape[1], next(iter(feats_b.values())).shape[1]
        la, lb = len(feats_a), len(feats_b)
        _check_bytes(8 * (la * da**2 + lb * db**2 + la * lb * da * db), self.max_state_bytes)

    def result(self) -> AnalysisResult:
        layers_a, layers_b = self._layers("sum_a"), self._layers("sum_b")
        norm = {(s, k): float(torch.linalg.matrix_norm(
            self._centred_cross(f"gram_{s}@{k}", f"sum_{s}@{k}", f"sum_{s}@{k}")))
            for s, layers in (("a", layers_a), ("b", layers_b)) for k in layers}
        matrix = np.full((len(layers_a), len(layers_b)), np.nan)
        for i, la in enumerate(layers_a):
            for j, lb in enumerate(layers_b):
                c = self._centred_cross(f"cross@{la}@{lb}", f"sum_a@{la}", f"sum_b@{lb}")
                matrix[i, j] = _ratio(float(torch.linalg.matrix_norm(c)) ** 2,
                                      norm["a", la] * norm["b", lb])
        return cka_result(self.name, matrix, layers_a, layers_b, self.kind, "biased, streamed")


class _Side(Analysis):
    """One model's half of a `StreamedCrossCKA`: what that model's pass plan feeds."""

    def __init__(self, parent: StreamedCrossCKA, side: str,
                 layers: int | Sequence[int] | None) -> None:
        super().__init__()
        self.parent, self.side = parent, side
        self.name = f"{parent.name}.{side}"
        self.taps = Taps(hidden=layers, final=False)

    def update(self, capture: Capture, batch: Batch) -> _Side:
        self.parent.update_side(self.side, capture, batch)
        return self

    def result(self) -> AnalysisResult:
        return self.parent.result()
