"""Separable filters on stacks of images (scipy.ndimage parity, reflect mode)."""
from __future__ import annotations

import numpy as np

from .._lib import _core
from .._validation import check_array, check_n_threads

__all__ = ["gaussian_filter", "uniform_filter"]


def _as_stack(images, name):
    arr = check_array(images, name=name, ndim=(2, 3))
    return (arr[None], True) if arr.ndim == 2 else (arr, False)


def gaussian_filter(images, sigma: float, *, truncate: float = 4.0, n_threads=None) -> np.ndarray:
    """Gaussian blur of one image (2-D) or a stack (3-D) along the last two axes.

    Equals ``scipy.ndimage.gaussian_filter(img, sigma, mode='reflect', truncate=truncate)``
    per image; float32 stays float32.
    """
    stack, single = _as_stack(images, "images")
    out = _core.gaussian_filter(stack, float(sigma), float(truncate), check_n_threads(n_threads))
    return out[0] if single else out


def uniform_filter(images, size: int, *, n_threads=None) -> np.ndarray:
    """Mean over a ``size`` x ``size`` window (``scipy.ndimage.uniform_filter``, reflect)."""
    stack, single = _as_stack(images, "images")
    out = _core.uniform_filter(stack, int(size), check_n_threads(n_threads))
    return out[0] if single else out
