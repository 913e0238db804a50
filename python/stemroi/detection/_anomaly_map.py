"""The CVAE anomaly map of a whole image: a per-pixel residual map and one
ROIResult row per crop, flagged by a fitted :class:`stemroi.BulkCVAE`."""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from .._device import on_device
from .._lib import _core
from .._validation import check_n_threads, check_positive_int
from .roi import ROIResult

__all__ = ["anomaly_map", "AnomalyMap"]

MAP_NAME = "anomaly"


class AnomalyMap(ROIResult):
    """The :class:`ROIResult` returned by :func:`anomaly_map`.

    It is an ROIResult in every respect; ``map``, ``result`` and ``threshold``
    are deprecated spellings of ``maps["anomaly"]``, the result itself and
    ``metadata["map_threshold"]``."""

    def _deprecated(self, old: str, new: str):
        warnings.warn(f"AnomalyMap.{old} is deprecated and will be removed in stemroi 0.3; use {new}",
                      FutureWarning, stacklevel=3)

    @property
    def map(self) -> np.ndarray:
        self._deprecated("map", f'result.maps["{MAP_NAME}"]')
        return self.maps[MAP_NAME]

    @property
    def result(self) -> ROIResult:
        self._deprecated("result", "the returned ROIResult itself")
        return self

    @property
    def threshold(self) -> float:
        self._deprecated("threshold", 'result.metadata["map_threshold"]')
        return float(self.metadata["map_threshold"])


def _taper(s: int) -> np.ndarray:
    """Blending weight of a crop: separable taper, never zero, so edge pixels covered once still count."""
    ramp = np.minimum(np.arange(s) + 1, s - np.arange(s)).astype(np.float64)
    w1 = np.minimum(ramp / (s / 4), 1.0) * 0.9 + 0.1
    return np.outer(w1, w1)


def _blend(energy: np.ndarray, origins: np.ndarray, shape) -> np.ndarray:
    """Per-pixel RMS of the crops' local energy maps, weighted by :func:`_taper`."""
    s = energy.shape[-1]
    weight = _taper(s)
    acc = np.zeros(shape)
    wsum = np.zeros(shape)
    for k, (r, c) in enumerate(origins):
        acc[r:r + s, c:c + s] += weight * energy[k]
        wsum[r:r + s, c:c + s] += weight
    return np.sqrt(acc / wsum).astype(np.float32)


def anomaly_map(image, model, stride: int = 32, *, batch_size: int = 64, device: Optional[str] = None,
                pixel_size=None) -> ROIResult:
    """Dense anomaly map of ``image`` under a fitted :class:`stemroi.BulkCVAE`.

    Crops of ``model.crop_size`` at ``stride`` (plus crops flush with the right
    and bottom edges: ``PatchGrid(edge="shift")``) are reconstructed; the
    local residual energy of each crop (box of ``model.energy_window``) is
    blended into a per-pixel map with a weight that fades towards crop borders
    (where reconstructions are worse).

    Returns an :class:`ROIResult` with one row per crop: label "Anomaly" or
    "Bulk" from ``model``'s detector, ``scores`` the detector score (the
    decision value for ``detector="signed"``), ``confidence`` the distance
    from the threshold scaled to [0, 1]; ``maps["anomaly"]`` is the (H, W)
    float32 map (local RMS residual) and ``metadata["map_threshold"]`` the map
    level matching the bulk energy threshold.

    ``device``: None reconstructs on the model's device; "cpu", "cuda",
    "cuda:N" or "auto" on that device, with a copy of the network (the model
    itself is unchanged). ValueError naming the device when LibTorch cannot use it.

    ``pixel_size``: the image's pixel size, ``(value, unit)`` or a
    :class:`stemroi.io.Calibration`; when the model records its own (``fit(...,
    pixel_size=...)``) and they differ by more than 1 %, the image is resampled
    to the model's pixel size and crops and map come back on the original grid
    (see :func:`stemroi.detect`).
    """
    from ..models.cvae import _image_2d, preprocess_crops
    from ..preprocessing._resample import plan_resampling, resample, to_original_grid
    from ..preprocessing.grid import PatchGrid

    model._check_fitted()
    model = on_device(model, device, model.model_.device)
    img = _image_2d(image)
    resample_scale, pixel_info = plan_resampling(model, pixel_size, "anomaly_map")
    original_shape = img.shape
    if resample_scale is not None:
        img = resample(img, resample_scale, n_threads=model.n_threads)
    s = int(model.crop_size)
    stride = check_positive_int(stride, "stride")
    H, W = img.shape
    if H < s or W < s:
        raise ValueError(f"image must be at least {s}x{s} (crop_size), got shape {img.shape}")
    grid = PatchGrid(patch_size=s, stride=stride, edge="shift", n_threads=model.n_threads)
    origins = np.asarray(grid.origins(img.shape), dtype=np.int64)
    crops = preprocess_crops(grid.extract(img), float(model.blur_sigma), n_threads=model.n_threads)
    n_threads = check_n_threads(model.n_threads)
    recon = model.model_.reconstruct(crops, check_positive_int(batch_size, "batch_size"), n_threads)
    diff = np.ascontiguousarray(crops - recon)
    energy = _core.local_energy_maps(diff, int(model.energy_window), n_threads)
    scores = model._scores_of_difference(diff)
    decision = model._decision(scores)
    flagged = decision >= 0
    tile_score = (decision if model.detector == "signed" else
                  scores["energy" if model.detector == "energy" else "anm"]).astype(np.float64)
    ref = model.energy_threshold_
    conf = np.clip(np.abs(decision) / (np.abs(decision) + (ref if ref > 0 else 1.0)), 0, 1)
    result = AnomalyMap(
        origins=origins, sizes=np.array([[s, s]]), labels=np.where(flagged, "Anomaly", "Bulk"),
        confidence=conf, unknown=np.zeros(len(origins), bool), class_names=["Bulk", "Anomaly"],
        bulk_label="Bulk", scores=tile_score, image_shape=img.shape, method=f"cvae-{model.detector}",
        metadata={"stride": stride, "crop_size": s, "detector": model.detector, "band": list(model.band_),
                  "energy_threshold": model.energy_threshold_, "map_threshold": float(model.energy_threshold_)},
        maps={MAP_NAME: _blend(energy, origins, (H, W))},
    )
    if resample_scale is not None:
        return to_original_grid(result, original_shape, pixel_info)
    result.metadata.update(pixel_info)
    return result
