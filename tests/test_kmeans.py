"""KMeans: parity with scikit-learn 1.2 from the same initial centres,
k-means++ quality, determinism across threads, Ctrl-C, bad input."""
from __future__ import annotations

import _thread
import signal
import threading
import time

import numpy as np
import pytest

from stemroi import KMeans

skc = pytest.importorskip("sklearn.cluster")
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402


def overlapping_blobs(n=3000, d=10, k=6, seed=0, dtype=np.float64):
    X, y = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=3.0, center_box=(-8, 8), random_state=seed)
    return (X + 100.0).astype(dtype), y  # offset: exercises the centring


def sk_fit(X, init, **kw):
    return skc.KMeans(n_clusters=len(init), init=init, n_init=1, algorithm="lloyd", **kw).fit(X)


@pytest.mark.parametrize("max_iter", [300, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_from_same_initial_centres_float64(seed, max_iter):
    X, _ = overlapping_blobs(seed=seed)
    init = X[np.random.default_rng(seed).choice(len(X), 6, replace=False)]
    ours = KMeans(6, init=init, n_init=1, max_iter=max_iter).fit(X)
    ref = sk_fit(X, init, max_iter=max_iter)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-6)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    assert ours.n_iter_ == ref.n_iter_


@pytest.mark.parametrize("k", [3, 12, 20])  # distance kernels: 4 lanes, 16 lanes, gathered GEMM (k > 16)
def test_parity_every_distance_kernel(k):
    X, _ = make_blobs(n_samples=2000, n_features=8, centers=25, cluster_std=1.5, random_state=1)
    init = X[np.random.default_rng(k).choice(len(X), k, replace=False)]
    ours = KMeans(k, init=init, n_init=1).fit(X)
    ref = sk_fit(X, init)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-9)
    assert ours.n_iter_ == ref.n_iter_
    a, b = (KMeans(k, n_init=2, random_state=3, n_threads=t).fit(X) for t in (1, 2))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_


def test_parity_float32_and_real_features(cdte_fft_features):
    X, _ = overlapping_blobs(seed=3, dtype=np.float32)
    init = X[:6].copy()
    ours = KMeans(6, init=init, n_init=1).fit(X)
    ref = sk_fit(X, init)
    assert ours.cluster_centers_.dtype == np.float32
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    # scikit-learn sums float32 centres in float32 (we sum in double): 1e-5 relative
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-5, atol=1e-5)
    # real FFT-magnitude features of the CdTe patches, 7 classes
    F = cdte_fft_features[0]
    init = F[np.random.default_rng(0).choice(len(F), 7, replace=False)]
    ours = KMeans(7, init=init, n_init=1).fit(F)
    ref = sk_fit(F, init)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-6)
    assert ours.n_iter_ == ref.n_iter_


def test_empty_cluster_relocation_matches_sklearn():
    X, _ = overlapping_blobs(n=500, k=3, seed=4)
    init = np.stack([X[0], X[1], X[1] + 1e3])  # the far centre gets no sample
    ours = KMeans(3, init=init, n_init=1).fit(X)
    ref = sk_fit(X, init)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-6)
    assert len(np.unique(ours.labels_)) == 3


def test_kmeans_plusplus_quality_like_sklearn():
    X, y = make_blobs(n_samples=4000, n_features=8, centers=7, cluster_std=1.0, random_state=0)
    ours = KMeans(7, n_init=10, random_state=0).fit(X)
    ref = skc.KMeans(7, n_init=10, random_state=0).fit(X)
    assert adjusted_rand_score(y, ours.labels_) == pytest.approx(1.0)
    assert ours.inertia_ <= ref.inertia_ * 1.001
    X2, _ = overlapping_blobs(n=4000, seed=5)
    ours = KMeans(6, n_init=10, random_state=1).fit(X2)
    ref = skc.KMeans(6, n_init=10, random_state=1).fit(X2)
    assert ours.inertia_ <= ref.inertia_ * 1.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deterministic_across_threads_and_repeats(dtype):
    X, _ = overlapping_blobs(n=5000, seed=6, dtype=dtype)
    fits = [KMeans(6, n_init=4, random_state=123, n_threads=t).fit(X) for t in (1, 2, 1, 2)]
    for f in fits[1:]:
        np.testing.assert_array_equal(f.labels_, fits[0].labels_)
        np.testing.assert_array_equal(f.cluster_centers_, fits[0].cluster_centers_)
        assert f.inertia_ == fits[0].inertia_ and f.n_iter_ == fits[0].n_iter_
    # a different seed gives a different (valid) run
    other = KMeans(6, n_init=1, random_state=7).fit(X)
    assert other.labels_.dtype == np.int32


def test_predict_transform_score_consistent():
    X, _ = overlapping_blobs(n=1000, seed=7)
    km = KMeans(5, n_init=3, random_state=0).fit(X)
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    D = km.transform(X)
    ref = np.sqrt(((X[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1))
    np.testing.assert_allclose(D, ref, rtol=1e-12)
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-12)
    np.testing.assert_array_equal(KMeans(5, n_init=3, random_state=0).fit_predict(X), km.labels_)
    np.testing.assert_array_equal(km.predict(X.astype(np.float32)), km.labels_)


def test_float32_input_is_not_copied(monkeypatch):
    from stemroi._lib import _core

    seen = {}
    real = _core.kmeans_fit

    def spy(X, *a, **kw):
        seen["X"] = X
        return real(X, *a, **kw)

    monkeypatch.setattr(_core, "kmeans_fit", spy)
    X, _ = overlapping_blobs(n=300, dtype=np.float32)
    KMeans(3, n_init=1, random_state=0).fit(X)
    assert seen["X"] is X


def test_ctrl_c_interrupts_a_long_fit():
    # A process started in the background by a non-interactive shell inherits SIGINT as
    # ignored, and then interrupt_main() does nothing: install Python's handler for the test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50_000, 16))
    timer = threading.Timer(0.5, _thread.interrupt_main)
    t0 = time.perf_counter()
    timer.start()
    try:
        # tens of seconds of work without the interrupt: a check that does not fire fails here
        with pytest.raises(KeyboardInterrupt):
            KMeans(32, n_init=10, max_iter=300, tol=0.0, random_state=0, n_threads=1).fit(X)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - t0 < 5


def test_init_array_forces_single_run_with_warning():
    X, _ = overlapping_blobs(n=200, k=3)
    with pytest.warns(RuntimeWarning, match="performing only one init in KMeans instead of n_init=10"):
        KMeans(3, init=X[:3]).fit(X)


@pytest.mark.parametrize(
    "X,kw,exc,match",
    [
        (np.ones((5, 2)), {"n_clusters": 8}, ValueError, "n_samples=5 should be >= n_clusters=8"),
        (np.array([[0.0, np.nan]] * 10), {}, ValueError, "NaN or infinity"),
        (np.empty((0, 2)), {}, ValueError, "empty array: 0 sample\\(s\\)"),
        (np.arange(10.0), {}, ValueError, "expected a 2-D array, got shape \\(10,\\)"),
        (np.ones((10, 2), dtype=object), {}, TypeError, "unsupported dtype object"),
        (np.ones((10, 2), dtype=np.complex64), {}, TypeError, "unsupported dtype complex64"),
        (np.ones((10, 2)), {"n_clusters": 0}, ValueError, "n_clusters must be >= 1, got 0"),
        (np.ones((10, 2)), {"n_clusters": 2.5}, TypeError, "n_clusters must be an int, got float"),
        (np.ones((10, 2)), {"n_clusters": 2, "init": "random"}, ValueError, "init must be 'k-means\\+\\+' or an array"),
        (np.ones((10, 2)), {"n_clusters": 2, "init": np.ones((3, 2)), "n_init": 1}, ValueError,
         "init should be of shape \\(2, 2\\), got \\(3, 2\\)"),
        (np.ones((10, 2)), {"n_clusters": 2, "tol": -1.0}, ValueError, "tol must be a finite number >= 0, got -1.0"),
        (np.ones((10, 2)), {"n_clusters": 2, "n_threads": 0}, ValueError, "n_threads must be None, -1 or >= 1, got 0"),
    ],
)
def test_bad_input(X, kw, exc, match):
    with pytest.raises(exc, match=match):
        KMeans(**kw).fit(X)
