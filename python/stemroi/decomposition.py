"""Principal component analysis on the C++ core (scikit-learn 1.2 semantics).

``PCA`` matches :class:`sklearn.decomposition.PCA` with ``svd_solver='full'``
component by component, signs included (``svd_flip`` with the u-based
decision). For tall data the full solver diagonalises the centred Gram matrix
``Xc.T @ Xc`` (accumulated in double) instead of taking an SVD of ``Xc``; it
falls back to an SVD when a retained eigenvalue is so much smaller than the
largest that the Gram route would lose accuracy (float64: below 1e-5 of it,
float32 input: below 1e-9). float32 stays float32 throughout.
"""
from __future__ import annotations

import inspect
import numbers
import warnings

import numpy as np

from ._lib import _core
from ._validation import check_array, check_n_threads, check_random_state_seed

__all__ = ["PCA", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """Raised when a method needs a fitted estimator (as scikit-learn's)."""


def _is_sparse(X) -> bool:
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def _feature_names(X):
    cols = getattr(X, "columns", None)
    if cols is None or not hasattr(X, "iloc"):
        return None
    names = np.asarray(cols, dtype=object)
    return names if names.size and all(isinstance(c, str) for c in names) else None


class _MinimalBase:
    """get_params/set_params/repr when scikit-learn is not installed
    (``sklearn.base.clone`` only needs get_params)."""

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}; valid: {valid}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values() if p.name != "self"
        }
        changed = []
        for k, v in self.get_params().items():
            d = defaults.get(k, inspect.Parameter.empty)
            try:
                same = bool(v is d or (not isinstance(v, np.ndarray) and v == d))
            except Exception:
                same = False
            if not same:
                changed.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(changed)})"


# scikit-learn is optional at run time: with it, the estimators are genuine
# scikit-learn estimators (tags, clone, set_output, pipelines); without it they
# keep the same parameters API.
try:  # pragma: no branch
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import ClusterMixin as _ClusterMixin
    from sklearn.base import TransformerMixin as _TransformerMixin
except ImportError:  # pragma: no cover - depends on the environment
    _Base, _ClusterMixin, _TransformerMixin = _MinimalBase, object, object


class _EstimatorBase(_Base):
    """Input checks shared by the estimators."""

    def _check_fitted(self, attr: str):
        if not hasattr(self, attr):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator."
            )

    def _validate_X(self, X, *, reset: bool, min_samples: int = 1):
        if _is_sparse(X):
            raise TypeError(f"{type(self).__name__} does not support sparse input; pass a dense array (X.toarray())")
        names = _feature_names(X)
        if reset:
            if names is not None:
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        else:
            fitted = getattr(self, "feature_names_in_", None)
            if fitted is not None and names is None:
                warnings.warn(f"X does not have valid feature names, but {type(self).__name__} was fitted with feature names")
            elif fitted is None and names is not None:
                warnings.warn(f"X has feature names, but {type(self).__name__} was fitted without feature names")
            elif fitted is not None and (len(fitted) != len(names) or np.any(fitted != names)):
                raise ValueError("The feature names should match those that were passed during fit.")
        if not isinstance(X, np.ndarray) and hasattr(X, "__array__") and names is None:
            X = np.asarray(X)
        if getattr(X, "ndim", None) == 1:  # scikit-learn's wording, which its checks expect
            raise ValueError(
                f"X: expected a 2-D array, got shape {np.shape(X)}. Reshape your data either using "
                "X.reshape(-1, 1) if it has a single feature or X.reshape(1, -1) if it contains a single sample."
            )
        X = check_array(X, name="X", ndim=2, allow_empty=True)
        for axis, what in ((0, "sample"), (1, "feature")):
            if X.shape[axis] == 0:
                raise ValueError(f"X: empty array: 0 {what}(s) (shape={X.shape}) while a minimum of 1 is required.")
        if X.shape[0] < min_samples:
            raise ValueError(f"X: {X.shape[0]} sample(s) given, at least {min_samples} needed")
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting {self.n_features_in_} features as input"
            )
        return X


class PCA(_TransformerMixin, _EstimatorBase):
    """Principal component analysis (linear dimensionality reduction).

    Parameters
    ----------
    n_components : int, float in (0, 1) or None
        Number of components to keep; a float keeps the fewest components whose
        cumulative explained-variance ratio exceeds it; None keeps
        ``min(n_samples, n_features)``.
    whiten : bool
        Scale the projections to unit variance.
    svd_solver : {'full', 'randomized'}
        'full': exact (Gram eigendecomposition or SVD, see the module doc).
        'randomized': Halko et al. range finder with power iterations (int
        n_components only), seeded by ``random_state``.
    random_state : None, int or NumPy generator
        Seed of the randomized solver.
    n_threads : int or None
        OpenMP threads (None: all cores).

    Attributes
    ----------
    components_ (n_components, n_features), explained_variance_,
    explained_variance_ratio_, singular_values_, mean_, n_components_,
    noise_variance_, n_samples_, n_features_in_.
    """

    def __init__(self, n_components=None, *, whiten=False, svd_solver="full", random_state=None, n_threads=None):
        self.n_components = n_components
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.random_state = random_state
        self.n_threads = n_threads

    def _resolve_n_components(self, n: int, d: int):
        nc = self.n_components
        kmax = min(n, d)
        if nc is None:
            return -1, 0.0
        if isinstance(nc, (bool, np.bool_)):
            raise TypeError(f"n_components must be None, an int or a float in (0, 1), got {nc!r}")
        if isinstance(nc, numbers.Integral):
            if not 1 <= nc <= kmax:
                raise ValueError(
                    f"n_components={nc} must be between 1 and min(n_samples, n_features)={kmax} "
                    f"(X has shape ({n}, {d}))"
                )
            return int(nc), 0.0
        if isinstance(nc, numbers.Real):
            if not 0.0 < nc < 1.0:
                raise ValueError(f"n_components as a float is a variance fraction in (0, 1), got {nc}")
            if self.svd_solver == "randomized":
                raise ValueError(f"svd_solver='randomized' needs an int n_components, got {nc}")
            return -1, float(nc)
        raise TypeError(f"n_components must be None, an int or a float in (0, 1), got {type(nc).__name__}")

    def fit(self, X, y=None):
        """Fit the model on X (n_samples, n_features); returns self."""
        self._fit(X)
        return self

    def _fit(self, X):
        if self.svd_solver not in ("full", "randomized"):
            raise ValueError(f"svd_solver must be 'full' or 'randomized', got {self.svd_solver!r}")
        X = self._validate_X(X, reset=True)
        n, d = X.shape
        if n < 2:
            raise ValueError(f"PCA needs at least 2 samples, got 1 sample (X has shape {X.shape})")
        k, frac = self._resolve_n_components(n, d)
        n_threads = check_n_threads(self.n_threads)
        seed = check_random_state_seed(self.random_state) if self.svd_solver == "randomized" else 0
        res = _core.pca_fit(X, k, frac, self.svd_solver, 10, -1, seed, n_threads, 0)
        dt = X.dtype
        self.mean_ = res["mean"]
        self.components_ = res["components"]
        self.explained_variance_ = res["explained_variance"].astype(dt)
        self.explained_variance_ratio_ = res["explained_variance_ratio"].astype(dt)
        self.singular_values_ = res["singular_values"].astype(dt)
        self.noise_variance_ = float(res["noise_variance"])
        self.n_components_ = int(res["n_components"])
        self.n_samples_ = n
        self._used_gram = bool(res["used_gram"])
        return X

    def _params_as(self, dtype):
        return (np.ascontiguousarray(self.mean_, dtype=dtype), np.ascontiguousarray(self.components_, dtype=dtype))

    def _scale(self):
        if not self.whiten:
            return None
        ev = np.asarray(self.explained_variance_, dtype=np.float64)
        return np.sqrt(np.where(ev > 0, ev, 1.0))

    def transform(self, X):
        """Project X on the components: (X - mean_) @ components_.T (whitened if asked)."""
        self._check_fitted("components_")
        X = self._validate_X(X, reset=False)
        mean, comp = self._params_as(X.dtype)
        return _core.pca_transform(X, mean, comp, self._scale(), check_n_threads(self.n_threads))

    def fit_transform(self, X, y=None):
        Xv = self._fit(X)
        mean, comp = self._params_as(Xv.dtype)
        return _core.pca_transform(Xv, mean, comp, self._scale(), check_n_threads(self.n_threads))

    def get_feature_names_out(self, input_features=None):
        """Output feature names: pca0, pca1, ..."""
        self._check_fitted("components_")
        return np.asarray([f"pca{i}" for i in range(self.n_components_)], dtype=object)

    def inverse_transform(self, X):
        """Map projections back to the feature space."""
        self._check_fitted("components_")
        Z = check_array(X, name="X", ndim=2)
        if Z.shape[1] != self.n_components_:
            raise ValueError(f"X has {Z.shape[1]} components, but this PCA keeps {self.n_components_}")
        mean, comp = self._params_as(Z.dtype)
        return _core.pca_inverse_transform(Z, mean, comp, self._scale(), check_n_threads(self.n_threads))
