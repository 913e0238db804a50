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


class _BandBlender:
    """Per-pixel RMS of crops' local energy maps, weighted by :func:`_taper`, blended in row order.

    Crops arrive in row-major order of their origins, so once a crop with
    origin row ``r`` arrives no later crop touches rows above ``r``: those rows
    are final and written to the float32 output. Only a band of float64 rows
    (from the first unfinished row to the lowest crop bottom so far) is held,
    instead of two frame-sized float64 accumulators. Each pixel sums the same
    terms in the same order as one whole-frame accumulation, so the map is
    bit-identical to it.
    """

    def __init__(self, shape, s: int):
        self.H, self.W = int(shape[0]), int(shape[1])
        self.s = int(s)
        self.weight = _taper(self.s)
        self.out = np.empty((self.H, self.W), np.float32)
        self.lo = 0  # first row not yet written to out; acc/wsum hold rows [lo, lo + len(acc))
        self.acc = np.zeros((0, self.W))
        self.wsum = np.zeros((0, self.W))

    def _flush(self, upto: int) -> None:
        """Write rows [lo, upto) (final) to the output and drop them from the band."""
        k = min(upto, self.lo + len(self.acc)) - self.lo
        if k <= 0:
            return
        self.out[self.lo:self.lo + k] = np.sqrt(self.acc[:k] / self.wsum[:k]).astype(np.float32)
        self.acc, self.wsum = self.acc[k:], self.wsum[k:]
        self.lo += k

    def add(self, energy: np.ndarray, origins: np.ndarray) -> None:
        if not len(origins):
            return
        s = self.s
        self._flush(int(origins[0, 0]))  # row-major: no crop of this batch or later reaches above it
        need = int(origins[:, 0].max()) + s - self.lo
        if need > len(self.acc):
            grow = need - len(self.acc)
            self.acc = np.concatenate([self.acc, np.zeros((grow, self.W))])
            self.wsum = np.concatenate([self.wsum, np.zeros((grow, self.W))])
        acc, wsum, weight, lo = self.acc, self.wsum, self.weight, self.lo
        for k, (r, c) in enumerate(origins):
            r = int(r) - lo
            acc[r:r + s, c:c + s] += weight * energy[k]
            wsum[r:r + s, c:c + s] += weight

    def result(self) -> np.ndarray:
        self._flush(self.H)
        return self.out


def _blend(energy: np.ndarray, origins: np.ndarray, shape) -> np.ndarray:
    """Per-pixel RMS of the crops' local energy maps, weighted by :func:`_taper` (all crops at once)."""
    blender = _BandBlender(shape, energy.shape[-1])
    blender.add(energy, np.asarray(origins))
    return blender.result()


def _frame_2d(image) -> np.ndarray:
    """The image as a 2-D float array without copying a float32/float64 frame.

    The same checks and messages as ``stemroi.models.cvae._image_2d``, but the
    finiteness check runs in row strips (a memory-mapped frame is never
    resident whole, and no frame-sized bool mask is made) and float64 is kept
    as it is: crops are converted to float32 one batch at a time, which gives
    the same values as converting the frame first.
    """
    from .._validation import check_array
    from ..io._readers import to_grey
    from ..preprocessing.grid import _finite_range

    grey = to_grey(image, where="image")
    x = check_array(grey, name="image", ndim=2, dtype=(np.float32, np.float64), finite=False)
    _finite_range(x, "image")
    return x


def _crop_batches(n: int, batch_size: int, crops_per_batch: Optional[int]) -> int:
    """Crops per streamed batch: a multiple of ``batch_size`` (so the network sees exactly the
    batches of one call over all crops), about 512 crops (~50 MB of float32 work arrays at 64 px)."""
    if crops_per_batch is None:
        crops_per_batch = 512
    k = max(1, int(crops_per_batch) // batch_size)
    return min(k * batch_size, max(n, 1) + batch_size)


def _stream_scores(img: np.ndarray, model, grid, batch_size: int, crops_per_batch: Optional[int] = None):
    """Stream the crops of ``grid`` over ``img`` through ``model`` batch by batch.

    Returns ``(scores, map)``: ``scores`` the per-crop score dict of
    ``BulkCVAE._scores_of_difference`` over all crops in grid order (exactly
    as one call over all crops gives it) and ``map`` the blended (H, W)
    float32 local-energy map. Memory: one batch of crops and their work
    arrays, a band of float64 accumulator rows and the float32 map.
    """
    from ..models.cvae import preprocess_crops

    s = int(model.crop_size)
    n_threads = check_n_threads(model.n_threads)
    chunk = _crop_batches(grid.n_patches(img.shape), batch_size, crops_per_batch)
    # per-image modes: one intensity level for the whole frame (a streamed pass without the network)
    calibrated = model.calibration_mode != "fixed" and getattr(model, "intensity_level_", None) is not None
    level = model.image_level(img) if calibrated else None
    blender = _BandBlender(img.shape, s)
    parts = []
    for origins, raw in grid.iter_batches(img, chunk):
        crops = preprocess_crops(raw, float(model.blur_sigma), n_threads=model.n_threads)
        crops = model.calibrated_input(crops, image_level=level)  # unchanged when "fixed"
        del raw
        recon = model.model_.reconstruct(crops, batch_size, n_threads)
        diff = np.ascontiguousarray(crops - recon)
        del crops, recon
        blender.add(_core.local_energy_maps(diff, int(model.energy_window), n_threads), origins)
        parts.append(model._scores_of_difference(diff))
    scores = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return scores, blender.result()


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

    Memory is bounded: crops are cut from the image (a memory map stays one:
    ``np.load(path, mmap_mode="r")``), reconstructed and scored a batch of
    about 512 crops at a time, and blended into a band of accumulator rows, so
    besides the image and the float32 map a call holds some 50-100 MB whatever
    the frame size. The result is bit-identical to processing all crops at once.

    ``device``: None reconstructs on the model's device; "cpu", "cuda",
    "cuda:N" or "auto" on that device, with a copy of the network (the model
    itself is unchanged). ValueError naming the device when LibTorch cannot use it.

    ``pixel_size``: the image's pixel size, ``(value, unit)`` or a
    :class:`stemroi.io.Calibration`; when the model records its own (``fit(...,
    pixel_size=...)``) and they differ by more than 1 %, the image is resampled
    to the model's pixel size and crops and map come back on the original grid
    (see :func:`stemroi.detect`).
    """
    from ..preprocessing._resample import plan_resampling, resample, to_original_grid
    from ..preprocessing.grid import PatchGrid

    model._check_fitted()
    model = on_device(model, device, model.model_.device)
    img = _frame_2d(image)
    resample_scale, pixel_info = plan_resampling(model, pixel_size, "anomaly_map")
    original_shape = img.shape
    if resample_scale is not None:
        img = resample(img.astype(np.float32, copy=False), resample_scale, n_threads=model.n_threads)
    s = int(model.crop_size)
    stride = check_positive_int(stride, "stride")
    batch_size = check_positive_int(batch_size, "batch_size")
    H, W = img.shape
    if H < s or W < s:
        raise ValueError(f"image must be at least {s}x{s} (crop_size), got shape {img.shape}")
    grid = PatchGrid(patch_size=s, stride=stride, edge="shift", n_threads=model.n_threads)
    origins = np.asarray(grid.origins(img.shape), dtype=np.int64)
    scores, energy_map = _stream_scores(img, model, grid, batch_size)
    # The threshold is applied here, once, to the scores of all crops: model._decision
    # compares them with the model's calibration (energy_threshold_, band_ or signed_thresholds_).
    decision = model._decision(scores)
    flagged = decision >= 0
    tile_score = (decision if model.detector_ == "signed" else
                  scores["energy" if model.detector_ == "energy" else "anm"]).astype(np.float64)
    ref = model.energy_threshold_
    conf = np.clip(np.abs(decision) / (np.abs(decision) + (ref if ref > 0 else 1.0)), 0, 1)
    result = AnomalyMap(
        origins=origins, sizes=np.array([[s, s]]), labels=np.where(flagged, "Anomaly", "Bulk"),
        confidence=conf, unknown=np.zeros(len(origins), bool), class_names=["Bulk", "Anomaly"],
        bulk_label="Bulk", scores=tile_score, image_shape=img.shape, method=f"cvae-{model.detector_}",
        metadata={"stride": stride, "crop_size": s, "detector": model.detector_, "band": list(model.band_),
                  "energy_threshold": model.energy_threshold_, "map_threshold": float(model.energy_threshold_)},
        maps={MAP_NAME: energy_map},
    )
    from ._novelty import attach_novelty, cvae_crop_novelty
    attach_novelty(result, getattr(model, "novelty_", None), cvae_crop_novelty(model, img, grid, batch_size),
                   "CVAE latent means (k-NN)")
    if resample_scale is not None:
        return to_original_grid(result, original_shape, pixel_info)
    result.metadata.update(pixel_info)
    return result
