"""Unfamiliar-input scores: is a tile's feature vector like the training data?

A softmax classifier stays confident on inputs unlike anything it was trained
on (another material, another lattice, noise, an empty frame), so the
low-confidence "unknown" rule cannot catch them. :class:`FeatureNovelty` fits
a distance to the training features and a threshold calibrated on held-out
in-distribution features, so that a stated share (``quantile``, 0.99 by
default) of in-distribution tiles stays below it; tiles above it are
*unfamiliar*. Every detector stores one fitted on its own features
(``novelty_``) and reports ``ROIResult.unfamiliar``.

Scores (``method``):

``"mahalanobis"`` (default)
    Features are centred and scaled per column, then the Mahalanobis
    distance under a Ledoit-Wolf shrunk covariance (the eigenbasis of the
    shrunk covariance is a PCA whitening whose small eigenvalues are lifted
    towards the mean one, so directions the training data never spanned
    are not divided by ~0). Needs only the mean, scale and eigenbasis.
``"knn"``
    Mean Euclidean distance of the standardised features to their
    ``n_neighbors`` nearest training rows (kept in ``reference_``).

The threshold is ``quantile`` of scores of rows the score was not fitted on:
given ``calibration=`` rows, or out-of-fold scores of every training row
(cross-fitting over ``round(1 / calibration_fraction)`` folds, whole
``groups`` per fold when given, so shifted crops of one region stay on one
side); every training row then counts towards the threshold, which keeps a
99th percentile stable on a few hundred rows.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .._validation import check_array, check_positive_int, check_random_state_seed
from ..base import BaseEstimator

__all__ = ["FeatureNovelty"]

_METHODS = ("mahalanobis", "knn")


def _ledoit_wolf(Z: np.ndarray) -> Tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance of centred rows ``Z`` (n, d) and the shrinkage
    (scikit-learn's ``ledoit_wolf`` estimate, assume_centered=True)."""
    n, d = Z.shape
    emp = Z.T @ Z / n
    mu = np.trace(emp) / d
    Z2 = Z ** 2
    beta_ = float(np.sum(Z2.T @ Z2)) / n
    delta_ = float(np.sum(emp ** 2))
    beta = (beta_ / n - delta_ / n) / d
    delta = (delta_ - 2.0 * mu * np.trace(emp) + d * mu ** 2) / d
    beta = min(beta, delta)
    shrink = 0.0 if beta == 0 else beta / delta
    cov = (1.0 - shrink) * emp
    cov.flat[:: d + 1] += shrink * mu
    return cov, float(shrink)


class FeatureNovelty(BaseEstimator):
    """Distance of feature rows to the training distribution, with a calibrated threshold.

    Parameters
    ----------
    method : {"mahalanobis", "knn"}
        The score (see the module docstring).
    quantile : float in (0, 1)
        In-distribution rate: the share of held-out in-distribution rows
        below the threshold (0.99: about 1 % of in-distribution tiles flagged).
    shrinkage : "auto" or float in [0, 1]
        Covariance shrinkage of "mahalanobis": "auto" is Ledoit-Wolf's.
    n_neighbors : int
        Neighbours of "knn".
    calibration_fraction : float in (0, 1)
        Share of the rows in each fold of the cross-fitted calibration
        (``round(1 / calibration_fraction)`` folds) when ``fit`` gets no
        ``calibration`` rows.
    random_state : int, optional
        Seed of the fold draw.


    Attributes
    ----------
    threshold_ : float
        Scores above it are unfamiliar.
    calibration_scores_ : ndarray
        The held-out scores the threshold is the ``quantile`` of.
    mean_, scale_ : ndarray
        Per-column standardisation.
    components_, variances_ : ndarray or None
        Eigenbasis and eigenvalues of the shrunk covariance ("mahalanobis").
    shrinkage_ : float or None
        The shrinkage used ("mahalanobis").
    reference_ : ndarray or None
        Standardised training rows ("knn").
    n_fit_, n_calibration_, n_features_in_ : int
        Rows the score was fitted on, calibration scores, features.
    """

    def __init__(self, method: str = "mahalanobis", *, quantile: float = 0.99, shrinkage="auto",
                 n_neighbors: int = 5, calibration_fraction: float = 0.2, random_state=None):
        self.method = method
        self.quantile = quantile
        self.shrinkage = shrinkage
        self.n_neighbors = n_neighbors
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    _fitted_attribute = "threshold_"

    def _check_params(self):
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        q = self.quantile
        if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0.0 < float(q) < 1.0:
            raise ValueError(f"quantile must be a number in (0, 1), got {q!r}")
        s = self.shrinkage
        if not (s == "auto" if isinstance(s, str) else
                (isinstance(s, numbers.Real) and not isinstance(s, bool) and 0.0 <= float(s) <= 1.0)):
            raise ValueError(f"shrinkage must be 'auto' or a number in [0, 1], got {s!r}")
        check_positive_int(self.n_neighbors, "n_neighbors")
        f = self.calibration_fraction
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 < float(f) < 1.0:
            raise ValueError(f"calibration_fraction must be a number in (0, 1), got {f!r}")

    # ------------------------------------------------------------------ fit
    def _folds(self, n: int, groups, seed: int) -> np.ndarray:
        """Fold id of every row for the cross-fitted calibration (whole groups when given)."""
        rng = np.random.default_rng(seed)
        k = max(2, min(int(round(1.0 / float(self.calibration_fraction))), n // 2))
        if groups is None:
            folds = np.empty(n, np.int64)
            folds[rng.permutation(n)] = np.arange(n) % k
            return folds
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups: expected shape ({n},), got {g.shape}")
        uniq, inv = np.unique(g, return_inverse=True)
        if len(uniq) < 2:
            raise ValueError(f"groups: at least 2 groups are needed to hold some out, got {len(uniq)}")
        k = min(k, len(uniq))
        sizes = np.bincount(inv)
        load = np.zeros(k)
        fold_of = np.empty(len(uniq), np.int64)
        for j in rng.permutation(len(uniq)):  # each group to the emptiest fold, in random order
            fold_of[j] = int(np.argmin(load))
            load[fold_of[j]] += sizes[j]
        return fold_of[inv.reshape(-1)]

    def _fit_core(self, X: np.ndarray) -> None:
        """Set the score's fitted state (not the threshold) from rows ``X``."""
        n, d = X.shape
        self.n_features_in_ = d
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 1e-12 * max(1.0, float(np.abs(self.mean_).max())), sd, 1.0)
        Z = (X - self.mean_) / self.scale_
        if self.method == "mahalanobis":
            if self.shrinkage == "auto":
                cov, shrink = _ledoit_wolf(Z)
            else:
                shrink = float(self.shrinkage)
                emp = Z.T @ Z / n
                cov = (1.0 - shrink) * emp
                cov.flat[:: d + 1] += shrink * np.trace(emp) / d
            w, V = np.linalg.eigh(cov)
            floor = max(float(w.max()), 1e-12) * 1e-9
            self.variances_ = np.maximum(w, floor)[::-1].copy()
            self.components_ = np.ascontiguousarray(V[:, ::-1].T)
            self.shrinkage_ = shrink
            self.reference_ = None
        else:
            if check_positive_int(self.n_neighbors, "n_neighbors") > n:
                raise ValueError(f"n_neighbors must be <= the {n} rows the score is fitted on, got {self.n_neighbors}")
            self.reference_ = np.ascontiguousarray(Z)
            self.components_ = self.variances_ = None
            self.shrinkage_ = None
        self.n_fit_ = int(n)

    def fit(self, X, y=None, *, calibration=None, groups=None) -> "FeatureNovelty":
        """Fit the score on feature rows ``X`` (n, d) and set the threshold.

        ``calibration``: in-distribution rows (m, d) not in ``X`` (e.g. a
        validation split); the threshold is ``quantile`` of their scores.
        Otherwise the threshold is cross-fitted: the rows are cut into
        ``round(1 / calibration_fraction)`` folds (whole ``groups`` when given,
        so shifted crops of one region stay in one fold), each fold is scored
        by a fit on the others, and ``quantile`` of these out-of-fold scores
        (every row held out once) is the threshold; the score itself is fitted
        on every row."""
        self._check_params()
        X = check_array(X, name="X", ndim=2, min_samples=2).astype(np.float64)
        seed = check_random_state_seed(self.random_state)
        if calibration is None:
            if len(X) < 4:
                raise ValueError(f"X: at least 4 rows are needed to hold some out for calibration, got {len(X)}")
            folds = self._folds(len(X), groups, seed)
            scores = np.empty(len(X))
            for k in np.unique(folds):
                held = folds == k
                part = FeatureNovelty(**self.get_params())
                part._fit_core(X[~held])
                scores[held] = part._score(X[held])
        else:
            if groups is not None:
                raise ValueError("groups: only used for the cross-fitted calibration; pass groups=None with calibration=")
            C = check_array(calibration, name="calibration", ndim=2).astype(np.float64)
            if C.shape[1] != X.shape[1]:
                raise ValueError(f"calibration: {C.shape[1]} features, X has {X.shape[1]}")
        self._fit_core(X)
        if calibration is not None:
            scores = self._score(C)
        self.n_calibration_ = int(len(scores))
        self.calibration_scores_ = scores
        self.threshold_ = float(np.quantile(self.calibration_scores_, float(self.quantile)))
        return self

    # --------------------------------------------------------------- score
    def _score(self, X: np.ndarray) -> np.ndarray:
        Z = (X - self.mean_) / self.scale_
        if self.method == "mahalanobis":
            P = Z @ self.components_.T
            return np.sqrt(np.sum(P * P / self.variances_, axis=1))
        R = self.reference_
        k = int(self.n_neighbors)
        rr = np.sum(R * R, axis=1)
        out = np.empty(len(Z))
        for lo in range(0, len(Z), 512):
            z = Z[lo:lo + 512]
            d2 = np.maximum(np.sum(z * z, axis=1)[:, None] + rr[None, :] - 2.0 * z @ R.T, 0.0)
            part = np.partition(d2, k - 1, axis=1)[:, :k] if k < d2.shape[1] else d2
            out[lo:lo + 512] = np.sqrt(part).mean(axis=1)
        return out

    def score(self, X) -> np.ndarray:
        """Distance of each row to the training distribution (n,); larger is less familiar."""
        self._check_fitted()
        X = check_array(X, name="X", ndim=2, finite=False).astype(np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, FeatureNovelty was fitted with {self.n_features_in_}")
        s = self._score(np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0))
        # non-finite features are unlike anything seen in training
        s[~np.isfinite(X).all(axis=1)] = np.inf
        return s

    def flag(self, X) -> np.ndarray:
        """True where a row is unfamiliar (score above ``threshold_``)."""
        return self.score(X) > self.threshold_

    def predict(self, X) -> np.ndarray:
        """Alias of :meth:`flag`."""
        return self.flag(X)

    # --------------------------------------------------------- persistence
    def summary(self) -> Dict[str, Any]:
        """JSON-ready description for model cards and result metadata."""
        self._check_fitted()
        return {"method": self.method, "quantile": float(self.quantile), "threshold": float(self.threshold_),
                "in_distribution_rate": float(self.quantile), "n_features": int(self.n_features_in_),
                "n_fit": self.n_fit_, "n_calibration": self.n_calibration_,
                "shrinkage": None if self.shrinkage_ is None else float(self.shrinkage_)}

    def to_state(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        """``(arrays, config)``: float64 arrays and JSON-ready parameters that
        :meth:`from_state` turns back into this fitted object (for model files)."""
        self._check_fitted()
        arrays = {"mean": self.mean_, "scale": self.scale_, "calibration_scores": self.calibration_scores_}
        if self.method == "mahalanobis":
            arrays.update(components=self.components_, variances=self.variances_)
        else:
            arrays["reference"] = self.reference_
        params = self.get_params()
        params["random_state"] = params["random_state"] if isinstance(params["random_state"], (int, type(None))) else None
        config = {"params": params, "threshold": float(self.threshold_), "n_fit": self.n_fit_,
                  "n_calibration": self.n_calibration_, "shrinkage": self.shrinkage_}
        return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, config

    @classmethod
    def from_state(cls, arrays, config) -> "FeatureNovelty":
        """The fitted object written by :meth:`to_state` (ValueError on inconsistent state)."""
        try:
            self = cls(**dict(config["params"]))
            self._check_params()
            self.mean_ = np.asarray(arrays["mean"], np.float64).reshape(-1)
            d = len(self.mean_)
            self.scale_ = np.asarray(arrays["scale"], np.float64).reshape(d)
            self.calibration_scores_ = np.asarray(arrays["calibration_scores"], np.float64).reshape(-1)
            if self.method == "mahalanobis":
                self.components_ = np.asarray(arrays["components"], np.float64).reshape(d, d)
                self.variances_ = np.asarray(arrays["variances"], np.float64).reshape(d)
                self.reference_ = None
            else:
                self.reference_ = np.asarray(arrays["reference"], np.float64).reshape(-1, d)
                self.components_ = self.variances_ = None
            self.threshold_ = float(config["threshold"])
            self.n_fit_ = int(config["n_fit"])
            self.n_calibration_ = int(config["n_calibration"])
            self.shrinkage_ = None if config.get("shrinkage") is None else float(config["shrinkage"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"FeatureNovelty state is incomplete or malformed ({exc!r})") from None
        self.n_features_in_ = d
        return self

    def to_json_state(self) -> Dict[str, Any]:
        """:meth:`to_state` as one JSON-ready dict (arrays as nested lists; for
        small feature spaces such as a CVAE's latent means)."""
        arrays, config = self.to_state()
        return {"config": config, "arrays": {k: v.tolist() for k, v in arrays.items()}}

    @classmethod
    def from_json_state(cls, doc) -> "FeatureNovelty":
        """The inverse of :meth:`to_json_state`."""
        if not isinstance(doc, dict) or "config" not in doc or "arrays" not in doc:
            raise ValueError("FeatureNovelty JSON state must be a dict with 'config' and 'arrays'")
        return cls.from_state({k: np.asarray(v, np.float64) for k, v in doc["arrays"].items()}, doc["config"])


def novelty_tensors(novelty: Optional[FeatureNovelty], prefix: str = "novelty.") -> Tuple[Dict[str, np.ndarray], Optional[dict]]:
    """``(tensors, config)`` to store a detector's ``novelty_`` in a model file
    (tensors named ``prefix + name``); ``({}, None)`` when there is none."""
    if novelty is None:
        return {}, None
    arrays, config = novelty.to_state()
    return {prefix + k: v for k, v in arrays.items()}, config


def novelty_from_tensors(tensors, config, prefix: str = "novelty.") -> Optional[FeatureNovelty]:
    """The ``novelty_`` stored by :func:`novelty_tensors` (None when the file has none);
    removes its tensors from ``tensors``."""
    keys = [k for k in list(tensors) if k.startswith(prefix)]
    arrays = {k[len(prefix):]: tensors.pop(k) for k in keys}
    if config is None:
        return None
    return FeatureNovelty.from_state(arrays, config)


# ---------------------------------------------------------------- detector hooks
# Each detector calls one of these at the end of ``fit`` (one line there), so
# the novelty logic lives here and the estimators' files stay untouched.

def fit_classifier_novelty(clf, X_train, X_val, seed: int) -> Optional[FeatureNovelty]:
    """``PatchClassifier`` hook: a :class:`FeatureNovelty` (Mahalanobis, 99th
    percentile) on the network's pooled backbone embeddings (``net_.embed``,
    the head's input) of the training and validation inputs, threshold
    cross-fitted over them (a validation set of some 60 rows alone gave a
    threshold too noisy to hold the rate: 0.5 to 10 % of new STO tiles
    flagged; docs/unfamiliar.md). Also records it in
    ``clf.model_card_["novelty"]`` when the card exists."""
    from .._validation import check_n_threads

    n_threads = check_n_threads(clf.n_threads)
    E = clf.net_.embed(np.ascontiguousarray(X_train), n_threads=n_threads)
    if X_val is not None and len(X_val):
        E = np.concatenate([E, clf.net_.embed(np.ascontiguousarray(X_val), n_threads=n_threads)])
    if len(E) < 4:
        return None  # too few samples to fit and calibrate a score
    nov = FeatureNovelty(random_state=seed % (2**63)).fit(E)
    card = getattr(clf, "model_card_", None)
    if isinstance(card, dict):
        card["novelty"] = dict(nov.summary(), features="penultimate-layer embedding",
                               calibration="cross-fitted over the training and validation inputs")
    return nov


def attach_novelty(result, novelty: Optional[FeatureNovelty], scores, features: str):
    """Set ``result.unfamiliar`` / ``result.novelty`` from per-tile novelty
    ``scores`` (one per row, in row order) and describe the score in
    ``result.metadata["novelty"]``; nothing when ``novelty`` is None."""
    if novelty is None or scores is None:
        return result
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape != (len(result),):
        raise ValueError(f"novelty scores: expected {len(result)} values, got {s.shape}")
    result.novelty = s
    result.unfamiliar = s > novelty.threshold_
    result.metadata["novelty"] = dict(novelty.summary(), features=features)
    return result


def cvae_features(model, crops: np.ndarray) -> np.ndarray:
    """The CVAE's novelty features of preprocessed crops: latent means (n, latent_dim)."""
    from .._validation import check_n_threads

    return model.model_.encode(np.ascontiguousarray(crops, dtype=np.float32), 64,
                               check_n_threads(model.n_threads))[0]


def fit_cvae_novelty(model, train_crops: np.ndarray, calibration_crops: np.ndarray,
                     seed: int) -> Optional[FeatureNovelty]:
    """``BulkCVAE`` hook: k-NN distance (k=5) of latent means to the latent
    means of the training and calibration crops (preprocessed), threshold at
    the 99th percentile of their cross-fitted scores. k-NN, not Mahalanobis:
    the latent cloud is far from Gaussian and Mahalanobis missed honeycomb and
    noise tiles (docs/unfamiliar.md)."""
    F = cvae_features(model, np.concatenate([train_crops, calibration_crops]))
    if len(F) < 10:
        return None  # too few crops to fit and calibrate a score
    return FeatureNovelty("knn", n_neighbors=5, random_state=seed % (2**63)).fit(F)


def cvae_crop_novelty(model, img: np.ndarray, grid, batch_size: int = 256):
    """Novelty scores of the crops of ``grid`` over ``img`` under ``model.novelty_``
    (None when the model has none), computed a batch at a time."""
    novelty = getattr(model, "novelty_", None)
    if novelty is None:
        return None
    from ..models.cvae import preprocess_crops

    out = []
    for _, raw in grid.iter_batches(img, max(64, int(batch_size))):
        crops = preprocess_crops(np.asarray(raw, dtype=np.float32), float(model.blur_sigma), n_threads=model.n_threads)
        out.append(novelty.score(cvae_features(model, crops)))
    return np.concatenate(out)


def segmenter_features(seg, tiles: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The U-Net's novelty features of tiles (n, h, w): the spatial mean of its
    bottleneck (the first half of ``UNet.embed``, which sees the tile as it is), (n, 4 * base_channels),
    and, for a network on z-scored input, the tile's mean and standard deviation. The
    spatial max half is left out: with it, a CdTe-trained U-Net flagged only
    16 % of STO tiles (mean alone: 92 %; docs/unfamiliar.md)."""
    from .._validation import check_n_threads

    n_threads = check_n_threads(seg.n_threads)
    X = np.asarray(tiles, dtype=np.float32)
    E = np.concatenate([seg.net_.embed(np.ascontiguousarray(X[lo:lo + batch_size, None]), n_threads)
                        for lo in range(0, len(X), batch_size)], axis=0)
    E = E[:, : E.shape[1] // 2]
    if getattr(seg.net_, "standardize_input", False):
        # the network sees z-scored tiles: the tile's own intensity statistics say what it cannot
        flat = X.reshape(len(X), -1).astype(np.float64)
        E = np.concatenate([E, flat.mean(1, keepdims=True), flat.std(1, keepdims=True)], axis=1)
    return np.ascontiguousarray(E, dtype=np.float32)


def fit_segmenter_novelty(seg, X: np.ndarray, seed: int) -> Optional[FeatureNovelty]:
    """``DefectSegmenter`` hook: Mahalanobis distance (no shrinkage: the
    Ledoit-Wolf shrinkage hid most foreign tiles here) of the mean-pooled
    bottleneck embeddings of the training patches, threshold at the 99th
    percentile of their cross-fitted scores (docs/unfamiliar.md)."""
    F = segmenter_features(seg, X)
    if len(F) < max(4, 2 * F.shape[1]):
        # an unshrunk covariance needs twice as many rows as features; with fewer keep Ledoit-Wolf
        return FeatureNovelty(random_state=seed % (2**63)).fit(F) if len(F) >= 4 else None
    return FeatureNovelty(shrinkage=0.0, random_state=seed % (2**63)).fit(F)


def segmenter_tile_novelty(seg, image: np.ndarray, grid, batch_size: int = 64):
    """Novelty scores of the tiles of ``grid`` over ``image`` under ``seg.novelty_``
    (None when it has none); tiles narrower than the network's multiple of 4 are cropped."""
    novelty = getattr(seg, "novelty_", None)
    if novelty is None:
        return None
    out = []
    for _, tiles in grid.iter_batches(np.asarray(image, dtype=np.float32), max(16, int(batch_size))):
        h, w = (tiles.shape[1] // 4) * 4, (tiles.shape[2] // 4) * 4
        out.append(novelty.score(segmenter_features(seg, tiles[:, :h, :w], batch_size)))
    return np.concatenate(out)
