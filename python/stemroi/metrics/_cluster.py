"""Silhouette coefficients and cluster-vs-class accuracy on the C++ core.

``silhouette_samples``/``silhouette_score`` are exact (every pairwise
Euclidean distance), blocked and parallel, with distances and sums in double;
float32 inputs are read in place and give float32 per-sample values.
``silhouette_score(..., sample_size, random_state)`` draws the same subset as
scikit-learn for the same integer seed.

``cluster_accuracy`` matches clusters to classes one-to-one (Hungarian
algorithm on the contingency table, maximising the matched samples; extra
clusters or classes stay unmatched and count as errors):

* ``sample_weighted=False``: matched samples / all samples;
* ``sample_weighted=True``: the mean over classes of the fraction of each
  class that falls in its matched cluster (balanced accuracy under the same
  matching), so that small classes weigh as much as large ones.

``cluster_purity`` matches many-to-one instead: each cluster to its majority
class. It is 1.0 when every cluster holds one class, however many clusters a
class is split into, and drops only when classes share a cluster; read with
``cluster_accuracy``, it tells an over-split clustering (accuracy down, purity
near 1) from a merged one (both down).
"""
from __future__ import annotations

from typing import Dict, NamedTuple

import numpy as np

from .._lib import _core
from .._validation import check_array, check_n_threads, check_numeric_device
from ..cluster._kmeans import _sample_indices

__all__ = [
    "silhouette_samples",
    "silhouette_score",
    "cluster_accuracy",
    "cluster_purity",
    "cluster_confusion_matrix",
    "ClusterConfusion",
    "adjusted_rand_score",
]


def _check_labels(labels, n: int, name: str = "labels") -> np.ndarray:
    lab = np.asarray(labels)
    if lab.dtype.kind in "cV":
        raise TypeError(f"{name}: unsupported dtype {lab.dtype}")
    if lab.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {lab.shape}")
    if lab.shape[0] != n:
        raise ValueError(f"{name}: length {lab.shape[0]} does not match the {n} samples of X")
    if lab.dtype.kind == "f" and not np.isfinite(lab).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return lab


def _encode(lab: np.ndarray, n: int):
    classes, codes = np.unique(lab, return_inverse=True)
    k = len(classes)
    if not 2 <= k <= n - 1:
        raise ValueError(f"Number of labels is {k}. Valid values are 2 to n_samples - 1 (inclusive), n_samples={n}")
    return np.ascontiguousarray(codes, dtype=np.int32), k


def silhouette_samples(X, labels, *, metric="euclidean", n_threads=None, device=None) -> np.ndarray:
    """Silhouette coefficient of every sample (X's dtype); singletons score 0.

    ``device``: None ("cpu"), "cpu", "cuda", "cuda:N" or "auto". On CUDA the
    per-cluster distance sums run on the GPU (every pair, in double): values
    within 1e-5 (float32) / 1e-10 (float64) of the CPU's, reproducible run to run.
    """
    if metric != "euclidean":
        raise ValueError(f"metric must be 'euclidean', got {metric!r}")
    device = check_numeric_device(device)
    X = check_array(X, name="X", ndim=2)
    codes, k = _encode(_check_labels(labels, X.shape[0]), X.shape[0])
    ((values, _),) = _core.silhouette_samples_multi(X, [codes], [k], check_n_threads(n_threads), device=device)
    return values


def silhouette_score(X, labels, *, metric="euclidean", sample_size=None, random_state=None, n_threads=None,
                     device=None) -> float:
    """Mean silhouette coefficient (on a random subset of ``sample_size`` samples if given).

    ``device`` as in :func:`silhouette_samples`.
    """
    if metric != "euclidean":
        raise ValueError(f"metric must be 'euclidean', got {metric!r}")
    device = check_numeric_device(device)
    X = check_array(X, name="X", ndim=2)
    lab = _check_labels(labels, X.shape[0])
    if sample_size is not None:
        idx = _sample_indices(X.shape[0], sample_size, random_state)
        X, lab = np.ascontiguousarray(X[idx]), lab[idx]
    codes, k = _encode(lab, X.shape[0])
    ((_, score),) = _core.silhouette_samples_multi(X, [codes], [k], check_n_threads(n_threads), device=device)
    return float(score)


class ClusterConfusion(NamedTuple):
    """Contingency table of classes (rows) vs clusters (columns) and the matching."""

    matrix: np.ndarray        # (n_classes, n_clusters) int64 counts
    mapping: Dict[object, object]  # cluster label -> matched class label
    classes: np.ndarray       # row labels (sorted unique y_true)
    clusters: np.ndarray      # column labels (sorted unique labels)


def cluster_confusion_matrix(y_true, labels) -> ClusterConfusion:
    """Class-by-cluster counts and the accuracy-maximising one-to-one matching."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true: expected a 1-D array, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("y_true: empty; at least 1 sample needed")
    if y.dtype.kind == "c":
        raise TypeError(f"y_true: unsupported dtype {y.dtype}")
    lab = _check_labels(labels, y.shape[0])
    classes, ycodes = np.unique(y, return_inverse=True)
    clusters, ccodes = np.unique(lab, return_inverse=True)
    matrix = _core.contingency_matrix(
        np.ascontiguousarray(ycodes, np.int64), np.ascontiguousarray(ccodes, np.int64), len(classes), len(clusters)
    )
    match = _core.max_weight_matching(np.ascontiguousarray(matrix, dtype=np.float64))
    mapping = {clusters[j].item(): classes[i].item() for i, j in enumerate(match) if j >= 0}
    return ClusterConfusion(matrix, mapping, classes, clusters)


def cluster_accuracy(y_true, labels, *, sample_weighted: bool = False) -> float:
    """Accuracy of clusters against classes under the best one-to-one matching.

    ``sample_weighted=True`` returns the mean of the per-class accuracies under
    that matching (balanced accuracy); see the module docstring.
    """
    return _accuracy_of(cluster_confusion_matrix(y_true, labels), sample_weighted)


def _accuracy_of(conf: ClusterConfusion, sample_weighted: bool = False) -> float:
    m = conf.matrix
    col = {c: j for j, c in enumerate(conf.clusters.tolist())}
    row = {c: i for i, c in enumerate(conf.classes.tolist())}
    matched = np.zeros(len(conf.classes))
    for cl, cls in conf.mapping.items():
        matched[row[cls]] = m[row[cls], col[cl]]
    if sample_weighted:
        return float(np.mean(matched / m.sum(axis=1)))
    return float(matched.sum() / m.sum())


def cluster_purity(y_true, labels) -> float:
    """Share of the samples that belong to their cluster's majority class
    (each cluster matched to its most frequent class; several clusters may
    match one class). See the module docstring."""
    return _purity_of(cluster_confusion_matrix(y_true, labels))


def _purity_of(conf: ClusterConfusion) -> float:
    m = conf.matrix
    return float(m.max(axis=0).sum() / m.sum())


def adjusted_rand_score(labels_a, labels_b) -> float:
    """Adjusted Rand index of two labelings of the same samples (Hubert and
    Arabie 1985; scikit-learn's ``adjusted_rand_score``): 1 for identical
    partitions (up to renaming), about 0 for independent ones. Two
    single-cluster labelings (or no samples) score 1, as scikit-learn."""
    a = np.asarray(labels_a)
    if a.ndim != 1:
        raise ValueError(f"labels_a: expected a 1-D array, got shape {a.shape}")
    b = _check_labels(labels_b, a.shape[0], "labels_b")
    n = a.shape[0]
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    ka, kb = int(ia.max(initial=-1)) + 1, int(ib.max(initial=-1)) + 1
    if n == 0 or (ka == kb == 1) or (ka == kb == n):
        return 1.0
    cont = np.bincount(ia.astype(np.int64) * kb + ib, minlength=ka * kb).astype(np.float64)

    def comb2(v):
        return float(np.sum(v * (v - 1.0)) / 2.0)

    sum_ij = comb2(cont)
    sum_a = comb2(np.bincount(ia, minlength=ka).astype(np.float64))
    sum_b = comb2(np.bincount(ib, minlength=kb).astype(np.float64))
    expected = sum_a * sum_b / (n * (n - 1) / 2.0)
    top = (sum_a + sum_b) / 2.0
    if top == expected:
        return 1.0
    return float((sum_ij - expected) / (top - expected))
