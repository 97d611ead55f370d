"""Mean attention distance per head, in pixels (Dosovitskiy et al. 2021, Fig. 7; seed paper
Fig. 3), and attention entropy per head, in nats.

For query patch i of an image, the attention distance is Σ_j A_ij ‖pos_i − pos_j‖ over the key
patches j, with pos the patch centres in input pixels, read from the capture itself (its patch
size, grid and, under masking, the kept patch indices `keep`: `Capture.token_positions()`);
nothing is hard-coded, so models with other grids or patch sizes are directly comparable. The
per-head number is the mean over every (image, query patch) pair (with a fixed mask ratio every
image has N_v queries, so this is also the mean over images of the per-image means).

CLS policy (the CLS token has no position):
  "exclude" (default): CLS is neither query nor key, and each patch query's row is renormalised
      over the patch keys, p_ij = A_ij / Σ_{j' patch} A_ij'. Distance and entropy use p.
  "raw": patch queries only; the CLS column is dropped *without* renormalising (what most public
      snippets do), so the distance is Σ_j A_ij ‖·‖ with raw weights and shrinks by the CLS
      share (1 − A_i,CLS). The entropy is that of the full raw row as the model computed it,
      −Σ_j A_ij ln A_ij over all keys, CLS included.
Either way, `cls_attention_mass` reports the mean A_i,CLS of the patch queries per head.
Self-attention (j = i, distance 0) counts as a key: a head that only attends to its own patch
has distance 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from maelens.analyses.base import Analysis, AnalysisResult, Batch, Row, as_numpy
from maelens.analyses.subspaces import _check_layers_arg
from maelens.errors import MaelensError
from maelens.model.taps import Capture, Taps

CLS_POLICIES = ("exclude", "raw")


def patch_distances(capture: Capture) -> torch.Tensor:
    """(B, N_v, N_v) float32 Euclidean distances in pixels between the visible patch centres."""
    pos = capture.token_positions().to(torch.float32)  # (B, N_v, 2) (row, col) in pixels
    # The difference form, not torch.cdist: cdist's matrix-product path leaves rounding noise
    # (~1e-3 px) on the zero diagonal.
    return (pos[:, :, None, :] - pos[:, None, :, :]).norm(dim=-1)


def head_sums(attn: torch.Tensor, dist: torch.Tensor, cls_policy: str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-head sums over images and patch queries of (distance px, entropy nats, CLS mass).

    attn (B, H, T, T) probabilities with CLS at token 0; dist (B, N_v, N_v). Returns three
    (H,) float64 tensors (divide by B * N_v for means).
    """
    a = attn.to(torch.float32)
    patch = a[:, :, 1:, 1:]  # (B, H, N_v, N_v): patch queries x patch keys
    cls_mass = a[:, :, 1:, 0]  # (B, H, N_v)
    distance = (patch * dist[:, None]).sum(dim=-1)  # (B, H, N_v) raw weights
    if cls_policy == "exclude":
        # renormalised rows p = A / s: Σ p d = (Σ A d) / s and −Σ p ln p = ln s − (Σ A ln A) / s,
        # which spares a normalised copy of the maps
        row = patch.sum(dim=-1).clamp_min(torch.finfo(torch.float32).tiny)
        distance = distance / row
        entropy = row.log() - _a_log_a(patch) / row
    else:
        entropy = -_a_log_a(a[:, :, 1:, :])  # the full row, CLS key included
    return tuple(t.double().sum(dim=(0, 2)) for t in (distance, entropy, cls_mass))


def _a_log_a(weights: torch.Tensor) -> torch.Tensor:
    """Σ_j w_j ln w_j over the last axis, 0 ln 0 = 0 (the clamp keeps log finite; it is ~2x
    faster than torch.special.xlogy on the CPU)."""
    return (weights * weights.clamp_min(torch.finfo(weights.dtype).tiny).log()).sum(dim=-1)


class AttentionDistance(Analysis):
    """Mean attention distance (pixels) and attention entropy (nats) per layer and head.

    layers: attention layers as `Taps` (None: blocks 1..L). cls_policy: "exclude" or "raw"
    (see the module docstring).
    State (float64 sums on the compute device): distance, entropy, cls_mass (L, H); queries
    (1,) the number of (image, patch query) pairs; uniform (1,) the summed distance a uniform
    attention over the visible patches would give; layers (L,) and geometry (gh, gw, patch)
    int64.
    result(): rows per (layer, head) `distance_px`, `entropy_nats`, `cls_attention_mass`, rows
    per layer `distance_px_head_mean`; arrays layers (L,), distance_px, entropy_nats,
    cls_attention_mass (L, H), uniform_distance_px (), grid (2,), patch_size ().
    """

    name = "attention_distance"

    def __init__(self, layers: int | Sequence[int] | None = None,
                 cls_policy: str = "exclude") -> None:
        super().__init__()
        _check_layers_arg(layers)
        if cls_policy not in CLS_POLICIES:
            raise MaelensError(f"`cls_policy` must be one of {CLS_POLICIES}, got "
                               f"{cls_policy!r}.")
        self.cls_policy = cls_policy
        self.taps = Taps(attn=layers, final=False)
        for name in ("distance", "entropy", "cls_mass", "queries", "uniform"):
            self.add_state(name, None, "sum")
        self.add_state("layers", None, "max")
        self.add_state("geometry", None, "max")

    def update(self, capture: Capture, batch: Batch) -> AttentionDistance:
        layers = sorted(capture.attn)
        if not layers:
            raise MaelensError("AttentionDistance got no attention maps; its `layers` select "
                               "none.")
        first = capture.attn[layers[0]]
        self._allocate(layers, first.shape[1], first.device, capture)
        dist = patch_distances(capture).to(first.device)  # (B, N_v, N_v)
        for li, layer in enumerate(layers):
            distance, entropy, cls_mass = head_sums(capture.attn[layer], dist, self.cls_policy)
            self.distance[li] += distance
            self.entropy[li] += entropy
            self.cls_mass[li] += cls_mass
        B, n = dist.shape[:2]
        self.queries += B * n
        self.uniform += dist.double().mean(dim=-1).sum()
        return self

    def _allocate(self, layers: list[int], heads: int, device: torch.device,
                  capture: Capture) -> None:
        geometry = torch.tensor([*capture.grid, capture.patch_size], dtype=torch.int64)
        if self.layers is None:
            self.layers, self.geometry = torch.tensor(layers, dtype=torch.int64), geometry
            zeros = lambda *shape: torch.zeros(shape, dtype=torch.float64, device=device)  # noqa: E731
            self.distance, self.entropy = zeros(len(layers), heads), zeros(len(layers), heads)
            self.cls_mass, self.queries, self.uniform = zeros(len(layers), heads), zeros(1), \
                zeros(1)
        elif self.layers.tolist() != layers or not torch.equal(self.geometry, geometry):
            raise MaelensError(f"AttentionDistance saw layers {layers} on a {capture.grid} grid "
                               f"after {self.layers.tolist()} on {self.geometry.tolist()[:2]}; "
                               "feed it from one model and image size.")

    def merge(self, other: Analysis) -> AttentionDistance:
        if not isinstance(other, AttentionDistance) or other.cls_policy != self.cls_policy:
            raise MaelensError("can only merge AttentionDistance with the same `cls_policy`.")
        for name in ("layers", "geometry"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None and not torch.equal(mine, theirs):
                raise MaelensError(f"cannot merge attention distances with different {name} "
                                   f"({theirs.tolist()} into {mine.tolist()}).")
        return super().merge(other)  # type: ignore[return-value]

    def result(self) -> AnalysisResult:
        if self.queries is None:
            raise MaelensError("AttentionDistance has seen no batch; feed it images first.")
        count = float(self.queries.item())
        distance = as_numpy(self.distance) / count
        entropy = as_numpy(self.entropy) / count
        cls_mass = as_numpy(self.cls_mass) / count
        layers = self.layers.tolist()
        gh, gw, patch = self.geometry.tolist()
        rows: list[Row] = []
        for li, layer in enumerate(layers):
            for h in range(distance.shape[1]):
                rows += [Row("distance_px", float(distance[li, h]), "px", layer=layer, head=h),
                         Row("entropy_nats", float(entropy[li, h]), "nats", layer=layer, head=h),
                         Row("cls_attention_mass", float(cls_mass[li, h]), "fraction",
                             layer=layer, head=h)]
            rows.append(Row("distance_px_head_mean", float(distance[li].mean()), "px",
                            layer=layer))
        uniform = float(self.uniform.item()) / count
        arrays = {"layers": np.asarray(layers, dtype=np.int64), "distance_px": distance,
                  "entropy_nats": entropy, "cls_attention_mass": cls_mass,
                  "uniform_distance_px": np.asarray(uniform),
                  "grid": np.asarray([gh, gw], dtype=np.int64),
                  "patch_size": np.asarray(patch, dtype=np.int64)}
        meta = {"cls_policy": self.cls_policy, "grid": [gh, gw], "patch_size": patch,
                "queries": count, "uniform_distance_px": uniform,
                "units": "distance in input pixels (patch centres), entropy in nats"}
        return AnalysisResult(self.name, rows=rows, arrays=arrays, meta=meta)
