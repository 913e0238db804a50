"""Silhouette: parity with sklearn.metrics on blobs and on real CdTe FFT
features (float32 and float64), sampling, singletons, determinism, errors."""
from __future__ import annotations

import numpy as np
import pytest

from stemroi import KMeans, silhouette_samples, silhouette_score

skm = pytest.importorskip("sklearn.metrics")
from sklearn.datasets import make_blobs  # noqa: E402


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=1500, n_features=12, centers=5, cluster_std=2.5, random_state=0)
    return X + 50.0, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parity_on_blobs(blobs, dtype):
    X, y = blobs
    X = X.astype(dtype)
    ours = silhouette_samples(X, y)
    ref = skm.silhouette_samples(X, y)
    assert ours.dtype == dtype
    tol = 1e-10 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(ours, ref, atol=tol)
    assert silhouette_score(X, y) == pytest.approx(skm.silhouette_score(X, y), abs=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parity_on_real_cdte_fft_features(cdte_fft_features, dtype):
    F, classes = cdte_fft_features
    F = F.astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-10
    # the 7 true classes (string labels) and a K-means labeling
    assert silhouette_score(F, classes) == pytest.approx(skm.silhouette_score(F, classes), abs=tol)
    labels = KMeans(7, n_init=2, random_state=0).fit(F).labels_
    assert silhouette_score(F, labels) == pytest.approx(skm.silhouette_score(F, labels), abs=tol)
    np.testing.assert_allclose(silhouette_samples(F, labels), skm.silhouette_samples(F, labels), atol=10 * tol)


def test_sample_size_draws_sklearn_subset(blobs):
    X, y = blobs
    for seed in (0, 5):
        ours = silhouette_score(X, y, sample_size=300, random_state=seed)
        ref = skm.silhouette_score(X, y, sample_size=300, random_state=seed)
        assert ours == pytest.approx(ref, abs=1e-12)


def test_singletons_and_duplicates_score_zero_like_sklearn():
    X = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1], [9.0, 9.0], [1.0, 1.0]])
    labels = np.array([0, 0, 1, 1, 2, 0])  # cluster 2 is a singleton
    np.testing.assert_allclose(silhouette_samples(X, labels), skm.silhouette_samples(X, labels), atol=1e-12)
    assert silhouette_samples(X, labels)[4] == 0.0
    D = np.zeros((4, 2))
    D[2:] = 1.0
    np.testing.assert_allclose(silhouette_samples(D, [0, 0, 1, 1]), skm.silhouette_samples(D, [0, 0, 1, 1]))


def test_deterministic_across_threads(blobs):
    X, y = blobs
    X32 = X.astype(np.float32)
    a = silhouette_samples(X32, y, n_threads=1)
    b = silhouette_samples(X32, y, n_threads=2)
    np.testing.assert_array_equal(a, b)
    assert silhouette_score(X, y, n_threads=1) == silhouette_score(X, y, n_threads=2)


def test_float32_input_is_not_copied(monkeypatch, blobs):
    from stemroi._lib import _core

    seen = {}
    real = _core.silhouette_samples_multi

    def spy(X, *a, **kw):
        seen["X"] = X
        return real(X, *a, **kw)

    monkeypatch.setattr(_core, "silhouette_samples_multi", spy)
    X = np.ascontiguousarray(blobs[0], dtype=np.float32)
    silhouette_score(X, blobs[1])
    assert seen["X"] is X


@pytest.mark.parametrize(
    "X,labels,kw,exc,match",
    [
        (np.ones((5, 2)), [0] * 5, {}, ValueError, "Number of labels is 1. Valid values are 2 to n_samples - 1"),
        (np.arange(8.0).reshape(4, 2), [0, 1, 2, 3], {}, ValueError, "Number of labels is 4"),
        (np.ones((4, 2)), [0, 1, 1], {}, ValueError, "length 3 does not match the 4 samples"),
        (np.array([[np.nan, 1.0]] * 4), [0, 0, 1, 1], {}, ValueError, "NaN or infinity"),
        (np.arange(4.0), [0, 0, 1, 1], {}, ValueError, "expected a 2-D array"),
        (np.empty((0, 2)), [], {}, ValueError, "empty array"),
        (np.ones((4, 2), dtype=object), [0, 0, 1, 1], {}, TypeError, "unsupported dtype object"),
        (np.ones((4, 2)), [0, 0, 1, 1], {"metric": "cosine"}, ValueError, "metric must be 'euclidean', got 'cosine'"),
        (np.ones((4, 2)), [0, 0, 1, 1], {"sample_size": 10}, ValueError, "sample_size must be <= n_samples=4, got 10"),
    ],
)
def test_bad_input(X, labels, kw, exc, match):
    with pytest.raises(exc, match=match):
        silhouette_score(X, labels, **kw)
