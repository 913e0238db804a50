"""Supervised ROI detection: classify every tile of a large image.

``detect(image, model)`` cuts the image into ``patch`` x ``patch`` tiles every
``stride`` pixels, classifies them with a fitted :class:`PatchClassifier` and
returns a :class:`stemroi.ROIResult`: per tile the class, the probability
vector, the confidence (max probability), its (row, col, height, width) and an
``unknown`` flag where no class is convincing (max probability below
``unknown_below``, 0.4 in the VGG16 study), so new defect types are not forced
into old boxes.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ._validation import check_array, check_positive_int
from .roi import UNKNOWN, ROIResult

__all__ = ["detect", "tile_origins", "to_unit_range"]


def to_unit_range(image, scale: str = "auto") -> np.ndarray:
    """Grey image as float32 on [0, 1], like the training patches (uint8 / 255).

    ``scale="auto"``: integer images are divided by their dtype's maximum;
    float images already on [0, 1] are kept; float images on [0, 255] (8-bit
    data read as float, the readers' convention) are divided by 255; other
    floats are min-max scaled. ``"minmax"`` always min-max scales; ``"none"``
    requires [0, 1].
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):  # RGB(A) with R=G=B in the data sets: take the mean of RGB
        a = a[..., :3].mean(axis=-1) if a.dtype.kind == "f" else a[..., :3].astype(np.float64).mean(axis=-1).astype(a.dtype)
    if scale not in ("auto", "minmax", "none"):
        raise ValueError(f"scale must be 'auto', 'minmax' or 'none', got {scale!r}")
    if a.dtype.kind in "iu" and scale == "auto":
        info = np.iinfo(a.dtype)
        return check_array(a.astype(np.float32) / np.float32(info.max), name="image", ndim=2, dtype=(np.float32,))
    x = check_array(a, name="image", ndim=2, dtype=(np.float32, np.float64)).astype(np.float32, copy=False)
    lo, hi = float(x.min()), float(x.max())
    if scale == "none":
        if lo < 0 or hi > 1:
            raise ValueError(f"image: values must be in [0, 1] with scale='none', got range [{lo:.4g}, {hi:.4g}]")
        return x
    if scale == "auto":
        if lo >= 0 and hi <= 1:
            return x
        if lo >= 0 and hi <= 255:
            return x / np.float32(255)
    if hi <= lo:
        return np.zeros_like(x)
    return (x - np.float32(lo)) / np.float32(hi - lo)


def tile_origins(image_shape, patch: int, stride: int) -> np.ndarray:
    """(n, 2) int64 (row, col) origins of full tiles, row-major (edge remainder dropped)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if patch > h or patch > w:
        raise ValueError(f"patch must be <= image size {(h, w)}, got {patch}")
    from .patches import PatchGrid

    return np.asarray(PatchGrid(patch_size=patch, stride=stride, edge="drop").origins((h, w)), dtype=np.int64)


def detect(
    image,
    model,
    patch: int = 64,
    stride: int = 64,
    unknown_below: float = 0.4,
    *,
    batch_size: int = 256,
    scale: str = "auto",
    bulk_label: Optional[str] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> ROIResult:
    """Classify the tiles of ``image`` (2-D; RGB(A) is averaged to grey) with ``model``.

    ``model``: a fitted :class:`PatchClassifier` (or a model file path).
    ``unknown_below``: tiles whose calibrated max probability is below this are
    labelled ``"unknown"`` (0 disables). ``bulk_label``: the class that is not a
    region of interest (default: the class named "Bulk", case-insensitive, if any).
    ``progress(done, total)`` is called per batch of tiles.
    """
    from .classifier import PatchClassifier

    if isinstance(model, (str,)) or hasattr(model, "__fspath__"):
        model = PatchClassifier.load(model)
    if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
        raise TypeError(f"model must be a fitted PatchClassifier or a model file path, got {type(model).__name__}")
    patch = check_positive_int(patch, "patch", minimum=16)
    stride = check_positive_int(stride, "stride")
    if not (0.0 <= float(unknown_below) <= 1.0):
        raise ValueError(f"unknown_below must be in [0, 1], got {unknown_below}")
    img = to_unit_range(image, scale)
    origins = tile_origins(img.shape, patch, stride)
    shape = getattr(model, "patch_shape_", None)
    if shape is not None and len(shape) == 2 and tuple(shape) != (patch, patch):
        raise ValueError(f"patch must equal the model's training patch size {tuple(shape)}, got {patch}")
    # tiles as a strided view, copied batch by batch
    view = np.lib.stride_tricks.sliding_window_view(img, (patch, patch))
    tiles = view[origins[:, 0], origins[:, 1]]
    probs = np.ascontiguousarray(model.predict_proba(np.ascontiguousarray(tiles, dtype=np.float32),
                                                     batch_size=batch_size, progress=progress))
    names = list(getattr(model, "class_names_", [str(c) for c in model.classes_]))
    conf = probs.max(axis=1)
    labels = np.asarray(names, dtype=object)[probs.argmax(axis=1)]
    unknown = conf < float(unknown_below)
    labels = np.where(unknown, UNKNOWN, labels).astype(object)
    if bulk_label is None:
        bulk_label = next((c for c in names if c.lower() == "bulk"), None)
    return ROIResult(
        origins=origins,
        sizes=np.array([[patch, patch]]),
        labels=labels,
        confidence=conf,
        unknown=unknown,
        class_names=names,
        bulk_label=bulk_label,
        probabilities=probs,
        image_shape=img.shape,
        method=f"patch-classifier ({getattr(model, 'backbone_description_', 'PatchClassifier')})",
        metadata={"patch": patch, "stride": stride, "unknown_below": float(unknown_below),
                  "temperature": float(getattr(model, "temperature_", 1.0)),
                  "model": getattr(model, "backbone_description_", "")},
    )
