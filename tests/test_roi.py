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
    assert callable(stemroi.preprocessing.transforms.resize)
    import stemroi.adapters.dask  # noqa: F401  (imports the detection module)

    assert callable(stemroi.detect) and stemroi.detect.__name__ == "detect"
    assert stemroi.io.synth.make_image is not None
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


def _mapped(maps=None):
    return ROIResult(
        origins=[[0, 0], [0, 4], [4, 0], [4, 4]], sizes=[4, 4], labels=["Bulk", "SF1", "Bulk", "SF1"],
        confidence=[0.9, 0.8, 0.7, 0.6], unknown=[False] * 4, class_names=["Bulk", "SF1"], image_shape=(8, 9),
        method="test", maps={"score": np.arange(72, dtype=np.float32).reshape(8, 9)} if maps is None else maps)


def test_maps_are_an_attribute_not_written_to_csv(tmp_path):
    r = _mapped()
    assert r.image_shape == (8, 9) and r.maps["score"][7, 8] == 71
    doc = json.loads(r.to_json(tmp_path / "m.json"))
    assert doc["summary"]["maps"] == {"score": [8, 9]}  # shapes only, not pixels
    assert "71" not in json.dumps(doc["tiles"])
    header = r.to_csv().splitlines()[0]
    assert header == "row,col,height,width,label,confidence,unknown,roi"
    back = ROIResult.from_json(tmp_path / "m.json")
    assert back.maps == {} and back.image_shape == (8, 9)
    np.testing.assert_array_equal(back.origins, r.origins)


def test_maps_must_have_the_image_shape():
    with pytest.raises(ValueError, match=r"maps\['score'\]: expected a 2-D array of the image shape \(8, 9\)"):
        _mapped(maps={"score": np.zeros((8, 8))})
    with pytest.raises(ValueError, match="got shape \\(2, 8, 9\\)"):
        _mapped(maps={"score": np.zeros((2, 8, 9))})


def test_pixel_map_nearest_tile_centre():
    r = _mapped()
    m = r.pixel_map(np.array([1, 2, 3, 4]), fill=-1)
    assert m.dtype == np.int64 and m.shape == (8, 9)
    expected = np.full((8, 9), -1)
    expected[:4, :4], expected[:4, 4:8], expected[4:, :4], expected[4:, 4:8] = 1, 2, 3, 4
    np.testing.assert_array_equal(m, expected)  # column 8: no tile
    # overlapping tiles: rows 0..5 and 2..7; pixel rows 0-3 are nearer the first centre (2.5 vs 4.5 ...)
    ov = ROIResult(origins=[[0, 0], [2, 0]], sizes=[6, 2], labels=["a", "b"], confidence=[1, 1],
                   unknown=[False, False], class_names=["a", "b"], image_shape=(8, 2))
    np.testing.assert_array_equal(ov.pixel_map(np.array([10.0, 20.0]))[:, 0], [10, 10, 10, 10, 20, 20, 20, 20])
    with pytest.raises(ValueError, match=r"values: expected shape \(2,\)"):
        ov.pixel_map([1.0])


def test_one_save_figure_for_figures_and_axes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stemroi import plotting
    from stemroi.plotting import _cluster, _rois

    fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
    ax.plot([0, 1], [0, 1])
    assert plotting.save_figure(ax, tmp_path / "a.png") is fig
    assert plotting.save_figure(fig, tmp_path / "b.png", dpi=100, atomic=False, bbox_inches=None) is fig
    from PIL import Image

    assert Image.open(tmp_path / "b.png").size == (200, 200)  # 2 in x 100 dpi, no tight crop
    assert Image.open(tmp_path / "a.png").size[0] < 150  # the figure's dpi (50), not 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary files left
    with pytest.raises(TypeError, match="Figure or Axes"):
        plotting.save_figure(np.zeros(3), tmp_path / "c.png")
    assert not hasattr(_rois, "save_figure") and _cluster.save_figure is plotting.save_figure
    plt.close(fig)


def test_one_colour_helper():
    from stemroi.plotting import class_colors, palette

    c = class_colors(["Bulk", "SF1", "SF2"], bulk_label="Bulk")
    assert c == {"SF1": "#1f77b4", "SF2": "#ff7f0e", "unknown": "#ffffff"}
    assert list(class_colors(["Bulk", "SF1"], "Bulk", include_bulk=True)) == ["Bulk", "SF1", "unknown"]
    assert len(set(map(str, palette(14)))) == 14


def test_anomaly_map_old_accessors_warn():
    from stemroi.detection import AnomalyMap

    a = AnomalyMap(origins=[[0, 0]], sizes=[4, 4], labels=["Bulk"], confidence=[1.0], unknown=[False],
                   class_names=["Bulk", "Anomaly"], image_shape=(4, 4), metadata={"map_threshold": 0.25},
                   maps={"anomaly": np.ones((4, 4), np.float32)})
    assert isinstance(a, ROIResult)
    with pytest.warns(FutureWarning, match=r'maps\["anomaly"\]'):
        np.testing.assert_array_equal(a.map, 1.0)
    with pytest.warns(FutureWarning, match="map_threshold"):
        assert a.threshold == 0.25
    with pytest.warns(FutureWarning, match="ROIResult itself"):
        assert a.result is a
