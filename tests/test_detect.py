"""detect(): tiles of a synthetic frame with planted defects; unknown threshold; plots."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

import stemroi
from stemroi.models.classifier import PatchClassifier
from stemroi.detection import detect, to_unit_range
from stemroi.io import scale_to_unit, to_grey


# ---------------------------------------------------------------------------
# stemroi.io.synth when the data area is merged, else a minimal local stand-in
# with the same contract (make_image / make_patch_dataset).
def _standin_synth():
    CLASS_NAMES = ["Bulk", "vacancy", "interstitial"]

    def make_image(shape=(512, 512), *, defects=None, random_state=None, phase=None, cell_px=16.0):
        rng = np.random.default_rng(random_state)
        h, w = shape
        if phase is None:
            phase = rng.uniform(0, cell_px, 2)
        rows = np.arange(phase[0] - cell_px, h + cell_px, cell_px)
        cols = np.arange(phase[1] - cell_px, w + cell_px, cell_px)
        pts = [(r, c, 1.0) for r in rows for c in cols]
        mask = np.zeros(shape, np.int16)
        rec = []
        yy, xx = np.mgrid[0:h, 0:w]
        for d in defects or []:
            k = CLASS_NAMES.index(d["kind"])
            if d["kind"] == "vacancy":
                j = int(np.argmin([(p[0] - d["row"]) ** 2 + (p[1] - d["col"]) ** 2 for p in pts]))
                r0, c0, _ = pts.pop(j)
            else:
                j = int(np.argmin([(p[0] - d["row"]) ** 2 + (p[1] - d["col"]) ** 2 for p in pts]))
                r0, c0 = pts[j][0] + cell_px / 2, pts[j][1] + cell_px / 2
                pts.append((r0, c0, 1.3))
            mask[(yy - r0) ** 2 + (xx - c0) ** 2 <= (cell_px / 2) ** 2] = k
            rec.append({"kind": d["kind"], "label": k, "row": r0, "col": c0})
        img = np.zeros(shape, np.float64)
        s = 0.12 * cell_px
        for r, c, a in pts:
            r0, r1 = int(max(r - 4 * s, 0)), int(min(r + 4 * s + 1, h))
            c0, c1 = int(max(c - 4 * s, 0)), int(min(c + 4 * s + 1, w))
            if r0 < r1 and c0 < c1:
                img[r0:r1, c0:c1] += a * np.exp(-((yy[r0:r1, c0:c1] - r) ** 2 + (xx[r0:r1, c0:c1] - c) ** 2) / (2 * s * s))
        # fixed intensity scale (as a detector's), so a patch looks like the same region of a frame
        img = np.clip(0.05 + img / 1.5 + rng.normal(0, 0.03, shape), 0, 1).astype(np.float32)
        return types.SimpleNamespace(image=img, defect_mask=mask, class_names=list(CLASS_NAMES), defects=rec)

    def make_patch_dataset(n_per_class=50, patch_size=64, classes=None, random_state=None):
        rng = np.random.default_rng(random_state)
        patches, labels = [], []
        for k, name in enumerate(CLASS_NAMES):
            for _ in range(n_per_class):
                c = (patch_size - 1) / 2 + rng.uniform(-patch_size / 8, patch_size / 8, 2)
                d = None if name == "Bulk" else [{"kind": name, "row": c[0], "col": c[1]}]
                patches.append(make_image((patch_size, patch_size), defects=d, random_state=int(rng.integers(1 << 30))).image)
                labels.append(k)
        return np.stack(patches), np.array(labels, np.int64), list(CLASS_NAMES)

    return types.SimpleNamespace(make_image=make_image, make_patch_dataset=make_patch_dataset,
                                 CLASS_NAMES=CLASS_NAMES)


def get_synth():
    try:
        from stemroi.io import synth as synth

        return synth
    except ImportError:
        return _standin_synth()


@pytest.fixture
def synth_module(monkeypatch):
    """stemroi.io.synth, or the stand-in installed as stemroi.io.synth for code that imports it."""
    try:
        from stemroi.io import synth as synth

        return synth
    except ImportError:
        import sys

        mod = types.ModuleType("stemroi.io.synth")
        s = _standin_synth()
        mod.make_image, mod.make_patch_dataset, mod.CLASS_NAMES = s.make_image, s.make_patch_dataset, s.CLASS_NAMES
        monkeypatch.setitem(sys.modules, "stemroi.io.synth", mod)
        monkeypatch.setattr(stemroi, "synth", mod, raising=False)
        return mod


@pytest.fixture(scope="module")
def trained():
    synth = get_synth()
    classes = ["Bulk", "vacancy", "interstitial"]
    kw = {} if not hasattr(synth, "DEFECT_KINDS") else {"classes": classes}
    X, y, names = synth.make_patch_dataset(n_per_class=60, patch_size=64, random_state=0, **kw)
    clf = PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=20, patience=6,
                          input_size=32, random_state=0, n_threads=1).fit(X, y, class_names=names)
    return synth, clf, names


def test_detect_finds_planted_defects(trained):
    from stemroi.demo import score_tiles, tile_truth

    synth, clf, names = trained
    frame = _frame(synth, names)
    res = detect(frame.image, clf, patch=64, stride=64, unknown_below=0.4)
    truth = tile_truth(frame.defect_mask, res.origins, 64)
    s = score_tiles(res, truth, names)
    assert s["defect_tiles"] >= 5
    assert s["recall"] >= 0.9, s
    assert s["bulk_flagged_fraction"] <= 0.10, s
    assert len(res) == (384 // 64) ** 2
    assert res.probabilities.shape == (len(res), len(names))
    assert set(res.summary()["counts"]) <= set(names) | {"unknown"}


def test_detect_covers_the_border_remainder(trained):
    # 360 = 5 x 64 + 40: a defect in the last 40 columns/rows is in no tile of the "drop" grid
    synth, clf, names = trained
    kinds = [n for n in names if n != "Bulk"]
    defects = [{"kind": kinds[0], "row": 100.0, "col": 345.0}, {"kind": kinds[-1], "row": 345.0, "col": 150.0}]
    frame = synth.make_image((360, 360), defects=defects, random_state=3)
    dropped = detect(frame.image, clf, unknown_below=0.0, edge="drop")
    full = detect(frame.image, clf, unknown_below=0.0)
    assert len(dropped) == 5 * 5 and len(full) == 6 * 6
    assert full.metadata["edge"] == "shift" and dropped.metadata["edge"] == "drop"
    assert full.origins.max() == 360 - 64
    # the shared tiles get the same labels either way
    shared = np.isin(full.origins, np.arange(0, 320, 64)).all(axis=1)
    np.testing.assert_array_equal(full.labels[shared], dropped.labels)
    # each planted defect is flagged only where a tile covers it
    for d in frame.defects:
        r, c = d["row"], d["col"]
        inside = lambda res: ((res.origins[:, 0] <= r) & (r < res.origins[:, 0] + 64)  # noqa: E731
                              & (res.origins[:, 1] <= c) & (c < res.origins[:, 1] + 64))
        assert not inside(dropped).any()
        assert full.is_roi[inside(full)].any(), (d, full.labels[inside(full)])
    with pytest.raises(ValueError, match=r"edge must be one of .*got 'pad'"):
        detect(frame.image, clf, edge="pad")


def _frame(synth, names, size=384, seed=7):
    rng = np.random.default_rng(seed)
    kinds = [n for n in names if n != "Bulk"]
    defects = []
    for j, (r, c) in enumerate([(0, 0), (0, 3), (2, 1), (2, 4), (4, 2), (5, 5), (4, 0)]):
        dr, dc = rng.uniform(-6, 6, 2)
        defects.append({"kind": kinds[j % len(kinds)], "row": r * 64 + 31.5 + dr, "col": c * 64 + 31.5 + dc})
    return synth.make_image((size, size), defects=defects, random_state=seed)


def test_unknown_threshold(trained):
    synth, clf, names = trained
    frame = _frame(synth, names)
    r0 = detect(frame.image, clf, unknown_below=0.0)
    r1 = detect(frame.image, clf, unknown_below=1.0)
    rm = detect(frame.image, clf, unknown_below=0.9)
    assert not r0.unknown.any()
    assert r1.unknown.sum() == np.sum(r1.confidence < 1.0)
    np.testing.assert_array_equal(rm.unknown, rm.confidence < 0.9)
    assert (rm.labels[rm.unknown] == "unknown").all()
    assert rm.is_roi[rm.unknown].all()
    # confidence is the max calibrated probability
    np.testing.assert_allclose(r0.confidence, r0.probabilities.max(1))


def test_noise_tile_is_unknown_or_low_confidence(trained):
    synth, clf, names = trained
    noise = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    r = detect(noise, clf, unknown_below=0.4)
    assert len(r) == 1


def test_stride_and_json_roundtrip(trained, tmp_path):
    synth, clf, names = trained
    frame = _frame(synth, names, size=256)
    r = detect(frame.image, clf, patch=64, stride=32)
    assert len(r) == 7 * 7
    r.to_json(tmp_path / "r.json")
    back = stemroi.ROIResult.from_json(tmp_path / "r.json")
    np.testing.assert_array_equal(back.origins, r.origins)
    assert r.to_csv().splitlines()[0].startswith("row,col,height,width,label")


def test_plots_write_png(trained, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from stemroi.plotting import plot_confusion_matrix, plot_rois, save_figure

    synth, clf, names = trained
    frame = _frame(synth, names)
    r = detect(frame.image, clf)
    ax = plot_rois(frame.image, r)
    save_figure(ax, tmp_path / "o.png")
    assert (tmp_path / "o.png").stat().st_size > 1000
    labels = [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
    assert not any(t.startswith("Bulk") for t in labels)
    # unfamiliar tiles, bulk ones included, are cross-hatched and counted in the legend
    r.unfamiliar = np.zeros(len(r), bool)
    r.unfamiliar[[0, 5, 11]] = True
    ax3 = plot_rois(frame.image, r)
    hatched = [p for p in ax3.patches if p.get_hatch() == "xx"]
    assert sorted((int(p.get_y() + 0.5), int(p.get_x() + 0.5)) for p in hatched) == \
        sorted(map(tuple, r.origins[[0, 5, 11]].tolist()))
    assert "unfamiliar (3): unlike the training data" in [t.get_text() for t in ax3.get_legend().get_texts()]
    assert not [p for p in plot_rois(frame.image, r, show_unfamiliar=False).patches if p.get_hatch() == "xx"]
    ax2 = plot_confusion_matrix([0, 1, 2, 2], [0, 2, 2, 2], class_names=names, normalize="true")
    save_figure(ax2, tmp_path / "cm.png")
    with pytest.raises(ValueError, match="must be square"):
        plot_confusion_matrix(np.zeros((2, 3)))


def test_detect_bad_inputs(trained):
    synth, clf, names = trained
    img = np.random.default_rng(0).random((128, 128), dtype=np.float32)
    with pytest.raises(ValueError, match=r"patch must be <= image size \(40, 40\)"):
        detect(img[:40, :40], clf)
    with pytest.raises(ValueError, match="unknown_below must be in"):
        detect(img, clf, unknown_below=1.5)
    with pytest.raises(ValueError, match="training patch size"):
        detect(img, clf, patch=32)
    bad = img.copy()
    bad[5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detect(bad, clf)
    with pytest.raises(TypeError, match="fitted PatchClassifier"):
        detect(img, object())
    with pytest.raises(ValueError, match="expected a 2-D"):
        detect(np.zeros((2, 128, 128, 2), np.float32), clf)


def test_detect_tiles_default_to_the_training_patch_size():
    # a model trained on 32 px patches maps 32 px tiles without being told (the old default of 64 was refused)
    rng = np.random.default_rng(1)
    X, y = rng.random((16, 32, 32), dtype=np.float32), np.arange(16) % 2
    clf = PatchClassifier(backbone="small_cnn", weights=None, max_epochs=1, random_state=0,
                          n_threads=1).fit(X, y, class_names=["Bulk", "vacancy"])
    res = detect(np.random.default_rng(0).random((96, 128), dtype=np.float32), clf)
    assert res.metadata["patch"] == res.metadata["stride"] == 32 and len(res) == 3 * 4


def test_to_unit_range_and_origins():
    assert to_unit_range(np.array([[0, 255]], np.uint8)).max() == 1.0
    np.testing.assert_allclose(to_unit_range(np.array([[0.0, 127.5, 255.0]], np.float32)), [[0, 0.5, 1]])
    np.testing.assert_allclose(to_unit_range(np.array([[-1.0, 1.0]])), [[0, 1]])
    o = stemroi.PatchGrid(64, 64, edge="drop").origins((130, 200))
    assert o.tolist() == [[0, 0], [0, 64], [0, 128], [64, 0], [64, 64], [64, 128]]
    assert not hasattr(stemroi.detection, "tile_origins")


def test_to_unit_range_follows_the_io_rules():
    rng = np.random.default_rng(3)
    u8 = rng.integers(0, 256, (20, 30), dtype=np.uint8)
    # every 8-bit and 16-bit value scales as stemroi.io.scale_to_unit does, bit for bit
    all8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(to_unit_range(all8), scale_to_unit(all8))
    all16 = np.arange(65536, dtype=np.uint64).astype(np.uint16).reshape(256, 256)
    np.testing.assert_array_equal(to_unit_range(all16), scale_to_unit(all16))
    assert to_unit_range(all8)[0, 1] == np.float32(1 / 255)
    # signed integers map their full range (int16 -32768 -> 0, 32767 -> 1)
    np.testing.assert_array_equal(to_unit_range(np.array([[-32768, 32767]], np.int16)), [[0.0, 1.0]])
    # float on [0, 255] is read as 8-bit data
    np.testing.assert_array_equal(to_unit_range(u8.astype(np.float32)), scale_to_unit(u8))
    # equal RGB(A) channels: channel 0, exact
    rgba = np.stack([u8, u8, u8, np.full_like(u8, 255)], axis=-1)
    np.testing.assert_array_equal(to_unit_range(rgba), scale_to_unit(u8))
    # unequal channels: BT.601 luminance (not the channel mean), as the readers
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="luminance"):
        got = to_unit_range(rgb)
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(got, luma / 255, rtol=1e-6)
    assert not np.allclose(got, rgb.mean(axis=-1) / 255, atol=1e-3)
    with pytest.warns(UserWarning, match="luminance"):
        np.testing.assert_array_equal(to_grey(rgb), luma)


# ---------------------------------------------------------------------------
# the map detectors: each returns an ROIResult whose rows are tiles and whose
# dense maps (image pixels) are in ``result.maps``
def _lattice(h, w, *, vacancies=(), noise=0.03, seed=0):
    """Gaussian columns every 8 pixels (first at (4, 4)), some left out."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for cy in range(4, h, 8):
        for cx in range(4, w, 8):
            if (cy, cx) not in vacancies:
                img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.6**2))
    img += np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(img, 0, None).astype(np.float32)


@pytest.fixture(scope="module")
def cvae():
    bulk = _lattice(256, 256, seed=1)
    origins = np.random.default_rng(0).integers(0, (256 - 16) // 8 + 1, (256, 2)) * 8  # registered crops
    crops = np.stack([bulk[r:r + 16, c:c + 16] for r, c in origins])
    return stemroi.BulkCVAE(latent_dim=6, epochs=10, batch_size=16, learning_rate=2e-3, blur_sigma=0.5, crop_size=16,
                            n_crops=256, calibration_fraction=0.25, detector="energy", energy_window=5,
                            random_state=0, n_threads=1).fit(crops)


def test_anomaly_map_flags_the_tile_with_the_planted_vacancy(cvae, tmp_path):
    img = _lattice(48, 56, vacancies={(20, 28)}, seed=13)
    res = stemroi.anomaly_map(img, cvae, stride=16)
    assert isinstance(res, stemroi.ROIResult)
    # rows: 16-pixel crops every 16 pixels plus one flush with the right edge (56 = 3 * 16 + 8)
    expected = [[r, c] for r in (0, 16, 32) for c in (0, 16, 32, 40)]
    np.testing.assert_array_equal(res.origins, expected)
    np.testing.assert_array_equal(res.sizes, 16)
    assert res.image_shape == (48, 56) and res.method == "cvae-energy"
    holds_vacancy = [(r <= 20 < r + 16) and (c <= 28 < c + 16) for r, c in expected]
    np.testing.assert_array_equal(res.is_roi, holds_vacancy)  # exactly the tile with the vacancy is flagged
    np.testing.assert_array_equal(res.labels, np.where(holds_vacancy, "Anomaly", "Bulk"))
    crops = np.stack([img[r:r + 16, c:c + 16] for r, c in expected])
    np.testing.assert_allclose(res.scores, cvae.score(crops), rtol=1e-6)
    assert list(res.maps) == ["anomaly"]
    amap = res.maps["anomaly"]
    assert amap.shape == img.shape and amap.dtype == np.float32
    r, c = np.unravel_index(np.argmax(amap), amap.shape)
    assert abs(r - 20) <= 3 and abs(c - 28) <= 3
    assert res.metadata["map_threshold"] == cvae.energy_threshold_
    assert json.loads(res.to_json())["summary"]["maps"] == {"anomaly": [48, 56]}
    fig = stemroi.plotting.plot_anomaly_map(img, res, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(fig.axes) == 4


def test_cluster_map_rows_are_the_grid_tiles():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _cluster_synth import lattice_patches

    P, y = lattice_patches(n_per_class=12, size=32, seed=3)
    cl = stemroi.PatchClusterer("polar_fft", n_components=4, k_range=range(2, 5), n_init=2, random_state=0,
                                n_threads=1).fit(P)
    picks = np.array([[0, 12, 24], [1, 25, 2]])  # bulk, interstitial, vacancy, ...
    image = np.zeros((64, 100), np.float32)  # the last 4 columns are no tile's
    for i in range(2):
        for j in range(3):
            image[32 * i:32 * i + 32, 32 * j:32 * j + 32] = P[picks[i, j]]
    res = cl.cluster_map(image, patch=32, stride=32, edge="drop")
    assert isinstance(res, stemroi.ROIResult) and res.method == "patch-clusterer"
    np.testing.assert_array_equal(res.origins, [[r, c] for r in (0, 32) for c in (0, 32, 64)])
    tiles = P[picks.ravel()]
    nearest = cl.predict(tiles)
    np.testing.assert_array_equal(res.labels, [f"cluster {k}" for k in nearest])
    d = np.linalg.norm(cl.transform(tiles)[:, None, :] - cl.cluster_centers_[None], axis=-1)
    d.sort(axis=1)
    Z = cl.transform(tiles).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(res.scores, np.linalg.norm(Z - np.median(Z, axis=0), axis=1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.confidence, 1 - d[:, 0] / d[:, 1], rtol=1e-9, atol=1e-9)
    assert res.bulk_label == f"cluster {np.bincount(nearest).argmax()}"
    assert list(res.maps) == ["cluster"]
    expected = np.full((64, 100), -1)
    expected[:, :96] = np.kron(nearest.reshape(2, 3), np.ones((32, 32), np.int64))
    np.testing.assert_array_equal(res.maps["cluster"], expected)
    assert res.to_csv().count("\n") == 7  # header + one row per tile, no map pixels

    # the default grid covers the 4 columns "drop" leaves out with a column of tiles flush with the border
    full = cl.cluster_map(image, patch=32, stride=32)
    assert full.metadata["edge"] == "shift" and res.metadata["edge"] == "drop"
    np.testing.assert_array_equal(full.origins, [[r, c] for r in (0, 32) for c in (0, 32, 64, 68)])
    border = np.stack([image[r:r + 32, 68:100] for r in (0, 32)])
    np.testing.assert_array_equal(full.labels[[3, 7]], [f"cluster {k}" for k in cl.predict(border)])
    np.testing.assert_array_equal(full.labels[[0, 1, 2, 4, 5, 6]], res.labels)
    assert (full.maps["cluster"] >= 0).all()  # every pixel examined
    with pytest.raises(ValueError, match=r"edge must be one of \('shift', 'drop'\).*got 'pad'"):
        cl.cluster_map(image, patch=32, stride=32, edge="pad")


@pytest.fixture(scope="module")
def segmenter():
    rng = np.random.default_rng(0)
    X = rng.random((12, 16, 16)).astype(np.float32)
    y = np.array(["Bulk", "A", "B"] * 4)
    return stemroi.DefectSegmenter(epochs=2, batch_size=8, samples_per_epoch=16, base_channels=4, random_state=0,
                                   n_threads=1).fit(X, y)


def test_segmentation_map_rows_summarise_the_maps(segmenter, tmp_path):
    from stemroi.detection import map_descriptors, segmentation_map

    seg = segmenter
    img = np.random.default_rng(1).random((40, 52)).astype(np.float32)
    res = segmentation_map(img, seg, threshold=0.5)
    maps = seg.predict_maps(img)
    assert isinstance(res, stemroi.ROIResult) and res.image_shape == (40, 52)
    assert list(res.maps) == seg.channel_names_ == ["A", "B", "background"]
    for j, name in enumerate(seg.channel_names_):
        np.testing.assert_array_equal(res.maps[name], maps[j])
    # rows: the training patch size (16) on the shifted grid, so every pixel is in a tile
    expected = [[r, c] for r in (0, 16, 24) for c in (0, 16, 32, 36)]
    np.testing.assert_array_equal(res.origins, expected)
    tile_max = np.array([[maps[j, r:r + 16, c:c + 16].max() for j in range(3)] for r, c in expected])
    np.testing.assert_array_equal(res.probabilities, tile_max)
    best = tile_max[:, :2].max(axis=1)
    np.testing.assert_array_equal(res.scores, best)
    labels = np.where(best >= 0.5, np.array(["A", "B"])[tile_max[:, :2].argmax(axis=1)], "background")
    np.testing.assert_array_equal(res.labels, labels)
    np.testing.assert_array_equal(res.confidence, np.where(best >= 0.5, best, 1 - best))
    assert res.bulk_label == "background"
    # the threshold moves tiles between background and defect labels, nothing else
    assert (seg.segmentation_map(img, threshold=0.0).labels != "background").all()
    assert (seg.segmentation_map(img, threshold=1.0).labels == "background").all()
    feats, names = map_descriptors(res)
    ref, ref_names = map_descriptors(maps, seg.channel_names_)
    np.testing.assert_array_equal(feats, ref)
    assert names == ref_names and feats.shape == (1, 12)
    fig = stemroi.plotting.plot_class_heatmaps(img, res, path=tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [a.get_title().split(" (")[0] for a in fig.axes[1:4]] == ["A", "B", "background"]
