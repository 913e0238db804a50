"""Network-input preprocessing of patch batches (C++ / OpenMP core).

Value convention: inputs are patches on [0, 1] (see ``stemroi.io.scale_to_unit``).

Resize methods (all without antialiasing):

- ``"bilinear"``: half-pixel centres, equal to
  ``torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False)``
  and to TF2 ``tf.image.resize(x, size, method="bilinear", antialias=False)``
  (TF1 ``resize_bilinear(half_pixel_centers=True)``). The two references are
  the same function: torch clamps negative source coordinates to 0, TF clamps
  the lower index to 0 and the upper to ``L - 1``; both give the border pixel,
  for up- and down-sampling.
- ``"bilinear_tf"``: the name of that same TF2 resize (an alias of ``"bilinear"``).
- ``"bilinear_tf1"``: legacy TF1 ``tf.image.resize_bilinear(align_corners=False,
  half_pixel_centers=False)`` (source = ``i * L / S``, top-left aligned),
  which old Keras code used; it shifts content by half an input pixel.
- ``"nearest"``: PIL ``Image.resize(size, Image.NEAREST)``, i.e. what Keras'
  ``load_img(path, target_size=...)`` does (its default interpolation):
  source = ``floor((i + 0.5) * L / S)``. This is torch ``"nearest-exact"``,
  not torch ``"nearest"``.

Normalisation presets come from the C++ ``normalization.hpp``: ``"torchvision"``
(ImageNet mean/std on [0, 1]), ``"caffe"`` (Keras VGG16 ``preprocess_input``:
x * 255, RGB -> BGR, minus [103.939, 116.779, 123.68]), ``"tf"``/``"mobilenet"``
(x * 2 - 1) and ``"unit"`` (unchanged).
"""
from __future__ import annotations

import numbers
from typing import Tuple

import numpy as np

from .._lib import _core
from .._validation import check_array, check_n_threads

__all__ = [
    "resize",
    "to_rgb",
    "normalize",
    "blur",
    "divide_by_max",
    "minmax_scale",
    "prepare_patches",
    "normalization_preset",
    "RESIZE_METHODS",
    "PRESETS",
]

RESIZE_METHODS = ("bilinear", "bilinear_tf", "bilinear_tf1", "nearest")
PRESETS = ("torchvision", "caffe", "tf", "mobilenet", "unit")
_FLOATS = (np.float32, np.float64)
_INTS_KEPT = (np.dtype(np.uint8), np.dtype(np.uint16))


def _check_size(size) -> Tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        oh = ow = int(size)
    else:
        try:
            oh, ow = (int(v) for v in size)
        except (TypeError, ValueError):
            raise TypeError(f"size must be an int or a (height, width) pair, got {size!r}") from None
    if oh < 1 or ow < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    return oh, ow


def _check_method(method: str) -> str:
    if method not in RESIZE_METHODS:
        raise ValueError(f"method must be one of {RESIZE_METHODS}, got {method!r}")
    return method


def _check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    return preset


def _stack(images, name: str, ndims, dtypes=_FLOATS) -> np.ndarray:
    return check_array(images, name=name, ndim=ndims, dtype=dtypes, min_samples=1)


def normalization_preset(name: str) -> dict:
    """The constants of a preset (``input_scale``, ``mean``, ``std``, ``bgr``), from the C++ core."""
    return _core.normalization_preset(_check_preset(name))


def resize(images, size, method: str = "bilinear", *, n_threads=None) -> np.ndarray:
    """Resize a stack ``(n, h, w)`` or ``(n, c, h, w)`` (or one ``(h, w)`` image) to ``size``.

    ``size`` is an int (square) or ``(height, width)``. float32/float64 keep
    their dtype; ``"nearest"`` also keeps uint8/uint16; any other input
    (integers with a bilinear method, bool) is converted to float32 with its
    values unchanged (not scaled).
    """
    method = _check_method(method)
    oh, ow = _check_size(size)
    arr = np.asarray(images)
    keep_int = method == "nearest" and arr.dtype in _INTS_KEPT
    dtypes = (arr.dtype,) if keep_int else (np.float32, np.float64)
    if not keep_int and arr.dtype.kind in "biu":
        arr = arr.astype(np.float32)
    arr = _stack(arr, "images", (2, 3, 4), dtypes)
    lead = arr.shape[:-2]
    flat = arr.reshape((-1,) + arr.shape[-2:])
    out = _core.resize(flat, oh, ow, method, check_n_threads(n_threads))
    return out.reshape(lead + (oh, ow))


def to_rgb(images, *, n_threads=None) -> np.ndarray:
    """Grey ``(n, h, w)`` or ``(n, 1, h, w)`` -> ``(n, 3, h, w)`` by replicating the channel.

    ``(n, 3, h, w)`` input is returned as a copy. Float and uint8/uint16 dtypes are kept.
    """
    arr = np.asarray(images)
    dtypes = (arr.dtype,) if arr.dtype in _INTS_KEPT else _FLOATS
    arr = _stack(arr, "images", (3, 4), dtypes)
    if arr.ndim == 4:
        if arr.shape[1] == 3:
            return arr.copy()
        if arr.shape[1] != 1:
            raise ValueError(f"images: expected 1 or 3 channels (n, c, h, w), got shape {arr.shape}")
        arr = arr[:, 0]
    return _core.to_rgb(np.ascontiguousarray(arr), check_n_threads(n_threads))


def _check_unit_float(arr, name: str):
    arr = np.asarray(arr)
    if arr.dtype.kind in "biu":
        raise TypeError(
            f"{name}: expected float values on [0, 1], got dtype {arr.dtype} "
            "(scale first with stemroi.io.scale_to_unit)"
        )
    return arr


def normalize(images, preset: str = "caffe", *, n_threads=None) -> np.ndarray:
    """Normalise RGB ``(n, 3, h, w)`` on [0, 1] with a preset; float32 stays float32.

    Output channel ``c`` is ``(x[c'] * input_scale - mean[c]) / std[c]`` where
    ``c' = 2 - c`` for the BGR ``"caffe"`` preset.
    """
    preset = _check_preset(preset)
    arr = _stack(_check_unit_float(images, "images"), "images", 4)
    if arr.shape[1] != 3:
        raise ValueError(f"images: expected (n, 3, h, w) RGB, got shape {arr.shape} (use to_rgb for grey)")
    return _core.normalize(arr, preset, check_n_threads(n_threads))


def _per_patch(images, kind: str, n_threads, sigma: float = 0.0, truncate: float = 4.0) -> np.ndarray:
    arr = _stack(images, "images", (2, 3))
    single = arr.ndim == 2
    out = _core.per_patch(arr[None] if single else arr, kind, sigma, truncate, check_n_threads(n_threads))
    return out[0] if single else out


def blur(images, sigma: float, *, truncate: float = 4.0, n_threads=None) -> np.ndarray:
    """Per-patch Gaussian blur (``scipy.ndimage.gaussian_filter``, mode 'reflect') of ``(n, h, w)``."""
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    return _per_patch(images, "blur", n_threads, float(sigma), float(truncate))


def divide_by_max(images, *, n_threads=None) -> np.ndarray:
    """Divide each patch by its own maximum (the CVAE study's scaling).

    Rule: a patch whose maximum is not > 0 (all zero, or all negative) is
    returned unchanged, never NaN.
    """
    return _per_patch(images, "divide_by_max", n_threads)


def minmax_scale(images, *, n_threads=None) -> np.ndarray:
    """Per-patch ``(x - min) / (max - min)``; a constant (zero-variance) patch becomes all zeros."""
    return _per_patch(images, "minmax", n_threads)


def prepare_patches(patches, size: int = 224, preset: str = "caffe", method: str = "bilinear", *,
                    n_threads=None) -> np.ndarray:
    """Fused network-input pipeline: resize -> 3 channels -> normalise, in one pass.

    ``patches`` is ``(n, h, w)`` grey (or ``(n, 1, h, w)``, ``(n, 3, h, w)``
    RGB, or one ``(h, w)`` patch) with values on [0, 1]; float64 is converted to
    float32. Returns float32 ``(n, 3, size, size)`` equal to
    ``normalize(to_rgb(resize(patches, size, method)), preset)``.
    """
    method = _check_method(method)
    preset = _check_preset(preset)
    oh, ow = _check_size(size)
    if oh != ow:
        raise ValueError(f"prepare_patches makes square inputs; size must be an int, got {size!r}")
    arr = _stack(_check_unit_float(patches, "patches"), "patches", (2, 3, 4), (np.float32,))
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3:
        arr = arr[:, None]
    if arr.shape[1] not in (1, 3):
        raise ValueError(f"patches: expected 1 or 3 channels (n, c, h, w), got shape {arr.shape}")
    return _core.network_input(np.ascontiguousarray(arr), size=oh, preset=preset, method=method,
                               n_threads=check_n_threads(n_threads))
