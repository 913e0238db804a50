"""The U-Net segmentation map of a whole image: one probability map per
channel of a fitted :class:`stemroi.DefectSegmenter` and one ROIResult row per
tile, and the descriptors of such maps (for clustering)."""
from __future__ import annotations

import contextlib
import numbers
import os
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
                     device: Optional[str] = None, pixel_size=None,
                     strip_rows: Optional[int] = None, maps_path=None) -> ROIResult:
    """Per-class probability maps of ``image`` (2-D float32 in [0, 1]) under a
    fitted :class:`stemroi.DefectSegmenter`, summarised per tile.

    The maps are ``model.predict_maps(image)`` (overlapping prediction tiles
    blended without seams), predicted in horizontal strips of ``strip_rows``
    output rows (rounded down to a multiple of the prediction stride; None:
    sized so that one strip's working memory is about 64 MB), each with the
    rows of context its prediction tiles need, so the working memory does not
    grow with the frame; the values are those of the whole-frame call (the
    same tiles, blended in the same order; within 1e-6, as the CPU
    convolution's result for a tile can differ by ~1 ulp with the other tiles
    of its batch). The rows are the tiles of
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

    ``maps_path``: a ``.npy`` file to hold the maps, ``(n_channels, H, W)``
    float32 in ``channel_names_`` order, written strip by strip through a
    memory map (a temporary file beside it, renamed when complete) and
    returned as read-only memory-mapped views: for frames whose maps do not fit
    in memory (7 channels of a 16k x 16k frame are 7.5 GB), the working memory
    stays that of one strip. With resampling (``pixel_size``) the maps brought
    back to the original grid are in memory.
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
    maps = _predict_maps_in_strips(model, image, batch_size, progress, strip_rows, maps_path)
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


_STRIP_BYTES = 64 << 20  # working memory of one strip's prediction (strip_rows=None)


def _strip_plan(h: int, tile: int, stride: int, rows: int) -> List[Tuple[int, int, int, int]]:
    """``(a, b, y0, y1)`` per strip: predict rows [a, b) of the frame, keep rows [y0, y1).

    ``y0`` and ``rows`` are multiples of ``stride``; ``a`` is the first
    whole-frame tile origin whose tile reaches ``y0``; ``b = y1 - stride + tile``
    ends the last tile reaching ``y1 - 1``, so ``b - a - tile`` is a multiple of
    the stride and the strip has no shifted edge tile of its own: its tiles are
    exactly the whole-frame tiles inside it. The last strip ends at the frame's
    border (with the frame's own shifted edge tile); a single strip is the frame.
    """
    plan, y0 = [], 0
    while y0 < h:
        a = max(0, ((y0 + stride - tile) // stride) * stride)
        y1 = y0 + rows
        if y1 + tile > h:  # the frame's shifted edge tile (origin h - tile) could reach above y1
            plan.append((a, h, y0, h))
            break
        plan.append((a, y1 - stride + tile, y0, y1))
        y0 = y1
    return plan


def _check_strip(h: int, grid, a: int, b: int, y0: int, y1: int, w: int) -> None:
    """Every row of [y0, y1) is covered by the same prediction tiles in the strip [a, b) as in the frame."""
    tile = grid.patch_size
    frame = set(int(o) for o in np.asarray(grid.origins((h, w)))[:, 0])
    strip = set(a + int(o) for o in np.asarray(grid.origins((b - a, w)))[:, 0])
    for o in frame ^ strip:
        if o < y1 and o + tile > y0:
            raise RuntimeError(f"internal error: strip rows [{a}, {b}) do not reproduce frame rows [{y0}, {y1}) "
                               f"(tile origin {o})")


def _open_maps_file(path, shape):
    """(memmap, temporary path): a writable .npy memory map beside ``path``."""
    import tempfile
    from pathlib import Path

    path = Path(os.fspath(path))
    if path.suffix != ".npy":
        raise ValueError(f"maps_path must name a .npy file, got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"maps_path {str(path)!r} is a directory, expected a .npy file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        return np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape), tmp
    except BaseException:
        os.unlink(tmp)
        raise


def _finish_maps_file(out, tmp, path) -> np.ndarray:
    """Flush, rename the temporary file onto ``path`` and map it back read-only."""
    out.flush()
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    del out
    os.replace(tmp, os.fspath(path))
    return np.load(os.fspath(path), mmap_mode="r")


def _release_written(out, upto_row: int, from_row: int) -> None:
    """Flush rows [from_row, upto_row) of every channel of a writable shared map
    and drop their resident pages (the data stays in the file)."""
    from ..preprocessing.grid import _drop_rows

    out.flush()
    mm = getattr(out, "_mmap", None)
    if mm is not None:
        for channel in out:
            _drop_rows(mm, channel, from_row, upto_row)


def _predict_maps_in_strips(model, image, batch_size, progress, strip_rows, maps_path=None) -> np.ndarray:
    """``model.predict_maps(image)`` (C, H, W) float32, predicted one horizontal strip at a time.

    The C++ tiler (``unet_predict_tiled``) puts tiles at the origins of
    ``PatchGrid(tile, stride, "shift")`` along each axis and blends them with a
    separable window, accumulating tiles in row-major order into zeroed sums
    (weighted probabilities and weights) that are divided at the end. A strip
    spans the whole width (the same column origins and padding) and, by
    :func:`_strip_plan`, exactly the whole-frame tiles that cover its kept rows,
    so each kept pixel gets the same terms added in the same order: equal to
    the whole-frame map as long as the network's output for a tile does not
    depend on the other tiles of its batch. Frames of a single strip (fewer
    rows than about ``strip_rows`` plus a tile) and inputs that are not 2-D
    real arrays (rejected by ``predict_maps``) take the whole-frame call.
    """
    from ..preprocessing.grid import PatchGrid, _finite_range, _release_pages

    arr = image if isinstance(image, np.ndarray) else np.asarray(image)

    def whole():
        maps = np.asarray(model.predict_maps(image, batch_size=batch_size, progress=progress))
        if maps_path is None:
            return maps
        out, tmp = _open_maps_file(maps_path, maps.shape)
        try:
            out[...] = maps
            return _finish_maps_file(out, tmp, maps_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    if strip_rows is not None:
        strip_rows = check_positive_int(strip_rows, "strip_rows")
    if arr.ndim != 2 or arr.size == 0 or arr.dtype.kind not in "fiub":
        return whole()
    tile = int(model.patch_size_[0])
    stride = max(1, int(round(tile * float(model.tile_stride))))
    if tile < 8 or tile % 4 or stride > tile:
        return whole()
    h, w = arr.shape
    n_channels = len(model.channel_names_)
    if strip_rows is None:  # per strip row: sums, quotient and returned copy (3 C) + weights and image (2)
        per_row = max(w, tile) * 4 * (3 * n_channels + 2)
        rows = max(_STRIP_BYTES // per_row - 2 * (tile - stride), stride)
    else:
        rows = strip_rows
    rows = max(stride, (rows // stride) * stride)
    if h < tile:
        return whole()
    plan = _strip_plan(h, tile, stride, rows)
    if len(plan) == 1:
        return whole()
    if arr.dtype.kind == "f":
        _finite_range(arr, "image")  # NaN/inf named with its frame index (a strip would give its own)
    grid = PatchGrid(patch_size=tile, stride=stride, edge="shift")
    n_cols = len(np.asarray(grid.origins((tile, max(w, tile)))))
    counts = [len(np.asarray(grid.origins((b - a, tile)))) * n_cols for a, b, _, _ in plan]
    total, done = sum(counts), 0
    if maps_path is None:
        out, tmp = np.empty((n_channels, h, w), dtype=np.float32), None
    else:
        out, tmp = _open_maps_file(maps_path, (n_channels, h, w))
    try:
        released = 0
        for k, ((a, b, y0, y1), count) in enumerate(zip(plan, counts)):
            _check_strip(h, grid, a, b, y0, y1, tile)
            report = None if progress is None else (lambda k, n, _d=done: progress(_d + k, total))
            part = np.asarray(model.predict_maps(arr[a:b], batch_size=batch_size, progress=report))
            out[:, y0:y1] = part[:, y0 - a:y1 - a]
            del part
            if tmp is not None:
                _release_written(out, y1, y0)
            done += count
            if k + 1 < len(plan):  # rows above the next strip (pages of read-only memory maps only)
                _release_pages(arr, plan[k + 1][0], released)
                released = plan[k + 1][0]
        return out if tmp is None else _finish_maps_file(out, tmp, maps_path)
    except BaseException:
        if tmp is not None:
            del out
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


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
