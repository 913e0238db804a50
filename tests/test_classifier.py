"""PatchClassifier: head and fine-tune modes trained for real, calibration, save/load, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import stemroi
from stemroi import _core
from stemroi.models.calibration import expected_calibration_error, fit_temperature, softmax
from stemroi.models.classifier import PatchClassifier, duplicate_groups, grouped_validation_split


def spectra_features(patches: np.ndarray, size: int = 16) -> np.ndarray:
    """Shift-invariant features (low-frequency |FFT|), so shifted crops look alike."""
    f = np.abs(np.fft.fft2(patches - patches.mean(axis=(1, 2), keepdims=True)))
    f = np.fft.fftshift(f, axes=(1, 2))
    c = patches.shape[1] // 2
    f = f[:, c - size // 2:c + size // 2, c - size // 2:c + size // 2].reshape(len(patches), -1)
    f = np.log1p(f)
    return ((f - f.mean(0)) / (f.std(0) + 1e-6)).astype(np.float32)


def blobs(n_per_class=40, k=3, d=12, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * sep
    y = np.repeat(np.arange(k), n_per_class)
    X = (centers[y] + rng.normal(size=(len(y), d))).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def cdte_subset(ayyubi_dir):
    from stemroi.cli import _load_patch_folder

    patches, labels, names = _load_patch_folder(str(ayyubi_dir / "CdTe"))
    rng = np.random.default_rng(0)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == k), 40, replace=False)
                                  for k in range(len(names))]))
    return patches[idx], labels[idx], names


def _groups(patches):
    try:
        return stemroi.overlap_groups(patches)
    except AttributeError:  # data area not merged: exact duplicates only
        return duplicate_groups(patches)


def test_head_on_real_cdte_groups_above_chance(cdte_subset):
    patches, labels, names = cdte_subset
    groups = _groups(patches)
    tr, te = grouped_validation_split(labels, groups, 0.3, seed=1)
    assert not set(groups[tr]) & set(groups[te])
    F = spectra_features(patches)
    clf = PatchClassifier(backbone="precomputed", mode="head", max_epochs=60, random_state=0, n_threads=1)
    clf.fit(F[tr], labels[tr], groups=groups[tr], class_names=names)
    acc = clf.score(F[te], labels[te])
    chance = 1.0 / len(names)
    assert acc > chance + 0.25, (acc, chance)
    assert clf.class_names_ == names
    assert 0.05 <= clf.temperature_ <= 20
    proba = clf.predict_proba(F[te])
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)


def test_finetune_small_cnn_learns_real_patches(cdte_subset):
    patches, labels, names = cdte_subset
    keep = np.isin(labels, [names.index("Bulk"), names.index("SF1")])
    X, y = patches[keep], labels[keep]
    # Exact-duplicate groups: CdTe's overlap groups are few and large (a whole class can be
    # one group), so a 2-class subset cannot be split by them; this test is about learning.
    groups = duplicate_groups(X)
    tr, te = grouped_validation_split(y, groups, 0.3, seed=0)
    clf = PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=15, patience=5,
                          batch_size=16, validation_fraction=0.2, random_state=0, n_threads=1, input_size=32)
    clf.fit(X[tr], y[tr], groups=groups[tr])
    assert clf.score(X[te], y[te]) > 0.7
    h = clf.history_
    assert 1 <= len(h["epochs"]) <= 15 and len(h["best_epoch"]) == 1
    assert "from scratch" in clf.backbone_description_


def test_validation_falls_back_when_groups_are_whole_classes():
    X, y = blobs(k=3)
    # one group per class (as CdTe/STO overlap groups nearly are): a group split would hold
    # a whole class out of training, so validation is stratified random and the card says why
    clf = PatchClassifier(backbone="precomputed", max_epochs=5, random_state=0, n_threads=1)
    clf.fit(X, y, groups=y.copy())
    assert "stratified random" in clf.model_card_["split"] and "leaky" in clf.model_card_["split"]
    assert clf.validation_accuracy_ is not None
    # groups that do allow a split keep whole groups out
    clf.fit(X, y, groups=np.arange(len(y)) // 4)
    assert "held-out overlap groups" in clf.model_card_["split"]


def test_separable_features_reach_high_accuracy_and_are_deterministic():
    X, y = blobs()
    a = PatchClassifier(backbone="precomputed", max_epochs=40, random_state=3, n_threads=1).fit(X, y)
    b = PatchClassifier(backbone="precomputed", max_epochs=40, random_state=3, n_threads=1).fit(X, y)
    Xt, yt = blobs(seed=0)  # same centres, fresh noise below
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    assert a.score(X, y) >= 0.95


def test_linear_head_agrees_with_logistic_regression_and_round_trips(tmp_path):
    from sklearn.linear_model import LogisticRegression

    X, y = blobs(n_per_class=30, k=3, sep=1.2, seed=4)
    Xt, yt = blobs(n_per_class=200, k=3, sep=1.2, seed=4)  # same centres (same seed), fresh draws below
    Xt = Xt + np.random.default_rng(9).normal(size=Xt.shape).astype(np.float32) * 0.5
    clf = PatchClassifier(backbone="precomputed", hidden_units=0, dropout=0.0, label_smoothing=0.0,
                          max_epochs=300, patience=300, validation_fraction=0, random_state=0, n_threads=1)
    clf.fit(X, y, class_names=["Bulk", "b", "c"])
    keys = set(clf.net_.state_dict())
    assert keys == {"logits.weight", "logits.bias"}, keys
    ref = LogisticRegression(C=1.0 / (2 * 1e-4 * len(y)), max_iter=5000).fit(X, y)
    agree = np.mean(clf.predict(Xt) == ref.predict(Xt))
    assert agree >= 0.97, agree
    assert abs(clf.score(Xt, yt) - ref.score(Xt, yt)) <= 0.02
    clf.save(tmp_path / "linear.stemroi")
    back = PatchClassifier.load(tmp_path / "linear.stemroi")
    np.testing.assert_array_equal(back.predict_proba(Xt), clf.predict_proba(Xt))
    with pytest.raises(ValueError, match="hidden_units must be >= 0, got -1"):
        PatchClassifier(backbone="precomputed", hidden_units=-1).fit(X, y)


def test_string_labels_and_classes_order():
    X, y = blobs(k=2)
    ys = np.where(y == 0, "bulk", "vacancy")
    clf = PatchClassifier(backbone="precomputed", max_epochs=20, random_state=0, n_threads=1).fit(X, ys)
    assert clf.classes_.tolist() == ["bulk", "vacancy"]
    assert set(clf.predict(X)) <= {"bulk", "vacancy"}


def test_save_load_identical_predictions(tmp_path):
    X, y = blobs(k=3)
    clf = PatchClassifier(backbone="precomputed", max_epochs=10, random_state=0, n_threads=1).fit(X, y, class_names=["a", "b", "c"])
    path = tmp_path / "m.stemroi"
    clf.save(path)
    back = PatchClassifier.load(path)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.class_names_ == ["a", "b", "c"]
    assert back.model_card_["split"]
    _, meta = stemroi.io.load_model_file(path)
    assert meta["architecture"] == "stemroi.PatchClassifier"
    assert set(meta) >= {"config", "class_names", "preprocessing", "model_card"}


def test_save_load_finetuned_small_cnn(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((24, 32, 32), dtype=np.float32)
    y = np.arange(24) % 2
    X[y == 1, 10:20, 10:20] = 1.0
    clf = PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=2, batch_size=8,
                          random_state=0, n_threads=1).fit(X, y)
    clf.save(tmp_path / "cnn.stemroi")
    back = PatchClassifier.load(tmp_path / "cnn.stemroi")
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_views_average_the_dihedral_views_and_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.random((24, 32, 32), dtype=np.float32)
    y = np.arange(24) % 2
    X[y == 1, 4:12, 6:20] = 1.0  # an asymmetric bar: the network's output depends on orientation
    clf = PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=2, batch_size=8,
                          validation_fraction=0, views=8, random_state=0, n_threads=1).fit(X, y)
    L8 = clf.decision_function(X)
    # the mean of the views' logits, views in the core's dihedral order
    views = [clf.set_params(views=1).decision_function(_core.dihedral_transform(X, np.full(len(X), k, np.int64)))
             for k in range(8)]
    np.testing.assert_allclose(L8, np.mean(views, 0), rtol=1e-5, atol=1e-6)
    assert np.abs(views[1] - views[0]).max() > 1e-3  # one view alone is not invariant ...
    clf.set_params(views=8)
    for k in (1, 5):  # ... the average over the group is, to rounding
        Xk = _core.dihedral_transform(X, np.full(len(X), k, np.int64))
        np.testing.assert_allclose(clf.decision_function(Xk), L8, rtol=1e-4, atol=1e-5)
    calls = []
    clf.predict_proba(X, batch_size=16, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (16, 192) and calls[-1] == (192, 192) and len(calls) == 16
    np.testing.assert_array_equal(clf.decision_function(X), L8)  # same bits every call
    clf.save(tmp_path / "views.stemroi")
    back = PatchClassifier.load(tmp_path / "views.stemroi")
    assert back.views == 8
    np.testing.assert_array_equal(back.decision_function(X), L8)
    with pytest.raises(ValueError, match="views must be 1, 4 or 8, got 2"):
        PatchClassifier(views=2).fit(X, y)
    with pytest.raises(ValueError, match="views=8 needs a network on patches; backbone 'precomputed'"):
        PatchClassifier(backbone="precomputed", mode="head", views=8).fit(X.reshape(24, -1), y)


def test_corrupt_or_foreign_model_file(tmp_path):
    bad = tmp_path / "bad.stemroi"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(OSError):
        PatchClassifier.load(bad)
    other = tmp_path / "other.stemroi"
    stemroi.io.save_model_file(other, {"w": np.zeros(3, np.float32)}, {"architecture": "vgg16"})
    with pytest.raises(ValueError, match="not a PatchClassifier model file"):
        PatchClassifier.load(other)


def test_ece_and_temperature():
    rng = np.random.default_rng(0)
    n, k = 4000, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    over = logits * 4  # over-confident
    t = fit_temperature(over, y)
    assert 2.5 < t < 6
    assert expected_calibration_error(y, softmax(over, t)) < expected_calibration_error(y, softmax(over)) / 2
    # every prediction right: the NLL falls towards T -> 0 without a minimum; no scaling
    assert fit_temperature(logits * 0.5 + 5 * np.eye(k)[y], y) == 1.0
    # perfectly calibrated toy: confidence 1 and always right
    p = np.eye(k)[y]
    assert expected_calibration_error(y, p) == 0.0
    with pytest.raises(ValueError, match="class indices must be in"):
        expected_calibration_error(np.full(n, k), p)


def test_bad_inputs():
    X, y = blobs()
    with pytest.raises(ValueError, match="mode must be one of"):
        PatchClassifier(mode="bogus").fit(X, y)
    with pytest.raises(ValueError, match="backbone must be one of"):
        PatchClassifier(backbone="resnet").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        PatchClassifier(backbone="precomputed").fit(X, np.zeros(len(X)))
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PatchClassifier(backbone="precomputed").fit(Xn, y)
    with pytest.raises(ValueError, match="different lengths"):
        PatchClassifier(backbone="precomputed").fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"patch values must be in \[0, 1\]"):
        PatchClassifier(backbone="small_cnn", mode="finetune", weights=None).fit(np.full((4, 32, 32), 255, np.float32), [0, 1, 0, 1])
    # integer patches: the message says how to scale them (the float ones above get no such hint)
    with pytest.raises(ValueError, match=r"got range \[255, 255\]; these are uint8 values: scale them with "
                                         r"stemroi.io.scale_to_unit\(X, 'dtype'\)"):
        PatchClassifier(backbone="small_cnn", weights=None).fit(np.full((4, 32, 32), 255, np.uint8), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\] \(uint8 / 255\), got range \[255, 255\]$"):
        PatchClassifier(backbone="small_cnn", weights=None).fit(np.full((4, 32, 32), 255, np.float32), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="has no pretrained weights"):
        PatchClassifier(backbone="small_cnn", mode="finetune", weights="imagenet").fit(
            np.zeros((4, 32, 32), np.float32), [0, 1, 0, 1])
    with pytest.raises(RuntimeError, match="not fitted"):
        PatchClassifier().predict(X)
    clf = PatchClassifier(backbone="precomputed", max_epochs=2, n_threads=1).fit(X, y)
    with pytest.raises(ValueError, match=r"features must be \(n, 12\)"):
        clf.predict(X[:, :5])


def test_core_helpers_match_reference():
    import torch

    from stemroi._lib import _core

    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4).repeat(8, 0)
    out = _core.dihedral_transform(x, np.arange(8))
    assert np.array_equal(out[1], np.rot90(x[0], 1))
    assert np.array_equal(out[4], x[0][:, ::-1])
    logits = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    y = np.array([0, 1, 2] * 3, np.int64)
    ref = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y), label_smoothing=0.1).item()
    assert abs(_core.smoothed_cross_entropy(logits, y, 0.1) - ref) < 1e-6


def _nt_xent_reference(z1, z2, t):
    """SimCLR's NT-Xent written out with torch (Chen et al. 2020, eq. 1, mean over the 2n anchors)."""
    import torch

    z = torch.nn.functional.normalize(torch.cat([torch.from_numpy(z1), torch.from_numpy(z2)]).double(), dim=1)
    n = len(z1)
    sim = z @ z.T / t
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = torch.cat([sim[i, :i], sim[i, i + 1:]])
        losses.append(-sim[i, j] + torch.logsumexp(others, 0))
    return float(torch.stack(losses).mean())


def test_nt_xent_loss_matches_reference_and_rejects_bad_input():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 6, 5)).astype(np.float32)
    for t in (0.1, 0.5, 1.0):
        assert _core.nt_xent_loss(z1, z2, t) == pytest.approx(_nt_xent_reference(z1, z2, t), rel=1e-6)
    # orthogonal rows, each view equal to its pair: the positive dominates at a low temperature
    eye = np.eye(4, dtype=np.float32)
    assert _core.nt_xent_loss(eye, eye, 0.05) < 1e-6
    assert _core.nt_xent_loss(eye, eye[[1, 2, 3, 0]], 0.05) > 10
    with pytest.raises(ValueError, match=r"two \(n, d\) views of one shape, got \(4, 4\) and \(3, 4\)"):
        _core.nt_xent_loss(eye, eye[:3], 0.1)
    with pytest.raises(ValueError, match="at least 2 pairs.*got 1"):
        _core.nt_xent_loss(eye[:1], eye[:1], 0.1)
    with pytest.raises(ValueError, match="temperature must be > 0, got -1"):
        _core.nt_xent_loss(eye, eye, -1.0)


def test_contrastive_term_trains_and_is_deterministic():
    rng = np.random.default_rng(0)
    X = rng.random((32, 32, 32), dtype=np.float32)
    y = np.arange(32) % 2
    X[y == 1, 8:24, 8:24] += 0.5
    X /= X.max()
    kw = dict(backbone="small_cnn", mode="finetune", weights=None, max_epochs=4, patience=4, batch_size=16,
              validation_fraction=0.0, input_size=32, random_state=0, n_threads=1)
    names = ["Bulk", "square"]
    plain = PatchClassifier(**kw).fit(X, y, class_names=names)
    a = PatchClassifier(contrastive_weight=1.0, **kw).fit(X, y, class_names=names)
    b = PatchClassifier(contrastive_weight=1.0, **kw).fit(X, y, class_names=names)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), plain.predict_proba(X))
    la = [e["train_loss"] for e in a.history_["epochs"]]
    lp = [e["train_loss"] for e in plain.history_["epochs"]]
    # the recorded loss includes NT-Xent: about log(2 * 16 - 1) = 3.4 for an untrained embedding,
    # on top of the two-class cross-entropy (about log 2), and it falls as the views align
    assert la[0] > lp[0] + 1.0, (la, lp)
    assert la[-1] < la[0], la
    with pytest.raises(ValueError, match=r"contrastive_weight must be a finite number >= 0, got -0.5"):
        PatchClassifier(contrastive_weight=-0.5, **kw).fit(X, y)
    with pytest.raises(ValueError, match=r"needs mode='finetune'.*got mode='head'"):
        PatchClassifier(backbone="precomputed", contrastive_weight=1.0).fit(X.reshape(32, -1), y)
    with pytest.raises(ValueError, match="contrastive term needs augmentation"):
        PatchClassifier(contrastive_weight=1.0, augment=False, **kw).fit(X, y, class_names=names)


def test_standardize_contrast_matches_numpy_and_is_saved(tmp_path):
    rng = np.random.default_rng(0)
    X = (rng.random((5, 16, 16)) * rng.random((5, 1, 1)) * 0.5 + rng.random((5, 1, 1)) * 0.4).astype(np.float32)
    X[0] = 0.3  # constant patch: maps to 0.5, no NaN
    out = _core.standardize_contrast(X)
    ref = (X - X.mean((1, 2), keepdims=True)) / np.maximum(X.std((1, 2), keepdims=True), 1e-3) * 0.15 + 0.5
    np.testing.assert_allclose(out, np.clip(ref, 0, 1), atol=2e-5)  # float32 means
    assert out.dtype == np.float32 and np.isfinite(out).all()
    # after standardisation a patch's brightness and contrast do not matter
    np.testing.assert_allclose(_core.standardize_contrast(X * 0.5 + 0.2), out, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected patches \(n, h, w\), got \(5, 256\)"):
        _core.standardize_contrast(X.reshape(5, -1))
    with pytest.raises(ValueError, match="patch_contrast must be 'standardize' or 'none', got 'zscore'"):
        PatchClassifier(backbone="small_cnn", mode="finetune", patch_contrast="zscore").fit(X, np.arange(5) % 2)
    y = np.arange(5) % 2
    clf = PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=1, input_size=16,
                          validation_fraction=0, random_state=0, n_threads=1).fit(X, y)
    assert clf.net_.patch_contrast == "standardize"
    clf.save(tmp_path / "m.stemroi")
    back = PatchClassifier.load(tmp_path / "m.stemroi")
    assert back._p("patch_contrast") == "standardize" and back.net_.patch_contrast == "standardize"
    np.testing.assert_array_equal(back.decision_function(X), clf.decision_function(X))
    # contrast-invariant end to end: the network sees the same input
    np.testing.assert_allclose(clf.decision_function(X * 0.5 + 0.2), clf.decision_function(X), atol=1e-4)


def test_plateau_patience_sets_when_the_learning_rate_halves():
    X, y = blobs(k=2)
    # validation_fraction=0: the monitored loss is the training loss; a learning rate
    # this small barely moves it, so epochs without improvement do occur
    for pp in (1, 4):
        clf = PatchClassifier(backbone="precomputed", max_epochs=12, patience=12, plateau_patience=pp,
                              learning_rate=1e-3, validation_fraction=0.0, random_state=0, n_threads=1).fit(X, y)
        ep = clf.history_["epochs"]
        lr = np.array([e["learning_rate"] for e in ep])
        loss = np.array([e["train_loss"] for e in ep])
        # replay the rule: halve after pp epochs without a new best
        best, wait, want = np.inf, 0, 1e-3
        for e in range(len(ep)):
            assert lr[e] == pytest.approx(want), (pp, e, lr.tolist())
            if loss[e] < best:
                best, wait = loss[e], 0
            else:
                wait += 1
                if wait % pp == 0:
                    want *= 0.5
        if pp == 1:
            assert lr.min() < 1e-3  # the schedule did act in this run
    with pytest.raises(ValueError, match="plateau_patience"):
        PatchClassifier(backbone="precomputed", plateau_patience=0).fit(X, y)
