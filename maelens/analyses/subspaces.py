"""Class subspaces and the principal angles between them (seed paper §III-A3, Fig. 4).

For class C at layer l the paper stacks the class's visible patch tokens into X_C (N_c, D) and
keeps the top-k right singular vectors V_C,k of X_C. We never stack: X_Cᵀ X_C = Σ x xᵀ over the
class's tokens is summed batch by batch in float64 on the compute device (a D x D Gram per class
and layer), and `result()` eigen-decomposes it: the eigenvectors are the right singular vectors
and sqrt(eigenvalues) the singular values of X_C. The same is done for the CLS token and the
mean patch token (one row per image instead of N_v).

Squaring the singular values costs precision only at the bottom of the spectrum: a singular value
σ_i comes out with relative error ~ eps64 (σ_1 / σ_i)², i.e. < 1e-8 while σ_i / σ_1 > 1e-4, and
the top-k directions that matter here sit far above that.

Principal angles follow Knyazev & Argentati (2002): for orthonormal bases Qa, Qb the cosines are
the singular values of Qaᵀ Qb and the sines those of Qb − Qa (Qaᵀ Qb); the sine is used for
angles below π/4, where arccos of a cosine near 1 would lose half the digits. θ1 is the
*smallest* angle (scipy's `subspace_angles` returns the largest first; note that scipy 1.17
chooses between sine and cosine per position with the masks in the opposite order, so when small
and large angles mix its small ones come from arccos: it is accurate to ~1e-8 rad, not 1e-16).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import scipy.linalg
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row, as_numpy
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps

log = logging.getLogger(__name__)

KINDS = ("patch", "cls", "mean_patch")
# The paper does not give k. k = 10 (i) stays well below what every kind sees per class in the
# paper's setting (50 images per class: 50 CLS / mean-patch rows, 50 x 49 patch tokens), so each
# subspace is estimated from >= 5 points per direction; (ii) keeps k << D, so that random
# k-subspaces are far apart (median θ1 ≈ 63° for D = 192, ≈ 77° for D = 768: stored in `meta`)
# and a small θ1 means shared directions, not crowding; (iii) equals the number of classes of the
# paper's study and of MNIST.
DEFAULT_K = 10
# A class whose k-th singular value is below this fraction of its first spans fewer than k
# directions (e.g. the CLS token at layer 0, the same vector for every image): float32 tokens
# carry relative noise ~1e-7, so directions below 1e-6 are rounding, and angles to them would be
# arbitrary. Such (layer, kind, class) cells are reported as NaN and listed in meta.
RANK_RTOL = 1e-6


def principal_angles(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Principal angles in radians, ascending (θ1, the smallest, first), between span(qa) and
    span(qb); qa (..., D, ka) and qb (..., D, kb) have orthonormal columns (leading axes: a
    stack of pairs). Returns (..., min(ka, kb)) angles."""
    qa, qb = np.asarray(qa, dtype=np.float64), np.asarray(qb, dtype=np.float64)
    if qa.ndim < 2 or qa.shape[:-1] != qb.shape[:-1]:
        raise MaelensError(f"`qa`, `qb` must be (D, k) bases of one space, got {qa.shape} and "
                           f"{qb.shape}.")
    if qa.shape[-1] < qb.shape[-1]:  # angles are symmetric; the sine formula wants ka >= kb
        qa, qb = qb, qa
    cross = np.swapaxes(qa, -1, -2) @ qb  # (..., ka, kb)
    cosines = np.linalg.svd(cross, compute_uv=False)  # descending: smallest angle first
    sines = np.linalg.svd(qb - qa @ cross, compute_uv=False)[..., ::-1]  # ascending: same
    small = cosines**2 >= 0.5  # angle <= π/4: the sine is the well-conditioned one
    return np.where(small, np.arcsin(np.clip(sines, 0.0, 1.0)),
                    np.arccos(np.clip(cosines, -1.0, 1.0)))


def top_eigen(gram: torch.Tensor, k: int, subset: bool | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Top-k eigenpairs of symmetric (..., D, D) float64 matrices: values (..., k) descending
    and vectors (..., D, k). subset (default: on the CPU) has LAPACK's syevr compute only those
    k (about 2x faster than a full decomposition at D = 192, 4x at D = 768); otherwise
    torch.linalg.eigh runs on the matrices' device."""
    D = gram.shape[-1]
    if not (gram.device.type == "cpu" if subset is None else subset):
        values, vectors = torch.linalg.eigh(gram)
        return (values.flip(-1)[..., :k].cpu().numpy(),
                vectors.flip(-1)[..., :k].cpu().numpy())
    flat = gram.reshape(-1, D, D).cpu().numpy()
    values, vectors = np.empty((len(flat), k)), np.empty((len(flat), D, k))
    for i, matrix in enumerate(flat):
        w, v = scipy.linalg.eigh(matrix, subset_by_index=[D - k, D - 1], driver="evr",
                                 check_finite=False)
        values[i], vectors[i] = w[::-1], v[:, ::-1]
    return values.reshape(*gram.shape[:-2], k), vectors.reshape(*gram.shape[:-2], D, k)


def random_theta1(dim: int, k: int, draws: int = 200, seed: int = 0) -> np.ndarray:
    """θ1 (radians) between `draws` pairs of uniformly random k-dimensional subspaces of R^dim:
    the no-structure reference for class subspaces."""
    rng = np.random.default_rng(seed)
    qa = np.linalg.qr(rng.standard_normal((draws, dim, k)))[0]
    qb = np.linalg.qr(rng.standard_normal((draws, dim, k)))[0]
    return principal_angles(qa, qb)[:, 0]


def _check_layers_arg(layers: int | Sequence[int] | None) -> None:
    ok = layers is None or (isinstance(layers, int) and not isinstance(layers, bool)) or (
        isinstance(layers, Sequence) and all(isinstance(v, int) and not isinstance(v, bool)
                                             for v in layers))
    if not ok:
        raise MaelensError(f"`layers` must be None (all), an int n (the last n) or a list of "
                           f"layer indices, got {layers!r}.")


class ClassSubspaces(Analysis):
    """Top-k class subspaces per layer and kind, and principal angles between every class pair.

    layers: hidden-state layers as `Taps` (None: 0..L, 0 = embeddings; before the final norm).
    k: subspace dimension (see DEFAULT_K). kinds: any of "patch" (visible patch tokens, the
    paper's X_C), "cls" (CLS token), "mean_patch" (mean of the visible patch tokens).
    centred: False (the paper, as written: SVD of the raw X_C); True subtracts the class mean
    first (the subspace of the class's spread rather than of its second moment).
    num_classes: C when known up front (labels must lie in 0..C-1); None grows the class axis
    as labels arrive (shards that saw different classes are padded with zeros on merge).
    Classes never seen are left out of the result.

    State per kind (float64, on the compute device): gram (C, L, D, D) = Σ x xᵀ, sum (C, L, D)
    = Σ x, count (C,) rows; images (C,) and layers (L,) int64. Memory: 3 x C x L x D² x 8 bytes
    (10 classes of ViT-B/16, all 13 layers, 3 kinds: 1.8 GB).

    result(): rows per (layer, kind) with extra {"kind", "k", "centred"}: theta1_{rad,deg}_
    {median,q1,q3} over class pairs, variance_explained_mean (Σ top-k eigenvalues / trace,
    averaged over classes; un-centred this is the share of the second moment), singular_value_mean
    (extra "index" 1..k). Arrays: layers (L,), classes (C,), pairs (P, 2) class labels; per kind
    {kind}_theta1_rad (L, P), {kind}_angles_rad (L, P, k) ascending, {kind}_singular_values
    (L, C, k), {kind}_variance_explained (L, C), {kind}_count (C,); random_theta1_rad (200,).
    """

    name = "subspaces"

    def __init__(self, layers: int | Sequence[int] | None = None, k: int = DEFAULT_K,
                 kinds: Sequence[str] = KINDS, centred: bool = False,
                 num_classes: int | None = None) -> None:
        super().__init__()
        _check_layers_arg(layers)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise MaelensError(f"`k` must be a positive integer, got {k!r}.")
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds or isinstance(kinds, str):
            raise MaelensError(f"`kinds` must be a non-empty list from {KINDS}, got {kinds!r}.")
        if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 2):
            raise MaelensError(f"`num_classes` must be None or an integer >= 2, got "
                               f"{num_classes!r}.")
        self.k, self.kinds, self.centred = k, tuple(dict.fromkeys(kinds)), bool(centred)
        self.num_classes = num_classes
        self.taps = Taps(hidden=layers, final=False)
        for kind in self.kinds:
            for part in ("gram", "sum", "count"):
                self.add_state(f"{part}_{kind}", None, "sum")
        self.add_state("images", None, "sum")
        self.add_state("layers", None, "max")

    # -- streaming ---------------------------------------------------------------------------
    def update(self, capture: Capture, batch: Batch) -> ClassSubspaces:
        labels = self._labels(batch)
        layers = sorted(capture.hidden)
        if not layers:
            raise MaelensError("ClassSubspaces got no hidden states; its `layers` select none.")
        first = capture.hidden[layers[0]]
        self._allocate(layers, first.shape[-1], first.device, int(labels.max()) + 1)
        # Images sorted by class: each class is one contiguous slice whose Gram is added in
        # place by one addmm (padding classes to a common count for one batched product wasted
        # ~70 % of the flops on MNIST-sized batches; index_add_ into the strided state cost as
        # much as the maths). One-row kinds (CLS, mean patch) stack all layers into one
        # batched product per class: their per-layer products are too small to run alone.
        classes, counts = labels.unique(return_counts=True)
        order = torch.argsort(labels, stable=True)
        # class-sorted image sets give sorted batches: skip the reordering copy
        order = None if torch.equal(order, torch.arange(len(labels))) else order.to(first.device)
        sizes, classes = counts.tolist(), classes.tolist()
        single = {"cls": [], "mean_patch": []}
        for li, layer in enumerate(layers):
            tokens = capture.hidden[layer]
            tokens = (tokens if order is None else tokens.index_select(0, order)).double()
            single["cls"].append(tokens[:, 0])
            single["mean_patch"].append(tokens[:, 1:].mean(dim=1))
            if "patch" in self.kinds:
                for c, x in zip(classes, tokens[:, 1:].split(sizes), strict=True):
                    self._add("patch", c, li, x.reshape(-1, x.shape[-1]))  # (n_c N_v, D)
        for kind in [kind for kind in self.kinds if kind in single]:
            stacked = torch.stack(single[kind])  # (L, B, D)
            for c, x in zip(classes, stacked.split(sizes, dim=1), strict=True):
                self._add(kind, c, slice(None), x)  # (L, n_c, D)
        counts = torch.bincount(labels, minlength=self.images.shape[0])
        self.images += counts.to(self.images.device)
        return self

    def _add(self, kind: str, c: int, layer: int | slice, x: torch.Tensor) -> None:
        """Add rows x ((R, D), or (L, R, D) for every layer at once) of class c."""
        gram = getattr(self, f"gram_{kind}")[c, layer]
        if x.ndim == 3:
            gram.baddbmm_(x.transpose(1, 2), x)
        else:
            gram.addmm_(x.T, x)
        getattr(self, f"sum_{kind}")[c, layer] += x.sum(dim=-2)
        if layer == 0 or isinstance(layer, slice):
            getattr(self, f"count_{kind}")[c] += x.shape[-2]

    def _labels(self, batch: Batch) -> torch.Tensor:
        if batch.labels is None:
            raise MaelensError("ClassSubspaces needs class labels: give batches with `labels` "
                               "(an image set with classes).")
        labels = batch.labels.detach().cpu().long()
        if len(labels) and int(labels.min()) < 0:
            raise MaelensError(f"class labels must be >= 0, got {int(labels.min())}.")
        if self.num_classes is not None and int(labels.max()) >= self.num_classes:
            raise MaelensError(f"label {int(labels.max())} is outside `num_classes`="
                               f"{self.num_classes} (labels 0..{self.num_classes - 1}); raise "
                               "`num_classes` or leave it None to grow.")
        return labels

    def _allocate(self, layers: list[int], dim: int, device: torch.device, seen: int) -> None:
        """Create the states on first use; grow the class axis to hold label `seen` - 1."""
        if self.layers is None:
            self.layers = torch.tensor(layers, dtype=torch.int64)
        elif self.layers.tolist() != layers:
            raise MaelensError(f"ClassSubspaces saw layers {layers} after "
                               f"{self.layers.tolist()}; feed it from one pass plan.")
        want = max(seen, self.num_classes or 0, self._classes())
        if self.images is None:
            L = len(layers)
            for kind in self.kinds:
                self._set(kind, torch.zeros(want, L, dim, dim, dtype=torch.float64,
                                            device=device),
                          torch.zeros(want, L, dim, dtype=torch.float64, device=device),
                          torch.zeros(want, dtype=torch.float64, device=device))
            self.images = torch.zeros(want, dtype=torch.int64, device=device)
        self._grow(want)

    def _set(self, kind: str, gram: torch.Tensor, total: torch.Tensor, count: torch.Tensor
             ) -> None:
        setattr(self, f"gram_{kind}", gram)
        setattr(self, f"sum_{kind}", total)
        setattr(self, f"count_{kind}", count)

    def _classes(self) -> int:
        return 0 if self.images is None else int(self.images.shape[0])

    def _grow(self, want: int) -> None:
        """Zero-pad every class-indexed state to `want` classes."""
        extra = want - self._classes()
        if extra <= 0 or self.images is None:
            return
        for name in self._reduce:
            value = getattr(self, name)
            if name != "layers" and value is not None:
                pad = value.new_zeros((extra, *value.shape[1:]))
                setattr(self, name, torch.cat([value, pad]))

    def merge(self, other: Analysis) -> ClassSubspaces:
        if not isinstance(other, ClassSubspaces) or other.kinds != self.kinds:
            raise MaelensError("can only merge ClassSubspaces with the same `kinds`.")
        if self.layers is not None and other.layers is not None and not torch.equal(
                self.layers, other.layers):
            raise MaelensError(f"cannot merge subspaces of layers {other.layers.tolist()} into "
                               f"{self.layers.tolist()}.")
        if self.images is not None and other.images is not None:
            want = max(self._classes(), other._classes())
            self._grow(want)
            other._grow(want)
        return super().merge(other)  # type: ignore[return-value]

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> ClassSubspaces:
        super().load_state_dict(state)
        if self.num_classes is not None and self._classes() not in (0, self.num_classes):
            raise MaelensError(f"the state holds {self._classes()} classes but `num_classes`="
                               f"{self.num_classes}.")
        return self

    # -- result ------------------------------------------------------------------------------
    def result(self) -> AnalysisResult:
        classes = self._present_classes()
        layers = self.layers.tolist()
        pairs = list(combinations(range(len(classes)), 2))
        arrays: dict[str, np.ndarray] = {
            "layers": np.asarray(layers, dtype=np.int64), "classes": classes,
            "pairs": classes[np.asarray(pairs, dtype=np.int64).reshape(-1, 2)]}
        rows: list[Row] = []
        degenerate: list[dict] = []
        dim = int(getattr(self, f"gram_{self.kinds[0]}").shape[-1])
        for kind in self.kinds:
            basis, values, trace, bad = self._subspaces(kind, classes)
            angles = _pair_angles(basis, pairs, bad)  # (L, P, k)
            sv = np.sqrt(np.clip(values, 0.0, None))  # (L, C, k)
            explained = values.sum(-1) / np.where(trace > 0, trace, np.nan)
            arrays.update({f"{kind}_theta1_rad": angles[..., 0], f"{kind}_angles_rad": angles,
                           f"{kind}_singular_values": sv,
                           f"{kind}_variance_explained": explained,
                           f"{kind}_count": as_numpy(getattr(self, f"count_{kind}"))[classes]})
            rows += _rows(kind, layers, angles[..., 0], sv, explained,
                          {"kind": kind, "k": self.k, "centred": self.centred})
            degenerate += [{"kind": kind, "layer": layers[li], "class": int(classes[ci])}
                           for li, ci in zip(*np.nonzero(bad), strict=True)]
        baseline = random_theta1(dim, self.k)
        arrays["random_theta1_rad"] = baseline
        if degenerate:
            log.info("%d (kind, layer, class) cells span fewer than k=%d directions; their "
                     "angles are NaN (see meta 'degenerate').", len(degenerate), self.k)
        meta = {"k": self.k, "centred": self.centred, "kinds": list(self.kinds), "dim": dim,
                "degenerate": degenerate, "rank_rtol": RANK_RTOL,
                "random_theta1_deg_median": float(np.degrees(np.median(baseline))),
                "layer_convention": "hidden[l] after block l, before the final norm; "
                                    "0 = embeddings"}
        return AnalysisResult(self.name, rows=rows, arrays=arrays, meta=meta)

    def bases(self, kind: str) -> np.ndarray:
        """(L, C, D, k) orthonormal bases of the class subspaces of `kind` (classes seen, in
        label order; columns by decreasing singular value, each up to sign)."""
        if kind not in self.kinds:
            raise MaelensError(f"`kind` must be one of {self.kinds}, got {kind!r}.")
        return self._subspaces(kind, self._present_classes())[0]

    def _present_classes(self) -> np.ndarray:
        if self.images is None:
            raise MaelensError("ClassSubspaces has seen no batch; feed it images first.")
        images = as_numpy(self.images)
        classes = np.flatnonzero(images > 0)
        if len(classes) < 2:
            raise MaelensError(f"principal angles need at least two classes, got "
                               f"{len(classes)} (classes {classes.tolist()}); give images of "
                               "two or more classes.")
        single = classes[images[classes] == 1]
        if len(single):
            raise MaelensError(f"class {int(single[0])} has a single image; a class subspace "
                               "needs several: give at least 2 images per class (more than k).")
        return classes

    def _subspaces(self, kind: str, classes: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """basis (L, C, D, k), top-k eigenvalues (L, C, k) descending, trace (L, C), and
        bad (L, C): cells spanning fewer than k directions."""
        count = as_numpy(getattr(self, f"count_{kind}"))
        dim = getattr(self, f"gram_{kind}").shape[-1]
        for c in classes:
            rank = int(count[c]) - (1 if self.centred else 0)
            if self.k > min(rank, dim):
                raise MaelensError(
                    f"`k`={self.k} exceeds the rank of class {int(c)} for kind {kind!r}: it has "
                    f"{int(count[c])} {kind} rows (rank <= {min(rank, dim)}"
                    f"{', centred' if self.centred else ''}); lower `k` or give more images.")
        pick = lambda t: t if len(classes) == len(t) else t[torch.as_tensor(  # noqa: E731
            classes, device=t.device)]
        gram = pick(getattr(self, f"gram_{kind}"))  # (C, L, D, D)
        if self.centred:
            total = pick(getattr(self, f"sum_{kind}"))  # (C, L, D)
            n = pick(getattr(self, f"count_{kind}"))[:, None, None, None]
            gram = gram - total[..., :, None] * total[..., None, :] / n
        top, basis = top_eigen(gram, self.k)  # (C, L, k), (C, L, D, k)
        top, basis = top.swapaxes(0, 1), basis.swapaxes(0, 1)  # layer first
        trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1).T.cpu().numpy()  # (L, C) Σ eigenvalues
        bad = top[..., -1] <= RANK_RTOL**2 * np.maximum(top[..., 0], 0.0)
        return basis, top, trace, bad


def _pair_angles(basis: np.ndarray, pairs: list[tuple[int, int]], bad: np.ndarray) -> np.ndarray:
    """(L, P, k) principal angles for every layer and class pair; NaN where a class is bad."""
    first, second = np.asarray(pairs, dtype=np.int64).reshape(-1, 2).T
    out = principal_angles(basis[:, first], basis[:, second])  # (L, P, k)
    out[bad[:, first] | bad[:, second]] = np.nan
    return out


def _rows(kind: str, layers: list[int], theta1: np.ndarray, sv: np.ndarray,
          explained: np.ndarray, extra: dict) -> list[Row]:
    rows: list[Row] = []
    for li, layer in enumerate(layers):
        finite = theta1[li][np.isfinite(theta1[li])]
        stats = np.percentile(finite, [50, 25, 75]) if len(finite) else np.full(3, np.nan)
        for unit, scale in (("rad", 1.0), ("deg", 180.0 / np.pi)):
            for name, value in zip(("median", "q1", "q3"), stats, strict=True):
                rows.append(Row(f"theta1_{unit}_{name}", float(value * scale), unit, layer=layer,
                                extra=dict(extra)))
        finite = explained[li][np.isfinite(explained[li])]  # NaN: a class with zero trace
        rows.append(Row("variance_explained_mean", float(finite.mean()) if len(finite)
                        else float("nan"), "fraction",
                        layer=layer, extra=dict(extra)))
        for i, value in enumerate(sv[li].mean(axis=0), start=1):
            rows.append(Row("singular_value_mean", float(value), "", layer=layer,
                            extra={**extra, "index": i}))
    return rows
