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
from typing import Dict, List, Optional, Sequence, Union

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


_CRITERIA = ("silhouette", "stability", "gap")
_RULES = ("silhouette", "stability", "gap", "silhouette_1se")


@dataclass
class NClustersSelection:
    """Outcome of :func:`select_n_clusters`.

    ``scores[i]`` (mean silhouette), ``inertias[i]`` and ``labels[k_values[i]]``
    belong to ``k_values[i]``. When computed, ``stability[i]`` (mean adjusted
    Rand index between the full-data clustering and the clusterings of
    subsamples, ``stability_std`` its standard deviation over resamples;
    ``resampled_scores`` / ``resampled_scores_std``: mean silhouette of the
    subsample clusterings, mean and standard deviation over subsamples) and
    ``gap[i]`` (gap statistic, ``gap_se`` its s_k) too. ``choices`` maps each
    computed criterion to the k it picks on its own; ``best_k`` is the k picked
    by ``rule`` (see :func:`select_n_clusters`).
    """

    k_values: List[int]
    scores: np.ndarray
    inertias: np.ndarray
    labels: Dict[int, np.ndarray]
    best_k: int
    centers: Dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    n_iter: Dict[int, int] = field(default_factory=dict, repr=False)
    stability: Optional[np.ndarray] = None
    stability_std: Optional[np.ndarray] = field(default=None, repr=False)
    resampled_scores: Optional[np.ndarray] = field(default=None, repr=False)
    resampled_scores_std: Optional[np.ndarray] = field(default=None, repr=False)
    gap: Optional[np.ndarray] = None
    gap_se: Optional[np.ndarray] = field(default=None, repr=False)
    choices: Dict[str, int] = field(default_factory=dict)
    rule: str = "silhouette"

    def as_dict(self) -> dict:
        """JSON-friendly summary (no per-sample labels)."""
        out = {
            "k_values": [int(k) for k in self.k_values],
            "scores": [float(s) for s in self.scores],
            "inertias": [float(v) for v in self.inertias],
            "best_k": int(self.best_k),
            "rule": self.rule,
            "choices": {c: int(k) for c, k in self.choices.items()},
        }
        for name in ("stability", "stability_std", "resampled_scores", "resampled_scores_std", "gap", "gap_se"):
            v = getattr(self, name)
            if v is not None:
                out[name] = [float(x) for x in v]
        return out

    def table(self) -> str:
        """Plain-text table of k, silhouette, inertia (and stability, gap when computed; best k marked)."""
        head = f"{'k':>4}  {'silhouette':>10}  {'inertia':>14}"
        if self.stability is not None:
            head += f"  {'stability':>9}"
        if self.gap is not None:
            head += f"  {'gap':>8}  {'gap_se':>7}"
        lines = [head]
        for i, (k, s, v) in enumerate(zip(self.k_values, self.scores, self.inertias)):
            row = f"{k:>4}  {s:>10.4f}  {v:>14.6g}"
            if self.stability is not None:
                row += f"  {self.stability[i]:>9.4f}"
            if self.gap is not None:
                row += f"  {self.gap[i]:>8.4f}  {self.gap_se[i]:>7.4f}"
            mark = "  <- best" if k == self.best_k else ""
            lines.append(row + mark)
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


def _check_criteria(criteria) -> List[str]:
    if isinstance(criteria, str):
        criteria = _CRITERIA if criteria == "all" else (criteria,)
    try:
        crit = [str(c) for c in criteria]
    except TypeError:
        raise TypeError(f"criteria must be 'all', a criterion name or a sequence of them, got {criteria!r}") from None
    for c in crit:
        if c not in _CRITERIA:
            raise ValueError(f"unknown criterion {c!r}; expected some of {_CRITERIA} or 'all'")
    return [c for c in _CRITERIA if c == "silhouette" or c in crit]


def _kmeans_core(X, k, n_init, max_iter, tol, seed, nt, device):
    """(centres, labels, inertia) of the core's K-means (as KMeans(k, random_state=seed))."""
    centers, labels, inertia, _ = _core.kmeans_fit(X, int(k), None, n_init, max_iter, tol, seed, nt, device=device)
    return centers, labels, float(inertia)


#: share of the samples in each subsample of the stability criterion (``resample_fraction``)
RESAMPLE_FRACTION = 0.8


def resample_size(n: int, fraction: float = RESAMPLE_FRACTION) -> int:
    """Samples in each stability subsample of ``n``: K-means there needs k < this."""
    return int(round(fraction * n))


def _stability(X, ks, full_labels, n_resamples, fraction, n_init, max_iter, tol, seed, nt, device, groups=None):
    """Over ``n_resamples`` subsamples: the ARI between the full-data labels and
    the labels that K-means fitted on the subsample gives every sample, and the
    subsample clustering's own mean silhouette. Returns (ari mean, ari std,
    silhouette mean, silhouette std) per k.

    ``groups`` (private, used by benchmarks/k_selection_synth.py): each subsample
    keeps ``fraction`` of the groups, whole, instead of that fraction of the
    samples; a k that does not fit a subsample is left out of its averages."""
    from ..metrics._cluster import adjusted_rand_score

    n = X.shape[0]
    m = resample_size(n, fraction)
    if groups is None and not max(ks) < m <= n:
        raise ValueError(f"resample_fraction={fraction} leaves {m} samples, need more than max(k)={max(ks)}")
    names = None if groups is None else np.unique(groups)
    rng = np.random.default_rng([seed, 0x57AB])
    ari = np.full((n_resamples, len(ks)), np.nan)
    sil = np.full((n_resamples, len(ks)), np.nan)
    for r in range(n_resamples):
        if names is None:
            idx = np.sort(rng.choice(n, size=m, replace=False))
        else:
            keep = rng.choice(names, size=max(1, resample_size(len(names), fraction)), replace=False)
            idx = np.flatnonzero(np.isin(groups, keep))
        Xr = np.ascontiguousarray(X[idx])
        codes, counts = {}, {}
        for j, k in enumerate(ks):
            if k >= len(idx):
                continue
            centers, lab_r, _ = _kmeans_core(Xr, k, n_init, max_iter, tol, seed, nt, device)
            pred, _ = _core.kmeans_predict(X, np.ascontiguousarray(centers, dtype=X.dtype), nt, device=device)
            ari[r, j] = adjusted_rand_score(full_labels[k], pred)
            _, c = np.unique(lab_r, return_inverse=True)
            codes[j], counts[j] = np.ascontiguousarray(c, dtype=np.int32), int(c.max()) + 1
        ok = [j for j in codes if 2 <= counts[j] <= len(idx) - 1]
        if ok:
            out = _core.silhouette_samples_multi(Xr, [codes[j] for j in ok], [counts[j] for j in ok], nt, device=device)
            for j, (_, score) in zip(ok, out):
                sil[r, j] = float(score)
    return np.nanmean(ari, axis=0), np.nanstd(ari, axis=0), np.nanmean(sil, axis=0), np.nanstd(sil, axis=0)


def _silhouette_1se_choice(ks, sil_mean, sil_sd) -> int:
    """Breiman's 1-SE rule on the resampled silhouette: the smallest k whose
    mean silhouette over subsamples is within one standard deviation (over
    subsamples, at the best k) of the best mean."""
    j_best = int(np.nanargmax(sil_mean))
    floor = sil_mean[j_best] - sil_sd[j_best]
    return int(min(k for k, v in zip(ks, sil_mean) if v >= floor))


def _gap(X, ks, inertias, n_references, n_init, max_iter, tol, seed, nt, device):
    """Gap statistic (Tibshirani, Walther, Hastie 2001), reference (b): uniform
    samples over the bounding box of the data in its principal axes."""
    Xd = np.asarray(X, dtype=np.float64)
    mean = Xd.mean(axis=0)
    _, _, vt = np.linalg.svd(Xd - mean, full_matrices=False)
    Z = (Xd - mean) @ vt.T
    lo, hi = Z.min(axis=0), Z.max(axis=0)
    rng = np.random.default_rng([seed, 0x6A9])
    log_w = np.empty((n_references, len(ks)))
    for b in range(n_references):
        R = np.ascontiguousarray(rng.uniform(lo, hi, size=Z.shape) @ vt + mean, dtype=X.dtype)
        for j, k in enumerate(ks):
            log_w[b, j] = np.log(max(_kmeans_core(R, k, n_init, max_iter, tol, seed, nt, device)[2], 1e-300))
    gap = log_w.mean(axis=0) - np.log(np.maximum(np.asarray(inertias, dtype=np.float64), 1e-300))
    se = log_w.std(axis=0) * np.sqrt(1.0 + 1.0 / n_references)
    return gap, se


def _gap_choice(ks, gap, se) -> int:
    """Tibshirani's 1-SE rule: the smallest k with Gap(k) >= Gap(k') - s(k'),
    k' the next k of the range; the largest k when none qualifies."""
    for j in range(len(ks) - 1):
        if gap[j] >= gap[j + 1] - se[j + 1]:
            return int(ks[j])
    return int(ks[-1])


def _stability_choice(ks, stab, threshold) -> int:
    """The largest k whose mean ARI reaches ``threshold`` (the most detailed
    clustering that resampling reproduces); the most stable k when none does."""
    ok = [k for k, v in zip(ks, stab) if v >= threshold]
    return int(max(ok)) if ok else int(ks[int(np.argmax(stab))])


def k_values(k_range) -> List[int]:
    """The k of ``k_range`` (any iterable of ints), in the given order.

    A 2-tuple ``(a, b)`` with ``b > a + 1`` is refused: it reads as "from a
    to b" (as in other packages) but would try only a and b.
    """
    try:
        ks = [int(k) for k in k_range]
    except TypeError:
        raise TypeError(f"k_range must be an iterable of ints, got {type(k_range).__name__}") from None
    if isinstance(k_range, tuple) and len(ks) == 2 and ks[1] > ks[0] + 1:
        a, b = ks
        raise ValueError(f"k_range={k_range!r} would try only k = {a} and k = {b}: k_range is the set of k to "
                         f"try; give range({a}, {b + 1}) for every k from {a} to {b}, or the list [{a}, {b}] "
                         "for just those two")
    return ks


def select_n_clusters(X, k_range=range(2, 11), *, n_init=10, max_iter=300, tol=1e-4, random_state=None,
                      n_threads=None, sample_size=None, device=None, criteria="silhouette", rule=None,
                      n_resamples=10, resample_fraction=RESAMPLE_FRACTION, stability_threshold=0.9,
                      n_references=10) -> NClustersSelection:
    """K-means for every k in ``k_range``, scored by up to three criteria.

    ``k_range``: the k to try, any iterable of ints (``range(2, 11)``: 2 to
    10); a pair ``(a, b)`` with ``b > a + 1`` is refused, as it reads as a range.

    Every k is clustered as ``KMeans(k, n_init=n_init, random_state=random_state)``
    would (same labels), then the silhouettes of all k are computed in ONE
    blocked pass over the pairwise distances (per-cluster distance sums of all
    labelings accumulated together), instead of one pass per k.
    ``sample_size`` scores a random subset of the samples (the same subset for
    every k, drawn as ``silhouette_score(..., sample_size, random_state)``).
    ``device`` (None: "cpu") runs the K-means distances and the silhouette
    sums there, as in :class:`KMeans` and :func:`~stemroi.metrics.silhouette_score`.

    ``criteria``: "silhouette" (default), "all", or a sequence of
    "silhouette", "stability", "gap" (the silhouette is always computed):

    * silhouette: the mean silhouette; its choice is the maximum.
    * stability: ``n_resamples`` subsamples of ``resample_fraction`` of the
      samples (without replacement) are clustered with the same settings; each
      subsample's centres label every sample, and the adjusted Rand index with
      the full-data labels of the same k is averaged over the subsamples. Its
      choice is the largest k with mean ARI >= ``stability_threshold``.
    * gap: the gap statistic with ``n_references`` uniform references over the
      bounding box of the data in its principal axes (Tibshirani, Walther and
      Hastie 2001, reference (b)), W_k = the K-means inertia; its choice is the
      1-SE rule (the smallest k with Gap(k) >= Gap(k+1) - s(k+1)).

    ``rule`` picks ``best_k``: "silhouette" (default when only the silhouette
    is computed), "stability", "gap", or "silhouette_1se" (default when the
    stability is computed): Breiman's one-standard-error rule on the silhouette
    of the subsample clusterings, i.e. the smallest k whose mean silhouette over
    the subsamples is within one standard deviation (over subsamples, at the
    best k) of the best. It prefers fewer clusters when more do not score
    reliably better; measured on the CdTe and SrTiO3 patch sets in
    docs/clustering.md, where it is the only rule that lands within 1 of the
    class count on both, and on 160 synthetic patch sets, where it lands
    within 1 more often than the plain silhouette (0.54-0.63 against
    0.43-0.53 of the sets) with clusters slightly less pure.
    All K-means runs go through the core with seeds derived from
    ``random_state``: the same random_state gives the same result.
    """
    X = check_array(X, name="X", ndim=2)
    n = X.shape[0]
    ks = k_values(k_range)
    if not ks:
        raise ValueError("k_range is empty; give at least one k >= 2")
    for k in ks:
        if k < 2:
            raise ValueError(f"every k in k_range must be >= 2 for a silhouette score, got {k}")
        if k > n - 1:
            raise ValueError(f"every k in k_range must be <= n_samples - 1 = {n - 1}, got {k}")
    _, n_init, max_iter, tol = _check_common(2, n_init, max_iter, tol)
    crit = _check_criteria(criteria)
    if rule is None:
        rule = "silhouette_1se" if "stability" in crit else "silhouette"
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}, got {rule!r}")
    needs = {"stability": "stability", "gap": "gap", "silhouette_1se": "stability"}.get(rule)
    if needs and needs not in crit:
        raise ValueError(f"rule={rule!r} needs {needs!r} in criteria, got criteria={crit}")
    if "stability" in crit:
        n_resamples = check_positive_int(n_resamples, "n_resamples")
        if isinstance(resample_fraction, bool) or not isinstance(resample_fraction, numbers.Real) \
                or not 0.0 < float(resample_fraction) < 1.0:
            raise ValueError(f"resample_fraction must be a number in (0, 1), got {resample_fraction!r}")
        if isinstance(stability_threshold, bool) or not isinstance(stability_threshold, numbers.Real) \
                or not -1.0 <= float(stability_threshold) <= 1.0:
            raise ValueError(f"stability_threshold must be a number in [-1, 1], got {stability_threshold!r}")
    if "gap" in crit:
        n_references = check_positive_int(n_references, "n_references")
        if n_references < 2:
            raise ValueError(f"n_references must be >= 2 for the gap's standard error, got {n_references}")
    device = check_numeric_device(device)
    seed = check_random_state_seed(random_state)
    nt = check_n_threads(n_threads)
    sample = _sample_indices(n, sample_size, seed) if sample_size is not None else np.empty(0, np.int64)
    res = _core.select_n_clusters(X, ks, n_init, max_iter, tol, seed, nt, sample, device=device)
    scores = np.asarray(res["scores"], dtype=np.float64)
    inertias = np.asarray(res["inertias"], dtype=np.float64)
    labels = {k: lab for k, lab in zip(ks, res["labels"])}
    choices = {"silhouette": int(ks[int(np.argmax(scores))])}
    stab = stab_sd = rs = rs_sd = gap = gap_se = None
    if "stability" in crit:
        stab, stab_sd, rs, rs_sd = _stability(X, ks, labels, n_resamples, float(resample_fraction), n_init,
                                              max_iter, tol, seed, nt, device)
        choices["stability"] = _stability_choice(ks, stab, float(stability_threshold))
        choices["silhouette_1se"] = _silhouette_1se_choice(ks, rs, rs_sd)
    if "gap" in crit:
        gap, gap_se = _gap(X, ks, inertias, n_references, n_init, max_iter, tol, seed, nt, device)
        choices["gap"] = _gap_choice(ks, gap, gap_se)
    best = choices[rule]
    return NClustersSelection(
        k_values=ks,
        scores=scores,
        inertias=inertias,
        labels=labels,
        best_k=int(best),
        centers={k: c for k, c in zip(ks, res["centers"])},
        n_iter={k: int(i) for k, i in zip(ks, res["n_iter"])},
        stability=stab,
        stability_std=stab_sd,
        resampled_scores=rs,
        resampled_scores_std=rs_sd,
        gap=gap,
        gap_se=gap_se,
        choices=choices,
        rule=rule,
    )
