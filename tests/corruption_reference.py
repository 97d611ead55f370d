"""Test-side shim around the ImageNet-C reference package `imagecorruptions` (1.1.2), plus the
offline test photos that fidelity tests compare on.

The reference is the ground truth for `maelens.perturb.corrupt_*`, but as published it no longer
imports or runs with NumPy 2 / scikit-image >= 0.21 / setuptools without `pkg_resources`. We patch
what is broken at import time, without editing site-packages and without changing any global
library state that other tests could see:

- `pkg_resources` (gone from recent setuptools) is replaced, only while the reference imports,
  by a stub whose `resource_filename` resolves files next to the named module (frost images);
- `scipy.ndimage.interpolation` (deprecated, to be removed in SciPy 2) is aliased to
  `scipy.ndimage` while the reference imports, if it is missing;
- the reference module's own `gaussian` (skimage.filters) maps `multichannel=True` to
  `channel_axis=-1` (the keyword was removed in scikit-image 0.21);
- the reference module's own `np` is a view of NumPy that adds `np.float_` (removed in NumPy 2);
- `sk.util.random_noise` now draws from its own `default_rng`, ignoring `np.random.seed`; the
  reference module's `sk` passes it a seed taken from NumPy's global RNG, so `reference_corrupt`
  stays reproducible from its `seed`.

Public API (stable; the weather/digital tests use it too):
    reference_corrupt(image_uint8_hwc, name, severity, seed) -> uint8 (H, W, 3)
    test_photos() -> list of uint8 (224, 224, 3) RGB photos
    reference_module() -> the patched `imagecorruptions.corruptions` module (for its helpers)
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

PHOTO_SIZE = 224  # pixels, the side of ImageNet-C's images
_RESIZE_SHORT_SIDE = 256  # pixels, the usual ImageNet "resize 256, centre-crop 224"

# RGB photos bundled with scikit-image (no download needed), varied in content and exposure:
# a portrait, a cat, a cup, a rocket, a stained tissue slide, and a mostly black star field.
PHOTO_NAMES: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
)


class ModuleProxy(types.ModuleType):
    """A module whose attributes come from `overrides` first, then from `base`."""

    def __init__(self, base: types.ModuleType, **overrides: Any) -> None:
        super().__init__(base.__name__)
        self._base = base
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def _resource_filename(module_name: str, path: str) -> str:
    # pkg_resources resolves a module's name to the folder of its file.
    return os.path.join(os.path.dirname(sys.modules[module_name].__file__), path)


@contextlib.contextmanager
def _import_shims() -> Iterator[None]:
    """Provide `pkg_resources` and `scipy.ndimage.interpolation` only while the reference
    imports, so no other code sees the stubs."""
    added: list[str] = []
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        stub = types.ModuleType("pkg_resources")
        stub.resource_filename = _resource_filename
        sys.modules["pkg_resources"] = stub
        added.append("pkg_resources")
    try:
        importlib.import_module("scipy.ndimage.interpolation")
    except ImportError:
        sys.modules["scipy.ndimage.interpolation"] = importlib.import_module("scipy.ndimage")
        added.append("scipy.ndimage.interpolation")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _gaussian_compat(image: np.ndarray, sigma: Any = 1, multichannel: bool | None = None,
                     **kwargs: Any) -> np.ndarray:
    from skimage.filters import gaussian

    if multichannel:
        kwargs["channel_axis"] = -1
    return gaussian(image, sigma=sigma, **kwargs)


def _random_noise_seeded(image: np.ndarray, mode: str = "gaussian", **kwargs: Any) -> np.ndarray:
    from skimage.util import random_noise

    # Keyed by NumPy's global RNG (as the reference's other corruptions are), not by entropy.
    kwargs.setdefault("rng", int(np.random.randint(0, 2**31 - 1)))
    return random_noise(image, mode=mode, **kwargs)


@functools.cache
def reference_module() -> types.ModuleType:
    """The patched `imagecorruptions.corruptions` module (its package is importable after)."""
    import skimage

    with _import_shims():
        module = importlib.import_module("imagecorruptions.corruptions")
        importlib.import_module("imagecorruptions")
    module.gaussian = _gaussian_compat
    module.np = ModuleProxy(np, float_=np.float64)
    util = ModuleProxy(skimage.util, random_noise=_random_noise_seeded)
    module.sk = ModuleProxy(skimage, util=util, color=importlib.import_module("skimage.color"))
    return module


@contextlib.contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    # Seed the global RNG the reference draws from, and give the caller's state back after.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def reference_corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """ImageNet-C corruption `name` at `severity` (1..5) by the reference package.

    image: uint8 (H, W, 3) RGB; NumPy's global RNG is seeded with `seed` for the call (and
    restored after). Returns uint8 (H, W, 3); the reference truncates (not rounds) to uint8.
    """
    reference_module()
    import imagecorruptions

    with _numpy_seeded(seed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = imagecorruptions.corrupt(image, severity=severity, corruption_name=name)
    return np.asarray(out, dtype=np.uint8)


def _centre_crop_photo(image: np.ndarray) -> np.ndarray:
    """Resize the shorter side to 256 px (PIL bilinear), then centre-crop 224 x 224."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = _RESIZE_SHORT_SIDE / min(height, width)
    size = (max(_RESIZE_SHORT_SIDE, round(width * scale)),
            max(_RESIZE_SHORT_SIDE, round(height * scale)))
    resized = np.asarray(Image.fromarray(image[..., :3]).resize(size, Image.BILINEAR))
    top = (resized.shape[0] - PHOTO_SIZE) // 2
    left = (resized.shape[1] - PHOTO_SIZE) // 2
    return np.ascontiguousarray(resized[top:top + PHOTO_SIZE, left:left + PHOTO_SIZE])


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    from skimage import data

    return tuple(_centre_crop_photo(getattr(data, name)()) for name in PHOTO_NAMES)


def test_photos() -> list[np.ndarray]:
    """The offline test photos: fresh copies, uint8 (224, 224, 3) RGB, in `PHOTO_NAMES` order.

    Each is resized (shorter side to 256 px, PIL bilinear) and centre-cropped to 224 x 224,
    the ImageNet evaluation transform the ImageNet-C images went through.
    """
    return [photo.copy() for photo in _photos()]


# Not a test, though its name starts with `test_`.
test_photos.__test__ = False
