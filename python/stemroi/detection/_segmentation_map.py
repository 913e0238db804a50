"""The U-Net segmentation map of a whole image: one probability map per
channel of a fitted :class:`stemroi.DefectSegmenter` and one ROIResult row per
tile, and the descriptors of such maps (for clustering)."""
from __future__ import annotations

import numbers
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .._device import on_device
from .._validation import check_positive_int
from .roi import ROIResult

__all__ = ["segmentation_map", "map_descriptors"]

BACKGROUND = "background"


def segmentation_map(image, model, patch: Optional[int] = None, stride: Optional[int] = None,
                     threshold: float = 0.5, *, batch_size: int = 16,
                     progress: Optional[Callable[[int, int], None]] = None,
                     device: Optional[str] = None, pixel_size=None) -> ROIResult:
    """Per-class probability maps of ``image`` (2-D float32 in [0, 1]) under a
    fitted :class:`stemroi.DefectSegmenter`, summarised per tile.

    The maps are ``model.predict_maps(image)`` (overlapping prediction tiles
    blended without seams). The rows are the tiles of
    ``PatchGrid(patch, stride, edge="shift")`` (``patch``: the training patch
    size, at most the image's smaller side; ``stride``: ``patch``), so every
    pixel is in some tile. Per tile, ``probabilities[:, j]`` is the largest
    probability of channel ``j`` (``class_names`` = ``model.channel_names_``,
    the defect classes then ``"background"``); the label is the defect class
    with the largest such value when it reaches ``threshold``, else
    ``"background"`` (the ``bulk_label``); ``scores`` is the largest defect
    probability and ``confidence`` that value for defect tiles, one minus it
    for background tiles. ``maps`` holds one (H, W) float32 map per channel,
    keyed by channel name.

    ``device``: None predicts on the model's device; "cpu", "cuda", "cuda:N"
    or "auto" on that device, with a copy of the network (the model itself is
    unchanged). ValueError naming the device when LibTorch cannot use it.

    ``pixel_size``: the image's pixel size, ``(value, unit)`` or a
    :class:`stemroi.io.Calibration`; when the model records its own (``fit(...,
    pixel_size=...)``) and they differ by more than 1 %, the image is resampled
    to the model's pixel size and tiles and maps come back on the original
    grid (see :func:`stemroi.detect`).
    """
    from ..preprocessing._resample import plan_resampling, resample, to_original_grid
    from ..preprocessing.grid import PatchGrid

    model._check_fitted()
    model = on_device(model, device, model.net_.device)
    if not isinstance(threshold, numbers.Real) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    resample_scale, pixel_info = plan_resampling(model, pixel_size, "segmentation_map")
    original_shape = None
    if resample_scale is not None:
        original_shape = np.shape(image)
        image = resample(np.asarray(image, dtype=np.float32), resample_scale, n_threads=model.n_threads)
    maps = np.asarray(model.predict_maps(image, batch_size=batch_size, progress=progress))
    names = list(model.channel_names_)
    h, w = maps.shape[1:]
    patch = model.patch_size_[0] if patch is None else check_positive_int(patch, "patch")
    patch = min(patch, h, w)
    stride = patch if stride is None else check_positive_int(stride, "stride")
    grid = PatchGrid(patch_size=patch, stride=stride, edge="shift", n_threads=model.n_threads)
    origins = np.asarray(grid.origins((h, w)), dtype=np.int64)
    # per-tile maxima one batch of tiles at a time (the tiles of a channel are as large as its map)
    tile_max = np.stack([np.concatenate([t.max(axis=(1, 2)) for _, t in grid.iter_batches(m, 1024)])
                         for m in maps], axis=1)
    tile_max = tile_max.astype(np.float64)
    defect = [j for j, c in enumerate(names) if c != BACKGROUND]
    best = tile_max[:, defect].max(axis=1)
    hit = best >= float(threshold)
    labels = np.where(hit, np.asarray(names, dtype=object)[defect][tile_max[:, defect].argmax(axis=1)], BACKGROUND)
    result = ROIResult(
        origins=origins, sizes=np.array([[patch, patch]]), labels=labels.astype(object),
        confidence=np.where(hit, best, 1.0 - best), unknown=np.zeros(len(origins), bool), class_names=names,
        bulk_label=BACKGROUND, probabilities=tile_max, scores=best, image_shape=(h, w), method="unet-segmenter",
        metadata={"patch": patch, "stride": stride, "threshold": float(threshold),
                  "prediction_tile": int(model.patch_size_[0]), "tile_stride": float(model.tile_stride),
                  "channels": names},
        maps={c: maps[j] for j, c in enumerate(names)},
    )
    from ._novelty import attach_novelty, segmenter_tile_novelty
    attach_novelty(result, getattr(model, "novelty_", None), segmenter_tile_novelty(model, image, grid, batch_size),
                   "U-Net bottleneck embedding (spatial mean)")
    if resample_scale is not None:
        return to_original_grid(result, original_shape, pixel_info)
    result.metadata.update(pixel_info)
    return result


def map_descriptors(maps, channel_names: Optional[Sequence[str]] = None, *,
                    threshold: float = 0.5) -> Tuple[np.ndarray, List[str]]:
    """Descriptors of per-class maps, for clustering.

    ``maps`` (n, C, h, w), one (C, h, w), or the :class:`ROIResult` of
    :func:`segmentation_map` (``channel_names`` then defaults to the names of
    its maps); the channel named "background" is skipped. Per defect channel: area fraction above
    ``threshold``, max, mean, 95th percentile, centroid spread (probability-
    weighted radius of gyration / size) and number of blobs (8-connected
    components above the threshold). Returns (n, 6 * n_defect_channels) float64
    and the descriptor names.
    """
    from scipy import ndimage

    if isinstance(maps, ROIResult):
        if channel_names is None:
            channel_names = list(maps.maps)
        maps = np.stack([maps.maps[c] for c in channel_names])
    elif channel_names is None:
        raise TypeError("channel_names is required when maps is an array")
    M = np.asarray(maps, dtype=np.float64)
    if M.ndim == 3:
        M = M[None]
    if M.ndim != 4:
        raise ValueError(f"maps must be (n, C, h, w) or (C, h, w), got shape {np.shape(maps)}")
    names = list(channel_names)
    if len(names) != M.shape[1]:
        raise ValueError(f"channel_names has {len(names)} names, maps have {M.shape[1]} channels")
    chans = [i for i, c in enumerate(names) if c != BACKGROUND]
    n, _, h, w = M.shape
    yy, xx = np.mgrid[0:h, 0:w]
    feats = np.zeros((n, 6 * len(chans)))
    structure = np.ones((3, 3))
    for j, c in enumerate(chans):
        P = M[:, c]
        above = P > threshold
        feats[:, 6 * j] = above.mean(axis=(1, 2))
        feats[:, 6 * j + 1] = P.max(axis=(1, 2))
        feats[:, 6 * j + 2] = P.mean(axis=(1, 2))
        feats[:, 6 * j + 3] = np.percentile(P.reshape(n, -1), 95, axis=1)
        for i in range(n):
            wsum = P[i].sum()
            if wsum > 0:
                cy, cx = (P[i] * yy).sum() / wsum, (P[i] * xx).sum() / wsum
                feats[i, 6 * j + 4] = np.sqrt((P[i] * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / wsum) / max(h, w)
            feats[i, 6 * j + 5] = ndimage.label(above[i], structure=structure)[1]
    desc = [f"{names[c]}:{k}" for c in chans for k in ("area", "max", "mean", "p95", "spread", "blobs")]
    return feats, desc
