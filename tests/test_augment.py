"""Training augmentations (acquisition changes) and the estimators' recipes."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import stemroi
from stemroi import DefectSegmenter, PatchClassifier
from stemroi.models._augment import ACQUISITION, resolve_augment


def _core():
    from stemroi._lib import _core

    return _core


def _lattice(n=6, size=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        dy, dx = rng.uniform(0, 8, 2)
        img = 0.1 + 0.6 * (np.cos(2 * np.pi * (yy - dy) / 8) * np.cos(2 * np.pi * (xx - dx) / 8)) ** 2
        out.append(img)
    return np.asarray(out, np.float32)


# ---------------------------------------------------------------------------------------- option parsing
def test_resolve_augment_names_groups_and_dicts():
    assert resolve_augment(None, true_means="dihedral") == (False, {})
    assert resolve_augment(False, true_means="acquisition") == (False, {})
    assert resolve_augment(True, true_means="dihedral") == (True, {})
    assert resolve_augment(True, true_means="acquisition") == (False, ACQUISITION)
    d, s = resolve_augment("dihedral+intensity", true_means="dihedral")
    assert d and s == {k: ACQUISITION[k] for k in ("gain", "offset", "gamma")}
    assert resolve_augment({"noise": 0.1, "blur": True, "scale": 0}, true_means="dihedral") == (
        False, {"noise": 0.1, "blur": ACQUISITION["blur"]})


@pytest.mark.parametrize("bad, err, match", [
    ("gain+wobble", ValueError, "unknown augmentation 'wobble'"),
    ("+", ValueError, "expected names"),
    ({"noise": -0.1}, ValueError, r"augment\['noise'\] must be a number in \[0, 1\]"),
    ({"scale": 1.5}, ValueError, r"augment\['scale'\]"),
    ({"wobble": 0.1}, ValueError, "unknown augmentation 'wobble'"),
    ({"shear": 1.5}, ValueError, r"augment\['shear'\] must be a number in \[0, 1\]"),
    (3, TypeError, "got int"),
])
def test_resolve_augment_rejects_bad_values(bad, err, match):
    with pytest.raises(err, match=match):
        resolve_augment(bad, true_means="dihedral")


def test_core_rejects_bad_strengths():
    with pytest.raises(ValueError, match="augmentation blur must be in"):
        _core().AugmentOptions(blur=-1.0)
    with pytest.raises(ValueError, match=r"augmentation shear must be in \[0, 1\], got 1.5"):
        _core().AugmentOptions(shear=1.5)


def test_shear_is_its_own_name_outside_the_acquisition_group():
    from stemroi.models._augment import PRESETS

    assert resolve_augment("shear", true_means="dihedral") == (False, {"shear": PRESETS["shear"]})
    assert "shear" not in resolve_augment("acquisition", true_means="dihedral")[1]
    assert resolve_augment("acquisition+shear", true_means="dihedral")[1] == PRESETS


def test_shear_is_scan_drift_as_scipy_writes_it():
    # each sample: rows shifted by u * (row - centre) with one u ~ U(-0.08, 0.08); recover u by
    # matching scipy's map_coordinates shear (bilinear, reflect) away from the borders
    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.random((6, 48, 64)), (0, 2, 2))
    x = ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
    y = _core().augment_batch(x, _core().AugmentOptions(shear=0.08), 3)
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float64)
    c = (48 - 1) / 2
    found = []
    for a, b in zip(x, y):
        errs = [(np.abs(ndimage.map_coordinates(a.astype(np.float64), [yy, xx + u * (yy - c)], order=1,
                                                mode="reflect") - b)[6:-6, 6:-6].max(), u)
                for u in np.linspace(-0.1, 0.1, 201)]
        err, u = min(errs)
        assert err < 3e-3, (err, u)
        found.append(u)
    found = np.asarray(found)
    assert np.all(np.abs(found) <= 0.08 + 1e-9) and np.ptp(found) > 0.03  # one draw per sample


# ---------------------------------------------------------------------------------------- the core transform
def test_augment_batch_is_seeded_and_off_means_identity():
    x = _lattice()
    core = _core()
    np.testing.assert_array_equal(core.augment_batch(x, core.AugmentOptions(), 0), x)
    opts = core.AugmentOptions(**ACQUISITION)
    a, b = core.augment_batch(x, opts, 7), core.augment_batch(x, opts, 7)
    np.testing.assert_array_equal(a, b)
    c = core.augment_batch(x, opts, 8)
    assert not np.array_equal(a, c)
    assert a.shape == x.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1


def test_gain_gamma_offset_follow_their_formulas():
    x = _lattice()
    core = _core()
    g = core.augment_batch(x, core.AugmentOptions(gain=0.25), 1)
    ratio = g / x
    per = ratio.reshape(len(x), -1)
    np.testing.assert_allclose(per, np.broadcast_to(per[:, :1], per.shape), rtol=1e-5)  # one gain per sample
    assert np.all(per[:, 0] >= np.exp(-0.25) - 1e-6) and np.all(per[:, 0] <= np.exp(0.25) + 1e-6)
    assert np.ptp(per[:, 0]) > 0  # samples differ
    o = core.augment_batch(x, core.AugmentOptions(offset=0.05), 1)
    d = (o - x).reshape(len(x), -1)
    np.testing.assert_allclose(d, np.broadcast_to(d[:, :1], d.shape), atol=1e-6)
    assert np.abs(d).max() <= 0.05 + 1e-6
    gm = core.augment_batch(x, core.AugmentOptions(gamma=0.3), 1)
    e = np.log(gm.reshape(len(x), -1)) / np.log(x.reshape(len(x), -1))  # exponent per sample
    np.testing.assert_allclose(e, np.broadcast_to(e[:, :1], e.shape), rtol=1e-3)
    assert np.all(np.abs(np.log(e[:, 0])) <= 0.3 + 1e-5)


def test_noise_blur_and_geometry():
    x = _lattice(n=8)
    core = _core()
    n = core.augment_batch(x, core.AugmentOptions(noise=0.03), 2) - x
    sd = n.reshape(len(x), -1).std(1)
    assert np.all(sd <= 0.035) and sd.max() > 0.005
    # blur of a constant image is the image; of the lattice it lowers the contrast, never raises it
    flat = np.full((3, 32, 32), 0.4, np.float32)
    np.testing.assert_allclose(core.augment_batch(flat, core.AugmentOptions(blur=2.0), 3), flat, atol=1e-6)
    b = core.augment_batch(x, core.AugmentOptions(blur=2.0), 3)
    assert np.all(b.reshape(len(x), -1).std(1) <= x.reshape(len(x), -1).std(1) + 1e-6)
    # against SciPy: sigma is drawn per sample, so find it from the first sample by a 1-D search
    ref = [ndimage.gaussian_filter(x[0].astype(np.float64), s, mode="reflect", truncate=3.0) for s in np.linspace(0.01, 2, 200)]
    err = min(np.abs(r - b[0]).max() for r in ref)
    assert err < 0.01
    # rotation and scale move the lattice but keep a constant image constant
    np.testing.assert_allclose(core.augment_batch(flat, core.AugmentOptions(rotate=10, scale=0.2), 4), flat, atol=1e-6)
    r = core.augment_batch(x, core.AugmentOptions(rotate=10, scale=0.2), 4)
    assert not np.allclose(r, x, atol=1e-3)
    # the mean brightness of a lattice patch survives a small rotation / zoom (reflection at the borders)
    np.testing.assert_allclose(r.mean((1, 2)), x.mean((1, 2)), atol=0.05)


# ---------------------------------------------------------------------------------------- training loops
def _patches():
    from stemroi.io import synth

    X, y, names = synth.make_patch_dataset(n_per_class=8, patch_size=32, classes=["Bulk", "vacancy"], cell_px=8,
                                           random_state=0)
    return X, np.asarray(names)[y]


def test_unet_training_with_augmentation_is_deterministic_and_changes_training():
    X, y = _patches()
    kw = dict(epochs=2, batch_size=8, samples_per_epoch=16, base_channels=4, pseudo_label="lattice", random_state=0,
              n_threads=1)
    a = DefectSegmenter(augment=True, **kw).fit(X, y)
    b = DefectSegmenter(augment=True, **kw).fit(X, y)
    c = DefectSegmenter(augment=False, **kw).fit(X, y)
    np.testing.assert_array_equal(a.loss_history_, b.loss_history_)
    np.testing.assert_array_equal(a.predict_patch_maps(X[:2]), b.predict_patch_maps(X[:2]))
    assert not np.array_equal(a.loss_history_, c.loss_history_)
    assert a.training_data_["augment"] == ACQUISITION and c.training_data_["augment"] == {}
    with pytest.raises(ValueError, match="unknown augmentation 'tilt'"):
        DefectSegmenter(augment="tilt", **kw).fit(X, y)


def test_classifier_training_with_acquisition_augmentation_is_deterministic():
    X, y = _patches()
    kw = dict(weights=None, input_size=32, max_epochs=2, batch_size=8, validation_fraction=0.0, calibrate=False,
              random_state=0, n_threads=1)
    a = PatchClassifier(augment="dihedral+acquisition", **kw).fit(X, y)
    b = PatchClassifier(augment="dihedral+acquisition", **kw).fit(X, y)
    c = PatchClassifier(augment="dihedral", **kw).fit(X, y)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    assert not np.array_equal(a.decision_function(X), c.decision_function(X))
    with pytest.raises(ValueError, match="unknown augmentation 'tilt'"):
        PatchClassifier(augment="tilt", **kw).fit(X, y)


# ---------------------------------------------------------------------------------------- recipes
def test_segmenter_recipes():
    d = DefectSegmenter()._resolved()
    assert (d["pseudo_label"], d["base_channels"], d["epochs"], d["learning_rate"], d["positive_weight"],
            d["max_parts"], d["samples_per_epoch"]) == ("cvae", 8, 60, 1e-3, 2.0, 1, 256)
    s = DefectSegmenter(recipe="study")._resolved()
    assert (s["pseudo_label"], s["base_channels"], s["epochs"], s["learning_rate"], s["positive_weight"],
            s["max_parts"], s["percentile"]) == ("deviation", 32, 20, 1e-3, 1.0, 3, 98.0)
    assert DefectSegmenter(recipe="study", epochs=5)._resolved()["epochs"] == 5  # explicit wins
    with pytest.raises(ValueError, match="recipe must be one of .* got 'fast'"):
        DefectSegmenter(recipe="fast")._check_settings()
    with pytest.raises(ValueError, match="pseudo_label must be one of"):
        DefectSegmenter(pseudo_label="cvea")._check_settings()


def test_classifier_recipes():
    assert (PatchClassifier()._p("backbone"), PatchClassifier()._p("mode")) == ("small_cnn", "finetune")
    st = PatchClassifier(recipe="study")
    assert (st._p("backbone"), st._p("mode"), st._p("patch_contrast")) == ("vgg16", "head", "none")
    assert PatchClassifier(recipe="study", backbone="small_cnn", mode="finetune")._p("backbone") == "small_cnn"
    assert PatchClassifier()._stages(pretrained=False)[0][3] == 40
    with pytest.raises(ValueError, match="recipe must be one of"):
        PatchClassifier(recipe="fast")._check_params()


def test_segmenter_cvae_pseudo_labels_need_bulk_patches():
    X, y = _patches()
    with pytest.raises(ValueError, match="pseudo_label='cvae' needs bulk patches"):
        DefectSegmenter(epochs=1, pseudo_label="cvae", bulk_class="nothing", n_threads=1).fit(X, y)
    with pytest.raises(ValueError, match=r"must be square, a multiple of 8 and >= 16 px; got \(20, 20\)"):
        DefectSegmenter(epochs=1, pseudo_label="cvae", n_threads=1).fit(X[:, :20, :20], y)
    # the recipe's choice falls back to the label-free rule, and says so
    kw = dict(epochs=1, batch_size=4, samples_per_epoch=4, base_channels=4, n_threads=1)
    with pytest.warns(UserWarning, match="fall back to 'lattice'"):
        seg = DefectSegmenter(bulk_class="nothing", **kw).fit(X, y)
    assert seg.resolved_params_["pseudo_label"] == "lattice" and seg.training_data_["pseudo_labels"] == "lattice"


def test_segmenter_default_recipe_trains_a_bulk_cvae():
    X, y = _patches()
    seg = DefectSegmenter(epochs=1, batch_size=4, samples_per_epoch=4, base_channels=4, cvae_epochs=1,
                          n_threads=1).fit(X, y)
    assert seg.resolved_params_["pseudo_label"] == "cvae" and seg.cvae_.crop_size == 32
    assert seg.pseudo_masks_[y == "Bulk"].sum() == 0 and seg.pseudo_masks_[y != "Bulk"].sum() > 0
    ref = stemroi.models.residual_pseudo_labels(X, y == "Bulk", seg.cvae_, quantile=0.99, sigma=2.0, n_threads=1)
    np.testing.assert_array_equal(seg.pseudo_masks_, ref)
