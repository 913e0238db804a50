"""Which class is bulk: fit warns when none is, detect says which one it used."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import stemroi
from stemroi.io import synth


@pytest.fixture(scope="module")
def data():
    X, y, names = synth.make_patch_dataset(n_per_class=12, patch_size=32, classes=["Bulk", "vacancy"], cell_px=8,
                                           random_state=0)
    frame = synth.make_image((96, 96), cell_px=8, defects={"vacancy": 1}, random_state=1).image
    return X, y, names, frame


def _classifier():
    return stemroi.PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, input_size=32, max_epochs=1,
                                   validation_fraction=0.0, calibrate=False, random_state=0, n_threads=1)


def test_integer_labels_without_names_warn_and_detect_says_no_bulk(data):
    X, y, _, frame = data
    with pytest.warns(UserWarning, match=r"no class is named 'Bulk' \(classes \['0', '1'\]\); detect\(\) will need "
                                         r"bulk_label="):
        clf = _classifier().fit(X, y)
    with pytest.warns(UserWarning, match="detect: no class is known to be bulk"):
        res = stemroi.detect(frame, clf, patch=32, stride=32)
    assert res.bulk_label is None and res.metadata["bulk_label"] is None
    assert res.is_roi.all()  # nothing is bulk, as the warning says
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named = stemroi.detect(frame, clf, patch=32, stride=32, bulk_label="0")
    assert named.bulk_label == "0" and named.metadata["bulk_label"] == "0"
    np.testing.assert_array_equal(named.is_roi, named.labels != "0")


def test_a_class_named_bulk_is_found_case_insensitively(data):
    X, y, names, frame = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = _classifier().fit(X, y, class_names=[n.lower() for n in names])  # "bulk"
        res = stemroi.detect(frame, clf, patch=32, stride=32)
    assert res.bulk_label == "bulk" and res.metadata["bulk_label"] == "bulk"
    with pytest.warns(UserWarning, match=r"classes \['Vacancy', 'vacancy'\]"):
        _classifier().fit(X, np.where(y == 0, "Vacancy", "vacancy"))


def test_a_class_with_few_patches_warns_and_names_it(data):
    X, y, names, _ = data
    keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:3]]  # Bulk 12, vacancy 3
    with pytest.warns(UserWarning, match=r"few patches in class 'vacancy' \(3\); with fewer than 5 a class is "
                                         r"barely learnt"):
        _classifier().fit(X[keep], y[keep], class_names=names)
    with warnings.catch_warnings():  # 5 per class: no warning
        warnings.simplefilter("error")
        keep5 = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:5]]
        _classifier().fit(X[keep5], y[keep5], class_names=names)
