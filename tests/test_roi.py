import json

import numpy as np
import pytest

from stemroi import ROIResult


def _result():
    return ROIResult(
        origins=[[0, 0], [0, 64], [64, 0]], sizes=[64, 64], labels=["Bulk", "SF1", "unknown"],
        confidence=[0.9, 0.8, 0.3], unknown=[False, False, True], class_names=["Bulk", "SF1"],
        probabilities=[[0.9, 0.1], [0.2, 0.8], [0.3, 0.3]], image_shape=(128, 128), method="test")


def test_counts_and_roi_flags():
    r = _result()
    assert r.counts() == {"Bulk": 1, "SF1": 1, "unknown": 1}
    np.testing.assert_array_equal(r.is_roi, [False, True, True])
    assert r.summary()["n_roi"] == 2


def test_json_csv_round_trip(tmp_path):
    r = _result()
    r.to_json(tmp_path / "r.json")
    back = ROIResult.from_json(tmp_path / "r.json")
    np.testing.assert_array_equal(back.origins, r.origins)
    np.testing.assert_array_equal(back.labels, r.labels)
    np.testing.assert_allclose(back.probabilities, r.probabilities)
    text = r.to_csv(tmp_path / "r.csv")
    assert text.splitlines()[0].startswith("row,col,height,width,label,confidence,unknown,roi,p_Bulk,p_SF1")
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 4
    assert json.loads(r.to_json())["summary"]["n_tiles"] == 3


def test_bad_probability_shape():
    with pytest.raises(ValueError, match=r"expected shape \(1, 2\)"):
        ROIResult(origins=[[0, 0]], sizes=[8, 8], labels=["a"], confidence=[1], unknown=[False],
                  class_names=["a", "b"], probabilities=[[1.0]])


def test_failed_write_keeps_previous_file(tmp_path):
    from stemroi._atomic import atomic_open

    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as f:
            f.write("new")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["x.txt"]


def test_public_names_and_submodules_resolve():
    import stemroi

    for name in stemroi.__all__:
        assert getattr(stemroi, name) is not None, name
    assert callable(stemroi.preprocess.resize)
    import stemroi.adapters.dask  # noqa: F401  (imports the detection module)

    assert callable(stemroi.detect) and stemroi.detect.__name__ == "detect"
    assert stemroi.synth.make_image is not None
    import pytest as _pytest

    with _pytest.raises(AttributeError, match="no attribute 'nope'"):
        stemroi.nope


def test_atomic_output_respects_umask(tmp_path):
    import os
    import stat

    from stemroi._atomic import atomic_open

    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "m.txt") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.txt").st_mode) == 0o644
