"""Confidence calibration: expected calibration error and temperature scaling.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar T > 0
fitted by minimising the negative log-likelihood on held-out (validation)
groups; it changes confidences, never the predicted class.

Per-image thresholds (:func:`robust_offset`, :func:`per_image_threshold`) move an
anomaly-score threshold learnt on one image to another: the threshold keeps its
distance from the bulk median in robust units (1.4826 * MAD), measured on the
reference image's bulk crops and re-applied to the new image's own crop scores,
most of which are bulk (``BulkCVAE(calibration_mode="per_image_threshold")``).
"""
from __future__ import annotations

import numpy as np

from .._validation import check_array, check_positive_int

__all__ = ["expected_calibration_error", "fit_temperature", "softmax", "robust_location_scale", "robust_offset",
           "per_image_threshold"]


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


# ---------------------------------------------------------------------------
# per-image calibration of anomaly-score thresholds
# ---------------------------------------------------------------------------
#: MAD -> standard deviation of a normal distribution
MAD_TO_SD = 1.482602218505602


def robust_location_scale(scores, *, name: str = "scores"):
    """``(median, 1.4826 * MAD)`` of ``scores`` (1-D, finite): the location and
    scale of the bulk when at least half of ``scores`` come from bulk crops."""
    s = check_array(scores, name=name, ndim=1, dtype=(np.float64,)).astype(np.float64, copy=False)
    med = float(np.median(s))
    return med, float(MAD_TO_SD * np.median(np.abs(s - med)))


def _spread_location_scale(scores, name: str):
    """:func:`robust_location_scale`, refusing scores without spread (MAD 0)."""
    med, scale = robust_location_scale(scores, name=name)
    if scale <= 0:
        raise ValueError(f"{name}: the MAD is 0 (more than half of the scores are equal to {med!r}); "
                         "a per-image threshold needs a spread of bulk scores")
    return med, scale


def robust_offset(bulk_scores, threshold: float, *, name: str = "bulk_scores") -> float:
    """The threshold of the reference (training) image in robust units:
    ``c = (threshold - median) / scale`` of its bulk ``bulk_scores``
    (:func:`robust_location_scale`). :func:`per_image_threshold` with this
    ``c`` applied to the same scores gives ``threshold`` back."""
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    med, scale = _spread_location_scale(bulk_scores, name)
    return float((float(threshold) - med) / scale)


def per_image_threshold(scores, c: float, *, name: str = "scores") -> float:
    """``median + c * scale`` of one image's own crop ``scores`` (most of them
    bulk): the threshold that sits at the same robust distance from that
    image's bulk as the reference threshold sat from the reference bulk
    (``c`` from :func:`robust_offset`, chosen on the reference image only).
    ValueError when the scores have no spread (MAD 0)."""
    if not np.isfinite(c):
        raise ValueError(f"c must be finite, got {c!r}")
    med, scale = _spread_location_scale(scores, name)
    return float(med + float(c) * scale)
