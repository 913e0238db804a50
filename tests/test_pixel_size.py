"""Pixel size as an input: models record the training pixel size, detectors
resample a new image to it and report tiles and maps on the original grid."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import stemroi
from stemroi.io import Calibration, synth
from stemroi.preprocessing import resample

P = 32  # model tile
CELL = 8.0  # lattice constant in pixels at the model's pixel size
SIGMA = 0.15  # column width / lattice constant: columns stay well sampled at every scale used here
P0 = 0.05  # model pixel size, nm
KINDS = ["vacancy", "interstitial"]


# ---------------------------------------------------------------- Calibration and resample


def test_calibration_coerce_and_compare():
    a = Calibration.coerce((0.05, "nm"))
    assert a == Calibration(0.05, "nm") and a.known
    assert Calibration.coerce(a) is not None and Calibration.coerce({"pixel_size": 0.5, "unit": "Å"}).unit == "Å"
    assert not Calibration.coerce(None).known and Calibration.coerce(None).metres() is None
    assert Calibration(0.4, "Å").ratio_to(a) == pytest.approx(0.8)
    assert Calibration(50.0, "pm").ratio_to(a) == pytest.approx(1.0)
    assert Calibration(2.0, "px").ratio_to(Calibration(1.0, "px")) == 2.0  # same unknown unit
    with pytest.raises(ValueError, match="cannot be compared"):
        Calibration(2.0, "px").ratio_to(a)
    with pytest.raises(ValueError, match="positive number"):
        Calibration.coerce((-1.0, "nm"))
    with pytest.raises(TypeError, match="expected \\(value, unit\\)"):
        Calibration.coerce("0.05 nm")


def test_resample_shape_and_values():
    rng = np.random.default_rng(0)
    img = rng.random((50, 60)).astype(np.float32)
    assert resample(img, 0.8).shape == (40, 48) and resample(img, 1.25).shape == (62, 75)
    np.testing.assert_array_equal(resample(img, 1.0), img)
    flat = np.full((30, 30), 0.3, np.float32)
    np.testing.assert_allclose(resample(flat, 0.5), 0.3, rtol=1e-6)  # the anti-alias blur keeps a constant
    # shrinking blurs first: the noise std drops more than bilinear sampling alone would
    assert resample(img, 0.5).std() < 0.6 * img.std()


# ---------------------------------------------------------------- classifier + detect


@pytest.fixture(scope="module")
def classifier():
    X, y, names = synth.make_patch_dataset(n_per_class=60, patch_size=P, classes=["Bulk"] + KINDS, cell_px=CELL,
                                           column_sigma=SIGMA * CELL, random_state=0)
    clf = stemroi.PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, input_size=P, max_epochs=12,
                                  patience=4, random_state=0, n_threads=1)
    return clf.fit(X, y, class_names=names, pixel_size=(P0, "nm"))


def _frame(f, seed, grid=8, n_defects=10):
    """A frame rendered at ``f`` times the model's pixel size (the lattice is 1/f as large in pixels),
    with defects at the centres of tiles of the model's grid (mapped to the frame's pixels)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cell in rng.permutation(grid * grid):
        r, c = divmod(int(cell), grid)
        if all(max(abs(r - a), abs(c - b)) >= 2 for a, b in chosen):
            chosen.append((r, c))
        if len(chosen) == n_defects:
            break
    defects = [{"kind": KINDS[j % len(KINDS)], "row": (r + 0.5) * P / f - 0.5 + rng.uniform(-2, 2),
                "col": (c + 0.5) * P / f - 0.5 + rng.uniform(-2, 2)} for j, (r, c) in enumerate(chosen)]
    size = int(round(grid * P / f))
    return synth.make_image((size, size), cell_px=CELL / f, column_sigma=SIGMA * CELL / f, defects=defects,
                            random_state=seed)


def _tile_scores(result, mask, cell):
    """(recall, false-positive rate, n defect tiles, n bulk tiles) of the result's tiles against the
    generator's mask: a tile is a defect tile when it holds at least 30 % of a defect disc, bulk when
    it holds no defect pixel, and left out in between (like stemroi.demo.tile_truth)."""
    min_pixels = 0.3 * np.pi * (0.5 * cell) ** 2
    pos, flagged = [], []
    for (r, c), (h, w), roi in zip(result.origins, result.sizes, result.is_roi):
        n = int((mask[r:r + h, c:c + w] > 0).sum())
        if n >= min_pixels or n == 0:
            pos.append(n > 0)
            flagged.append(bool(roi))
    pos, flagged = np.array(pos), np.array(flagged)
    return (flagged & pos).sum() / pos.sum(), (flagged & ~pos).sum() / (~pos).sum(), int(pos.sum()), int((~pos).sum())


@pytest.mark.parametrize("f", [0.8, 1.25])
def test_detect_resamples_to_the_model_pixel_size(classifier, f):
    assert classifier.pixel_size_ == Calibration(P0, "nm")
    assert classifier.model_card_["pixel_size"] == {"pixel_size": P0, "unit": "nm"}
    with_cal, without_cal = [], []
    for seed in (11, 12):
        s = _frame(f, seed)
        res = stemroi.detect(s.image, classifier, patch=P, stride=P, pixel_size=Calibration(P0 * f, "nm"))
        assert res.metadata["resampled"] is True and res.metadata["scale"] == pytest.approx(f)
        assert res.metadata["model_pixel_size"] == {"pixel_size": P0, "unit": "nm"}
        assert res.metadata["image_pixel_size"] == {"pixel_size": pytest.approx(P0 * f), "unit": "nm"}
        assert res.metadata["resampled_shape"] == [8 * P, 8 * P]
        # tiles on the original grid: the 8 x 8 model tiles, each P / f frame pixels, tiling the frame
        assert res.image_shape == s.image.shape and len(res) == 64
        np.testing.assert_allclose(res.sizes, P / f, atol=1)
        np.testing.assert_array_equal(np.unique(res.origins[:, 1]), np.rint(np.arange(8) * P / f))
        with_cal.append(_tile_scores(res, s.defect_mask, CELL / f))
        with pytest.warns(UserWarning, match="the image's pixel size is unknown"):
            plain = stemroi.detect(s.image, classifier, patch=P, stride=P)
        assert plain.metadata["resampled"] is False and plain.metadata["image_pixel_size"] is None
        without_cal.append(_tile_scores(plain, s.defect_mask, CELL / f))
    recall, fp = np.mean([r for r, *_ in with_cal]), np.mean([q for _, q, *_ in with_cal])
    recall0, fp0 = np.mean([r for r, *_ in without_cal]), np.mean([q for _, q, *_ in without_cal])
    print(f"pixel size x{f}: with calibration recall {recall:.3f} FP {fp:.3f}; "
          f"without recall {recall0:.3f} FP {fp0:.3f}")
    assert recall >= 0.9 and fp <= 0.10
    # without the calibration the lattice has the wrong scale: bulk looks defective (0.8x: FP 1.0)
    # or the defects are missed (1.25x: recall 0.1-0.2)
    assert (fp0 - fp) >= 0.5 or (recall - recall0) >= 0.5


def test_pixel_size_survives_save_and_warns_when_only_the_image_has_one(classifier, tmp_path):
    classifier.save(tmp_path / "m.stemroi")
    loaded = stemroi.PatchClassifier.load(tmp_path / "m.stemroi")
    assert loaded.pixel_size_ == Calibration(P0, "nm")
    s = _frame(1.0, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = stemroi.detect(s.image, loaded, patch=P, stride=P, pixel_size=(P0 * 1.005, "nm"))  # within 1 %
    assert same.metadata["resampled"] is False and same.metadata["scale"] == 1.0
    bare = copy.copy(classifier)
    bare.pixel_size_ = None
    bare.model_card_ = {**classifier.model_card_, "pixel_size": None}
    with pytest.warns(UserWarning, match="the model records none"):
        res = stemroi.detect(s.image, bare, patch=P, stride=P, pixel_size=(P0, "nm"))
    assert res.metadata["resampled"] is False and res.metadata["model_pixel_size"] is None


# ---------------------------------------------------------------- the map detectors


def _check_mapped_back(res, ref, shape, f):
    """``res`` (resampled inside the detector) equals ``ref`` (run on the resampled image by hand)
    with tile edges divided by the actual scale factors and maps back at the original size."""
    H, W = shape
    h, w = ref.image_shape
    fac = np.array([h / H, w / W])
    np.testing.assert_array_equal(res.origins, np.rint(ref.origins / fac))
    np.testing.assert_array_equal(res.origins + res.sizes, np.minimum(np.rint((ref.origins + ref.sizes) / fac), [H, W]))
    np.testing.assert_array_equal(res.labels, ref.labels)
    assert res.image_shape == (H, W) and res.metadata["resampled"] is True
    assert res.metadata["scale"] == pytest.approx(f)
    for name, m in res.maps.items():
        assert m.shape == (H, W) and m.dtype == ref.maps[name].dtype


def test_anomaly_and_segmentation_maps_resample(rng):
    img = rng.random((60, 72)).astype(np.float32)
    small = resample(img, 0.5)

    crops = rng.random((64, 16, 16)).astype(np.float32)
    cvae = stemroi.BulkCVAE(latent_dim=2, epochs=1, batch_size=16, crop_size=16, random_state=0,
                            n_threads=1).fit(crops, pixel_size=(0.2, "nm"))
    assert cvae.pixel_size_ == Calibration(0.2, "nm")
    res = stemroi.anomaly_map(img, cvae, stride=8, pixel_size=(1.0, "Å"))
    with pytest.warns(UserWarning, match="pixel size is unknown"):
        ref = stemroi.anomaly_map(small, cvae, stride=8)
    _check_mapped_back(res, ref, img.shape, 0.5)

    X = rng.random((12, 16, 16)).astype(np.float32)
    seg = stemroi.DefectSegmenter(epochs=1, batch_size=8, samples_per_epoch=8, base_channels=4, random_state=0,
                                  n_threads=1).fit(X, np.array(["Bulk", "A", "B"] * 4), pixel_size=(0.2, "nm"))
    from stemroi.detection import segmentation_map

    res = segmentation_map(img, seg, pixel_size=(0.1, "nm"))
    with pytest.warns(UserWarning, match="pixel size is unknown"):
        ref = segmentation_map(small, seg)
    _check_mapped_back(res, ref, img.shape, 0.5)


def test_saved_cvae_and_segmenter_keep_the_pixel_size(rng, tmp_path):
    crops = rng.random((32, 16, 16)).astype(np.float32)
    cvae = stemroi.BulkCVAE(latent_dim=2, epochs=1, batch_size=16, crop_size=16, random_state=0,
                            n_threads=1).fit(crops, pixel_size=Calibration(0.2, "nm"))
    cvae.save(tmp_path / "c.stemroi")
    assert stemroi.BulkCVAE.load(tmp_path / "c.stemroi").pixel_size_ == Calibration(0.2, "nm")
    X = rng.random((6, 16, 16)).astype(np.float32)
    seg = stemroi.DefectSegmenter(epochs=1, batch_size=6, samples_per_epoch=6, base_channels=4, random_state=0,
                                  n_threads=1).fit(X, np.array(["Bulk", "A"] * 3), pixel_size=(2.0, "Å"))
    seg.save(tmp_path / "s.stemroi")
    assert stemroi.DefectSegmenter.load(tmp_path / "s.stemroi").pixel_size_ == Calibration(2.0, "Å")


def test_cluster_map_resamples():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _cluster_synth import lattice_patches

    P_, _ = lattice_patches(n_per_class=12, size=32, seed=3)
    cl = stemroi.PatchClusterer("polar_fft", n_components=4, k_range=range(2, 4), n_init=2, random_state=0,
                                n_threads=1).fit(P_, pixel_size=(1.0, "nm"))
    image = np.kron(np.ones((3, 3)), P_[0]).astype(np.float32)[:90, :96]  # 90 x 96 at 1 nm
    big = resample(image, 1.25)  # the same field at 0.8 nm
    res = cl.cluster_map(big, patch=32, stride=32, pixel_size=(0.8, "nm"))
    with pytest.warns(UserWarning, match="pixel size is unknown"):
        ref = cl.cluster_map(resample(big, 0.8), patch=32, stride=32)
    _check_mapped_back(res, ref, big.shape, 0.8)
    assert res.maps["cluster"].min() >= -1 and set(np.unique(res.maps["cluster"])) <= set(range(-1, 3))
