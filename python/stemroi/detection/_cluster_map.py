"""The cluster map of a whole image: every tile labelled with its nearest
cluster of a fitted :class:`stemroi.PatchClusterer` (label-free ROIs)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .._validation import check_array, check_positive_int
from .roi import ROIResult, check_tile_edge

__all__ = ["cluster_map"]


def _describe_features(features) -> str:
    return features if isinstance(features, str) else repr(features)


def _painted_map(origins: np.ndarray, size: int, values: np.ndarray, shape, fill) -> np.ndarray:
    """``ROIResult.pixel_map(values, fill)`` for square tiles in row-major order, in row bands.

    Each pixel takes the value of the covering tile whose centre is nearest
    (the first in row order on ties). Tiles arrive in row-major order of their
    origins, so rows above a tile's origin are final: the float64 distance of
    the nearest centre is kept for a band of rows, not for the whole frame.
    Same values as ``pixel_map`` (same comparisons in the same order).
    """
    h, w = (int(v) for v in shape)
    v = np.asarray(values)
    out = np.full((h, w), fill, dtype=np.result_type(v, np.asarray(fill)))
    lo, best = 0, np.full((0, w), np.inf)  # best holds rows [lo, lo + len(best))
    half = (size - 1) / 2
    for k, (r, c) in enumerate(np.asarray(origins)):
        r, c = int(r), int(c)
        if r > lo:  # rows above r are final: drop them from the band
            best = best[min(r - lo, len(best)):]
            lo = r
        r1, c0, c1 = min(r + size, h), max(c, 0), min(c + size, w)
        if r1 - lo > len(best):
            best = np.concatenate([best, np.full((r1 - lo - len(best), w), np.inf)])
        if c0 >= c1 or r >= r1:
            continue
        dy = np.arange(r, r1) - (r + half)
        dx = np.arange(c0, c1) - (c + half)
        d = dy[:, None] ** 2 + dx[None, :] ** 2
        band = best[r - lo:r1 - lo, c0:c1]
        closer = d < band
        band[closer] = d[closer]
        out[r:r1, c0:c1][closer] = v[k]
    return out


def _distance_to_median(embedding: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Euclidean distance (float64) of every row to the coordinate-wise median row, in row chunks."""
    centre = np.median(embedding, axis=0).astype(np.float64)
    out = np.empty(len(embedding), dtype=np.float64)
    for i in range(0, len(embedding), chunk):
        d = embedding[i:i + chunk].astype(np.float64) - centre
        out[i:i + chunk] = np.sqrt(np.einsum("ij,ij->i", d, d))
    return out


ROI_RULES = ("score", "cluster")


def cluster_map(image, clusterer, patch: Optional[int] = None, stride: Optional[int] = None, *, pixel_size=None,
                roi: str = "score", roi_threshold: float = 2.0, batch_size: int = 256,
                edge: str = "shift") -> ROIResult:
    """Tile ``image`` (2-D) on ``PatchGrid(patch, stride, edge)`` and
    label every tile with its nearest cluster of ``clusterer``.

    ``patch``: the tile side, by default (None) that of the patches the
    clusterer was fitted on, and any other size is refused (the features of
    tiles of another size would not compare with the training ones; resample
    the image with ``pixel_size`` instead); ``stride``: None = ``patch``.
    ``edge``: ``"shift"`` (default) adds a last row and column of tiles flush
    with the bottom and right borders when the grid leaves a remainder, so
    every pixel is examined; ``"drop"`` leaves the remainder out (before
    2026-12-06 the only behaviour).

    Returns an :class:`ROIResult` with one row per tile: labels
    ``"cluster <c>"``, ``confidence = 1 - d1/d2`` (nearest vs second-nearest
    centre distance), ``scores`` = how far the tile is from this image's bulk:
    the Euclidean distance of its embedding to the coordinate-wise median
    embedding of all the image's tiles. The most frequent cluster of the image
    is taken as the bulk label (``bulk_label``); both rest on the assumption
    that most of a field of view is defect-free. The score is measured against
    the image itself, not against the training patches, so that a global change
    of the acquisition (blur, pixel size, noise) moves the reference with the
    tiles: on the CdTe frame blurred by 1 px it ranks the defect tiles above the
    bulk ones with AUROC 0.996, where the distance to the training bulk
    cluster's centre gives 0.289 (docs/cross_image.md).

    ``roi`` says which tiles are regions of interest (``result.is_roi``, the
    ``roi`` column, the tinted tiles of the overlay): ``"score"`` (default)
    flags the tiles whose score exceeds the image's median score by more than
    ``roi_threshold`` robust standard deviations (1.4826 x the median absolute
    deviation), so that the flags, like the score, follow the image;
    ``"cluster"`` flags every tile whose cluster is not the bulk one (before
    2026-12-04 the only rule). On the CdTe frame and six acquisition shifts of
    it, clustered on the CdTe patches or on the frame's own tiles: ``"score"``
    precision 0.70-1.00, recall 0.75-1.00 (1.00 on 12 of 14 frames);
    ``"cluster"`` fails under a 1-px blur (precision 0.000) with patches, and
    with average linkage on the frame's own tiles (recall <= 0.17), though it
    is the more precise rule for K-means on the frame's own tiles
    (docs/clustering.md, "Across images"). The threshold of 2 was chosen after
    looking at that frame (3: more precise, recall down to 0.50); check it on
    yours. The cluster labels are the same either way. The score rule looks for
    outliers of a mostly-bulk field (rare defects); when the region of interest
    is a large part of the field (a second phase), use ``roi="cluster"``.
    ``maps["cluster"]`` is the (H, W) int32 cluster index of each pixel (the
    tile whose centre is nearest; -1 where no tile covers the pixel, which
    happens only with ``edge="drop"``).

    ``pixel_size``: the image's pixel size, ``(value, unit)`` or a
    :class:`stemroi.io.Calibration`; resampled to the clusterer's pixel size
    (``fit(..., pixel_size=...)``) when both are known and differ by more
    than 1 % (see :func:`stemroi.detect`).

    Tiles are cut and embedded ``batch_size`` at a time (a memory-mapped
    image stays mapped), so memory holds one batch of tiles and features, the
    per-tile results (with each tile's float32 embedding, for the median) and
    the int32 map (4 bytes a pixel), not every tile of the frame.
    """
    from ..preprocessing._resample import plan_resampling, resample, to_original_grid
    from ..preprocessing.grid import PatchGrid

    clusterer._check_fitted()
    if getattr(clusterer.extractor_, "precomputed", False):
        raise ValueError("cluster_map needs a patch feature extractor; this clusterer was fitted on "
                         "precomputed features (features='precomputed')")
    from ..preprocessing.grid import _finite_range

    # finiteness checked in row strips: a memory-mapped frame is neither copied nor resident whole
    img = check_array(image, name="image", ndim=2, dtype=(np.float32, np.float64), finite=False)
    _finite_range(img, "image")
    resample_scale, pixel_info = plan_resampling(clusterer, pixel_size, "cluster_map")
    original_shape = img.shape
    if resample_scale is not None:
        img = resample(img, resample_scale, n_threads=clusterer.n_threads)
    fitted_shape = getattr(clusterer, "patch_shape_", None)
    if fitted_shape is not None and fitted_shape[0] != fitted_shape[1]:
        raise ValueError(f"cluster_map cuts square tiles; this clusterer was fitted on "
                         f"{fitted_shape[0]}x{fitted_shape[1]} patches")
    if patch is None:
        patch = 64 if fitted_shape is None else fitted_shape[0]
    patch = check_positive_int(patch, "patch")
    if fitted_shape is not None and patch != fitted_shape[0]:
        raise ValueError(f"patch={patch}, but this clusterer was fitted on {fitted_shape[0]}x{fitted_shape[1]} "
                         f"patches: tiles must be cut at {fitted_shape[0]} (the default) so that their features "
                         "compare; for an image at another pixel size pass pixel_size= to resample it")
    stride = patch if stride is None else check_positive_int(stride, "stride")
    if roi not in ROI_RULES:
        raise ValueError(f"roi must be one of {ROI_RULES}, got {roi!r}")
    if isinstance(roi_threshold, bool) or not isinstance(roi_threshold, (int, float, np.integer, np.floating)) \
            or not np.isfinite(roi_threshold) or roi_threshold <= 0:
        raise ValueError(f"roi_threshold must be a finite number > 0 (robust standard deviations), "
                         f"got {roi_threshold!r}")
    edge = check_tile_edge(edge)
    if patch > img.shape[0] or patch > img.shape[1]:
        raise ValueError(f"patch must be <= image size {img.shape}, got {patch}")
    grid = PatchGrid(patch_size=patch, stride=stride, edge=edge, n_threads=clusterer.n_threads)
    origins = np.asarray(grid.origins(img.shape), dtype=np.int64)
    # tiles are cut, embedded and measured one batch at a time (memory: one batch, not every tile)
    batch_size = check_positive_int(batch_size, "batch_size")
    novelty = getattr(clusterer, "novelty_", None)
    parts = [(clusterer._distances(Z), None if novelty is None else novelty.score(Z), Z.astype(np.float32))
             for Z in (clusterer.transform(tiles) for _, tiles in grid.iter_batches(img, batch_size))]
    dist = np.concatenate([p[0] for p in parts], axis=0)
    embedding = np.concatenate([p[2] for p in parts], axis=0)
    bulk_distance = _distance_to_median(embedding)
    del embedding
    order = np.sort(dist, axis=1)
    nearest = dist.argmin(axis=1)
    second = order[:, 1] if order.shape[1] > 1 else order[:, 0]
    conf = np.where(second > 0, 1.0 - order[:, 0] / np.where(second > 0, second, 1.0), 0.0)
    names = [f"cluster {c}" for c in range(clusterer.n_clusters_)]
    median = float(np.median(bulk_distance))
    spread = 1.4826 * float(np.median(np.abs(bulk_distance - median)))
    score_cut = median + float(roi_threshold) * spread
    counts = np.bincount(nearest, minlength=clusterer.n_clusters_)
    result = ROIResult(
        origins=origins, sizes=np.array([[patch, patch]]), labels=np.array([names[c] for c in nearest], dtype=object),
        confidence=conf, unknown=np.zeros(len(nearest), bool), class_names=names,
        bulk_label=names[int(np.argmax(counts))], scores=bulk_distance, image_shape=img.shape, method="patch-clusterer",
        metadata={"features": _describe_features(clusterer.features), "n_clusters": clusterer.n_clusters_,
                  "patch": patch, "stride": stride, "edge": edge,
                  "silhouette": clusterer.silhouette_scores_[clusterer.n_clusters_],
                  "bulk_assumption": "most frequent cluster",
                  "scores": "distance of the tile's embedding to the median embedding of the image's tiles",
                  "roi_rule": ("score > median + roi_threshold x 1.4826 MAD of the image's scores" if roi == "score"
                               else "cluster is not the bulk cluster"),
                  "roi_threshold": float(roi_threshold) if roi == "score" else None,
                  "roi_score_cut": score_cut if roi == "score" else None},
        flagged=(bulk_distance > score_cut) if roi == "score" else None,
    )
    if novelty is not None:  # tiles whose embedding is unlike the training patches
        from ._novelty import attach_novelty
        attach_novelty(result, novelty, np.concatenate([p[1] for p in parts]), "clusterer embedding (transform)")
    if resample_scale is not None:
        to_original_grid(result, original_shape, pixel_info)
    else:
        result.metadata.update(pixel_info)
    if resample_scale is None:
        result.maps["cluster"] = _painted_map(result.origins, int(result.sizes[0, 0]), nearest.astype(np.int32),
                                              result.image_shape, -1)
    else:  # tiles rescaled to the original grid
        result.maps["cluster"] = result.pixel_map(nearest.astype(np.int32), fill=-1)
    return result
