"""BulkCVAE: a tiny CVAE trained for real on a synthetic lattice (seconds)."""
from __future__ import annotations

import numpy as np
import pytest

import stemroi
from stemroi import BulkCVAE
from stemroi.models import anm_scores, local_energy_scores, preprocess_crops
from stemroi._lib import _core

CROP = 16
SPACING = 8


def lattice(h, w, *, vacancies=(), noise=0.03, seed=0):
    """Gaussian columns on a square lattice (period 8) with optional missing columns."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w))
    for cy in range(SPACING // 2, h, SPACING):
        for cx in range(SPACING // 2, w, SPACING):
            if (cy, cx) in vacancies:
                continue
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.6**2))
    img += np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(img, 0, None).astype(np.float32)


def crops_at(img, origins):
    return np.stack([img[r:r + CROP, c:c + CROP] for r, c in origins])


def aligned_origins(n, size, seed):
    """Crop origins on the lattice period (registered crops, as from a drift-corrected scan)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, (size - CROP) // SPACING + 1, (n, 2)) * SPACING


@pytest.fixture(scope="module")
def fitted():
    bulk = crops_at(lattice(256, 256, seed=1), aligned_origins(256, 256, 0))
    # one LibTorch thread: on a loaded shared machine two threads oversubscribe and run slower
    model = BulkCVAE(latent_dim=6, epochs=10, batch_size=16, learning_rate=2e-3, blur_sigma=0.5, crop_size=CROP,
                     n_crops=256, calibration_fraction=0.25, detector="energy", energy_window=5,
                     energy_quantile=0.99, random_state=0, n_threads=1)
    return model.fit(bulk)


def test_reconstruction_error_falls(fitted):
    h = fitted.loss_history_
    assert len(h) == 10 and np.all(np.isfinite(h))
    assert h[-1] < 0.9 * h[0]
    crops = crops_at(lattice(64, 64, seed=5), [(0, 0), (8, 16), (24, 8), (40, 40)])
    x = preprocess_crops(crops, 0.5)
    untrained = _core.CVAE(6, "study", CROP, 0).reconstruct(x)
    trained = fitted.reconstruct(x, preprocessed=True)
    assert np.mean((x - trained) ** 2) < 0.5 * np.mean((x - untrained) ** 2)


def test_planted_vacancy_scores_above_bulk_band(fitted):
    # registered crops that all contain the vacant column at (36, 36), at different positions
    inside = [(24, 24), (24, 32), (32, 24), (32, 32)]
    defect = crops_at(lattice(96, 96, vacancies={(36, 36)}, seed=7), inside)
    bulk = crops_at(lattice(96, 96, seed=7), inside)
    e_defect = fitted.score(defect, kind="energy")
    e_bulk = fitted.score(bulk, kind="energy")
    assert np.all(e_defect > fitted.energy_threshold_), (e_defect, fitted.energy_threshold_)
    assert np.all(e_defect > e_bulk)
    assert fitted.predict(defect, calibration_mode="fixed").all()  # 4 curated crops: the learnt threshold
    # the study's (signed) ANM separates them too: every vacancy crop lies further
    # from zero than any held-out bulk crop, and the vacancy (missing intensity) is negative
    anm = fitted.score(defect, kind="anm")
    assert np.all(anm < 0)
    assert np.abs(anm).min() > np.abs(fitted.calibration_scores_["anm"]).max()


def test_signed_detector_gives_the_polarity(fitted):
    inside = [(24, 24), (24, 32), (32, 24), (32, 32)]
    vacancy = crops_at(lattice(96, 96, vacancies={(36, 36)}, seed=7), inside)
    bright = crops_at(lattice(96, 96, seed=7), inside).copy()
    yy, xx = np.mgrid[0:CROP, 0:CROP]
    for k, (r, c) in enumerate(inside):  # an extra column between lattice sites, at (40, 40) in the image
        bright[k] += 0.8 * np.exp(-((yy - (40 - r)) ** 2 + (xx - (40 - c)) ** 2) / (2 * 1.6**2))
    bulk = crops_at(lattice(96, 96, seed=7), inside)
    td, tb = fitted.signed_thresholds_
    sv, sb, s0 = fitted.score_all(vacancy), fitted.score_all(bright), fitted.score_all(bulk)
    assert np.all(sv["darker"] > td) and np.all(sv["darker"] > s0["darker"])   # missing intensity
    assert np.all(sb["brighter"] > tb) and np.all(sb["brighter"] > s0["brighter"])  # extra intensity
    assert np.all(sv["darker"] - td > sv["brighter"] - tb)
    assert np.all(sb["brighter"] - tb > sb["darker"] - td)
    model = BulkCVAE(**{**fitted.get_params(), "detector": "signed"})
    model.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    assert model.predict(vacancy, calibration_mode="fixed").all()
    assert model.predict(bright, calibration_mode="fixed").all()
    with pytest.raises(ValueError, match=r"signed_quantiles must be two quantiles \(darker, brighter\)"):
        BulkCVAE(signed_quantiles=(0.9,)).fit(bulk)


def _anm_reference(d, threshold, half):
    """NumPy reference of the clipped ANM (no wrapping)."""
    out_s, out_a, peaks = [], [], []
    for img in d:
        t = np.where(np.abs(img) < threshold, 0, img)
        r, c = np.unravel_index(np.argmax(np.abs(t)), t.shape)
        win = t[max(0, r - half):r + half + 1, max(0, c - half):c + half + 1]
        out_s.append(win.mean())
        out_a.append(np.abs(win).mean())
        peaks.append((r, c))
    return np.array(out_s), np.array(out_a), np.array(peaks)


def test_score_window_never_wraps(rng):
    d = rng.normal(0, 0.15, (40, 64, 64)).astype(np.float32)
    d[0, 0, 0] = 3.0           # maxima at the four corners and edges
    d[1, 63, 63] = -3.0
    d[2, 0, 63] = 3.0
    d[3, 63, 0] = -3.0
    d[4, 30, 0] = 3.0
    d[0, 60:, 60:] = 2.0       # what a wrapping window would pick up for crop 0
    signed, absolute, peaks = anm_scores(d, threshold=0.2, half_window=6)
    ref_s, ref_a, ref_p = _anm_reference(d, 0.2, 6)
    np.testing.assert_array_equal(peaks, ref_p)
    np.testing.assert_allclose(signed, ref_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(absolute, ref_a, rtol=1e-5, atol=1e-6)
    # corner maximum: only the 7 x 7 in-image pixels count
    t0 = np.where(np.abs(d[0]) < 0.2, 0, d[0])
    assert signed[0] == pytest.approx(t0[:7, :7].mean(), rel=1e-5)


def test_local_energy_matches_numpy(rng):
    d = rng.normal(0, 0.1, (5, 20, 20)).astype(np.float32)
    d[2, 0, 19] = 2.0
    scores, peaks = local_energy_scores(d, window=5)
    for k in range(5):
        sq = d[k].astype(np.float64) ** 2
        best = max(((sq[max(0, r - 2):r + 3, max(0, c - 2):c + 3].mean(), (r, c))
                    for r in range(20) for c in range(20)), key=lambda t: t[0])
        assert scores[k] == pytest.approx(np.sqrt(best[0]), rel=1e-5)
    assert tuple(peaks[2]) in {(r, c) for r in range(0, 3) for c in range(17, 20)}


def test_inference_is_deterministic_and_training_reproducible(fitted):
    crops = crops_at(lattice(64, 64, seed=9), [(1, 2), (8, 32), (33, 7)])
    a = fitted.reconstruct(crops)
    b = fitted.reconstruct(crops)
    np.testing.assert_array_equal(a, b)
    small = crops_at(lattice(128, 128, seed=2), aligned_origins(48, 128, 1))
    kw = dict(latent_dim=4, epochs=2, crop_size=CROP, n_crops=48, learning_rate=1e-3, random_state=3, n_threads=1)
    m1, m2 = BulkCVAE(**kw).fit(small), BulkCVAE(**kw).fit(small)
    np.testing.assert_array_equal(m1.loss_history_, m2.loss_history_)
    np.testing.assert_array_equal(m1.reconstruct(crops), m2.reconstruct(crops))


def test_save_load_round_trip_is_exact(fitted, tmp_path):
    path = tmp_path / "cvae.stemroi"
    fitted.save(path)
    loaded = BulkCVAE.load(path)
    crops = crops_at(lattice(64, 64, seed=11), [(0, 0), (5, 9), (48, 48)])
    np.testing.assert_array_equal(fitted.reconstruct(crops), loaded.reconstruct(crops))
    assert loaded.band_ == fitted.band_
    assert loaded.energy_threshold_ == fitted.energy_threshold_
    assert loaded.signed_thresholds_ == fitted.signed_thresholds_
    # parameters left to the recipe are saved as the values in use
    from stemroi.models.cvae import RECIPES

    assert fitted.augment is None and loaded.augment == RECIPES["default"]["augment"] == "shear"
    assert loaded.get_params() == {**fitted.get_params(), **fitted.recipe_params()}
    np.testing.assert_array_equal(loaded.predict(crops, calibration_mode="fixed"),
                                  fitted.predict(crops, calibration_mode="fixed"))
    _, meta = stemroi.io.load_model_file(path)
    assert meta["architecture"] == "cvae"
    assert meta["model_card"]["epochs"] == 10
    assert meta["preprocessing"]["blur_sigma"] == 0.5


def test_study_and_dataset_repo_architectures():
    study = _core.CVAE(20, "study", 64, 0)
    repo = _core.CVAE(20, "dataset_repo", 64, 0)
    assert study.encoded_size == 7 and repo.encoded_size == 8
    assert study.state_dict()["dec_fc.weight"].shape == (8 * 8 * 32, 20)
    assert repo.state_dict()["dec_fc.weight"].shape == (8 * 8 * 64, 20)
    x = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    assert study.reconstruct(x).shape == (2, 64, 64)
    assert repo.reconstruct(x).shape == (2, 64, 64)


def test_preprocess_zero_crop_gives_no_nan():
    crops = np.zeros((3, 16, 16), np.float32)
    crops[1] = 5.0
    crops[2, 3, 4] = 2.0
    out = preprocess_crops(crops, 1.0)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], 0)
    assert out[1].max() == pytest.approx(1.0) and out[2].max() == pytest.approx(1.0)


def test_anomaly_map_localises_a_vacancy(fitted):
    img = lattice(64, 64, vacancies={(28, 36)}, seed=13)
    res = fitted.anomaly_map(img, stride=8)
    assert isinstance(res, stemroi.ROIResult) and len(res) == 49
    amap = res.maps["anomaly"]
    assert amap.shape == img.shape and np.isfinite(amap).all()
    r, c = np.unravel_index(np.argmax(amap), amap.shape)
    assert abs(r - 28) <= 4 and abs(c - 36) <= 4
    flagged = res.origins[res.is_roi]
    assert len(flagged) >= 1
    for r0, c0 in flagged:  # every flagged tile contains the vacancy
        assert r0 <= 28 < r0 + CROP and c0 <= 36 < c0 + CROP


def test_bad_input_is_rejected(fitted, tmp_path):
    with pytest.raises(ValueError, match=r"expected shape \(n, 16, 16\) for crop_size=16, got \(2, 32, 32\)"):
        fitted.reconstruct(np.zeros((2, 32, 32), np.float32))
    lattice = np.random.default_rng(0).random((40, 40), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 2"):
        BulkCVAE(crop_size=16).fit(lattice[None, :16, :16])
    for blank in (np.zeros((64, 64), np.float32), np.full((3, 16, 16), 7, np.uint8)):
        with pytest.raises(ValueError, match=r"every pixel is .* \(a blank or constant image\?\): there is no lattice"):
            BulkCVAE(crop_size=16).fit(blank)
    bad = np.zeros((2, 16, 16), np.float32)
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fitted.score(bad)
    with pytest.raises(TypeError, match="unsupported dtype"):
        fitted.reconstruct(np.array([["a"] * 16] * 16))
    with pytest.raises(ValueError, match="variant must be 'study' or 'dataset_repo', got 'vgg'"):
        BulkCVAE(variant="vgg").fit(np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="crop_size must be a multiple of 8, got 20"):
        BulkCVAE(crop_size=20).fit(np.zeros((64, 64), np.float32))
    with pytest.raises(RuntimeError, match="not fitted"):
        BulkCVAE().reconstruct(np.zeros((1, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"crop_size must be <= image size \(12, 40\), got 16"):
        BulkCVAE(crop_size=16).fit(lattice[:12])
    with pytest.raises(ValueError, match="kind must be one of"):
        fitted.score(np.zeros((1, 16, 16), np.float32), kind="mse")
    corrupt = tmp_path / "corrupt.stemroi"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(OSError):
        BulkCVAE.load(corrupt)
    other = tmp_path / "other.stemroi"
    stemroi.io.save_model_file(other, {"w": np.zeros(3, np.float32)}, {"architecture": "vgg16"})
    with pytest.raises(ValueError, match="architecture 'vgg16', expected 'cvae'"):
        BulkCVAE.load(other)


# ---- dataset-repo clustering workflow pieces ------------------------------------
def test_per_feature_silhouette_matches_sklearn(rng):
    from sklearn.metrics import silhouette_score

    from stemroi.features.cvae_residual import per_feature_silhouette

    labels = np.repeat([0, 1, 2], 30)
    X = np.c_[labels + rng.normal(0, 0.3, 90), rng.normal(0, 1, 90), 5 * labels + rng.normal(0, 4, 90)]
    ours = per_feature_silhouette(X, labels)
    for j in range(3):
        f = (X[:, [j]] - X[:, j].mean()) / X[:, j].std()
        assert ours[j] == pytest.approx(silhouette_score(f, labels), abs=1e-10)
    # constant feature / one class: -1; every class a singleton: 0
    np.testing.assert_array_equal(per_feature_silhouette(np.c_[np.ones(90), X[:, 0]], np.zeros(90)), [-1.0, -1.0])
    assert per_feature_silhouette(X[:3, :1], np.arange(3))[0] == 0.0


def test_per_feature_silhouette_is_the_core_silhouette(rng, monkeypatch):
    from stemroi.features import cvae_residual as cr

    calls = []
    real = _core.silhouette_samples_multi
    monkeypatch.setattr(_core, "silhouette_samples_multi", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    cr.per_feature_silhouette(rng.normal(size=(20, 3)), np.repeat([0, 1], 10))
    assert len(calls) == 3


def test_workflow_reads_patches_with_load_patch_folder(tmp_path, rng, monkeypatch):
    import types

    tifffile = pytest.importorskip("tifffile")
    from stemroi.features import cvae_residual as cr

    assert not hasattr(cr, "load_labelled_patches")
    stored = {}
    for cls in ("Bulk", "Vac"):
        for i in range(12):  # Bulk_10 sorts before Bulk_2 by name; the reader orders by index
            stored[f"{cls}_{i}"] = rng.integers(0, 256, (16, 16), dtype=np.uint8)
            tifffile.imwrite(tmp_path / f"{cls}_{i}.tif", stored[f"{cls}_{i}"])
    seen = {}

    def features(model, patches, threshold):
        seen["patches"] = patches
        return rng.normal(size=(len(patches), len(cr.FEATURE_NAMES))) + np.repeat([0, 3], 12)[:, None]

    monkeypatch.setattr(cr, "difference_features", features)
    model = types.SimpleNamespace(threshold=0.2, loss_history_=[1.0], variant="dataset_repo")
    engine = {"name": "stub", "pca": lambda X, var: X[:, :2], "kmeans": lambda X, k, seed: np.arange(len(X)) % k,
              "select": lambda X, ks, seed: (2, {2: 0.5}, {2: np.repeat([0, 1], 12)}),
              "accuracy": lambda y, lab: float(np.mean(np.asarray(y) == lab))}
    res = cr.cvae_cluster_workflow(None, tmp_path, model=model, engine=engine)
    order = [f"{c}_{i}" for c in ("Bulk", "Vac") for i in range(12)]
    np.testing.assert_array_equal(seen["patches"], np.stack([stored[k] for k in order]).astype(np.float32))
    assert res["classes"] == ["Bulk", "Vac"] and res["n_patches"] == 24 and res["accuracy"] == 1.0


def test_three_tier_selection(rng):
    from stemroi.features.cvae_residual import select_features

    labels = np.repeat([0, 1], 40)
    good = labels * 3.0 + rng.normal(0, 1.0, 80)
    X = np.c_[good, good * 2 + 1e-3 * rng.normal(size=80),       # a near-copy: |r| > 0.95
              rng.normal(0, 1, 80),                               # noise: silhouette <= 0
              labels * 0.1 + rng.normal(0, 0.03, 80)]             # separates but variance < 0.1
    sel = select_features(X, labels, min_silhouette=0.05, min_features=1, names=["good", "copy", "noise", "tiny"])
    assert list(sel["keep"]) == [0]
    assert sel["dropped_corr"] == ["copy"]
    assert sel["dropped_silhouette"] == ["noise"]
    assert sel["dropped_variance"] == ["tiny"]


def test_difference_features_shape(fitted):
    from stemroi.features.cvae_residual import FEATURE_NAMES, difference_features

    crops = crops_at(lattice(64, 64, vacancies={(20, 20)}, seed=3), [(8, 8), (16, 16), (32, 40)])
    F = difference_features(fitted, crops)
    assert F.shape == (3, len(FEATURE_NAMES)) == (3, 47)
    assert np.isfinite(F).all()
    # the crops holding the vacancy have a larger residual energy than the clean one
    e = FEATURE_NAMES.index("diff_energy")
    assert F[0, e] > F[2, e] and F[1, e] > F[2, e]


def test_warm_start_continues_training_and_reports_progress():
    small = crops_at(lattice(128, 128, seed=2), aligned_origins(40, 128, 4))
    calls = []
    m = BulkCVAE(latent_dim=4, epochs=2, crop_size=CROP, learning_rate=1e-3, warm_start=True, random_state=3,
                 n_threads=1)
    m.fit(small, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    net, before = m.model_, m.model_.state_dict()["dec_fc.weight"].copy()
    m.fit(small)
    assert m.model_ is net and len(m.loss_history_) == 4
    assert not np.array_equal(before, m.model_.state_dict()["dec_fc.weight"])
    with pytest.raises(ValueError, match="warm_start: latent_dim, variant and crop_size must not change"):
        m.set_params(latent_dim=5).fit(small)


def test_residual_pseudo_labels_mark_the_defect_not_the_lattice(fitted):
    inside = [(24, 24), (24, 32), (32, 24), (32, 32)]
    vacancy = crops_at(lattice(96, 96, vacancies={(36, 36)}, seed=7), inside)
    bulk = crops_at(lattice(96, 96, seed=8), inside)
    X = np.concatenate([bulk, vacancy])
    X = X / X.max()
    is_bulk = np.r_[np.ones(4, bool), np.zeros(4, bool)]
    m = stemroi.models.residual_pseudo_labels(X, is_bulk, fitted, quantile=0.99, sigma=1.0)
    assert m.shape == X.shape and m.dtype == np.uint8
    assert m[:4].sum() == 0 and m[4:].sum() > 0
    for k, (r, c) in enumerate(inside):  # the marked pixels lie around the vacant column (36, 36)
        rr, cc = np.nonzero(m[4 + k])
        near = np.hypot(rr + r - 36, cc + c - 36) <= SPACING  # within one lattice period
        assert rr.size and near.mean() >= 0.9, (k, rr + r, cc + c)
    with pytest.raises(ValueError, match="at least one bulk patch"):
        stemroi.models.residual_pseudo_labels(X, np.zeros(8, bool), fitted)
    with pytest.raises(ValueError, match=r"patches must be 16 x 16 like the model's crops, got \(8, 8\)"):
        stemroi.models.residual_pseudo_labels(X[:, :8, :8], is_bulk, fitted)
    with pytest.raises(TypeError, match="fitted stemroi.BulkCVAE"):
        stemroi.models.residual_pseudo_labels(X, is_bulk, object())
    seg = stemroi.DefectSegmenter(epochs=1, batch_size=4, base_channels=4, random_state=0, n_threads=1)
    labels = np.where(is_bulk, "Bulk", "Vacancy")
    seg.fit(X, labels, masks=m)
    np.testing.assert_array_equal(seg.pseudo_masks_, m)
    with pytest.raises(ValueError, match=r"masks must have the patches' shape \(8, 16, 16\), got \(8, 16\)"):
        seg.fit(X, labels, masks=m[:, 0])


def _sheared(x, u):
    """Crops as a scan with drift acquires them: row r shifted by u * (r - centre) pixels."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:CROP, 0:CROP].astype(np.float64)
    c = (CROP - 1) / 2
    return np.stack([ndimage.map_coordinates(a.astype(np.float64), [yy, xx + u * (yy - c)], order=1,
                                             mode="reflect") for a in x]).astype(np.float32)


def test_shear_augmentation_teaches_drifted_bulk():
    # the same recipe with and without scan-drift augmentation: the augmented VAE reconstructs
    # bulk acquired with drift (shear 0.25 px/row) better; training stays seeded
    bulk = crops_at(lattice(256, 256, seed=1), aligned_origins(256, 256, 0))
    drifted = _sheared(crops_at(lattice(256, 256, seed=7), aligned_origins(64, 256, 5)), 0.25)
    kw = dict(latent_dim=6, epochs=10, batch_size=16, learning_rate=2e-3, blur_sigma=0.5, crop_size=CROP,
              calibration_fraction=0.25, detector="energy", energy_window=5, random_state=0, n_threads=1)
    plain = BulkCVAE(**kw, augment=False).fit(bulk)
    aug = BulkCVAE(**kw, augment={"shear": 0.3}).fit(bulk)
    assert plain.training_data_["augment"] == {} and aug.training_data_["augment"] == {"shear": 0.3}
    assert not np.array_equal(plain.loss_history_, aug.loss_history_)
    x = preprocess_crops(drifted, 0.5)
    err = {name: float(np.mean((x - m.reconstruct(x, preprocessed=True)) ** 2)) for name, m in
           (("plain", plain), ("aug", aug))}
    assert err["aug"] < 0.95 * err["plain"], err
    again = BulkCVAE(**kw, augment={"shear": 0.3}).fit(bulk)
    np.testing.assert_array_equal(aug.loss_history_, again.loss_history_)


@pytest.mark.parametrize("augment, match", [
    ("dihedral", "'dihedral' is not a BulkCVAE augmentation"),
    ({"shear": 2.0}, r"augment\['shear'\] must be a number in \[0, 1\]"),
    ("drift", "unknown augmentation 'drift'"),
])
def test_bad_augment_is_rejected_before_training(augment, match):
    with pytest.raises(ValueError, match=match):
        BulkCVAE(crop_size=CROP, augment=augment).fit(np.zeros((4, CROP, CROP), np.float32))


def test_recipes_fill_what_is_left_at_none():
    default, study = BulkCVAE(), BulkCVAE(recipe="study")
    assert default.get_params()["detector"] is None and default.detector_ == "energy"
    assert default.recipe_params() == dict(
        detector="energy", epochs=16, learning_rate=1e-3, energy_quantile=0.95, augment="shear")
    assert study.recipe_params() == dict(
        detector="anm", epochs=200, learning_rate=1e-4, energy_quantile=0.99, augment=False)
    assert BulkCVAE(recipe="study", detector="energy").detector_ == "energy"  # a given value wins
    with pytest.raises(ValueError, match="recipe must be one of .'default', 'study'., got 'paper'"):
        BulkCVAE(recipe="paper").fit(np.zeros((4, CROP, CROP), np.float32))


def test_files_from_before_augment_load_as_unaugmented(tmp_path):
    # a file written before augment= existed has no such parameter: it was trained without augmentation
    from stemroi.io.model_file import load_model_file, save_model_file

    small = crops_at(lattice(128, 128, seed=2), aligned_origins(48, 128, 1))
    m = BulkCVAE(latent_dim=4, epochs=1, crop_size=CROP, learning_rate=1e-3, random_state=3, n_threads=1).fit(small)
    m.save(tmp_path / "new.stemroi")
    tensors, meta = load_model_file(tmp_path / "new.stemroi")
    for k in ("augment", "recipe"):
        del meta["estimator"][k]
    save_model_file(tmp_path / "old.stemroi", tensors, meta)
    old = BulkCVAE.load(tmp_path / "old.stemroi")
    assert old.augment is False and old._augment_strengths() == {}
    assert BulkCVAE.load(tmp_path / "new.stemroi").augment == "shear"
    np.testing.assert_array_equal(old.reconstruct(small[:4]), m.reconstruct(small[:4]))


def test_augment_true_means_shear_and_survives_save_load(tmp_path):
    small = crops_at(lattice(128, 128, seed=2), aligned_origins(48, 128, 1))
    m = BulkCVAE(latent_dim=4, epochs=1, crop_size=CROP, learning_rate=1e-3, random_state=3, n_threads=1,
                 augment=True).fit(small)
    assert m.training_data_["augment"] == {"shear": 0.1}
    m.save(tmp_path / "m.stemroi")
    loaded = BulkCVAE.load(tmp_path / "m.stemroi")
    assert loaded.augment is True and loaded.training_data_["augment"] == {"shear": 0.1}
