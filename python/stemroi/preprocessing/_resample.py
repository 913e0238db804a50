"""Resampling an image to a model's pixel size, and mapping the results back.

A model learns the lattice at the pixel size it was trained on. When both
that pixel size (recorded by ``fit(..., pixel_size=...)``) and the new
image's are known and differ by more than :data:`PIXEL_SIZE_TOLERANCE`, the
detectors run on the image resampled to the model's pixel size
(:func:`resample`) and report their tiles and maps on the original pixel grid
(:func:`to_original_grid`).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .._validation import check_array

__all__ = ["resample", "PIXEL_SIZE_TOLERANCE"]

PIXEL_SIZE_TOLERANCE = 0.01  # relative difference below which no resampling is done


def resample(image, scale: float, *, n_threads=None) -> np.ndarray:
    """Resample a 2-D image by ``scale`` (output side ``round(side * scale)``).

    Bilinear (:func:`stemroi.preprocessing.resize`, half-pixel centres). When
    shrinking, a Gaussian of sigma ``sqrt(1 / scale**2 - 1) / 2`` input pixels
    first removes the detail the coarser grid cannot hold (no aliasing of
    noise into the lattice). ``scale``: the image's pixel size divided by the
    target pixel size. float32 in, float32 out.
    """
    from .filters import gaussian_filter
    from .transforms import resize

    img = check_array(image, name="image", ndim=2, dtype=(np.float32, np.float64))
    if isinstance(scale, bool) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    scale = float(scale)
    h, w = img.shape
    size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    if scale < 1.0:
        img = gaussian_filter(img, float(np.sqrt(1.0 / scale**2 - 1.0) / 2.0), n_threads=n_threads)
    return resize(img[None], size, "bilinear", n_threads=n_threads)[0]


def recorded_pixel_size(pixel_size):
    """What ``fit(..., pixel_size=...)`` stores as ``pixel_size_``: a known
    :class:`stemroi.io.Calibration`, or None."""
    from ..io._readers import Calibration

    cal = Calibration.coerce(pixel_size, "pixel_size")
    return cal if cal.known else None


def card_pixel_size(pixel_size_) -> Optional[Dict[str, Any]]:
    """The model card's ``pixel_size`` entry: ``{"pixel_size", "unit"}`` or None."""
    return None if pixel_size_ is None else pixel_size_.to_dict()


def model_pixel_size(model):
    """The :class:`stemroi.io.Calibration` a fitted model was trained at (unknown when not recorded)."""
    from ..io._readers import Calibration

    value = getattr(model, "pixel_size_", None)
    if value is None:
        card = getattr(model, "model_card_", None)
        value = card.get("pixel_size") if isinstance(card, dict) else None
    return Calibration.coerce(value, "model pixel size")


def plan_resampling(model, pixel_size, what: str) -> Tuple[Optional[float], Dict[str, Any]]:
    """``(scale or None, metadata)`` for running ``model`` on an image of ``pixel_size``.

    scale = image pixel size / model pixel size when both are known and differ
    by more than :data:`PIXEL_SIZE_TOLERANCE`; otherwise None. Warns (once)
    when only one of the two is known. The metadata records the decision.
    """
    from ..io._readers import Calibration

    model_cal = model_pixel_size(model)
    image_cal = Calibration.coerce(pixel_size, "pixel_size")
    scale = None
    if model_cal.known and image_cal.known:
        ratio = image_cal.ratio_to(model_cal)
        if abs(ratio - 1.0) > PIXEL_SIZE_TOLERANCE:
            scale = ratio
    elif model_cal.known:
        warnings.warn(f"{what}: the model was trained at pixel size {model_cal.pixel_size:g} {model_cal.unit or ''} "
                      "but the image's pixel size is unknown; pass pixel_size=(value, unit) (or the Calibration "
                      "of stemroi.io.read_image_with_calibration) to resample the image to the model's",
                      UserWarning, stacklevel=3)
    elif image_cal.known:
        warnings.warn(f"{what}: the image has pixel size {image_cal.pixel_size:g} {image_cal.unit or ''} but "
                      "the model records none (fit(..., pixel_size=...) records it); the image is used as it is",
                      UserWarning, stacklevel=3)
    info = {
        "resampled": scale is not None,
        "scale": 1.0 if scale is None else float(scale),
        "model_pixel_size": model_cal.to_dict() if model_cal.known else None,
        "image_pixel_size": image_cal.to_dict() if image_cal.known else None,
    }
    return scale, info


def to_original_grid(result, original_shape, info: Dict[str, Any]):
    """``result`` (computed on a resampled image) with its tiles and maps on the original pixel grid.

    Tile edges map by the actual per-axis factors (resampled side / original
    side); float maps are resampled back bilinearly, integer maps by nearest
    pixel. ``metadata`` gains ``info`` and ``resampled_shape``.
    """
    from .transforms import resize

    H, W = (int(v) for v in original_shape)
    h, w = (int(v) for v in result.image_shape)
    f = np.array([h / H, w / W])
    start = np.rint(result.origins / f).astype(np.int64)
    stop = np.rint((result.origins + result.sizes) / f).astype(np.int64)
    start = np.clip(start, 0, [H - 1, W - 1])
    stop = np.clip(np.maximum(stop, start + 1), 0, [H, W])
    maps = {}
    for name, m in result.maps.items():
        if m.dtype.kind in "biu":
            maps[name] = resize(m[None].astype(np.float64), (H, W), "nearest")[0].astype(m.dtype)
        else:
            maps[name] = resize(m[None].astype(np.float32, copy=False), (H, W), "bilinear")[0].astype(m.dtype)
    result.origins = start
    result.sizes = stop - start
    result.image_shape = (H, W)
    result.maps = maps
    result.metadata.update(info)
    result.metadata["resampled_shape"] = [h, w]
    return result
