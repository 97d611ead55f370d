"""The non-linear bridge: autograd Jacobians of an MAE's reconstruction w.r.t. its input pixels.

Layout: J[j, i] = ∂x̂_j / ∂x_i as a (d_out, d_in) = (H·W, H·W) matrix on the pixel grid,
row-major (index y·W + x), the layout of `maelens.theory.spatial` and `tiles_2d(H, W, p, 1)`.
Units: the model's input units (normalised pixels). The reconstruction x̂ is the decoder's
`pred` for every patch, unpatchified, so for `norm_pix_loss` models x̂ is in normalised-patch
units (each patch standardised by its own mean and std) and J is d(that) / d(input).

Channels, explicitly (`channels=`):
- "grey": one grey value per pixel, copied into every input channel, and the output averaged
  over channels (C times cheaper). For the MNIST demo (equal mean / std per channel) the copy
  is a grey image; J is the luminance Jacobian.
- "sum": the full (C·H·W)² Jacobian, reduced per pixel pair: `magnitude` = Σ over output and
  input channels of |J|; `signed` = mean over output channels of the sum over input channels
  (equal to the "grey" Jacobian).

Masked inputs: patches not in `keep` never reach the encoder, so their columns are exactly zero.
Averages over images and masks (`JacobianAverage`) therefore count a pair (j, i) only in the
samples where input i was visible: influence = E[|J_ji| | input i visible].
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from maelens._validate import check_positive_int, check_ratio
from maelens.errors import MaelensError
from maelens.model.masking import keep_for_images, unpatchify
from maelens.model.vit import VisionTransformer
from maelens.theory.partition import tiles_2d
from maelens.theory.spatial import (
    influence_profile,
    out_of_patch_mass,
    pixel_distances,
    spatial_entropy,
    weighted_mean_distance,
)

log = logging.getLogger(__name__)

Channels = Literal["grey", "sum"]
Outputs = Literal["masked", "visible", "all"]
OUTPUT_SETS = ("masked", "visible", "all")


class LinearMAE(nn.Module):
    """x̂ = (r ⊙ x) A B, the linear MAE of the working notes; W = A B (d, d), W_ij = effect of
    input i on output j. Its input Jacobian is (diag(r) W)ᵀ: Wᵀ with masked columns zeroed."""

    def __init__(self, encoder: torch.Tensor, decoder: torch.Tensor) -> None:
        super().__init__()
        if encoder.ndim != 2 or decoder.ndim != 2 or encoder.shape[::-1] != decoder.shape:
            raise MaelensError(
                f"`encoder` must be (d, k) and `decoder` (k, d), got {tuple(encoder.shape)} "
                f"and {tuple(decoder.shape)}."
            )
        self.A = nn.Parameter(encoder.clone())
        self.B = nn.Parameter(decoder.clone())

    @property
    def W(self) -> torch.Tensor:  # noqa: N802
        """End-to-end map A B (d, d)."""
        return self.A @ self.B

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, d), keep r (d,) or (B, d) of 0 / 1 (None: all kept) -> x̂ (B, d)."""
        return (x if keep is None else x * keep) @ self.A @ self.B


def input_jacobian(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Rows of the Jacobian (n_rows, d_in) of `fn` at one input `x` (any shape, d_in entries).

    `fn` maps a batch (B, *x.shape) to (B, *out_shape) with samples independent (eval mode: no
    batch norm, no dropout). `rows` picks flattened outputs (default: all d_out). Each chunk of
    `batch_size` rows runs one batched forward and backward pass on copies of `x`: plain
    autograd, so every op works (vmap-based `jacrev` falls back to a slow loop on attention).
    """
    x = x.detach()
    batch_size = check_positive_int("batch_size", batch_size)
    if rows is None:
        with torch.no_grad():
            rows = torch.arange(fn(x[None]).reshape(1, -1).shape[1])
    chunks = []
    with torch.enable_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size].to(x.device)
            copies = x.expand(len(chunk), *x.shape).clone().requires_grad_(True)
            out = fn(copies).reshape(len(chunk), -1)  # (b, d_out)
            picked = out.gather(1, chunk[:, None]).sum()  # row b of J lands in sample b
            (grad,) = torch.autograd.grad(picked, copies)
            chunks.append(grad.reshape(len(chunk), -1))
    return torch.cat(chunks)


def reconstruction_fn(
    model: VisionTransformer, keep: torch.Tensor, channels: Channels = "grey"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """pixels -> reconstruction for a fixed visible set `keep` (N_v,) of patch indices.

    "grey": (B, H, W) -> (B, H, W) (input copied to every channel, output channel mean);
    "sum": (B, C, H, W) -> (B, C, H, W). The output is `pred` unpatchified (see module).
    """
    c = model.config
    if channels not in ("grey", "sum"):
        raise MaelensError(f'`channels` must be "grey" or "sum", got {channels!r}.')

    def run(pixels: torch.Tensor) -> torch.Tensor:
        x = pixels[:, None].expand(-1, c.in_chans, -1, -1) if channels == "grey" else pixels
        grid = model.grid_of(x)
        batch_keep = keep.expand(len(x), -1)
        pred = model.decode(model(x, keep=batch_keep).final, batch_keep, grid)  # (B, N, p*p*C)
        image = unpatchify(pred, c.patch_size, grid, c.in_chans)  # (B, C, H, W)
        return image.mean(dim=1) if channels == "grey" else image

    return run


@dataclass(frozen=True)
class PixelJacobian:
    """One image, one mask. signed, magnitude: (n_rows, H·W) (see module for channels);
    rows: (n_rows,) output pixel indices; visible: (H·W,) bool, input pixel in a kept patch;
    output_masked: (n_rows,) bool, output pixel in a removed patch."""

    signed: np.ndarray
    magnitude: np.ndarray
    rows: np.ndarray
    visible: np.ndarray
    output_masked: np.ndarray
    image_hw: tuple[int, int]
    patch_size: int


def mae_jacobian(
    model: VisionTransformer,
    image: torch.Tensor,
    keep: torch.Tensor,
    *,
    channels: Channels = "grey",
    rows: np.ndarray | None = None,
    batch_size: int = 256,
) -> PixelJacobian:
    """Jacobian of the reconstruction of `image` (C, H, W) with visible patches `keep` (N_v,).

    `rows`: output pixel indices (default all H·W). Puts the model in eval mode (no drop path);
    the Jacobian has the model's dtype (float64 models give float64-exact entries).
    """
    model.eval()
    c = model.config
    if image.ndim != 3 or image.shape[0] != c.in_chans:
        raise MaelensError(
            f"`image` must be one (C, H, W) image with C = {c.in_chans}, got {tuple(image.shape)}."
        )
    H, W = image.shape[-2:]
    gh, gw = model.grid_of(image[None])
    keep = keep.reshape(-1).long()
    rows = np.arange(H * W) if rows is None else np.asarray(rows, dtype=np.int64)
    fn = reconstruction_fn(model, keep, channels)
    if channels == "grey":
        x = image.mean(dim=0)
        jac = input_jacobian(fn, x, rows=torch.as_tensor(rows), batch_size=batch_size)
        signed = jac.double().numpy()
        magnitude = np.abs(signed)
    else:
        C = c.in_chans
        picked = (torch.arange(C)[:, None] * H * W + torch.as_tensor(rows)[None]).reshape(-1)
        jac = input_jacobian(fn, image, rows=picked, batch_size=batch_size).double()
        jac = jac.reshape(C, len(rows), C, H * W)  # (C_out, rows, C_in, H·W)
        signed = jac.sum(dim=2).mean(dim=0).numpy()
        magnitude = jac.abs().sum(dim=(0, 2)).numpy()
    visible_patch = np.zeros(gh * gw, bool)
    visible_patch[keep.cpu().numpy()] = True
    patch_of = tiles_2d(H, W, c.patch_size).patch_ids  # (H·W,)
    return PixelJacobian(signed, magnitude, rows, visible_patch[patch_of],
                         ~visible_patch[patch_of][rows], (H, W), c.patch_size)


@dataclass
class JacobianAverage:
    """Running sums of Jacobians over images and masks (update / merge, as sklearn-style
    accumulators), split by whether the output pixel's patch was removed ([0]) or visible
    ([1]). abs_sum, signed_sum: (2, H·W, H·W) float64; counts: (2, H·W, H·W) samples in which
    the pair was computed with input i visible. sample_ranks: per-sample (effective rank,
    participation ratio) of the signed Jacobian (only for samples with every row)."""

    image_hw: tuple[int, int]
    patch_size: int
    abs_sum: np.ndarray = field(repr=False)
    signed_sum: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    n_samples: int = 0
    sample_ranks: list[tuple[float, float]] = field(default_factory=list)

    @classmethod
    def empty(cls, image_hw: tuple[int, int], patch_size: int) -> JacobianAverage:
        d = image_hw[0] * image_hw[1]
        return cls(tuple(image_hw), patch_size, np.zeros((2, d, d)), np.zeros((2, d, d)),
                   np.zeros((2, d, d), np.int64))

    def update(self, jac: PixelJacobian) -> JacobianAverage:
        if (jac.image_hw, jac.patch_size) != (self.image_hw, self.patch_size):
            raise MaelensError(
                f"Jacobian of a {jac.image_hw} image with patch {jac.patch_size} cannot join an "
                f"average of {self.image_hw} images with patch {self.patch_size}."
            )
        vis = jac.visible.astype(np.float64)
        for part, chosen in ((0, jac.output_masked), (1, ~jac.output_masked)):
            rows = jac.rows[chosen]
            self.abs_sum[part, rows] += jac.magnitude[chosen] * vis
            self.signed_sum[part, rows] += jac.signed[chosen] * vis
            self.counts[part, rows] += jac.visible
        self.n_samples += 1
        if len(jac.rows) == self.image_hw[0] * self.image_hw[1]:
            with threadpool_limits(1, user_api="blas"):  # see `adaptive_basis`
                values = np.linalg.svd(jac.signed[:, jac.visible], compute_uv=False)
            self.sample_ranks.append((effective_rank(values), participation_ratio(values)))
        return self

    def merge(self, other: JacobianAverage) -> JacobianAverage:
        if (other.image_hw, other.patch_size) != (self.image_hw, self.patch_size):
            raise MaelensError("cannot merge Jacobian averages of different shapes or patches.")
        self.abs_sum += other.abs_sum
        self.signed_sum += other.signed_sum
        self.counts += other.counts
        self.n_samples += other.n_samples
        self.sample_ranks += other.sample_ranks
        return self

    def influence(self, outputs: Outputs = "masked", signed: bool = False) -> np.ndarray:
        """(H·W, H·W) mean of |J| (or J) over the samples where input i was visible and output
        j was in the chosen set ("masked": removed patches, what the MAE loss trains;
        "visible"; "all"). Pairs never observed are 0."""
        if outputs not in OUTPUT_SETS:
            raise MaelensError(f"`outputs` must be one of {OUTPUT_SETS}, got {outputs!r}.")
        parts = {"masked": [0], "visible": [1], "all": [0, 1]}[outputs]
        sums = (self.signed_sum if signed else self.abs_sum)[parts].sum(axis=0)
        counts = self.counts[parts].sum(axis=0)
        return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)

    def spread(self) -> JacobianSpread:
        """Spatial metrics of the averaged |J| (see `JacobianSpread`)."""
        if self.n_samples == 0:
            raise MaelensError("the Jacobian average is empty; update it with a Jacobian first.")
        H, W = self.image_hw
        partition = tiles_2d(H, W, self.patch_size)
        distances = pixel_distances(partition.coords)
        masked, every = self.influence("masked"), self.influence("all")
        ranks = np.asarray(self.sample_ranks, dtype=np.float64).reshape(-1, 2)
        ids = partition.patch_ids
        seen = self.counts[0] > 0  # mean over observed pairs only: unobserved ones are not 0
        profile = influence_profile(masked[seen][None], distances[seen][None])
        return JacobianSpread(
            mean_distance_px=weighted_mean_distance(masked, distances),
            spatial_entropy=spatial_entropy(masked),
            out_of_patch_mass=out_of_patch_mass(every, ids, ids),
            decay_length_px=profile.decay_length_px,
            effective_rank=float(ranks[:, 0].mean()) if len(ranks) else float("nan"),
            participation_ratio=float(ranks[:, 1].mean()) if len(ranks) else float("nan"),
            n_samples=self.n_samples,
            profile=profile.to_dict(),
        )


@dataclass(frozen=True)
class JacobianSpread:
    """Spread of an averaged MAE Jacobian (pixels, nats, fractions).

    mean_distance_px, spatial_entropy, decay_length_px: of E|J| over *masked* outputs and
    visible inputs (the pixels the loss trains, predicted from elsewhere);
    out_of_patch_mass: share of E|J| across patches over *all* outputs (for masked outputs it is
    1 by construction: their own patch is never visible); effective_rank (exp of the entropy of
    the normalised singular values, Roy & Vetterli 2007) and participation_ratio
    ((Σσ²)² / Σσ⁴) of each sample's signed Jacobian restricted to visible inputs, averaged
    over samples (NaN when rows were subsampled); profile: `InfluenceProfile.to_dict()` of
    the masked-output E|J| by distance (1-pixel bins, over the pairs observed at least once)."""

    mean_distance_px: float
    spatial_entropy: float
    out_of_patch_mass: float
    decay_length_px: float
    effective_rank: float
    participation_ratio: float
    n_samples: int
    profile: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def average_jacobian(
    model: VisionTransformer,
    images: torch.Tensor,
    *,
    mask_ratio: float,
    masks_per_image: int = 1,
    seed: int = 0,
    channels: Channels = "grey",
    output_pixels: int | None = None,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> JacobianAverage:
    """Average the Jacobians of `images` (B, C, H, W), each under `masks_per_image` random
    masks at `mask_ratio` (MAE fixed-count masking) drawn from `seed`.

    output_pixels: rows per sample drawn at random from the same seed (None: all H·W; rows
    cost one forward + backward pass each). progress(n) is called after each sample.
    """
    check_ratio("mask_ratio", mask_ratio)
    masks_per_image = check_positive_int("masks_per_image", masks_per_image)
    if images.ndim != 4 or len(images) == 0:
        raise MaelensError(f"`images` must be (B, C, H, W) with B >= 1, got {tuple(images.shape)}.")
    H, W = images.shape[-2:]
    if output_pixels is not None and not 1 <= output_pixels <= H * W:
        raise MaelensError(f"`output_pixels` must lie in [1, {H * W}] or be None, got "
                           f"{output_pixels}.")
    model.eval()
    gh, gw = model.grid_of(images)
    rng = np.random.default_rng(seed)
    total = JacobianAverage.empty((H, W), model.config.patch_size)
    device = next(model.parameters()).device
    for i, image in enumerate(images):
        keeps = [keep_for_images([i], gh * gw, mask_ratio, seed, ("jacobian", k))[0]
                 for k in range(masks_per_image)]
        for keep in keeps:
            rows = None if output_pixels is None else np.sort(
                rng.choice(H * W, output_pixels, replace=False))
            total.update(mae_jacobian(model, image.to(device), keep.to(device),
                                      channels=channels, rows=rows, batch_size=batch_size))
            if progress is not None:
                progress(1)
    log.info("averaged %d Jacobians at mask ratio %g", total.n_samples, mask_ratio)
    return total


def effective_rank(singular_values: np.ndarray) -> float:
    """exp(H(p)), p = σ / Σσ, H the Shannon entropy in nats (Roy & Vetterli 2007): k for k
    equal singular values, 1 for rank one. 0 for the zero matrix."""
    values = np.abs(np.asarray(singular_values, dtype=np.float64).ravel())
    if values.sum() == 0:
        return 0.0
    prob = values[values > 0] / values.sum()
    return float(np.exp(-(prob * np.log(prob)).sum()))


def participation_ratio(singular_values: np.ndarray) -> float:
    """(Σσ²)² / Σσ⁴: k for k equal singular values, weighted toward the largest ones."""
    power = np.asarray(singular_values, dtype=np.float64).ravel() ** 2
    return float(power.sum() ** 2 / (power**2).sum()) if power.sum() > 0 else 0.0


@dataclass(frozen=True)
class AdaptiveBasis:
    """SVD J = U S Vᵀ of a (d_out, d_in) pixel Jacobian: the input-dependent basis.

    singular_values (min(d_out, d_in),) descending; input_vectors (n, H, W): top right singular
    vectors, the input patterns the reconstruction responds to most; output_vectors (n, H, W):
    the matching output patterns; extent_px (n,): radius of gyration (pixels) of each input
    vector's energy v², sqrt(Σ v_i² |c_i - c̄|²)."""

    singular_values: np.ndarray
    effective_rank: float
    participation_ratio: float
    input_vectors: np.ndarray
    output_vectors: np.ndarray
    extent_px: np.ndarray

    def to_dict(self, vectors: bool = False, decimals: int = 5) -> dict:
        out = {"singular_values": self.singular_values.tolist(),
               "effective_rank": self.effective_rank,
               "participation_ratio": self.participation_ratio,
               "extent_px": self.extent_px.tolist()}
        if vectors:
            out["input_vectors"] = np.round(self.input_vectors, decimals).tolist()
            out["output_vectors"] = np.round(self.output_vectors, decimals).tolist()
        return out


def adaptive_basis(matrix: np.ndarray, image_hw: tuple[int, int], n_vectors: int = 8
                   ) -> AdaptiveBasis:
    """SVD of a (H·W, H·W) Jacobian (e.g. `PixelJacobian.signed`) with the top `n_vectors`
    singular vectors as images. Signs of singular vectors are arbitrary; we make each input
    vector's largest-magnitude entry positive."""
    H, W = (check_positive_int("image_hw", s) for s in image_hw)
    J = np.asarray(matrix, dtype=np.float64)
    if J.shape != (H * W, H * W):
        raise MaelensError(f"`matrix` must be ({H * W}, {H * W}) for a {H}x{W} grid, got "
                           f"{J.shape}.")
    n = min(check_positive_int("n_vectors", n_vectors), H * W)
    # One BLAS thread: right after torch's OpenMP work, multi-threaded OpenBLAS contends with
    # torch's spinning threads and an SVD can run 100x slower (seen on 2 shared cores).
    with threadpool_limits(1, user_api="blas"):
        U, S, Vt = np.linalg.svd(J)
    V, U = Vt[:n], U[:, :n].T  # (n, d)
    flip = np.sign(V[np.arange(n), np.abs(V).argmax(axis=1)])
    V, U = V * flip[:, None], U * flip[:, None]
    coords = tiles_2d(H, W, 1).coords  # (d, 2)
    energy = V**2 / (V**2).sum(axis=1, keepdims=True)
    centre = energy @ coords  # (n, 2)
    spread = ((coords[None] - centre[:, None]) ** 2).sum(axis=2)  # (n, d)
    extent = np.sqrt((energy * spread).sum(axis=1))
    return AdaptiveBasis(S, effective_rank(S), participation_ratio(S), V.reshape(n, H, W),
                         U.reshape(n, H, W), extent)
