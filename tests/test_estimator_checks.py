"""scikit-learn's estimator checks for PCA and KMeans.

All checks of ``sklearn.utils.estimator_checks`` (1.2) run, except two whose
expectation contradicts this project's input contract, documented here:

* ``check_dtype_object``: scikit-learn expects numbers stored in an object
  array to be accepted; stemroi rejects object dtype with a TypeError naming
  it, so nothing is silently converted.
* ``check_complex_data``: scikit-learn expects a ValueError; stemroi raises a
  TypeError ("unsupported dtype complex128"), which is the more precise type.
Both behaviours are asserted below instead.
"""
from __future__ import annotations

import numpy as np
import pytest

from stemroi import PCA, KMeans

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

EXCLUDED = {
    "check_dtype_object": "object arrays are rejected with TypeError by design",
    "check_complex_data": "complex arrays are rejected with TypeError (not ValueError) by design",
}


def _check_name(check) -> str:
    func = getattr(check, "func", check)
    return getattr(func, "__name__", str(func))


@parametrize_with_checks([PCA(), PCA(n_components=2), KMeans(n_clusters=3, n_init=2, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    name = _check_name(check)
    if name in EXCLUDED:
        pytest.skip(EXCLUDED[name])
    check(estimator)


@pytest.mark.parametrize("est", [PCA(), KMeans(2, n_init=1)])
def test_excluded_checks_behaviour(est):
    X = np.random.default_rng(0).uniform(size=(20, 3))
    with pytest.raises(TypeError, match="unsupported dtype object"):
        est.fit(X.astype(object))
    with pytest.raises(TypeError, match="unsupported dtype complex128"):
        est.fit(X + 1j)
