"""Principal component analysis on the C++ core (scikit-learn semantics).

``PCA`` matches :class:`sklearn.decomposition.PCA` with ``svd_solver='full'``
component by component, signs included. Signs follow one convention, chosen
by ``sign``: ``"components"`` (the default, scikit-learn >= 1.5): the
largest-magnitude loading of each component is positive, so the signs do not
depend on the order of the samples; ``"scores"`` (scikit-learn < 1.5's
u-based ``svd_flip``): the largest-magnitude projection of each component
over the training samples is positive. For tall data the full solver diagonalises the centred Gram matrix
``Xc.T @ Xc`` (accumulated in double) instead of taking an SVD of ``Xc``; it
falls back to an SVD when a retained eigenvalue is so much smaller than the
largest that the Gram route would lose accuracy (float64: below 1e-5 of it,
float32 input: below 1e-9). float32 stays float32 throughout.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._lib import _core
from .._validation import check_array, check_n_threads, check_numeric_device, check_random_state_seed
from ..base import BaseEstimator, NotFittedError, TransformerMixin

__all__ = ["PCA", "NotFittedError"]


class PCA(TransformerMixin, BaseEstimator):
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
    sign : {'components', 'scores'}
        Sign convention (see the module doc): 'components' makes each
        component's largest-magnitude loading positive (scikit-learn >= 1.5);
        'scores' makes its largest-magnitude training projection positive
        (scikit-learn < 1.5).
    random_state : None, int or NumPy generator
        Seed of the randomized solver.
    n_threads : int or None
        OpenMP threads (None: all cores).
    device : None, "cpu", "cuda", "cuda:N" or "auto"
        Where the full solver forms the Gram matrix (None: "cpu"; cuBLAS in
        double on CUDA, reproducible run to run); the eigendecomposition, the
        SVD route, the randomized solver and ``transform`` run on the CPU.
        Components agree with the CPU's within 1e-5 (float32) / 1e-10
        (float64). A build without CUDA raises ValueError for "cuda".

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
    explained_variance_ : ndarray of shape (n_components,)
    explained_variance_ratio_ : ndarray of shape (n_components,)
    singular_values_ : ndarray of shape (n_components,)
    mean_ : ndarray of shape (n_features,)
    n_components_ : int
    noise_variance_ : float
    n_samples_ : int
    n_features_in_ : int
    """

    def __init__(self, n_components=None, *, whiten=False, svd_solver="full", sign="components", random_state=None,
                 n_threads=None, device=None):
        self.n_components = n_components
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.sign = sign
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device

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
        if self.sign not in ("components", "scores"):
            raise ValueError(f"sign must be 'components' or 'scores', got {self.sign!r}")
        X = self._validate_X(X, reset=True)
        n, d = X.shape
        if n < 2:
            raise ValueError(f"PCA needs at least 2 samples, got 1 sample (X has shape {X.shape})")
        k, frac = self._resolve_n_components(n, d)
        n_threads = check_n_threads(self.n_threads)
        seed = check_random_state_seed(self.random_state) if self.svd_solver == "randomized" else 0
        res = _core.pca_fit(X, n_components=k, variance_fraction=frac, solver=self.svd_solver, seed=seed,
                            n_threads=n_threads, device=check_numeric_device(self.device))
        dt = X.dtype
        self.mean_ = res["mean"]
        self.components_ = res["components"]  # the core returns the 'scores' convention
        if self.sign == "components":
            self.components_ = _flip_by_largest_loading(self.components_)
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
        """Project X on the components: ``(X - mean_) @ components_.T`` (whitened if asked)."""
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


def _flip_by_largest_loading(components: np.ndarray) -> np.ndarray:
    """Rows flipped so that each one's largest-magnitude entry is positive
    (scikit-learn's ``svd_flip(u_based_decision=False)``; ties: first index)."""
    rows = np.arange(components.shape[0])
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    signs[signs == 0] = 1
    return components * signs[:, None].astype(components.dtype)
