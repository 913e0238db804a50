"""Average-linkage (UPGMA) agglomerative clustering on the C++ core.

K-means assumes compact, similar-sized clusters; the classes of a patch set are
often neither (one defect class seen in several source regions, a bulk class ten
times larger than the others). Average linkage joins, at every step, the two
clusters whose samples are closest on average, so an elongated class stays in
one piece. The tree is built once; every k of a sweep is a cut of it, so a k
sweep costs one O(n^2) pass plus one silhouette pass.

``average_linkage`` returns scipy's linkage matrix (same merges, heights within
1e-12 relative, same tie order as ``scipy.cluster.hierarchy.linkage(X,
"average")``); ``cut_dendrogram`` equals ``scipy.cluster.hierarchy.cut_tree``.
Memory: n(n-1)/2 doubles (n <= 16384, 1 GiB); fit on the training patches and
map new tiles to the nearest cluster mean.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .._validation import check_array, check_n_threads

__all__ = ["average_linkage", "cut_dendrogram"]


def average_linkage(X, *, n_threads=None) -> np.ndarray:
    """Average-linkage tree of the rows of ``X`` (n >= 2, Euclidean distances).

    Returns the linkage matrix ``(n - 1, 4)`` float64 in scipy's layout: merged
    cluster ids (samples are 0..n-1, merge j forms n + j), the average distance
    between them, the merged size; rows in order of height."""
    from .._lib import _core

    X = check_array(X, name="X", ndim=2, min_samples=2)
    return _core.average_linkage(X, check_n_threads(n_threads))


def cut_dendrogram(Z, n_clusters: int) -> np.ndarray:
    """Flat cluster labels (int64, numbered in order of first appearance) when the
    tree ``Z`` (from :func:`average_linkage` or scipy) is cut into ``n_clusters``."""
    from .._lib import _core

    Z = check_array(Z, name="Z", ndim=2, dtype=(np.float64,))
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise TypeError(f"n_clusters must be an int, got {type(n_clusters).__name__}")
    return _core.cut_dendrogram(Z, int(n_clusters)).astype(np.int64)


def linkage_selection(X: np.ndarray, ks: Sequence[int], n_threads=None):
    """Cut the average-linkage tree of ``X`` at every k of ``ks`` and score each
    cut by its mean silhouette (the core's, every k in one pass). Returns
    ``(NClustersSelection, Z)``; the best k is the first maximum."""
    from .._lib import _core
    from ._kmeans import NClustersSelection

    X = np.ascontiguousarray(X, dtype=np.float64)
    nt = check_n_threads(n_threads)
    Z = _core.average_linkage(X, nt)
    ks = [int(k) for k in ks]
    codes = [np.ascontiguousarray(_core.cut_dendrogram(Z, k)) for k in ks]
    sil = _core.silhouette_samples_multi(X, codes, ks, nt)
    scores = np.array([float(s) for _, s in sil])
    labels, centers, inertias = {}, {}, []
    for k, c in zip(ks, codes):
        lab = c.astype(np.int64)
        C = np.stack([X[lab == j].mean(axis=0) for j in range(k)])
        labels[k], centers[k] = lab, C
        inertias.append(float(((X - C[lab]) ** 2).sum()))
    best = ks[int(np.argmax(scores))]
    sel = NClustersSelection(k_values=ks, scores=scores, inertias=np.asarray(inertias), labels=labels,
                             best_k=best, centers=centers, choices={"silhouette": best}, rule="silhouette")
    return sel, Z
