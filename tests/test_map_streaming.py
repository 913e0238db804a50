"""The streamed CVAE anomaly map equals the all-crops-at-once map bit for bit,
and its memory does not grow with the number of crops.

The reference below is the implementation before streaming (every crop,
preprocessed crop, reconstruction, difference and energy map of the frame at
once, blended into two frame-sized float64 accumulators), kept here (plus the
per-crop intensity calibration added since) so that the streamed one is
checked against it.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from stemroi import BulkCVAE
from stemroi._lib import _core
from stemroi.detection import _anomaly_map as am
from stemroi.preprocessing.grid import PatchGrid, _iter_strips, _read_only_map


def _reference_blend(energy, origins, shape):
    s = energy.shape[-1]
    weight = am._taper(s)
    acc = np.zeros(shape)
    wsum = np.zeros(shape)
    for k, (r, c) in enumerate(origins):
        acc[r:r + s, c:c + s] += weight * energy[k]
        wsum[r:r + s, c:c + s] += weight
    return np.sqrt(acc / wsum).astype(np.float32)


def _reference(img, model, stride, batch_size=64):
    from stemroi.models.cvae import _image_2d, preprocess_crops

    img = _image_2d(img)
    s = int(model.crop_size)
    grid = PatchGrid(patch_size=s, stride=stride, edge="shift", n_threads=model.n_threads)
    origins = np.asarray(grid.origins(img.shape), dtype=np.int64)
    crops = preprocess_crops(grid.extract(img), float(model.blur_sigma), n_threads=model.n_threads)
    if model.calibration_mode != "fixed":  # one intensity level for the frame, from its stride-s crops
        crops = model.calibrated_input(crops, image_level=model.image_level(img))
    nt = 1 if model.n_threads is None else model.n_threads
    recon = model.model_.reconstruct(crops, batch_size, nt)
    diff = np.ascontiguousarray(crops - recon)
    energy = _core.local_energy_maps(diff, int(model.energy_window), nt)
    scores = model._scores_of_difference(diff)
    return origins, scores, _reference_blend(energy, origins, img.shape)


def _frame(h, w, seed=0):
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.25 * np.cos(r * 0.9) * np.cos(c * 0.9) + 0.02 * rng.standard_normal((h, w))
    img[h // 3:h // 3 + 6, w // 2:w // 2 + 6] = 1.0  # a defect
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def cvae():
    bulk = _frame(96, 96, seed=1)
    return BulkCVAE(latent_dim=4, epochs=2, crop_size=16, n_crops=64, blur_sigma=0.5, detector="energy",
                    calibration_fraction=0.25, random_state=0, n_threads=1).fit(bulk)


@pytest.mark.parametrize("shape,stride,per_batch", [((97, 131), 5, 8), ((64, 64), 16, 8), ((80, 120), 7, 512),
                                                    ((16, 300), 3, 8)])
def test_streamed_scores_and_map_bit_identical(cvae, shape, stride, per_batch):
    """Many small batches (8 crops: batch_size 8), one batch, strides that do not divide the frame."""
    img = _frame(*shape)
    origins, ref_scores, ref_map = _reference(img, cvae, stride, batch_size=8)
    grid = PatchGrid(patch_size=16, stride=stride, edge="shift", n_threads=1)
    scores, amap = am._stream_scores(img, cvae, grid, 8, crops_per_batch=per_batch)
    assert (len(origins) > per_batch) == (per_batch != 512)  # several batches, or exactly one
    assert scores.keys() == ref_scores.keys()
    for k in scores:
        np.testing.assert_array_equal(scores[k], ref_scores[k], err_msg=k)
    assert amap.dtype == np.float32 and amap.shape == shape
    np.testing.assert_array_equal(amap, ref_map)


@pytest.mark.parametrize("detector", ["energy", "anm", "signed"])
def test_anomaly_map_equals_reference_for_each_detector(cvae, detector):

    model = cvae
    old = model.detector
    model.detector = detector
    try:
        img = _frame(90, 110, seed=3)
        res = am.anomaly_map(img, model, stride=6, batch_size=16)
        origins, scores, ref_map = _reference(img, model, 6, batch_size=16)
        decision = model._decision(scores)
        np.testing.assert_array_equal(res.origins, origins)
        np.testing.assert_array_equal(res.maps["anomaly"], ref_map)
        np.testing.assert_array_equal(res.labels, np.where(decision >= 0, "Anomaly", "Bulk"))
        want = decision if detector == "signed" else scores["energy" if detector == "energy" else "anm"]
        np.testing.assert_array_equal(res.scores, want.astype(np.float64))
    finally:
        model.detector = old


def test_memory_mapped_and_float64_frames_give_the_same_map(cvae, tmp_path):
    img = _frame(100, 100, seed=4)
    ref = am.anomaly_map(img, cvae, stride=8)
    path = tmp_path / "frame.npy"
    np.save(path, img.astype(np.float64))
    mapped = np.load(path, mmap_mode="r")
    res = am.anomaly_map(mapped, cvae, stride=8)
    np.testing.assert_array_equal(res.maps["anomaly"], ref.maps["anomaly"])
    np.testing.assert_array_equal(res.scores, ref.scores)
    np.testing.assert_array_equal(res.labels, ref.labels)


def test_nan_is_refused_with_its_index(cvae, tmp_path):
    img = _frame(64, 64)
    img[40, 7] = np.nan
    with pytest.raises(ValueError, match=r"image: contains NaN or infinity \(first at index \(40, 7\), value nan\)"):
        am.anomaly_map(img, cvae)
    path = tmp_path / "nan.npy"
    np.save(path, img)
    with pytest.raises(ValueError, match=r"first at index \(40, 7\)"):
        am.anomaly_map(np.load(path, mmap_mode="r"), cvae)


def test_band_blender_equals_whole_frame_blend():
    rng = np.random.default_rng(0)
    s, shape = 8, (37, 29)
    grid = PatchGrid(patch_size=s, stride=3, edge="shift")
    origins = grid.origins(shape)
    energy = rng.random((len(origins), s, s)).astype(np.float32)
    ref = _reference_blend(energy, origins, shape)
    blender = am._BandBlender(shape, s)
    for a in range(0, len(origins), 5):  # batches that end mid-row of origins
        blender.add(energy[a:a + 5], origins[a:a + 5])
        assert len(blender.acc) <= 2 * s + 3  # a band of rows, not the frame
    np.testing.assert_array_equal(blender.result(), ref)


def test_streamed_map_memory_does_not_scale_with_crops(cvae):
    """numpy allocations (tracemalloc) during the map of a 256 x 256 frame at stride 4 (3721 crops):
    the all-at-once version held ~5 crop-sized arrays of 3.6 MB plus two 0.5 MB float64 accumulators
    (measured: 18.4 MB); streamed: 3.1 MB (one batch of 512 crops and the map)."""
    img = _frame(256, 256, seed=5)
    n = PatchGrid(16, 4, "shift").n_patches(img.shape)
    crops_mb = n * 16 * 16 * 4 / 2**20
    tracemalloc.start()
    try:
        am.anomaly_map(img, cvae, stride=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak_mb = peak / 2**20
    assert crops_mb > 3.5
    # map (0.25 MB) + one batch of 512 crops and their work arrays (~3 MB) + per-crop scores
    assert peak_mb < 6, f"peak traced numpy memory {peak_mb:.1f} MB for {n} crops ({crops_mb:.0f} MB of crops)"


def test_iter_strips_covers_the_frame_and_finds_the_map(tmp_path):
    img = np.arange(300 * 70, dtype=np.float32).reshape(300, 70)
    path = tmp_path / "f.npy"
    np.save(path, img)
    mapped = np.load(path, mmap_mode="r")
    view = np.ascontiguousarray(mapped)  # a plain ndarray view: the map is found through .base
    assert type(view) is np.ndarray and _read_only_map(view) is not None
    assert _read_only_map(img) is None
    rows = []
    for r0, strip in _iter_strips(view, strip_bytes=70 * 4 * 32):
        assert strip.shape[0] <= 32
        rows.append(strip.copy())
        assert r0 == sum(len(r) for r in rows[:-1])
    np.testing.assert_array_equal(np.concatenate(rows), img)
    np.testing.assert_array_equal(mapped, img)  # released pages are read back from the file


def test_cluster_map_streamed_in_batches_equals_all_tiles_at_once():
    """Tiles embedded 7 at a time give the labels, distances and painted map of one pass over all tiles."""
    import stemroi
    from stemroi.detection import cluster_map
    from stemroi.detection._cluster_map import _painted_map

    rng = np.random.default_rng(0)
    X = rng.random((24, 32, 32)).astype(np.float32)
    X[::2, 8:20, 8:20] = 1.0
    clusterer = stemroi.PatchClusterer(features="fft", n_components=4, k_range=range(2, 4), n_init=2,
                                       random_state=0, n_threads=1).fit(X)
    img = _frame(150, 170, seed=6)
    res = cluster_map(img, clusterer, patch=32, stride=12, batch_size=7)
    grid = PatchGrid(32, 12, "shift")  # the default edge: tiles flush with the border cover the remainder
    Z = clusterer.transform(grid.extract(img))
    dist = clusterer._distances(Z)
    assert len(dist) > 7 * 10
    np.testing.assert_array_equal(res.origins, grid.origins(img.shape))
    Z32 = Z.astype(np.float32)  # the map keeps the embeddings as float32 for the median
    centre = np.median(Z32, axis=0).astype(np.float64)
    np.testing.assert_allclose(res.scores, np.linalg.norm(Z32.astype(np.float64) - centre, axis=1), rtol=1e-12,
                               atol=1e-12)
    assert list(res.labels) == [f"cluster {c}" for c in dist.argmin(axis=1)]
    np.testing.assert_array_equal(res.maps["cluster"], res.pixel_map(dist.argmin(axis=1).astype(np.int64), fill=-1))
    assert (res.maps["cluster"] >= 0).all()  # every pixel, the last 6 rows and columns included
    dropped = cluster_map(img, clusterer, patch=32, stride=12, batch_size=7, edge="drop")
    assert (dropped.maps["cluster"][:, 164:] == -1).all() and (dropped.maps["cluster"][140:] == -1).all()
    assert (dropped.maps["cluster"][:140, :164] >= 0).all()
    # the band-painted map equals ROIResult.pixel_map for any row-major square tiling
    origins = PatchGrid(9, 4, "shift").origins((40, 33))
    values = rng.integers(0, 5, len(origins))
    ref = stemroi.ROIResult(origins=origins, sizes=np.array([[9, 9]]), labels=np.array(["a"] * len(origins)),
                            confidence=np.ones(len(origins)), unknown=np.zeros(len(origins), bool),
                            class_names=["a"], image_shape=(40, 33)).pixel_map(values, fill=-1)
    np.testing.assert_array_equal(_painted_map(origins, 9, values, (40, 33), -1), ref)


@pytest.fixture(scope="module")
def segmenter():
    """A tiny DefectSegmenter (32-px tiles, three channels); its weights need not be good."""
    from stemroi import DefectSegmenter

    X = np.stack([_frame(32, 32, seed=s) for s in range(24)])
    y = np.array(["Bulk", "vacancy", "interstitial"] * 8)
    return DefectSegmenter(epochs=1, samples_per_epoch=32, batch_size=8, base_channels=4, pseudo_label="lattice",
                           random_state=0, n_threads=1).fit(X, y)


@pytest.mark.parametrize("tile_stride", [0.5, 0.3, 1.0])
@pytest.mark.parametrize("shape,strip_rows", [((300, 70), 48), ((131, 45), 20), ((97, 200), 16), ((200, 20), 30),
                                              ((64, 64), 16)])
def test_segmentation_map_strips_equal_the_whole_frame_prediction(segmenter, tile_stride, shape, strip_rows):
    """Strip-wise maps (several strips, odd sizes, frames narrower than a tile, a prediction stride that does
    not divide the tile) equal predict_maps of the whole frame: bit for bit with one tile per network batch;
    with 16 the CPU convolution's result for a tile depends on its batch by ~1 ulp (checked below)."""
    from stemroi.detection import segmentation_map
    from stemroi.detection._segmentation_map import _predict_maps_in_strips, _strip_plan

    old = segmenter.tile_stride
    segmenter.tile_stride = tile_stride
    try:
        img = _frame(*shape, seed=7)
        stride = max(1, int(round(32 * tile_stride)))
        plan = _strip_plan(shape[0], 32, stride, max(stride, strip_rows // stride * stride))
        assert len(plan) >= 2  # really streamed
        assert [p[2] for p in plan] == [0] + [p[3] for p in plan[:-1]] and plan[-1][3] == shape[0]
        calls = []
        got = _predict_maps_in_strips(segmenter, img, 1, lambda k, n: calls.append((k, n)), strip_rows)
        ref = segmenter.predict_maps(img, batch_size=1)
        assert got.dtype == np.float32 and got.shape == ref.shape == (3,) + shape
        np.testing.assert_array_equal(got, ref)
        total = calls[-1][1]
        assert calls[-1][0] == total and all(n == total for _, n in calls)
        assert [k for k, _ in calls] == sorted(k for k, _ in calls)
        # the public function, default batch size: equal within 1e-6
        res = segmentation_map(img, segmenter, strip_rows=strip_rows)
        ref16 = segmenter.predict_maps(img)
        for j, c in enumerate(segmenter.channel_names_):
            np.testing.assert_allclose(res.maps[c], ref16[j], rtol=0, atol=1e-6, err_msg=c)
    finally:
        segmenter.tile_stride = old


def test_segmentation_map_strip_rows_default_and_bad_values(segmenter):
    from stemroi.detection import segmentation_map
    from stemroi.detection._segmentation_map import _predict_maps_in_strips

    img = _frame(150, 90, seed=8)
    whole = segmenter.predict_maps(img)
    # automatic strips (~64 MB) cover this frame in one strip: the whole-frame call itself
    np.testing.assert_array_equal(_predict_maps_in_strips(segmenter, img, 16, None, None), whole)
    # frames no taller than a tile, lists and float64 frames
    small = _frame(20, 50, seed=9)
    np.testing.assert_array_equal(_predict_maps_in_strips(segmenter, small, 16, None, 16),
                                  segmenter.predict_maps(small))
    np.testing.assert_array_equal(_predict_maps_in_strips(segmenter, img.astype(np.float64), 1, None, 16),
                                  segmenter.predict_maps(img, batch_size=1))
    for bad in (0, -16, 2.5, "64"):
        with pytest.raises((ValueError, TypeError), match="strip_rows"):
            segmentation_map(img, segmenter, strip_rows=bad)
    img[120, 33] = np.nan  # named with its frame index, not the strip's
    with pytest.raises(ValueError, match=r"first at index \(120, 33\)"):
        segmentation_map(img, segmenter, strip_rows=16)


@pytest.mark.parametrize("strip_rows", [16, None])
def test_segmentation_maps_written_to_a_file_equal_the_in_memory_maps(segmenter, tmp_path, strip_rows):
    """maps_path: the maps go to a .npy memory map strip by strip (several strips, and the single-strip
    whole-frame call); the result's maps are read-only views of the file, equal to the in-memory run."""
    from stemroi.detection import segmentation_map

    img = _frame(150, 90, seed=8)
    ref = segmentation_map(img, segmenter, strip_rows=strip_rows)
    path = tmp_path / "out" / "maps.npy"
    res = segmentation_map(img, segmenter, strip_rows=strip_rows, maps_path=path)
    on_disk = np.load(path)
    assert on_disk.shape == (3, 150, 90) and on_disk.dtype == np.float32
    for j, c in enumerate(segmenter.channel_names_):
        np.testing.assert_array_equal(res.maps[c], ref.maps[c], err_msg=c)
        np.testing.assert_array_equal(on_disk[j], ref.maps[c], err_msg=c)
        m = res.maps[c]  # a view of the read-only map, not a copy in memory
        assert not m.flags.writeable and not m.flags.owndata
        while not isinstance(m, np.memmap):
            m = m.base
        assert m.filename == str(path.resolve())
    np.testing.assert_array_equal(res.probabilities, ref.probabilities)
    assert [p.name for p in path.parent.iterdir()] == ["maps.npy"]  # no temporary file left


def test_segmentation_maps_path_errors_leave_no_file(segmenter, tmp_path):
    from stemroi.detection import segmentation_map

    img = _frame(150, 90, seed=8)
    with pytest.raises(ValueError, match=r"maps_path must name a \.npy file, got '.*maps\.bin'"):
        segmentation_map(img, segmenter, maps_path=tmp_path / "maps.bin")
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        segmentation_map(img, segmenter, maps_path=tmp_path / "d.npy")
    old = tmp_path / "keep.npy"
    np.save(old, np.arange(3))
    img[120, 33] = np.nan  # fails before anything is written: the previous file stays as it was
    with pytest.raises(ValueError, match="NaN"):
        segmentation_map(img, segmenter, strip_rows=16, maps_path=old)
    np.testing.assert_array_equal(np.load(old), np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "keep.npy"]
