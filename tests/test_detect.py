"""detect(): tiles of a synthetic frame with planted defects; unknown threshold; plots."""
from __future__ import annotations

import types

import numpy as np
import pytest

import stemroi
from stemroi.classifier import PatchClassifier
from stemroi.detection import detect, tile_origins, to_unit_range


# ---------------------------------------------------------------------------
# stemroi.synth when the data area is merged, else a minimal local stand-in
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
        from stemroi import synth

        return synth
    except ImportError:
        return _standin_synth()


@pytest.fixture
def synth_module(monkeypatch):
    """stemroi.synth, or the stand-in installed as stemroi.synth for code that imports it."""
    try:
        from stemroi import synth  # noqa: F401

        return synth
    except ImportError:
        import sys

        mod = types.ModuleType("stemroi.synth")
        s = _standin_synth()
        mod.make_image, mod.make_patch_dataset, mod.CLASS_NAMES = s.make_image, s.make_patch_dataset, s.CLASS_NAMES
        monkeypatch.setitem(sys.modules, "stemroi.synth", mod)
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
    from stemroi.demo import planted_frame, score_tiles, tile_truth

    synth, clf, names = trained
    import stemroi.demo as demo_mod

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
    from stemroi.plots import plot_confusion_matrix, plot_rois, save_figure

    synth, clf, names = trained
    frame = _frame(synth, names)
    r = detect(frame.image, clf)
    ax = plot_rois(frame.image, r)
    save_figure(ax, tmp_path / "o.png")
    assert (tmp_path / "o.png").stat().st_size > 1000
    labels = [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
    assert not any(t.startswith("Bulk") for t in labels)
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


def test_to_unit_range_and_origins():
    assert to_unit_range(np.array([[0, 255]], np.uint8)).max() == 1.0
    np.testing.assert_allclose(to_unit_range(np.array([[0.0, 127.5, 255.0]], np.float32)), [[0, 0.5, 1]])
    np.testing.assert_allclose(to_unit_range(np.array([[-1.0, 1.0]])), [[0, 1]])
    o = tile_origins((130, 200), 64, 64)
    assert o.tolist() == [[0, 0], [0, 64], [0, 128], [64, 0], [64, 64], [64, 128]]
