"""device= of the numeric engine (KMeans, select_n_clusters, silhouette, PCA).

Everywhere: "cpu", None and "auto" (without a GPU) give the default's exact
results; bad names and "cuda" on a build or machine without it raise
ValueError naming the device. With a CUDA build and a GPU: the CUDA path
against the CPU path (same labels; values within 1e-5 float32 / 1e-10
float64 relative) and bit-identical GPU results run to run.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stemroi import PCA, KMeans
from stemroi._lib import _core
from stemroi.cluster import select_n_clusters
from stemroi.metrics import silhouette_samples, silhouette_score

GPU = bool(_core.cuda_built and torch.cuda.is_available() and _core.cuda_device_count() > 0)
needs_gpu = pytest.mark.skipif(
    not GPU,
    reason="needs stemroi built with STEMROI_WITH_CUDA=ON and a visible GPU "
    f"(cuda_built={_core.cuda_built}, torch.cuda.is_available()={torch.cuda.is_available()})",
)
TOL = {np.float32: 1e-5, np.float64: 1e-10}


def blobs(n=600, d=8, k=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centres = 8.0 * rng.standard_normal((k, d))
    X = centres[np.arange(n) % k] + rng.standard_normal((n, d))
    return np.ascontiguousarray(X, dtype=dtype)


def test_build_flags():
    assert isinstance(_core.cuda_built, bool)
    count = _core.cuda_device_count()
    assert isinstance(count, int) and count >= 0
    if not _core.cuda_built:
        assert count == 0


@pytest.mark.parametrize("device", [None, "cpu", "auto"])
def test_cpu_names_give_the_default_results(device):
    X = blobs()
    ref = KMeans(4, n_init=2, random_state=0).fit(X)
    got = KMeans(4, n_init=2, random_state=0, device=device).fit(X)
    np.testing.assert_array_equal(got.labels_, ref.labels_)
    ref_pca = PCA(3).fit(X)
    pca = PCA(3, device=device).fit(X)
    sil_ref = silhouette_samples(X, ref.labels_)
    sil = silhouette_samples(X, ref.labels_, device=device)
    sweep_ref = select_n_clusters(X, [2, 3, 4], n_init=2, random_state=0)
    sweep = select_n_clusters(X, [2, 3, 4], n_init=2, random_state=0, device=device)
    assert sweep.k_values == sweep_ref.k_values and sweep.best_k == sweep_ref.best_k
    if device == "auto" and GPU:  # "auto" picked the GPU: the CUDA tolerances
        np.testing.assert_allclose(got.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(pca.components_, ref_pca.components_, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(sil, sil_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(sweep.scores, sweep_ref.scores, rtol=1e-10, atol=1e-10)
        return
    np.testing.assert_array_equal(got.cluster_centers_, ref.cluster_centers_)
    assert got.inertia_ == ref.inertia_ and got.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(got.predict(X), ref.predict(X))
    np.testing.assert_array_equal(got.transform(X), ref.transform(X))
    assert got.score(X) == ref.score(X)
    np.testing.assert_array_equal(pca.components_, ref_pca.components_)
    np.testing.assert_array_equal(pca.explained_variance_, ref_pca.explained_variance_)
    np.testing.assert_array_equal(sil, sil_ref)
    assert silhouette_score(X, ref.labels_, device=device) == silhouette_score(X, ref.labels_)
    np.testing.assert_array_equal(sweep.scores, sweep_ref.scores)
    for k in sweep.k_values:
        np.testing.assert_array_equal(sweep.labels[k], sweep_ref.labels[k])


def test_device_is_a_parameter():
    assert KMeans(3).get_params()["device"] is None
    assert KMeans(3, device="cuda:1").get_params()["device"] == "cuda:1"
    assert PCA(2, device="auto").get_params()["device"] == "auto"
    assert "device='auto'" in repr(PCA(2, device="auto"))
    assert "device" not in repr(KMeans(3))
    assert KMeans(3).set_params(device="cpu").device == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CUDA", ""])
def test_malformed_device_names_raise(bad):
    X = blobs(n=50)
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'"):
        KMeans(2, n_init=1, device=bad).fit(X)
    with pytest.raises(ValueError, match=r"device must be"):
        PCA(2, device=bad).fit(X)
    with pytest.raises(ValueError, match=r"device must be"):
        silhouette_score(X, np.arange(50) % 2, device=bad)


def test_non_string_device_is_a_type_error():
    with pytest.raises(TypeError, match="device must be None, a str or a torch.device"):
        KMeans(2, n_init=1, device=0).fit(blobs(n=50))


def _cuda_unavailable_message():
    if not _core.cuda_built:
        return r"stemroi was built without CUDA \(STEMROI_WITH_CUDA=OFF\); got device='{}'"
    return r"device='{}' requested but no CUDA device is visible"


@pytest.mark.skipif(GPU, reason="this machine can run the CUDA path")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda:0")])
def test_cuda_without_cuda_raises_a_value_error_naming_the_device(device):
    X = blobs(n=60)
    name = str(device)
    match = _cuda_unavailable_message().format(name)
    with pytest.raises(ValueError, match=match):
        KMeans(2, n_init=1, device=device).fit(X)
    fitted = KMeans(2, n_init=1).fit(X)
    fitted.set_params(device=device)
    for method in (fitted.predict, fitted.transform, fitted.score):
        with pytest.raises(ValueError, match=match):
            method(X)
    with pytest.raises(ValueError, match=match):
        PCA(2, device=device).fit(X)
    with pytest.raises(ValueError, match=match):
        silhouette_samples(X, fitted.labels_, device=device)
    with pytest.raises(ValueError, match=match):
        silhouette_score(X, fitted.labels_, device=device)
    with pytest.raises(ValueError, match=match):
        select_n_clusters(X, [2, 3], n_init=1, device=device)


@needs_gpu
def test_cuda_index_out_of_range_raises():
    bad = f"cuda:{_core.cuda_device_count()}"
    with pytest.raises(ValueError, match=rf"device='{bad}' requested but only"):
        KMeans(2, n_init=1, device=bad).fit(blobs(n=50))


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kmeans_on_cuda_matches_the_cpu(dtype):
    X = blobs(n=3001, d=37, k=7, seed=1, dtype=dtype)
    tol = TOL[dtype]
    cpu = KMeans(7, n_init=3, random_state=5).fit(X)
    gpu = KMeans(7, n_init=3, random_state=5, device="cuda").fit(X)
    again = KMeans(7, n_init=3, random_state=5, device="cuda:0").fit(X)
    np.testing.assert_array_equal(gpu.labels_, cpu.labels_)
    assert gpu.n_iter_ == cpu.n_iter_
    np.testing.assert_allclose(gpu.cluster_centers_, cpu.cluster_centers_, rtol=tol, atol=tol)
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=tol)
    np.testing.assert_array_equal(gpu.predict(X), cpu.predict(X))
    np.testing.assert_allclose(gpu.transform(X), cpu.transform(X), rtol=tol, atol=0)
    assert gpu.score(X) == pytest.approx(cpu.score(X), rel=tol)
    np.testing.assert_array_equal(again.labels_, gpu.labels_)
    np.testing.assert_array_equal(again.cluster_centers_, gpu.cluster_centers_)
    np.testing.assert_array_equal(again.transform(X), gpu.transform(X))


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silhouette_and_sweep_on_cuda_match_the_cpu(dtype):
    X = blobs(n=1000, d=45, k=4, seed=2, dtype=dtype)
    tol = TOL[dtype]
    labels = np.arange(len(X)) % 4
    cpu = silhouette_samples(X, labels)
    gpu = silhouette_samples(X, labels, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=tol, atol=tol)
    np.testing.assert_array_equal(silhouette_samples(X, labels, device="cuda"), gpu)
    assert silhouette_score(X, labels, sample_size=300, random_state=0, device="cuda") == pytest.approx(
        silhouette_score(X, labels, sample_size=300, random_state=0), rel=tol, abs=tol
    )
    sweep_cpu = select_n_clusters(X, range(2, 7), n_init=2, random_state=0)
    sweep_gpu = select_n_clusters(X, range(2, 7), n_init=2, random_state=0, device="cuda")
    assert sweep_gpu.best_k == sweep_cpu.best_k
    np.testing.assert_allclose(sweep_gpu.scores, sweep_cpu.scores, rtol=tol, atol=tol)
    for k in sweep_cpu.k_values:
        np.testing.assert_array_equal(sweep_gpu.labels[k], sweep_cpu.labels[k])


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2000, 12), (8, 60)])
def test_pca_on_cuda_matches_the_cpu(dtype, shape):
    n, d = shape
    rng = np.random.default_rng(3)
    X = np.ascontiguousarray((rng.standard_normal((n, d)) * np.arange(d, 0, -1) + 3.0).astype(dtype))
    tol = TOL[dtype]
    k = min(n, d) // 2
    cpu = PCA(k).fit(X)
    gpu = PCA(k, device="cuda").fit(X)
    np.testing.assert_allclose(gpu.components_, cpu.components_, rtol=tol, atol=tol)
    np.testing.assert_allclose(gpu.explained_variance_, cpu.explained_variance_, rtol=tol)
    np.testing.assert_allclose(gpu.transform(X), cpu.transform(X), rtol=tol, atol=tol * np.abs(cpu.transform(X)).max())
    np.testing.assert_array_equal(PCA(k, device="cuda").fit(X).components_, gpu.components_)
