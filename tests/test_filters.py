import numpy as np
import pytest
from scipy import ndimage

from stemroi.preprocessing import gaussian_filter, uniform_filter


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-12)])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.3, 8.0])
def test_gaussian_matches_scipy(rng, dtype, tol, sigma):
    imgs = rng.random((3, 17, 23)).astype(dtype)
    got = gaussian_filter(imgs, sigma)
    assert got.dtype == dtype
    for i in range(3):
        ref = ndimage.gaussian_filter(imgs[i], sigma, mode="reflect")
        np.testing.assert_allclose(got[i], ref, atol=tol, rtol=0)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 30])
def test_uniform_matches_scipy(rng, size):
    img = rng.random((20, 25)).astype(np.float32)
    np.testing.assert_allclose(uniform_filter(img, size), ndimage.uniform_filter(img, size, mode="reflect"), atol=2e-6)


def test_filters_keep_constant_images_constant():
    img = np.full((9, 9), 3.5, np.float32)
    np.testing.assert_allclose(gaussian_filter(img, 2.0), 3.5, atol=1e-6)
    np.testing.assert_allclose(uniform_filter(img, 7), 3.5, atol=1e-6)


def test_filters_equal_across_thread_counts(rng):
    imgs = rng.random((16, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(gaussian_filter(imgs, 1.5, n_threads=1), gaussian_filter(imgs, 1.5, n_threads=2))


def test_filter_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        gaussian_filter(np.full((4, 4), np.nan), 1.0)
    with pytest.raises(ValueError, match="sigma must be"):
        gaussian_filter(np.ones((4, 4)), -1.0)
    with pytest.raises(ValueError, match="expected a 2-D or 3-D"):
        gaussian_filter(np.ones(4), 1.0)
    with pytest.raises(TypeError, match="complex"):
        uniform_filter(np.ones((4, 4), complex), 3)
    with pytest.raises(ValueError, match="size must be >= 1"):
        uniform_filter(np.ones((4, 4)), 0)
