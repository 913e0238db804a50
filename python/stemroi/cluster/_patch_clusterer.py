"""Unsupervised ROI discovery: features -> standardise -> PCA -> K-means with
the number of clusters chosen by the maximum mean silhouette.

The numeric work (PCA, K-means, silhouette, Hungarian matching) is done by
stemroi's own engine (``stemroi.PCA``, ``stemroi.select_n_clusters``,
``stemroi.cluster_accuracy`` ...); this module only wires it together and
adds the evaluation against labels when they exist. The cluster map of a
large image is :func:`stemroi.detection.cluster_map`.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .._validation import check_array, check_positive_int
from ..base import BaseEstimator, ClusterMixin, TransformerMixin
from ._kmeans import _CRITERIA, k_values

__all__ = [
    "PatchClusterer",
    "pca_k_grid",
    "evaluate_clustering",
    "per_class_accuracy",
]


# --------------------------------------------------------------------------- engine
_ALGORITHMS = ("kmeans", "average_linkage")
# the descriptor of PatchClusterer(): with the agreement rule, the best recipe measured
# (docs/clustering.md, "The default")
DEFAULT_FEATURES = "lattice_residual_tukey"


def auto_k_criteria(features, algorithm: str = "kmeans", k_rule=None) -> str:
    """What ``k_criteria="auto"`` means: the rule measured best for the descriptor. The agreement
    rule for the default descriptor with K-means and no ``k_rule`` (docs/clustering.md, "The
    default"); the mean silhouette for any other features, average linkage or an explicit
    ``k_rule``, as before the default changed. The command line resolves ``--k-rule auto`` here too."""
    default = isinstance(features, str) and features == DEFAULT_FEATURES
    return "agreement" if default and algorithm == "kmeans" and k_rule is None else "silhouette"


def _engine():
    """stemroi's numeric engine (PCA, select_n_clusters, KMeans, metrics)."""
    import stemroi

    return stemroi


# --------------------------------------------------------------------------- helpers
def _check_k_range(k_range, n_samples: int) -> List[int]:
    ks = sorted(set(k_values(k_range)))
    if not ks:
        raise ValueError("k_range is empty; give at least one k >= 2")
    if ks[0] < 2:
        raise ValueError(f"every k in k_range must be >= 2 (silhouette needs two clusters), got {ks[0]}")
    if ks[-1] > n_samples - 1:
        raise ValueError(f"every k in k_range must be <= n_samples - 1 = {n_samples - 1}, got {ks[-1]}")
    return ks


def _check_n_components(n_components):
    if n_components is None:
        return None
    if isinstance(n_components, bool):
        raise TypeError(f"n_components must be None, an int >= 1 or a float in (0, 1], got {n_components!r}")
    if isinstance(n_components, numbers.Integral):
        if n_components < 1:
            raise ValueError(f"n_components must be an int >= 1 or a float in (0, 1], got {n_components}")
        return int(n_components)
    if isinstance(n_components, numbers.Real):
        if not 0.0 < float(n_components) <= 1.0:
            raise ValueError(f"n_components as a variance fraction must be in (0, 1], got {n_components}")
        return float(n_components)
    raise TypeError(f"n_components must be None, an int >= 1 or a float in (0, 1], got {type(n_components).__name__}")


#: ``features`` names served by a pretrained network rather than a descriptor
PRETRAINED_FEATURES = ("stem_cnn",)


def _resolve_extractor(features, n_threads=None):
    if isinstance(features, str) and features == "stem_cnn":
        from ..models._pretrained import StemCNNFeatures

        return StemCNNFeatures("stem", n_threads=n_threads)
    if isinstance(features, str):
        from ..features.descriptors import make_descriptor

        return make_descriptor(features)
    if hasattr(features, "transform") and callable(features.transform):
        return features
    raise TypeError(f"features must be a descriptor name, 'precomputed' or an object with transform(), "
                    f"got {type(features).__name__}")


def _further_seeds(random_state, n: int) -> List[int]:
    """``n`` K-means seeds after the one ``random_state`` gives: ``r + 1 .. r + n`` for an int
    ``r`` (so a fit is reproducible from ``r`` alone), else drawn from it."""
    from .._validation import check_random_state_seed

    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return [(int(random_state) + i) % 2**63 for i in range(1, n + 1)]
    return [check_random_state_seed(random_state) for _ in range(n)]


def _block_weights(extractor, n_features: int) -> Optional[np.ndarray]:
    """Per-column weights 1/sqrt(block size) from ``extractor.feature_groups`` (None if absent/inconsistent)."""
    groups = getattr(extractor, "feature_groups", None)
    if not groups or len(groups) < 2:
        return None
    sizes = [int(s) for _, s in groups]
    if sum(sizes) != n_features or min(sizes) < 1:
        return None
    return np.concatenate([np.full(s, 1.0 / np.sqrt(s)) for s in sizes])


class PatchClusterer(ClusterMixin, TransformerMixin, BaseEstimator):
    """Cluster image patches without labels.

    The default, ``PatchClusterer()``, is the best recipe measured for
    sorting patches into kinds: the ``"lattice_residual_tukey"`` descriptor,
    K-means, and k chosen by the agreement of two descriptors
    (``k_criteria="auto"``, below). Label-free on the real CdTe patches it
    picks k = 7 (7 classes) with cluster accuracy 0.979, on SrTiO3 k = 4
    (4 classes) with 0.944; docs/clustering.md, "The default". The
    published recipe (VGG16 features, the mean silhouette) is
    ``PatchClusterer(stemroi.VGG16Features(...))``.

    Pipeline: ``features`` (a descriptor name from :mod:`stemroi.features`
    - ``"lattice_residual_tukey"`` (default: the lattice-residual descriptor
    with Tukey windows in its spectra, flat over the middle half, so a defect
    or an interface along the patch border counts), ``"lattice_residual"``
    (the same with Hann windows; the default before 2026-12-07, and the
    descriptor of ``stemroi cluster IMAGE``'s maps), ``"lattice_residual_invariant"`` (that,
    with rotation-invariant orientation bins, for lattices seen at
    several angles), ``"lattice_residual_invariant_local"`` (that, with the
    residual's spectrum windowed on the defect rather than on the patch
    centre, for defects anywhere in the patch),
    ``"polar_fft"``, ``"fft"``,
    ``"log_fft"`` -, ``"stem_cnn"``: frozen features (256) of the ``small_cnn``
    pretrained on synthetic STEM and shipped with the package
    (:class:`stemroi.models._pretrained.StemCNNFeatures`, weights ``"small_cnn-stem"``),
    any object with ``transform(patches) -> (n, d)`` such as
    ``stemroi.VGG16Features``, or ``"precomputed"`` to pass feature rows
    directly) -> per-feature standardisation (``standardize=True``; when the
    extractor declares ``feature_groups`` every block is further scaled by
    1/sqrt(block size) so each block carries the same total variance) ->
    ``stemroi.PCA(n_components)`` (int, variance fraction, or None to skip)
    -> ``stemroi.select_n_clusters`` over ``k_range`` (the k to try, any
    iterable of ints such as ``range(2, 11)`` or ``[4, 7]``; a pair ``(a, b)``
    with a gap is refused, as it reads as a range); the k with the largest
    mean silhouette wins, except with the default descriptor (``k_criteria="auto"``
    is ``"agreement"`` for ``features="lattice_residual_tukey"`` with K-means and
    no ``k_rule``, ``"silhouette"`` otherwise; ``k_criteria`` / ``k_rule`` are passed to
    ``select_n_clusters`` as ``criteria`` / ``rule``: ``k_criteria="all",
    k_rule="silhouette_1se"`` adds the stability and gap criteria and picks k
    by the one-standard-error rule on the resampled silhouette;
    ``k_criteria="stability"`` is enough for that rule). Judged on 160
    synthetic patch sets with known classes, the 1-SE rule is the closer
    estimate of the number of classes and the silhouette's extra clusters are
    purer (docs/clustering.md, "The rules judged on synthetic sets").
    ``algorithm="average_linkage"`` clusters the same embedding by average
    linkage instead of K-means (:func:`stemroi.cluster.average_linkage`: one
    tree, cut at every k, the mean silhouette choosing k; deterministic, no
    ``n_init`` or seed; at most 16384 training patches); ``predict`` then
    assigns the nearest cluster mean. On ``"lattice_residual"``, label-free on
    the real CdTe patches it picks k = 7 with cluster accuracy 0.971 (K-means
    and the silhouette: k = 9, 0.904); on SrTiO3 k = 5, 0.855 (K-means: k = 5,
    0.865); on the synthetic sets it does no better than K-means and finds k
    less often - docs/clustering.md.
    ``k_criteria="agreement"`` chooses k by how well two descriptors agree
    instead: the patches are also clustered with ``agreement_features``
    (same pipeline, K-means), and k is the largest k whose two clusterings
    agree with an adjusted Rand index of at least ``agreement_threshold``
    (0.9), or, if none does, the k where they agree most; the index is the
    mean over ``agreement_n_seeds`` (3) K-means seeds, ``random_state`` and
    the next ones; ``labels_`` stay those of ``features`` (first seed).
    Kinds of defect show in both descriptors, while clusters that follow
    where a defect sits in its crop or which region a crop came from show
    in one. If that k is 2 (the two agree only on bulk against the rest,
    which says nothing about the number of kinds), the mean silhouette of
    ``features`` chooses k instead: on planted point defects, whose kinds the
    descriptors sort differently, k = 3 with 0.97 of the defect patches
    outside the bulk cluster, where k = 2 left 0.29 of them in it.
    ``k_selected_by_`` says which rule chose. On 160 synthetic sets it finds
    k within 1 of the class count on 0.70 of them (the silhouette on
    ``"lattice_residual"``: 0.48), with a higher cluster accuracy
    (docs/clustering.md). On CdTe it picks k = 9 (0.90) with 1 of
    ``random_state`` 0-4 (the one whose three seeds mostly pick k = 9).

    Fitted attributes: ``extractor_``, ``features_`` (raw feature rows),
    ``patch_shape_`` ((h, w) of the training patches; None with precomputed features), ``mean_``, ``scale_``, ``pca_``, ``embedding_`` (what was clustered),
    ``selection_`` (the engine's ``NClustersSelection``), ``novelty_`` (a
    :class:`stemroi.detection.FeatureNovelty` on the embedding: the cluster
    map marks tiles unlike the training patches as ``unfamiliar``),
    ``silhouette_scores_`` ({k: score}), ``inertias_``, ``n_clusters_``,
    ``labels_``, ``cluster_centers_``, ``labels_per_k_`` ({k: labels}),
    ``linkage_`` (scipy's linkage matrix of the embedding with average linkage;
    None with K-means), ``k_selected_by_`` (the rule that chose
    ``n_clusters_``: ``"agreement"``, or the ``select_n_clusters`` rule such as
    ``"silhouette"``), ``agreement_scores_`` ({k: adjusted Rand index} with
    the agreement rule, else None), ``agreement_seed_scores_`` ({k:
    the index for each seed}, else None) and ``agreement_clusterer_`` (the
    fitted clusterer of ``agreement_features``, else None).
    """

    def __init__(self, features=DEFAULT_FEATURES, *, standardize: bool = True, n_components=0.95,
                 k_range=range(2, 11), n_init: int = 10, random_state=None, n_threads=None,
                 k_criteria="auto", k_rule=None, algorithm="kmeans",
                 agreement_features="lattice_residual_invariant_local", agreement_threshold=0.9,
                 agreement_n_seeds=3):
        self.features = features
        self.standardize = standardize
        self.n_components = n_components
        self.k_range = k_range
        self.n_init = n_init
        self.random_state = random_state
        self.n_threads = n_threads
        self.k_criteria = k_criteria
        self.k_rule = k_rule
        self.algorithm = algorithm
        self.agreement_features = agreement_features
        self.agreement_threshold = agreement_threshold
        self.agreement_n_seeds = agreement_n_seeds

    _fitted_attribute = "labels_"

    # -- features
    def _raw_features(self, X, extractor, patch_shape=None) -> np.ndarray:
        if getattr(extractor, "precomputed", False):
            return check_array(extractor.transform(X), name="X (precomputed features)", ndim=2)
        X = check_array(X, name="patches", ndim=3, dtype=(np.float32, np.float64))
        if patch_shape is not None and X.shape[1:] != tuple(patch_shape):
            # the descriptors give the same length at any size but other values
            raise ValueError(f"patches are {X.shape[1]}x{X.shape[2]}, this clusterer was fitted on "
                             f"{patch_shape[0]}x{patch_shape[1]} patches: their features would not compare; cut "
                             f"the new patches at {patch_shape[0]}x{patch_shape[1]} (cluster_map does by default) "
                             "or refit")
        F = np.asarray(extractor.transform(X))
        if F.ndim != 2 or F.shape[0] != X.shape[0]:
            raise ValueError(f"features: the extractor returned shape {F.shape}, expected ({X.shape[0]}, d)")
        return check_array(F, name="features", ndim=2)

    def _scale(self, F: np.ndarray) -> np.ndarray:
        return (F - self.mean_) / self.scale_

    def fit(self, X, y=None, *, pixel_size=None):
        """Fit on ``X``: patches ``(n, h, w)`` or, with ``features='precomputed'``, rows ``(n, d)``.

        ``pixel_size``: the patches' pixel size, ``(value, unit)`` or a
        :class:`stemroi.io.Calibration`, recorded as ``pixel_size_``
        (:func:`stemroi.detection.cluster_map` resamples images of another pixel size)."""
        from ..preprocessing._resample import recorded_pixel_size

        pixel_size_ = recorded_pixel_size(pixel_size)
        eng = _engine()
        if self.algorithm not in _ALGORITHMS:
            raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {self.algorithm!r}")
        if isinstance(self.k_criteria, str) and self.k_criteria not in (*_CRITERIA, "all", "agreement", "auto"):
            raise ValueError(f"unknown k_criteria {self.k_criteria!r}; expected one of "
                             f"{(*_CRITERIA, 'all', 'agreement', 'auto')} or a sequence of the first three")
        k_criteria = self._resolved_k_criteria()
        by_agreement = isinstance(k_criteria, str) and k_criteria == "agreement"
        if by_agreement:
            self._check_agreement_params()
        only_silhouette = k_criteria == "silhouette" and self.k_rule in (None, "silhouette")
        if self.algorithm == "average_linkage" and not only_silhouette:
            raise ValueError("algorithm='average_linkage' chooses k by the mean silhouette only (stability and gap "
                             f"resample K-means); got k_criteria={self.k_criteria!r}, k_rule={self.k_rule!r}")
        extractor = _resolve_extractor(self.features, self.n_threads)
        n_components = _check_n_components(self.n_components)
        n_init = check_positive_int(self.n_init, "n_init")
        if hasattr(extractor, "fit") and not getattr(extractor, "precomputed", False):
            extractor.fit(check_array(X, name="patches", ndim=3, dtype=(np.float32, np.float64)))
        F = self._raw_features(X, extractor).astype(np.float64)
        n, d = F.shape
        ks = _check_k_range(self.k_range, n)
        if n < 3:
            raise ValueError(f"at least 3 samples are needed to cluster, got {n}")
        if not np.any(F != F[0]):
            # K-means would find one cluster and average linkage would split off an arbitrary row
            raise ValueError(f"the features of the {n} samples are all identical (blank or constant input?): "
                             "there is nothing to cluster; expected patches whose content varies")
        self.extractor_ = extractor
        self.features_ = F
        self.mean_ = F.mean(axis=0)
        if self.standardize:
            sd = F.std(axis=0)
            scale = np.where(sd > 0, sd, 1.0)
            w = _block_weights(extractor, d)
            self.scale_ = scale / w if w is not None else scale
        else:
            self.scale_ = np.ones(d)
        Z = self._scale(F)
        if n_components is not None:
            if isinstance(n_components, int) and n_components > min(n, d):
                raise ValueError(f"n_components must be <= min(n_samples, n_features) = {min(n, d)}, got {n_components}")
            self.pca_ = eng.PCA(n_components=n_components, random_state=self.random_state,
                                n_threads=self.n_threads).fit(Z)
            Z = self.pca_.transform(Z)
        else:
            self.pca_ = None
        Z = np.ascontiguousarray(Z, dtype=np.float64)
        if self.algorithm == "average_linkage":
            from ._linkage import linkage_selection

            sel, self.linkage_ = linkage_selection(Z, ks, self.n_threads)
        else:
            self.linkage_ = None  # a refit with K-means keeps no tree of an earlier fit
            sel = eng.select_n_clusters(Z, ks, n_init=n_init, random_state=self.random_state,
                                        n_threads=self.n_threads,
                                        criteria="silhouette" if by_agreement else k_criteria,
                                        rule=None if by_agreement else self.k_rule)
        self.embedding_ = Z
        self.selection_ = sel
        self.silhouette_scores_ = {int(k): float(s) for k, s in zip(sel.k_values, sel.scores)}
        self.inertias_ = {int(k): float(v) for k, v in zip(sel.k_values, sel.inertias)}
        self.labels_per_k_ = {int(k): np.asarray(v, dtype=np.int64) for k, v in sel.labels.items()}
        self.n_clusters_ = int(sel.best_k)
        self.k_selected_by_ = str(sel.rule)
        self.agreement_scores_ = None
        self.agreement_seed_scores_ = None
        self.agreement_clusterer_ = None
        if by_agreement:
            self.n_clusters_ = self._choose_k_by_agreement(X, ks, n_init)
        self.labels_ = self.labels_per_k_[self.n_clusters_]
        centers = getattr(sel, "centers", None) or {}
        if self.n_clusters_ in centers:
            self.cluster_centers_ = np.asarray(centers[self.n_clusters_], dtype=np.float64)
        else:  # centres as the means of the chosen labelling
            self.cluster_centers_ = np.stack([Z[self.labels_ == c].mean(axis=0) for c in range(self.n_clusters_)])
        self.n_features_in_ = d
        # transform and cluster_map take patches of this size only
        self.patch_shape_ = None if getattr(extractor, "precomputed", False) else tuple(int(v) for v in np.shape(X)[1:3])
        self.pixel_size_ = pixel_size_
        # unfamiliar-input score on the clustered embedding: Mahalanobis distance,
        # threshold at the 99th percentile of held-out training rows
        from ..detection._novelty import FeatureNovelty

        self.novelty_ = FeatureNovelty(random_state=self.random_state).fit(Z) if len(Z) >= 4 else None
        return self

    def _resolved_k_criteria(self):
        if isinstance(self.k_criteria, str) and self.k_criteria == "auto":
            return auto_k_criteria(self.features, self.algorithm, self.k_rule)
        return self.k_criteria

    def _check_agreement_params(self) -> None:
        if self.algorithm != "kmeans":
            raise ValueError("k_criteria='agreement' compares two K-means clusterings; got "
                             f"algorithm={self.algorithm!r}, expected 'kmeans'")
        if self.k_rule not in (None, "agreement"):
            raise ValueError(f"k_criteria='agreement' chooses k itself; got k_rule={self.k_rule!r}, expected None")
        for name, value in (("features", self.features), ("agreement_features", self.agreement_features)):
            if isinstance(value, str) and value == "precomputed":
                raise ValueError(f"k_criteria='agreement' describes the patches a second way, so it needs patches; "
                                 f"got {name}='precomputed'")
        if isinstance(self.features, str) and self.features == self.agreement_features:
            raise ValueError(f"agreement_features={self.agreement_features!r} is the clustered descriptor itself: "
                             "two identical views agree at every k; expected another descriptor")
        t = self.agreement_threshold
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0.0 < float(t) <= 1.0:
            raise ValueError(f"agreement_threshold must be a number in (0, 1], got {t!r}")
        check_positive_int(self.agreement_n_seeds, "agreement_n_seeds")

    def _choose_k_by_agreement(self, X, ks: List[int], n_init: int) -> int:
        """The largest k whose K-means clusterings of the two descriptors agree with an adjusted
        Rand index >= ``agreement_threshold``; if none does, the k where they agree most.
        Kinds of defect show in both descriptors; clusters that follow where a defect sits
        in its crop, or which region a crop was cut from, show in one. The index is averaged over
        ``agreement_n_seeds`` K-means seeds (both embeddings clustered again with each), because
        one seed's local optimum can move the best agreement to another k."""
        from ..metrics import adjusted_rand_score

        other = PatchClusterer(self.agreement_features, standardize=self.standardize,
                               n_components=self.n_components, k_range=ks, n_init=n_init,
                               random_state=self.random_state, n_threads=self.n_threads).fit(X)
        runs = [(self.labels_per_k_, other.labels_per_k_)]
        KMeans = _engine().KMeans  # labels only: no silhouette sweep for the further seeds
        for seed in _further_seeds(self.random_state, int(self.agreement_n_seeds) - 1):
            runs.append(tuple({k: KMeans(k, n_init=n_init, random_state=seed, n_threads=self.n_threads).fit(Z).labels_
                               for k in ks} for Z in (self.embedding_, other.embedding_)))
        per_seed = {k: np.array([float(adjusted_rand_score(a[k], b[k])) for a, b in runs]) for k in ks}
        scores = {k: float(v.mean()) for k, v in per_seed.items()}
        self.agreement_clusterer_ = other
        self.agreement_seed_scores_ = per_seed
        self.agreement_scores_ = scores
        agreeing = [k for k in ks if scores[k] >= float(self.agreement_threshold)]
        k = max(agreeing) if agreeing else max(ks, key=lambda k: (scores[k], -k))  # ties: the smaller k
        if k == 2:
            # two views that agree only on two clusters (bulk against the rest) say nothing about the
            # number of kinds: the clustered descriptor's own silhouette decides
            self.k_selected_by_ = "silhouette"
            return int(self.selection_.best_k)
        self.k_selected_by_ = "agreement"
        return k

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).labels_

    def transform(self, X) -> np.ndarray:
        """The embedding (standardised, PCA-reduced features) of new samples."""
        self._check_fitted()
        F = self._raw_features(X, self.extractor_, getattr(self, "patch_shape_", None)).astype(np.float64)
        if F.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {F.shape[1]} features, the clusterer was fitted with {self.n_features_in_}")
        Z = self._scale(F)
        if self.pca_ is not None:
            Z = self.pca_.transform(Z)
        return np.asarray(Z, dtype=np.float64)

    def _distances(self, Z: np.ndarray) -> np.ndarray:
        """Euclidean distances (n, k) to the chosen centres: the core's K-means distances (``KMeans.transform``)."""
        from .._lib import _core
        from .._validation import check_n_threads

        return _core.kmeans_transform(np.ascontiguousarray(Z, dtype=np.float64),
                                      np.ascontiguousarray(self.cluster_centers_, dtype=np.float64),
                                      check_n_threads(self.n_threads))

    def predict(self, X) -> np.ndarray:
        """Nearest chosen-k cluster centre of each new sample."""
        return self._distances(self.transform(X)).argmin(axis=1).astype(np.int64)

    def labels_for(self, k: int) -> np.ndarray:
        """The training labels of the clustering with ``k`` clusters (any k of ``k_range``)."""
        self._check_fitted()
        if int(k) not in self.labels_per_k_:
            raise ValueError(f"k={k} was not in k_range {sorted(self.labels_per_k_)}")
        return self.labels_per_k_[int(k)]

    # -- cluster map of a large image
    def cluster_map(self, image, patch: Optional[int] = None, stride: Optional[int] = None, *, pixel_size=None,
                    roi: str = "score", roi_threshold: float = 2.0, edge: str = "shift"):
        """:func:`stemroi.detection.cluster_map` of ``image``: an ROIResult with
        one row per tile (nearest cluster), ``scores`` (distance to the image's
        median tile embedding), ROI flags by ``roi`` and ``maps["cluster"]``.
        ``patch`` defaults to the side of the training patches, ``stride`` to ``patch``;
        ``edge="shift"`` covers a border remainder with tiles flush with the border."""
        from ..detection._cluster_map import cluster_map

        return cluster_map(image, self, patch, stride, pixel_size=pixel_size, roi=roi, roi_threshold=roi_threshold,
                           edge=edge)


# --------------------------------------------------------------------------- grid
def pca_k_grid(features, n_components: Sequence = (2, 3, 5, 10, 20, 50), k_range=range(2, 11), *,
               standardize: bool = True, n_init: int = 10, random_state=None, n_threads=None,
               feature_groups=None) -> List[Dict[str, Any]]:
    """The study's grid: silhouette-chosen k for every PCA dimension.

    ``features`` are rows ``(n, d)`` (``feature_groups`` as a descriptor's, for
    the block weighting). Returns one dict per PCA setting ``{n_components,
    n_dims, best_k, silhouette, scores, labels}`` sorted by decreasing
    silhouette (the first 5 rows are the study's top-5 table).
    """
    from ..features.descriptors import Precomputed

    F = check_array(features, name="features", ndim=2)
    rows = []
    for nc in n_components:
        cl = PatchClusterer(Precomputed(feature_groups=feature_groups), standardize=standardize, n_components=nc,
                            k_range=k_range, n_init=n_init, random_state=random_state, n_threads=n_threads).fit(F)
        rows.append({"n_components": nc, "n_dims": int(cl.embedding_.shape[1]), "best_k": cl.n_clusters_,
                     "silhouette": cl.silhouette_scores_[cl.n_clusters_], "scores": cl.silhouette_scores_,
                     "labels": cl.labels_})
    rows.sort(key=lambda r: -r["silhouette"])
    return rows


# --------------------------------------------------------------------------- evaluation
def per_class_accuracy(y_true, labels) -> Dict[Any, float]:
    """Fraction of each class that falls into its Hungarian-matched cluster (0 when unmatched)."""
    from ..metrics import _cluster as eng

    conf = eng.cluster_confusion_matrix(y_true, labels)
    m = np.asarray(conf.matrix)
    classes = list(np.asarray(conf.classes).tolist())
    clusters = list(np.asarray(conf.clusters).tolist())
    matched_cluster = {cls: cl for cl, cls in conf.mapping.items()}
    out = {}
    for i, cls in enumerate(classes):
        cl = matched_cluster.get(cls)
        out[cls] = float(m[i, clusters.index(cl)] / m[i].sum()) if cl is not None else 0.0
    return out


def evaluate_clustering(y_true, labels, class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Cluster accuracy (Hungarian), its class-balanced variant, purity (each cluster to its
    majority class), per-class accuracy and the confusion table."""
    from ..metrics import _cluster as eng

    y = np.asarray(y_true)
    lab = np.asarray(labels)
    if y.shape != lab.shape or y.ndim != 1:
        raise ValueError(f"y_true and labels must be 1-D of the same length, got shapes {y.shape} and {lab.shape}")
    conf = eng.cluster_confusion_matrix(y, lab)
    per = per_class_accuracy(y, lab)
    if class_names is not None:
        per = {class_names[int(k)] if isinstance(k, (int, np.integer)) and 0 <= int(k) < len(class_names) else k: v
               for k, v in per.items()}
    return {
        "accuracy": eng._accuracy_of(conf),
        "weighted_accuracy": eng._accuracy_of(conf, sample_weighted=True),
        "purity": eng._purity_of(conf),
        "per_class": per,
        "confusion": np.asarray(conf.matrix),
        "n_clusters": int(len(np.unique(lab))),
    }
