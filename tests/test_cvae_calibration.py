"""Per-image calibration of BulkCVAE thresholds.

A tiny CVAE is trained for real on a synthetic lattice; the "other image" is the
same lattice under another detector gain/offset and noise level, where the
threshold learnt on the training image flags nearly every bulk crop."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import median_abs_deviation

from stemroi import BulkCVAE
from stemroi.models.calibration import per_image_threshold, robust_location_scale, robust_offset
from stemroi.models.cvae import MIN_IMAGE_CROPS, preprocess_crops

from test_cvae import CROP, aligned_origins, crops_at, lattice


@pytest.fixture(scope="module")
def model():
    bulk = crops_at(lattice(256, 256, seed=1), aligned_origins(192, 256, 0))
    est = BulkCVAE(latent_dim=6, epochs=8, batch_size=16, learning_rate=2e-3, blur_sigma=0.5, crop_size=CROP,
                   calibration_fraction=0.25, detector="energy", energy_window=5, energy_quantile=0.95,
                   calibration_mode="per_image", random_state=0, n_threads=1)
    return est.fit(bulk)


def other_session(gain, offset, noise, seed, n_bulk=200):
    """Bulk crops and 12 single-vacancy crops of a lattice image acquired with
    another gain, offset and noise level."""
    img = lattice(256, 256, noise=noise, seed=seed) * gain + offset
    bulk = crops_at(img, aligned_origins(n_bulk, 256, seed + 1))
    vac = []
    for i in range(12):  # a vacancy at one of the four interior columns of the crop
        r, c = 4 + 8 * (i % 2), 4 + 8 * (i // 2 % 2)
        v = lattice(32, 32, vacancies={(r + 8, c + 8)}, noise=noise, seed=100 + seed + i) * gain + offset
        vac.append(v[8:8 + CROP, 8:8 + CROP])
    return bulk.astype(np.float32), np.stack(vac).astype(np.float32)


def test_robust_statistics_match_scipy(rng):
    x = rng.standard_normal(501) * 3 + 2
    med, scale = robust_location_scale(x)
    assert med == np.median(x)
    assert scale == pytest.approx(median_abs_deviation(x, scale="normal"), rel=1e-12)
    # the offset of a threshold, applied to the same scores, gives the threshold back
    t = np.quantile(x, 0.95)
    assert per_image_threshold(x, robust_offset(x, t)) == pytest.approx(t, rel=1e-12)
    # an affine change of the scores moves the per-image threshold with them
    assert per_image_threshold(5 * x + 7, robust_offset(x, t)) == pytest.approx(5 * t + 7, rel=1e-12)


def test_per_image_intensity_calibration_restores_bulk_kept_under_gain_offset(model):
    # the training image itself (new crops): the calibrated modes agree
    bulk0, vac0 = other_session(1.0, 0.0, 0.03, seed=7)
    scores0 = model.score_all(bulk0, calibration_mode="fixed")
    kept_same = np.mean(scores0["energy"] < model.energy_threshold_)  # fixed threshold, training image: 0.93
    assert kept_same >= 0.9
    # another session: detector gain 0.8 and offset +0.25 (of a column peak ~1), same noise
    bulk, vac = other_session(0.8, 0.25, 0.03, seed=8)
    image = np.r_[bulk, vac]  # the target image's crops: 200 bulk, 12 with a vacancy (5.7 %)
    assert model.calibration_mode == "per_image" == BulkCVAE().calibration_mode  # the default
    fixed = model.predict(image, calibration_mode="fixed")
    per_image = model.predict(image)
    kept_fixed, kept_image = 1 - fixed[:200].mean(), 1 - per_image[:200].mean()
    assert kept_fixed < 0.1, kept_fixed  # the training image's calibration flags (nearly) every bulk crop
    assert kept_image >= kept_same - 0.05, (kept_image, kept_same)  # restored: 0.905 vs 0.93
    assert per_image[200:].all()  # every vacancy still flagged
    # the vacancy crops alone, with the image they come from as reference=, get the same decisions
    np.testing.assert_array_equal(model.predict(vac, reference=image), per_image[200:])
    # one level for the image: the median of its crops' 1st percentiles is brought to the calibration
    # bulk's, each crop's maximum stays 1
    crops = preprocess_crops(image, model.blur_sigma)
    level = model.image_level(image)
    assert level == pytest.approx(np.median(np.percentile(crops.reshape(len(crops), -1), 1, axis=1)), abs=1e-6)
    assert level > model.intensity_level_ + 0.1  # the offset of this session
    x = model.calibrated_input(crops)
    np.testing.assert_allclose(np.median(np.percentile(x.reshape(len(x), -1), 1, axis=1)), model.intensity_level_,
                               atol=1e-5)
    np.testing.assert_allclose(x.reshape(len(x), -1).max(axis=1), 1.0, atol=1e-6)
    # a crop darker than the rest of its image stays darker (a per-crop level would erase that)
    dark = crops[:1] * np.float32(0.6)
    assert model.calibrated_input(dark, image_level=level).mean() < model.calibrated_input(crops[:1]).mean() - 0.05
    for bad in (float("nan"), 1.0, -0.1, "0.2", True):
        with pytest.raises(ValueError, match=r"image_level must be a finite number in \[0, 1\), got"):
            model.calibrated_input(crops, image_level=bad)
    assert model.thresholds(image)["mode"] == "per_image"


def test_per_image_threshold_restores_bulk_kept_under_offset_and_noise(model):
    # another session: offset +0.2 and noise sd 0.08 instead of 0.03 (the bulk residual itself grows)
    bulk, vac = other_session(1.0, 0.2, 0.08, seed=8)
    image = np.r_[bulk, vac]
    kept = {m: 1 - model.predict(bulk, calibration_mode=m, reference=image).mean()
            for m in ("fixed", "per_image", "per_image_threshold")}
    assert kept["fixed"] < 0.1 and kept["per_image"] < 0.5, kept  # intensity calibration alone is not enough
    assert kept["per_image_threshold"] >= 0.88, kept  # 0.91 (nominal 0.95; training image 0.93)
    d = model.decision_function(image, calibration_mode="per_image_threshold")
    assert (d[200:] >= 0).all()  # every vacancy still flagged
    th = model.thresholds(image, calibration_mode="per_image_threshold")
    assert th["mode"] == "per_image_threshold" and th["n_crops"] == 212
    assert th["energy"] > 1.1 * model.per_image_calibration_["energy"]  # 0.122 vs 0.103
    # deterministic, and the decision is the energy score minus that threshold
    np.testing.assert_array_equal(d, model.score(image).astype(np.float64) - th["energy"])
    # a dict of scores gives the same thresholds; the bulk alone (via reference=) matched the image
    assert model.thresholds(model.score_all(image), calibration_mode="per_image_threshold") == th
    dv = model.decision_function(vac, calibration_mode="per_image_threshold", reference=image)
    np.testing.assert_allclose(dv, d[200:], rtol=0, atol=1e-6)  # batch composition: float32 rounding only


def test_anomaly_map_uses_the_per_image_calibration(model, tmp_path):
    img = lattice(128, 128, vacancies={(60, 68)}, noise=0.03, seed=21) * 0.8 + 0.25  # another session
    per_image = model.anomaly_map(img, stride=8)  # 225 crops
    model.save(tmp_path / "m.stemroi")
    fixed = BulkCVAE.load(tmp_path / "m.stemroi").set_params(calibration_mode="fixed").anomaly_map(img, stride=8)
    assert fixed.is_roi.mean() > 0.9  # the training image's calibration flags nearly every tile of this image
    assert per_image.is_roi.mean() <= 0.2  # per image: about the nominal 5 % of bulk tiles, and the vacancy
    r, c = per_image.origins[per_image.scores.argmax()]
    assert r <= 60 < r + CROP and c <= 68 < c + CROP  # the highest-scoring tile holds the vacancy
    centred = np.flatnonzero((per_image.origins == [56, 64]).all(axis=1))
    assert per_image.is_roi[centred].all()  # so does the tile centred on it, flagged


def test_calibration_mode_round_trips_and_bad_arguments_are_rejected(model, tmp_path):
    bulk, vac = other_session(1.0, 0.2, 0.08, seed=8, n_bulk=60)
    image = np.r_[bulk, vac]
    path = tmp_path / "m.stemroi"
    model.save(path)
    loaded = BulkCVAE.load(path)
    assert loaded.calibration_mode == "per_image" and loaded.intensity_level_ == model.intensity_level_
    for mode in ("per_image", "per_image_threshold"):
        assert loaded.thresholds(image, calibration_mode=mode) == model.thresholds(image, calibration_mode=mode)
    with pytest.raises(ValueError, match=r"calibration_mode must be one of \('per_image', 'per_image_threshold', "
                                         r"'fixed'\), got 'auto'"):
        model.predict(image, calibration_mode="auto")
    with pytest.raises(ValueError, match="calibration_mode must be one of .* got 'image'"):
        BulkCVAE(calibration_mode="image").fit(np.zeros((2, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"needs the keys of score_all\(\), missing \['darker', 'brighter'\]"):
        model.thresholds({"anm": np.zeros(40), "energy": np.ones(40)}, calibration_mode="per_image_threshold")
    with pytest.raises(ValueError, match=r"reference: image must be at least 16x16 \(crop_size\), got shape \(8, 40\)"):
        model.predict(image, calibration_mode="per_image_threshold", reference=np.ones((8, 40), np.float32))
    with pytest.raises(ValueError, match="the MAD is 0"):
        robust_offset(np.ones(50), 2.0)
    with pytest.raises(ValueError, match="c must be finite, got nan"):
        per_image_threshold(np.arange(10.0), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        robust_location_scale(np.array([1.0, np.nan]))
    # too few crops for a per-image threshold: the calibrated one, with a warning naming the count
    few = image[: MIN_IMAGE_CROPS - 1]
    with pytest.warns(UserWarning, match=f"at least {MIN_IMAGE_CROPS} crops of the image, got {MIN_IMAGE_CROPS - 1}"):
        d = model.decision_function(few, calibration_mode="per_image_threshold")
    np.testing.assert_array_equal(d, model.decision_function(few, calibration_mode="per_image"))
