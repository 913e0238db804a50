"""The cluster map of a whole image: every tile labelled with its nearest
cluster of a fitted :class:`stemroi.PatchClusterer` (label-free ROIs)."""
from __future__ import annotations

import numpy as np

from .._validation import check_array, check_positive_int
from .roi import ROIResult

__all__ = ["cluster_map"]


def _describe_features(features) -> str:
    return features if isinstance(features, str) else repr(features)


def cluster_map(image, clusterer, patch: int = 64, stride: int = 64, *, pixel_size=None) -> ROIResult:
    """Tile ``image`` (2-D) on ``PatchGrid(patch, stride, edge="drop")`` and
    label every tile with its nearest cluster of ``clusterer``.

    Returns an :class:`ROIResult` with one row per tile: labels
    ``"cluster <c>"``, ``confidence = 1 - d1/d2`` (nearest vs second-nearest
    centre distance), ``scores`` = distance to the nearest centre. The most
    frequent cluster of the image is taken as the bulk label (``bulk_label``),
    on the assumption that most of a field of view is defect-free.
    ``maps["cluster"]`` is the (H, W) int64 cluster index of each pixel (the
    tile whose centre is nearest; -1 where no tile covers the pixel).

    ``pixel_size``: the image's pixel size, ``(value, unit)`` or a
    :class:`stemroi.io.Calibration`; resampled to the clusterer's pixel size
    (``fit(..., pixel_size=...)``) when both are known and differ by more
    than 1 % (see :func:`stemroi.detect`).
    """
    from ..preprocessing._resample import plan_resampling, resample, to_original_grid
    from ..preprocessing.grid import PatchGrid

    clusterer._check_fitted()
    if getattr(clusterer.extractor_, "precomputed", False):
        raise ValueError("cluster_map needs a patch feature extractor; this clusterer was fitted on "
                         "precomputed features (features='precomputed')")
    img = check_array(image, name="image", ndim=2, dtype=(np.float32, np.float64))
    resample_scale, pixel_info = plan_resampling(clusterer, pixel_size, "cluster_map")
    original_shape = img.shape
    if resample_scale is not None:
        img = resample(img, resample_scale, n_threads=clusterer.n_threads)
    patch = check_positive_int(patch, "patch")
    stride = check_positive_int(stride, "stride")
    if patch > img.shape[0] or patch > img.shape[1]:
        raise ValueError(f"patch must be <= image size {img.shape}, got {patch}")
    grid = PatchGrid(patch_size=patch, stride=stride, edge="drop", n_threads=clusterer.n_threads)
    origins = np.asarray(grid.origins(img.shape), dtype=np.int64)
    dist = clusterer._distances(clusterer.transform(grid.extract(img)))
    order = np.sort(dist, axis=1)
    nearest = dist.argmin(axis=1)
    second = order[:, 1] if order.shape[1] > 1 else order[:, 0]
    conf = np.where(second > 0, 1.0 - order[:, 0] / np.where(second > 0, second, 1.0), 0.0)
    names = [f"cluster {c}" for c in range(clusterer.n_clusters_)]
    counts = np.bincount(nearest, minlength=clusterer.n_clusters_)
    result = ROIResult(
        origins=origins, sizes=np.array([[patch, patch]]), labels=np.array([names[c] for c in nearest], dtype=object),
        confidence=conf, unknown=np.zeros(len(nearest), bool), class_names=names,
        bulk_label=names[int(np.argmax(counts))], scores=order[:, 0], image_shape=img.shape, method="patch-clusterer",
        metadata={"features": _describe_features(clusterer.features), "n_clusters": clusterer.n_clusters_,
                  "patch": patch, "stride": stride,
                  "silhouette": clusterer.silhouette_scores_[clusterer.n_clusters_],
                  "bulk_assumption": "most frequent cluster"},
    )
    if resample_scale is not None:
        to_original_grid(result, original_shape, pixel_info)
    else:
        result.metadata.update(pixel_info)
    result.maps["cluster"] = result.pixel_map(nearest.astype(np.int64), fill=-1)
    return result
