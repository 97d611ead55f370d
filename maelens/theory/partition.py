"""Patch partitions of a flattened signal: 1-D blocks and 2-D tiles with channels.

A partition says, for each of the d input coordinates, which patch it belongs to, where it sits
(pixel coordinates) and where it sits inside its patch. Flattening follows the image arrays
(N, H, W, C): index = (y * W + x) * C + c ("hwc", channel-last, as `maelens.model.masking.patchify`
packs a patch); "chw" (channels-first, torch layout) is offered for Jacobians of models.
Patches are numbered row-major on the (H/p, W/p) grid, as in the MAE code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from maelens._validate import check_positive_int
from maelens.errors import MaelensError

Order = Literal["hwc", "chw"]


@dataclass(frozen=True, eq=False)
class Partition:
    """How d flattened inputs split into patches.

    image_shape: (length,) for 1-D signals or (H, W, C) for images (pixels, pixels, channels).
    patch_size: p, the patch side in pixels (a 1-D block has p samples, a tile p x p x C).
    patch_ids: (d,) int, patch index of each input (row-major over the patch grid).
    coords: (d, n_axes) float, pixel coordinates (x for 1-D; (y, x) for 2-D; channel dropped).
    offsets: (d, n_axes) int, position inside the patch in 0..p-1 along each axis.
    grid_shape: number of patches along each axis.
    """

    image_shape: tuple[int, ...]
    patch_size: int
    patch_ids: np.ndarray
    coords: np.ndarray
    offsets: np.ndarray
    grid_shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        """d, the number of flattened inputs."""
        return int(self.patch_ids.shape[0])

    @property
    def n_patches(self) -> int:
        return int(np.prod(self.grid_shape))

    def same_patch(self) -> np.ndarray:
        """S (d, d) float64: S_ij = 1 iff inputs i and j share a patch."""
        ids = self.patch_ids
        return (ids[:, None] == ids[None, :]).astype(np.float64)

    def block_diagonal(self, sigma: np.ndarray) -> np.ndarray:
        """D = sigma ⊙ S (d, d): the within-patch part of a covariance ("blkdiag_p sigma")."""
        return sigma * self.same_patch()

    def on_patch_edge(self) -> np.ndarray:
        """(d,) bool: the input lies on its patch's border (offset 0 or p-1 along some axis)."""
        p = self.patch_size
        return np.any((self.offsets == 0) | (self.offsets == p - 1), axis=1)

    def patch_on_image_border(self) -> np.ndarray:
        """(d,) bool: the input's patch touches the border of the whole image or signal."""
        grid = np.asarray(self.grid_shape)
        cells = self.coords.astype(np.int64) // self.patch_size  # (d, n_axes) patch grid cell
        return np.any((cells == 0) | (cells == grid - 1), axis=1)


def blocks_1d(length: int, patch_size: int) -> Partition:
    """Partition a 1-D signal of `length` samples into consecutive blocks of `patch_size`."""
    length = check_positive_int("length", length)
    p = _check_tiles("patch_size", patch_size, (length,))
    index = np.arange(length)
    return Partition(
        image_shape=(length,),
        patch_size=p,
        patch_ids=index // p,
        coords=index[:, None].astype(np.float64),
        offsets=(index % p)[:, None],
        grid_shape=(length // p,),
    )


def tiles_2d(
    height: int, width: int, patch_size: int, channels: int = 1, order: Order = "hwc"
) -> Partition:
    """Partition an (H, W, C) image into p x p tiles holding all C channels of their pixels.

    `order` is the flattening of the inputs: "hwc" for (N, H, W, C) arrays (the default, used
    by every covariance builder here) or "chw" for torch (B, C, H, W) tensors.
    """
    height = check_positive_int("height", height)
    width = check_positive_int("width", width)
    channels = check_positive_int("channels", channels)
    p = _check_tiles("patch_size", patch_size, (height, width))
    if order not in ("hwc", "chw"):
        raise MaelensError(f'`order` must be "hwc" or "chw", got {order!r}.')
    y, x, _ = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    if order == "chw":  # (H, W, C) -> (C, H, W) before flattening
        y, x = (np.moveaxis(a, -1, 0) for a in (y, x))
    y, x = y.ravel(), x.ravel()
    grid = (height // p, width // p)
    return Partition(
        image_shape=(height, width, channels),
        patch_size=p,
        patch_ids=(y // p) * grid[1] + (x // p),
        coords=np.stack([y, x], axis=1).astype(np.float64),
        offsets=np.stack([y % p, x % p], axis=1),
        grid_shape=grid,
    )


def partition_for(image_shape: tuple[int, ...], patch_size: int) -> Partition:
    """`blocks_1d` for a (length,) shape, `tiles_2d` ("hwc") for an (H, W, C) shape."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 1:
        return blocks_1d(shape[0], patch_size)
    if len(shape) == 3:
        return tiles_2d(shape[0], shape[1], patch_size, shape[2])
    raise MaelensError(
        f"`image_shape` must be (length,) or (H, W, C), got {image_shape!r}. "
        "Fix: add a channel axis of 1 for gray images, e.g. (28, 28, 1)."
    )


def _check_tiles(name: str, patch_size: int, sides: tuple[int, ...]) -> int:
    p = check_positive_int(name, patch_size)
    bad = [s for s in sides if s % p]
    if bad:
        raise MaelensError(
            f"`{name}`={p} does not tile the signal of shape {sides}: expected a divisor of "
            f"every side, got remainders {[s % p for s in sides]}. Fix: choose p dividing "
            f"{sides} or crop / resize the images."
        )
    return p
