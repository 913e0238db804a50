"""PCA: parity with the installed scikit-learn (components with signs,
variances), both solver routes, both sign conventions, dtype handling without
copies, determinism, bad input."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import stemroi

skd = pytest.importorskip("sklearn.decomposition")
sklearn = pytest.importorskip("sklearn")

# the sign convention of the installed scikit-learn: >= 1.5 decides from the
# components (V), earlier versions from the projections (U)
SKLEARN_SIGN = "components" if tuple(int(p) for p in sklearn.__version__.split(".")[:2]) >= (1, 5) else "scores"


def PCA(*args, **kwargs):  # noqa: N802 - stemroi's PCA with the installed scikit-learn's signs
    kwargs.setdefault("sign", SKLEARN_SIGN)
    return stemroi.PCA(*args, **kwargs)


def anisotropic(n, d, seed=0, offset=5.0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(10.0, 1.0, d)  # well separated spectrum
    mixing = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return (rng.standard_normal((n, d)) * scales) @ mixing + offset


def assert_same_pca(ours, ref, dtype):
    if dtype == np.float64:
        rtol, comp_atol = 1e-10, 1e-8
    else:
        rtol, comp_atol = 1e-5, 1e-4
    top = ref.explained_variance_[0]
    assert ours.n_components_ == ref.n_components_
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=rtol, atol=rtol * top)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ours.singular_values_, ref.singular_values_, rtol=rtol)
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=rtol, atol=rtol)
    # equal up to sign ...
    dots = np.abs(np.sum(ours.components_.astype(np.float64) * ref.components_, axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=comp_atol)
    # ... and with scikit-learn's sign convention, exactly the same vectors
    np.testing.assert_allclose(ours.components_, ref.components_, atol=comp_atol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,k", [((500, 20), None), ((500, 20), 5), ((30, 100), 10)])
def test_parity_with_sklearn_synthetic(dtype, shape, k):
    X = anisotropic(*shape).astype(dtype)
    ours = PCA(n_components=k).fit(X)
    ref = skd.PCA(n_components=k, svd_solver="full").fit(X)
    assert ours.components_.dtype == dtype and ours.explained_variance_.dtype == dtype
    assert_same_pca(ours, ref, dtype)
    tol = 1e-8 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), atol=tol * np.abs(ref.transform(X)).max())
    Z = ours.transform(X)
    np.testing.assert_allclose(ours.inverse_transform(Z), ref.inverse_transform(Z.astype(np.float64)), atol=tol * 10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parity_with_sklearn_real_cdte_fft_features(cdte_fft_features, dtype):
    X = cdte_fft_features[0].astype(dtype)
    ours = PCA(n_components=8).fit(X)
    ref = skd.PCA(n_components=8, svd_solver="full").fit(X)
    assert ours._used_gram  # n >> d and well conditioned: covariance route
    assert_same_pca(ours, ref, dtype)


def test_variance_fraction_and_whiten_match_sklearn():
    X = anisotropic(400, 15, seed=3)
    for frac in (0.3, 0.9, 0.999):
        assert PCA(n_components=frac).fit(X).n_components_ == skd.PCA(n_components=frac).fit(X).n_components_
    ours = PCA(n_components=4, whiten=True).fit(X)
    ref = skd.PCA(n_components=4, whiten=True, svd_solver="full").fit(X)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), atol=1e-9)
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(X)), ref.inverse_transform(ref.transform(X)), atol=1e-8)
    assert ours.noise_variance_ == pytest.approx(ref.noise_variance_, rel=1e-10)


def test_ill_conditioned_falls_back_to_svd_and_stays_exact():
    rng = np.random.default_rng(1)
    X = anisotropic(300, 10, seed=1)
    X[:, 9] = X[:, 0] * 1e-4 + 1e-7 * rng.standard_normal(300)  # tiny trailing variance
    ours = PCA().fit(X)
    ref = skd.PCA(svd_solver="full").fit(X)
    assert not ours._used_gram
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(ours.components_[:9], ref.components_[:9], atol=1e-8)


def test_randomized_solver_close_and_deterministic():
    rng = np.random.default_rng(4)
    scales = np.r_[[40.0, 30.0, 20.0, 15.0, 10.0], np.full(35, 1.0)]  # a gap after 5 components
    mix = np.linalg.qr(rng.standard_normal((40, 40)))[0]
    X = (rng.standard_normal((2000, 40)) * scales) @ mix
    full = skd.PCA(n_components=5, svd_solver="full").fit(X)
    a = PCA(n_components=5, svd_solver="randomized", random_state=0).fit(X)
    b = PCA(n_components=5, svd_solver="randomized", random_state=0, n_threads=1).fit(X)
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_allclose(a.explained_variance_, full.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(a.components_, full.components_, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deterministic_across_threads_and_repeats(dtype):
    X = anisotropic(5000, 30, seed=5).astype(dtype)  # several Gram chunks
    runs = [PCA(n_components=6, n_threads=t).fit(X) for t in (1, 2, 2, 1)]
    for r in runs[1:]:
        np.testing.assert_array_equal(r.components_, runs[0].components_)
        np.testing.assert_array_equal(r.explained_variance_, runs[0].explained_variance_)
        np.testing.assert_array_equal(r.transform(X), runs[0].transform(X))


def test_float32_input_is_not_copied(monkeypatch):
    from stemroi._lib import _core

    seen = {}
    real_fit, real_transform = _core.pca_fit, _core.pca_transform

    def spy_fit(X, *args, **kw):
        seen["fit"] = X
        return real_fit(X, *args, **kw)

    def spy_transform(X, *args, **kw):
        seen["transform"] = X
        return real_transform(X, *args, **kw)

    monkeypatch.setattr(_core, "pca_fit", spy_fit)
    monkeypatch.setattr(_core, "pca_transform", spy_transform)
    X = anisotropic(200, 8).astype(np.float32)
    Z = PCA(n_components=3).fit(X).transform(X)
    assert seen["fit"] is X and seen["transform"] is X
    assert Z.dtype == np.float32


def test_pickle_and_params():
    X = anisotropic(100, 6)
    p = PCA(n_components=3).fit(X)
    q = pickle.loads(pickle.dumps(p))
    np.testing.assert_array_equal(q.transform(X), p.transform(X))
    assert p.get_params()["n_components"] == 3
    assert "n_components=3" in repr(p)
    assert stemroi.PCA is stemroi.decomposition.PCA


@pytest.mark.parametrize(
    "X,exc,match",
    [
        (np.array([[1.0, np.nan], [2.0, 3.0]]), ValueError, "NaN or infinity"),
        (np.array([[1.0, np.inf], [2.0, 3.0]]), ValueError, "NaN or infinity"),
        (np.empty((0, 3)), ValueError, "empty array: 0 sample\\(s\\) \\(shape=\\(0, 3\\)\\)"),
        (np.arange(5.0), ValueError, "expected a 2-D array, got shape \\(5,\\)"),
        (np.array([[1, "a"]], dtype=object), TypeError, "unsupported dtype object"),
        (np.ones((3, 2), dtype=complex), TypeError, "unsupported dtype complex128"),
        (np.ones((1, 4)), ValueError, "got 1 sample"),
    ],
)
def test_bad_input(X, exc, match):
    with pytest.raises(exc, match=match):
        PCA().fit(X)


def test_bad_parameters():
    X = anisotropic(20, 4)
    with pytest.raises(ValueError, match="n_components=5 must be between 1 and min\\(n_samples, n_features\\)=4"):
        PCA(n_components=5).fit(X)
    with pytest.raises(ValueError, match="variance fraction in \\(0, 1\\), got 1.5"):
        PCA(n_components=1.5).fit(X)
    with pytest.raises(ValueError, match="svd_solver must be 'full' or 'randomized', got 'arpack'"):
        PCA(svd_solver="arpack").fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but PCA is expecting 4"):
        PCA(2).fit(X).transform(X[:, :3])
    with pytest.raises(ValueError, match="not fitted yet"):
        PCA().transform(X)


def test_default_sign_is_components_and_scores_is_the_u_based_rule():
    X = anisotropic(300, 12, seed=7)
    comp = stemroi.PCA(n_components=5).fit(X).components_
    assert stemroi.PCA().sign == "components"
    lead = comp[np.arange(5), np.argmax(np.abs(comp), axis=1)]
    assert np.all(lead > 0)  # largest loading positive
    scores_pca = stemroi.PCA(n_components=5, sign="scores").fit(X)
    Z = scores_pca.transform(X)
    lead_scores = Z[np.argmax(np.abs(Z), axis=0), np.arange(5)]
    assert np.all(lead_scores > 0)  # largest projection positive
    np.testing.assert_array_equal(np.abs(scores_pca.components_), np.abs(comp))  # same vectors up to sign
    with pytest.raises(ValueError, match="sign must be 'components' or 'scores', got 'u'"):
        stemroi.PCA(sign="u").fit(X)
