"""K-means clustering and the number-of-clusters sweep on the C++ core.

``KMeans`` follows :class:`sklearn.cluster.KMeans` (1.2, Lloyd): greedy
k-means++ seeding with ``2 + int(log(k))`` local trials, Lloyd iterations with
GEMM distances on centred data, ``tol`` scaled by the mean feature variance,
convergence on the total squared centre shift (or unchanged labels), and
relocation of empty clusters to the farthest samples. Given the same initial
centres (``init=ndarray``) it returns scikit-learn's labels and centres.

Random draws come from a per-estimator ``std::mt19937_64`` seeded by
``random_state`` (run ``i`` of ``n_init`` uses a seed derived from it), so
results are bit-identical across repeats and thread counts, but not equal to
scikit-learn's for the same integer seed (different generator).
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from .._lib import _core
from .._validation import (
    check_array,
    check_n_threads,
    check_numeric_device,
    check_positive_int,
    check_random_state_seed,
)
from ..base import BaseEstimator, ClusterMixin, TransformerMixin

__all__ = ["KMeans", "NClustersSelection", "select_n_clusters"]


class ConvergenceWarning(UserWarning):
    """Fewer distinct clusters than requested (duplicate points)."""


def _check_common(n_clusters, n_init, max_iter, tol):
    k = check_positive_int(n_clusters, "n_clusters")
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    return k, n_init, max_iter, float(tol)


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means clustering (k-means++ seeding, Lloyd iterations).

    Parameters
    ----------
    n_clusters : int
    init : 'k-means++' or array of shape (n_clusters, n_features)
    n_init : int
        Runs with different seeds; the lowest inertia wins (forced to 1 with
        an explicit init array, with a RuntimeWarning as scikit-learn).
    max_iter : int
        As scikit-learn.
    tol : float
        As scikit-learn (relative to the mean feature variance).
    random_state : None, int or NumPy generator
    n_threads : int or None (all cores)
    device : None, "cpu", "cuda", "cuda:N" or "auto"
        Where the distances run (None: "cpu"; "auto": CUDA when stemroi was
        built with it and a GPU is visible). On CUDA every Lloyd assignment,
        ``predict``, ``transform`` and ``score`` run on the GPU with exact
        double-precision distances: the same labels, centres and inertia as
        the CPU within 1e-5 (float32) / 1e-10 (float64) relative, reproducible
        run to run. A build without CUDA raises ValueError for "cuda".

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        In X's dtype.
    labels_ : ndarray of int32
    inertia_ : float
    n_iter_ : int
    n_features_in_ : int
    """

    def __init__(self, n_clusters=8, *, init="k-means++", n_init=10, max_iter=300, tol=1e-4, random_state=None,
                 n_threads=None, device=None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device

    def fit(self, X, y=None):
        """Cluster X (n_samples, n_features); returns self."""
        k, n_init, max_iter, tol = _check_common(self.n_clusters, self.n_init, self.max_iter, self.tol)
        device = check_numeric_device(self.device)
        X = self._validate_X(X, reset=True)
        n, d = X.shape
        if k > n:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
        init = None
        if isinstance(self.init, str):
            if self.init != "k-means++":
                raise ValueError(f"init must be 'k-means++' or an array of shape (n_clusters, n_features), got {self.init!r}")
        else:
            init = check_array(self.init, name="init", ndim=2).astype(X.dtype, copy=False)
            init = np.ascontiguousarray(init)
            if init.shape != (k, d):
                raise ValueError(f"init should be of shape ({k}, {d}), got {init.shape}")
            if n_init != 1:
                warnings.warn(
                    f"Explicit initial center position passed: performing only one init in KMeans instead of n_init={n_init}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                n_init = 1
        seed = check_random_state_seed(self.random_state)
        centers, labels, inertia, n_iter = _core.kmeans_fit(
            X, k, init, n_init, max_iter, tol, seed, check_n_threads(self.n_threads), device=device
        )
        distinct = len(np.unique(labels))
        if distinct < k:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
                "Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.cluster_centers_ = centers
        self.labels_ = labels
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        return self

    def _centers_as(self, dtype):
        return np.ascontiguousarray(self.cluster_centers_, dtype=dtype)

    def predict(self, X):
        """Index (int32) of the nearest centre of every sample."""
        self._check_fitted("cluster_centers_")
        X = self._validate_X(X, reset=False)
        labels, _ = _core.kmeans_predict(X, self._centers_as(X.dtype), check_n_threads(self.n_threads),
                                         device=check_numeric_device(self.device))
        return labels

    def fit_predict(self, X, y=None):
        return self.fit(X).labels_

    def transform(self, X):
        """Euclidean distances (n_samples, n_clusters) to the centres."""
        self._check_fitted("cluster_centers_")
        X = self._validate_X(X, reset=False)
        return _core.kmeans_transform(X, self._centers_as(X.dtype), check_n_threads(self.n_threads),
                                      device=check_numeric_device(self.device))

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def get_feature_names_out(self, input_features=None):
        """Output feature names of transform: kmeans0, kmeans1, ..."""
        self._check_fitted("cluster_centers_")
        return np.asarray([f"kmeans{i}" for i in range(len(self.cluster_centers_))], dtype=object)

    def score(self, X, y=None):
        """Opposite of the inertia of X under the fitted centres."""
        self._check_fitted("cluster_centers_")
        X = self._validate_X(X, reset=False)
        _, inertia = _core.kmeans_predict(X, self._centers_as(X.dtype), check_n_threads(self.n_threads),
                                          device=check_numeric_device(self.device))
        return -float(inertia)


@dataclass
class NClustersSelection:
    """Outcome of :func:`select_n_clusters`.

    ``scores[i]``, ``inertias[i]`` and ``labels[k_values[i]]`` belong to
    ``k_values[i]``; ``best_k`` has the highest mean silhouette (the first
    one on ties).
    """

    k_values: List[int]
    scores: np.ndarray
    inertias: np.ndarray
    labels: Dict[int, np.ndarray]
    best_k: int
    centers: Dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    n_iter: Dict[int, int] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        """JSON-friendly summary (no per-sample labels)."""
        return {
            "k_values": [int(k) for k in self.k_values],
            "scores": [float(s) for s in self.scores],
            "inertias": [float(v) for v in self.inertias],
            "best_k": int(self.best_k),
        }

    def table(self) -> str:
        """Plain-text table of k, silhouette and inertia (best k marked)."""
        lines = [f"{'k':>4}  {'silhouette':>10}  {'inertia':>14}"]
        for k, s, v in zip(self.k_values, self.scores, self.inertias):
            mark = "  <- best" if k == self.best_k else ""
            lines.append(f"{k:>4}  {s:>10.4f}  {v:>14.6g}{mark}")
        return "\n".join(lines)


def _sample_indices(n: int, sample_size, random_state) -> np.ndarray:
    """scikit-learn's silhouette_score subsample: RandomState(seed).permutation(n)[:size]."""
    size = check_positive_int(sample_size, "sample_size")
    if size > n:
        raise ValueError(f"sample_size must be <= n_samples={n}, got {size}")
    if isinstance(random_state, np.random.RandomState):
        rs = random_state
    elif random_state is None or isinstance(random_state, numbers.Integral):
        if random_state is not None and random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        rs = np.random.RandomState(random_state)
    elif isinstance(random_state, np.random.Generator):
        return np.ascontiguousarray(random_state.permutation(n)[:size], dtype=np.int64)
    else:
        raise TypeError(f"random_state must be None, an int or a NumPy generator, got {type(random_state).__name__}")
    return np.ascontiguousarray(rs.permutation(n)[:size], dtype=np.int64)


def select_n_clusters(X, k_range=range(2, 11), *, n_init=10, max_iter=300, tol=1e-4, random_state=None,
                      n_threads=None, sample_size=None, device=None) -> NClustersSelection:
    """K-means for every k in ``k_range`` and the mean silhouette of each.

    Every k is clustered as ``KMeans(k, n_init=n_init, random_state=random_state)``
    would (same labels), then the silhouettes of all k are computed in ONE
    blocked pass over the pairwise distances (per-cluster distance sums of all
    labelings accumulated together), instead of one pass per k.
    ``sample_size`` scores a random subset of the samples (the same subset for
    every k, drawn as ``silhouette_score(..., sample_size, random_state)``).
    ``device`` (None: "cpu") runs the K-means distances and the silhouette
    sums there, as in :class:`KMeans` and :func:`~stemroi.metrics.silhouette_score`.
    """
    X = check_array(X, name="X", ndim=2)
    n = X.shape[0]
    try:
        ks = [int(k) for k in k_range]
    except TypeError:
        raise TypeError(f"k_range must be an iterable of ints, got {type(k_range).__name__}") from None
    if not ks:
        raise ValueError("k_range is empty; give at least one k >= 2")
    for k in ks:
        if k < 2:
            raise ValueError(f"every k in k_range must be >= 2 for a silhouette score, got {k}")
        if k > n - 1:
            raise ValueError(f"every k in k_range must be <= n_samples - 1 = {n - 1}, got {k}")
    _, n_init, max_iter, tol = _check_common(2, n_init, max_iter, tol)
    device = check_numeric_device(device)
    seed = check_random_state_seed(random_state)
    sample = _sample_indices(n, sample_size, seed) if sample_size is not None else np.empty(0, np.int64)
    res = _core.select_n_clusters(X, ks, n_init, max_iter, tol, seed, check_n_threads(n_threads), sample,
                                  device=device)
    scores = np.asarray(res["scores"], dtype=np.float64)
    best = ks[int(np.argmax(scores))]
    return NClustersSelection(
        k_values=ks,
        scores=scores,
        inertias=np.asarray(res["inertias"], dtype=np.float64),
        labels={k: lab for k, lab in zip(ks, res["labels"])},
        best_k=best,
        centers={k: c for k, c in zip(ks, res["centers"])},
        n_iter={k: int(i) for k, i in zip(ks, res["n_iter"])},
    )
