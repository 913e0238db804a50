"""Adapters against the real packages (skipped when an optional package is missing)."""
import numpy as np
import pytest

from stemroi import ROIResult


def _result():
    return ROIResult(origins=[[0, 0], [0, 8], [8, 8]], sizes=[8, 8], labels=["Bulk", "SF1", "Vac"],
                     confidence=[0.9, 0.8, 0.7], unknown=[False, False, False],
                     class_names=["Bulk", "SF1", "Vac"], image_shape=(16, 16))


# ---- hyperspy ---------------------------------------------------------------

@pytest.fixture
def hs():
    return pytest.importorskip("hyperspy.api")


def test_signal_to_image_keeps_values_and_calibration(hs, rng):
    from stemroi.adapters import hyperspy as hsa

    data = rng.random((16, 24)).astype(np.float64)
    s = hs.signals.Signal2D(data)
    for ax in s.axes_manager.signal_axes:
        ax.scale, ax.units = 0.05, "nm"
    image, cal = hsa.signal_to_image(s)
    assert image.dtype == np.float32 and image.shape == (16, 24)
    np.testing.assert_array_equal(image, data.astype(np.float32))
    assert cal.pixel_size == pytest.approx(0.05) and cal.unit == "nm"
    # "px": not calibrated (a model's pixel size cannot be compared with it, so it must not count as one)
    for ax in s.axes_manager.signal_axes:
        ax.scale, ax.units = 1.0, "px"
    assert hsa.signal_to_image(s)[1].pixel_size is None


def test_stack_is_refused_and_iterated(hs, rng):
    from stemroi.adapters import hyperspy as hsa

    s = hs.signals.Signal2D(rng.random((3, 10, 12)))
    with pytest.raises(ValueError, match=r"navigation shape \(3,\): 3 frames.*iter_signal_frames"):
        hsa.signal_to_image(s)
    frames = list(hsa.iter_signal_frames(s))
    assert [i for i, _ in frames] == [(0,), (1,), (2,)]
    np.testing.assert_array_equal(frames[2][1], s.data[2].astype(np.float32))


def test_non_image_signals_are_refused(hs):
    from stemroi.adapters import hyperspy as hsa

    with pytest.raises(TypeError, match="signal dimension 1"):
        hsa.signal_to_image(hs.signals.Signal1D(np.zeros(10)))
    with pytest.raises(TypeError, match="expected a HyperSpy Signal2D"):
        hsa.signal_to_image(np.zeros((4, 4)))


def test_roi_markers_in_calibrated_units(hs):
    from stemroi.adapters import hyperspy as hsa

    s = hs.signals.Signal2D(np.zeros((16, 16)))
    for ax in s.axes_manager.signal_axes:
        ax.scale, ax.offset = 0.5, 10.0
    markers = hsa.roi_markers(_result(), s)
    assert [m.name for m in markers] == ["SF1", "Vac"]  # bulk not drawn
    # SF1 tile: rows 0..7, cols 8..15 -> centre at pixel (3.5, 11.5) -> 10 + 0.5 * index
    np.testing.assert_allclose(markers[0].kwargs["offsets"], [[10 + 11.5 * 0.5, 10 + 3.5 * 0.5]])
    np.testing.assert_allclose(markers[0].kwargs["widths"], [4.0])
    hsa.add_roi_markers(s, _result())
    assert len(s.metadata.Markers) == 2


def test_signal_with_roi_markers_saves_and_reloads(hs, tmp_path):
    from stemroi.adapters import hyperspy as hsa

    s = hs.signals.Signal2D(np.zeros((16, 16), np.float32))
    hsa.add_roi_markers(s, _result())
    s.save(tmp_path / "rois.hspy")
    back = hs.load(tmp_path / "rois.hspy")
    markers = back.metadata.Markers
    assert sorted(str(markers[k].name) for k in markers.keys()) == ["SF1", "Vac"]


def test_image_to_signal_round_trip(hs, rng):
    from stemroi.adapters import hyperspy as hsa
    from stemroi.io import Calibration

    img = rng.random((8, 9)).astype(np.float32)
    s = hsa.image_to_signal(img, Calibration(0.2, "nm"), title="frame")
    back, cal = hsa.signal_to_image(s)
    np.testing.assert_array_equal(back, img)
    assert (cal.pixel_size, cal.unit) == (pytest.approx(0.2), "nm")


# ---- py4DSTEM ---------------------------------------------------------------

def test_py4dstem_virtual_image(rng):
    py4d = pytest.importorskip("py4DSTEM")
    from stemroi.adapters import py4dstem as p4a

    dc = py4d.DataCube(rng.random((6, 7, 16, 16)).astype(np.float32))
    dc.calibration.set_R_pixel_size(0.25)
    dc.calibration.set_R_pixel_units("A")
    vi = dc.get_virtual_image(mode="annulus", geometry=((8, 8), (3, 7)), name="adf", returncalc=True)
    image, cal = p4a.to_image(vi)
    assert image.shape == (6, 7) and image.dtype == np.float32
    np.testing.assert_allclose(image, np.asarray(vi.data), rtol=1e-6)
    assert (cal.pixel_size, cal.unit) == (0.25, "A")
    dc.calibration.set_R_pixel_size(2)
    dc.calibration.set_R_pixel_units("pixels")  # binned, not calibrated
    assert p4a.to_image(dc.get_virtual_image(mode="annulus", geometry=((8, 8), (3, 7)), name="adf2",
                                             returncalc=True))[1].pixel_size is None
    with pytest.raises(TypeError, match=r"4-D DataCube of shape \(6, 7, 16, 16\).*get_virtual_image"):
        p4a.to_image(dc)
    with pytest.raises(TypeError, match="expected a py4DSTEM RealSlice"):
        p4a.to_image(42)


# ---- dask.distributed -------------------------------------------------------

def _double(x):
    if np.isnan(x).any():
        raise ValueError("NaN frame")
    return x * 2


def test_map_frames_on_a_local_cluster_keeps_order_and_names_failures(rng):
    distributed = pytest.importorskip("distributed")
    from stemroi.adapters.dask import map_frames

    frames = [rng.random((4, 4)) for _ in range(5)]
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        out = map_frames(_double, frames, client=client)
        for f, o in zip(frames, out):
            np.testing.assert_array_equal(o, f * 2)
        with pytest.raises(ValueError, match=r"frame array \(4, 4\): NaN frame"):
            map_frames(_double, [np.full((4, 4), np.nan)], client=client)
    assert [o.shape for o in map_frames(_double, frames)] == [(4, 4)] * 5


def test_hyperspy_accepts_stemroi_estimators(hs, rng):
    """HyperSpy's decomposition / cluster_analysis take stemroi's PCA and KMeans as
    scikit-learn style algorithms, and give what the estimators give alone."""
    import stemroi

    base = rng.random((3, 32))
    weights = rng.random((12, 10, 3))
    data = (weights @ base + 0.01 * rng.standard_normal((12, 10, 32))).astype(np.float32)
    s = hs.signals.Signal1D(data)
    s.decomposition(algorithm=stemroi.PCA(n_components=3), output_dimension=3, print_info=False)
    ref = stemroi.PCA(n_components=3).fit(data.reshape(-1, 32))
    np.testing.assert_allclose(np.abs(s.learning_results.factors.T), np.abs(ref.components_), atol=1e-5)

    km = stemroi.KMeans(n_clusters=3, n_init=2, random_state=0)
    s.cluster_analysis("decomposition", n_clusters=3, preprocessing=None, algorithm=km)
    # HyperSpy fitted our instance and reports its labels
    np.testing.assert_array_equal(s.learning_results.cluster_labels.argmax(0), km.labels_)
    assert km.cluster_centers_.shape[0] == 3


# ---- shared helpers ------------------------------------------------------------

def test_run_detector_passes_the_pixel_size_only_to_detectors_that_take_it():
    from stemroi.adapters._common import run_detector, tile_scores
    from stemroi.io import Calibration

    seen = []

    def with_size(image, pixel_size=None):
        seen.append(pixel_size)
        return _result()

    def without(image):
        return _result()

    cal = Calibration(0.1, "nm")
    run_detector(with_size, np.zeros((16, 16)), cal)
    run_detector(with_size, np.zeros((16, 16)), Calibration(None, None))  # uncalibrated: not passed
    assert seen == [cal, None]
    assert len(run_detector(without, np.zeros((16, 16)), cal)) == 3
    with pytest.raises(TypeError, match="expected an ROIResult"):
        run_detector(lambda im: 42, np.zeros((16, 16)))

    r = _result()
    np.testing.assert_allclose(tile_scores(r), [0.9, 0.8, 0.7])  # no scores, no probabilities: confidence
    r.probabilities = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
    np.testing.assert_allclose(tile_scores(r), [0.1, 0.9, 0.8])  # 1 - p(Bulk)
    np.testing.assert_allclose(tile_scores(r, "Vac"), [0.05, 0.1, 0.7])
    with pytest.raises(ValueError, match="has no scores"):
        tile_scores(r, "scores")
