"""Input validation at the public boundary (once, never with ``assert``)."""
from __future__ import annotations

import numbers
from typing import Iterable, Optional, Sequence

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    text = repr(x)  # the value itself when short: "float 2.5", "str '64'"
    return f"{type(x).__name__} {text}" if len(text) <= 60 else type(x).__name__


def check_array(
    X,
    *,
    name: str = "X",
    ndim: Optional[int | Sequence[int]] = 2,
    dtype: Optional[Iterable] = FLOAT_DTYPES,
    allow_empty: bool = False,
    finite: bool = True,
    min_samples: int = 1,
    min_features: int = 1,
) -> np.ndarray:
    """Return ``X`` as a C-contiguous array of an accepted dtype.

    float32 stays float32 and C-contiguous inputs of an accepted dtype are
    returned without a copy. Integer and bool inputs are converted to the first
    accepted dtype (float64 unless only float32 is accepted). Object, complex
    and string inputs raise TypeError; NaN/inf, empty and wrongly shaped inputs
    raise ValueError naming what was given and what was expected.
    """
    if hasattr(X, "__array__") and not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:  # ragged lists, etc.
            raise ValueError(f"{name}: cannot be converted to an array ({exc})") from None
    if X.dtype.kind in "OUSVcMm":
        raise TypeError(
            f"{name}: unsupported dtype {X.dtype} (expected real numbers, e.g. float32 or float64)"
        )
    accepted = tuple(np.dtype(d) for d in dtype) if dtype is not None else None
    if accepted is not None and X.dtype not in accepted:
        target = np.float64 if np.dtype(np.float64) in accepted else accepted[0]
        X = X.astype(target)
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, numbers.Integral) else tuple(ndim)
        if X.ndim not in dims:
            want = " or ".join(f"{d}-D" for d in dims)
            hint = ""
            if X.ndim == 1 and 2 in dims:
                hint = " (reshape a single feature with X.reshape(-1, 1) or a single sample with X.reshape(1, -1))"
            raise ValueError(f"{name}: expected a {want} array, got shape {X.shape}{hint}")
    if X.size == 0 and not allow_empty:
        raise ValueError(f"{name}: empty array of shape {X.shape}; at least {min_samples} sample(s) needed")
    if X.ndim >= 1 and X.shape[0] < min_samples and X.size:
        raise ValueError(f"{name}: {X.shape[0]} sample(s) given, at least {min_samples} needed")
    if X.ndim >= 2 and X.shape[1] < min_features and X.size:
        raise ValueError(f"{name}: {X.shape[1]} feature(s) given, at least {min_features} needed")
    if finite and X.dtype.kind == "f" and X.size and not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(
            f"{name}: contains NaN or infinity (first at index {tuple(int(i) for i in bad)}, "
            f"value {X[tuple(bad)]}); clean or impute the data first"
        )
    return np.ascontiguousarray(X)


def check_random_state_seed(random_state) -> int:
    """Map ``random_state`` (None, int, np.random.Generator/RandomState) to a 64-bit seed."""
    if random_state is None:
        return int(np.random.default_rng().integers(0, 2**63 - 1))
    if isinstance(random_state, numbers.Integral):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    raise TypeError(f"random_state must be None, an int or a NumPy generator, got {_describe(random_state)}")


def check_n_threads(n_threads) -> int:
    """``None`` (or -1) means all available cores; returns the count the core uses."""
    from ._lib import _core

    if n_threads is None:
        return _core.resolve_n_threads(0)
    if not isinstance(n_threads, numbers.Integral) or isinstance(n_threads, bool):
        raise TypeError(f"n_threads must be None or an int, got {_describe(n_threads)}")
    if n_threads == -1:
        return _core.resolve_n_threads(0)
    if n_threads < 1:
        raise ValueError(f"n_threads must be None, -1 or >= 1, got {n_threads}")
    return int(n_threads)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_numeric_device(device) -> str:
    """Device of the numeric engine: None means "cpu"; "cpu", "cuda", "cuda:N",
    "auto" or a torch.device, checked by the core (ValueError names the device)."""
    if device is None:
        return "cpu"
    if isinstance(device, str):
        return device
    if type(device).__name__ == "device" and type(device).__module__ == "torch":
        return str(device)
    raise TypeError(f"device must be None, a str or a torch.device, got {_describe(device)}")
