"""Confidence calibration: expected calibration error and temperature scaling.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar T > 0
fitted by minimising the negative log-likelihood on held-out (validation)
groups; it changes confidences, never the predicted class.
"""
from __future__ import annotations

import numpy as np

from .._validation import check_array, check_positive_int

__all__ = ["expected_calibration_error", "fit_temperature", "softmax"]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_labels(y_true, n: int, k: int) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y_true: expected shape ({n},), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y_true: expected integer class indices, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"y_true: class indices must be in [0, {k}), got range [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def expected_calibration_error(y_true, proba, n_bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of ``|accuracy - mean confidence|``
    weighted by the bin's share of samples. ``proba`` is (n, k), rows summing to 1;
    ``y_true`` holds class indices (columns of ``proba``)."""
    p = check_array(proba, name="proba", ndim=2)
    y = _check_labels(y_true, p.shape[0], p.shape[1])
    n_bins = check_positive_int(n_bins, "n_bins")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # bins (lo, hi]; confidence 0 falls into the first bin
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def fit_temperature(logits, y_true, bounds=(0.05, 20.0)) -> float:
    """Temperature minimising the NLL of ``softmax(logits / T)`` on (logits, y_true).

    Returns 1.0 (no scaling) when the NLL has no minimum inside ``bounds``:
    when every validation prediction is right the NLL keeps falling as T -> 0,
    and the bound it reaches would set every confidence to ~1, the opposite
    of calibrated on new data. Also never returns a T worse than T = 1.
    """
    from scipy.optimize import minimize_scalar

    z = check_array(logits, name="logits", ndim=2).astype(np.float64)
    y = _check_labels(y_true, z.shape[0], z.shape[1])

    if len(y) == 0 or bool(np.all(z.argmax(axis=1) == y)):
        return 1.0  # no errors: the NLL has no minimum, it falls as T -> 0

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        lse = np.log(np.exp(s).sum(axis=1))
        return float(np.mean(lse - s[np.arange(len(y)), y]))

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-6})
    t = float(np.exp(res.x))
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    if min(res.x - lo, hi - res.x) < 1e-3 * (hi - lo):
        return 1.0  # optimum on a bound: T is not identifiable from these data
    return t if nll(res.x) <= nll(0.0) else 1.0
