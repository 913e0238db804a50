"""The estimator base shared by every stemroi estimator.

``BaseEstimator`` gives parameters (``get_params`` / ``set_params`` from the
``__init__`` signature), a repr that lists the changed parameters, the
boundary checks of 2-D inputs, the one :class:`NotFittedError` and pickling
through the safe model file: an estimator whose fitted state includes compiled
core objects (networks) names them in ``_core_attributes`` and writes them as
a model file (``_write_core``) that ``__setstate__`` reads back
(``_read_core``), so a pickle holds tensors and metadata, never pybind or
torch objects. With scikit-learn installed the estimators are genuine
scikit-learn estimators (clone, pipelines, tags); without it they keep the
same parameter API.

The model files of the estimators share one schema (:func:`_save_model`,
:func:`_load_model`): ``architecture`` names the estimator, ``config`` holds
what rebuilds it, further fields (``class_names``, ``preprocessing``,
``model_card``, ...) describe it.
"""
from __future__ import annotations

import inspect
import os
import tempfile
import warnings
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from ._validation import check_array

__all__ = ["BaseEstimator", "NotFittedError", "ClassifierMixin", "ClusterMixin", "TransformerMixin"]


try:  # scikit-learn's checks (and users' handlers) catch its own class
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
except ImportError:  # pragma: no cover - depends on the environment
    class _SklearnNotFittedError(ValueError, AttributeError):
        pass


class NotFittedError(_SklearnNotFittedError, RuntimeError):
    """Raised when a method needs a fitted estimator.

    A subclass of scikit-learn's NotFittedError (so a ValueError and an
    AttributeError) and a RuntimeError, so a handler for any of them catches it.
    """


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
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
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


class _MinimalTransformerMixin:
    def fit_transform(self, X, y=None, **fit_params):
        return self.fit(X, y, **fit_params).transform(X)


class _MinimalClusterMixin:
    _estimator_type = "clusterer"

    def fit_predict(self, X, y=None):
        self.fit(X)
        return self.labels_


class _MinimalClassifierMixin:
    _estimator_type = "classifier"

    def score(self, X, y, sample_weight=None):
        return float(np.average(self.predict(X) == np.asarray(y), weights=sample_weight))


# scikit-learn is optional at run time: with it, the estimators are genuine
# scikit-learn estimators (tags, clone, set_output, pipelines); without it they
# keep the same parameters API.
try:  # pragma: no branch
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import ClassifierMixin
    from sklearn.base import ClusterMixin
    from sklearn.base import TransformerMixin
except ImportError:  # pragma: no cover - depends on the environment
    _Base = _MinimalBase
    ClassifierMixin = _MinimalClassifierMixin
    ClusterMixin = _MinimalClusterMixin
    TransformerMixin = _MinimalTransformerMixin

# the state key under which a pickle carries the model file of the core objects
_MODEL_FILE_STATE = "_stemroi_model_file"


class _ModelFilePickling:
    """Pickling through the safe model file.

    The attributes named in ``_core_attributes`` hold compiled core objects;
    ``__getstate__`` replaces them by the bytes of the model file that
    ``_write_core`` writes, ``__setstate__`` rebuilds them with ``_read_core``.
    """

    _core_attributes: Tuple[str, ...] = ()

    def _write_core(self, path: str) -> None:  # pragma: no cover - overridden where _core_attributes is set
        """Write the core objects of ``_core_attributes`` as a model file at ``path``."""
        raise NotImplementedError

    def _read_core(self, path: str) -> None:  # pragma: no cover - overridden where _core_attributes is set
        """Rebuild the core objects of ``_core_attributes`` from the model file at ``path``."""
        raise NotImplementedError

    def __getstate__(self):
        parent = getattr(super(), "__getstate__", None)
        state = parent() if parent is not None else None
        state = dict(self.__dict__ if state is None else state)
        held = [a for a in self._core_attributes if a in state]
        if held:
            state[_MODEL_FILE_STATE] = _model_file_bytes(self._write_core)
            for a in held:
                del state[a]
        return state

    def __setstate__(self, state):
        state = dict(state)
        blob = state.pop(_MODEL_FILE_STATE, None)
        parent = getattr(super(), "__setstate__", None)
        if parent is not None:
            parent(state)
        else:
            self.__dict__.update(state)
        if blob is not None:
            with tempfile.TemporaryDirectory(prefix="stemroi-") as tmp:
                path = os.path.join(tmp, "model.stemroi")
                with open(path, "wb") as f:
                    f.write(blob)
                self._read_core(path)


class BaseEstimator(_ModelFilePickling, _Base):
    """Parameters, repr, input checks, not-fitted checks and pickling of the estimators."""

    # the attribute whose presence means "fitted" (None: any attribute ending in "_")
    _fitted_attribute: str | None = None

    # -- fitted state ---------------------------------------------------------
    def _is_fitted(self, *attrs: str) -> bool:
        names = attrs or ((self._fitted_attribute,) if self._fitted_attribute else ())
        if names:
            return all(hasattr(self, a) for a in names)
        return any(k.endswith("_") and not k.startswith("__") for k in vars(self))

    def _check_fitted(self, *attrs: str) -> None:
        """Raise :class:`NotFittedError` unless ``attrs`` (default: the class's fitted attribute) exist."""
        if not self._is_fitted(*attrs):
            how = "Call 'fit' with appropriate arguments"
            if callable(getattr(type(self), "load", None)):
                how += f" (or {type(self).__name__}.load(path))"
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. {how} before using this estimator.")

    # -- input checks ---------------------------------------------------------
    def _validate_X(self, X, *, reset: bool, min_samples: int = 1):
        """2-D real X (n_samples, n_features); ``reset`` records n_features_in_ (and feature names)."""
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


def _model_file_bytes(write) -> bytes:
    """The bytes of the model file that ``write(path)`` writes."""
    with tempfile.TemporaryDirectory(prefix="stemroi-") as tmp:
        path = os.path.join(tmp, "model.stemroi")
        write(path)
        with open(path, "rb") as f:
            return f.read()


# -- the model-file schema of the estimators ------------------------------------
def _save_model(path, tensors: Mapping[str, np.ndarray], *, architecture: str, config: Mapping[str, Any],
                **metadata: Any) -> None:
    """Write an estimator's model file: ``tensors`` with ``architecture``,
    ``config`` and any further metadata fields (JSON unless strings)."""
    from .io.model_file import save_model_file

    save_model_file(path, tensors, {"architecture": architecture, "config": config, **metadata})


def _check_architecture(path, meta: Mapping[str, Any], expected: str, what: str) -> None:
    got = meta.get("architecture")
    if got != expected:
        raise ValueError(f"{os.fspath(path)}: not a {what} model file (architecture {got!r}, expected {expected!r})")


def _load_model(path, expected_architecture: str, *, what: str,
                sha256: str | None = None) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """``(tensors, metadata)`` of a model file whose ``architecture`` is
    ``expected_architecture`` (ValueError naming ``what`` otherwise); ``sha256``
    pins the file's hash (:func:`stemroi.io.load_model_file`)."""
    from .io.model_file import load_model_file

    tensors, meta = load_model_file(path, sha256=sha256)
    _check_architecture(path, meta, expected_architecture, what)
    return tensors, meta


def _metadata_strings(metadata: Mapping[str, Any]) -> Dict[str, str]:
    """Metadata as stored in a model file (for writers in the core, which take strings)."""
    from .io.model_file import _encode_metadata

    return _encode_metadata(metadata)


def _decoded_metadata(meta: Mapping[str, str]) -> Dict[str, Any]:
    """Metadata read by the core, JSON values decoded as :func:`_load_model` does."""
    from .io.model_file import _decode_metadata

    return _decode_metadata(meta)

