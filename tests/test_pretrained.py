"""The STEM-pretrained small_cnn shipped with the package (registry key "small_cnn-stem",
weights="stem"): file integrity, loading, use by PatchClassifier and PatchClusterer."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import stemroi
from stemroi.models import weights as W
from stemroi.models._pretrained import StemCNNFeatures

KEY = "small_cnn-stem"


@pytest.fixture(scope="module")
def synth_patches():
    from stemroi.io import synth

    X, y, names = synth.make_patch_dataset(6, 64, classes=["Bulk", "vacancy", "interstitial"], random_state=3,
                                           lattice="dumbbell", cell_px=12.0)
    return X, np.asarray(names)[y], names  # named labels (a "Bulk" class, as detect() expects)


def _core_backbone_state():
    from stemroi._lib import _core

    net = _core.PatchNet("small_cnn", 2, input_size=64, pooling="avgmax")
    return {k[len("backbone."):]: v for k, v in net.state_dict().items() if k.startswith("backbone.")}


def test_shipped_file_matches_registry():
    spec = W.REGISTRY[KEY]
    path = W.weights_path(KEY)
    assert spec.shipped and spec.architecture == "small_cnn" and spec.format == "stemroi"
    assert path.parent == W.pretrained_dir() and path.is_file()
    assert path.stat().st_size == spec.size
    assert W.sha256_file(path) == spec.sha256
    assert W.fetch(KEY, download=False) == path
    # the training record beside the weights names the same file
    log = json.loads(path.with_suffix(".json").read_text())
    assert log["sha256"] == spec.sha256 and log["size"] == spec.size
    assert log["log"] and all("train_loss" in e for e in log["log"])
    assert W.stem_key("small_cnn") == KEY


def test_pretraining_recipe_matches_the_shipped_record_and_fault_classes_extend_it(pretrain_script):
    ps = pretrain_script
    log = json.loads(W.weights_path(KEY).with_suffix(".json").read_text())
    shipped = [f"{k}/{lat}" for k, lat in ps.class_pairs("slide")]
    assert shipped == log["classes"]  # the script still draws the classes the shipped file was trained on
    extended = [f"{k}/{lat}" for k, lat in ps.class_pairs("all")]
    assert extended[:len(shipped)] == shipped
    assert extended[len(shipped):] == ["stacking_fault:partial/cubic", "stacking_fault:partial/dumbbell",
                                       "stacking_fault:partial/perovskite", "stacking_fault:twin/dumbbell"]
    # the extra classes are appended: the shipped classes draw the same patches either way
    X1, y1, _, _ = ps.make_dataset(4, 0, faults="slide")
    X2, y2, names, _ = ps.make_dataset(4, 0, faults="all")
    np.testing.assert_array_equal(X2[:len(X1)], X1)
    np.testing.assert_array_equal(y2[:len(y1)], y1)
    assert np.bincount(y2).tolist() == [4] * len(extended) and names == extended
    _, yk, kinds, _ = ps.make_dataset(4, 0, labels="kind", faults="all")
    assert kinds[-2:] == ["stacking_fault:partial", "stacking_fault:twin"]
    assert np.bincount(yk).tolist() == [12] * 7 + [4]  # twin: dumbbell only


def test_loaded_state_fits_the_core_backbone():
    state, preprocessing, source = W.resolve_weights("stem", download=False, architecture="small_cnn")
    assert preprocessing == "unit" and KEY in source
    want = _core_backbone_state()
    assert sorted(state) == sorted(want)
    for k, v in want.items():
        assert state[k].shape == tuple(v.shape), k
        assert np.isfinite(state[k]).all(), k
    assert state["block1.0.weight"].shape == (16, 3, 3, 3)
    assert state["block4.3.weight"].shape == (128, 128, 3, 3)
    # trained, not the seeded initialisation
    assert not np.allclose(state["block1.0.weight"], want["block1.0.weight"])
    assert not np.allclose(state["block4.4.running_var"], 1.0)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_copy_is_refused(tmp_path, monkeypatch, damage, synth_patches):
    src = W.weights_path(KEY)
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    data = bytearray(dst.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        dst.write_bytes(bytes(data))
        match = "sha256 mismatch"
    else:
        dst.write_bytes(bytes(data[:-100]))
        match = "truncated"
    monkeypatch.setattr(W, "pretrained_dir", lambda: tmp_path)
    with pytest.raises(W.WeightsError, match=match) as info:
        W.fetch(KEY)
    assert "reinstall stemroi" in str(info.value)
    X, y, _ = synth_patches
    with pytest.raises(W.WeightsError, match=match):
        stemroi.PatchClassifier(backbone="small_cnn", mode="head", weights="stem", n_threads=1).fit(X, y)
    with pytest.raises(W.WeightsError, match=match):
        StemCNNFeatures(n_threads=1).transform(X)


def test_missing_shipped_file_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "pretrained_dir", lambda: tmp_path)
    with pytest.raises(W.WeightsNotFoundError, match="should ship with stemroi"):
        W.fetch(KEY)


def test_classifier_starts_from_the_shipped_weights(synth_patches):
    X, y, _ = synth_patches
    shipped = StemCNNFeatures(n_threads=1).transform(X)
    head = stemroi.PatchClassifier(backbone="small_cnn", mode="head", weights="stem", max_epochs=2,
                                   validation_fraction=0, random_state=0, n_threads=1).fit(X, y)
    # head mode: the backbone stays frozen (BatchNorm in inference mode), so its features are the shipped ones
    np.testing.assert_array_equal(head.transform(X), shipped)
    assert KEY in head.weights_description_
    untrained = stemroi.PatchClassifier(backbone="small_cnn", mode="head", weights=None, max_epochs=2,
                                        validation_fraction=0, random_state=0, n_threads=1).fit(X, y)
    assert not np.allclose(untrained.transform(X), shipped)
    # fine-tuning from the weights: the head stage on the frozen backbone, then the whole network
    ft = stemroi.PatchClassifier(backbone="small_cnn", weights="stem", max_epochs=1, validation_fraction=0,
                                 random_state=0, n_threads=1).fit(X, y)
    assert [e["stage"] for e in ft.history_["epochs"]] == [0, 1]
    assert ft.model_card_["stages"][1][0] == -1 and KEY in ft.model_card_["backbone"]
    assert not np.allclose(ft.transform(X), shipped)  # the second stage moved the backbone


def test_classifier_with_stem_weights_saves_and_loads(tmp_path, synth_patches):
    X, y, _ = synth_patches
    clf = stemroi.PatchClassifier(backbone="small_cnn", mode="head", weights="stem", max_epochs=2,
                                  validation_fraction=0, random_state=0, n_threads=1).fit(X, y)
    clf.save(tmp_path / "m.stemroi")
    back = stemroi.PatchClassifier.load(tmp_path / "m.stemroi")
    np.testing.assert_allclose(back.decision_function(X), clf.decision_function(X), rtol=1e-5, atol=1e-5)


def test_features_are_deterministic(synth_patches):
    X, _, _ = synth_patches
    a = StemCNNFeatures(n_threads=1)
    F = a.transform(X)
    assert F.shape == (len(X), 256) == (len(X), a.n_features)
    assert F.dtype == np.float32 and np.isfinite(F).all()
    np.testing.assert_array_equal(a.transform(X), F)
    np.testing.assert_array_equal(StemCNNFeatures(n_threads=1).transform(X), F)
    np.testing.assert_array_equal(a.transform(X[:5]), F[:5])  # independent of the batch
    assert np.ptp(F, axis=0).max() > 0


def test_bad_weight_names_are_refused_clearly(synth_patches):
    X, y, _ = synth_patches
    with pytest.raises(FileNotFoundError, match=r"no such file \(known names: .*'stem'"):
        stemroi.PatchClassifier(backbone="small_cnn", weights="stme", n_threads=1).fit(X, y)
    with pytest.raises(ValueError, match="no pretrained weights named 'imagenet' .*use weights='stem'"):
        stemroi.PatchClassifier(backbone="small_cnn", weights="imagenet", n_threads=1).fit(X, y)
    with pytest.raises(ValueError, match="no STEM-pretrained weights for 'vgg16'"):
        W.resolve_weights("stem", architecture="vgg16")
    with pytest.raises(ValueError, match="are small_cnn weights, not mobilenet_v2"):
        W.resolve_weights(KEY, architecture="mobilenet_v2")
    with pytest.raises(ValueError, match="needs pretrained weights"):
        StemCNNFeatures(weights=None).fit()


def test_patch_clusterer_stem_cnn_features(synth_patches):
    X, y, _ = synth_patches
    cl = stemroi.PatchClusterer("stem_cnn", k_range=range(2, 5), random_state=0, n_threads=1).fit(X)
    assert isinstance(cl.extractor_, StemCNNFeatures)
    np.testing.assert_array_equal(cl.features_, StemCNNFeatures(n_threads=1).transform(X).astype(np.float64))
    assert cl.n_clusters_ in (2, 3, 4) and cl.labels_.shape == (len(X),)
    np.testing.assert_array_equal(cl.predict(X), cl.labels_)


def _sto_subset(ayyubi_dir):
    """15 real SrTiO3 patches per class: (patches, labels)."""
    ds = stemroi.load_patch_folder(ayyubi_dir / "STO")
    X, y = np.asarray(ds.patches, np.float32), np.asarray(ds.labels)
    idx = np.concatenate([np.flatnonzero(y == c)[:15] for c in np.unique(y)])
    return X[idx], y[idx]


def _nearest_mean_accuracy(F, y) -> float:
    """Leave-one-out accuracy of the nearest class mean of standardised features."""
    Z = (F - F.mean(0)) / (F.std(0) + 1e-6)
    classes = np.unique(y)
    hits = 0
    for i in range(len(Z)):
        keep = np.arange(len(Z)) != i
        means = np.stack([Z[keep & (y == c)].mean(0) for c in classes])
        hits += classes[np.argmin(((means - Z[i]) ** 2).sum(1))] == y[i]
    return hits / len(Z)


@pytest.mark.data
def test_stem_features_of_real_patches(ayyubi_dir):
    X, y = _sto_subset(ayyubi_dir)
    F = StemCNNFeatures(n_threads=1).transform(X)
    assert F.shape == (len(X), 256) and np.isfinite(F).all()
    np.testing.assert_array_equal(StemCNNFeatures(n_threads=1).transform(X), F)
    # the classes are told apart by the nearest class mean: 0.95 measured,
    # 0.68 with the untrained backbone, 0.25 by chance
    assert _nearest_mean_accuracy(F, y) > 0.8


def test_stem_cnn_features_are_public():
    import stemroi.features
    from stemroi.models._pretrained import StemCNNFeatures

    assert stemroi.StemCNNFeatures is StemCNNFeatures is stemroi.features.StemCNNFeatures
    assert "StemCNNFeatures" in stemroi.__all__ and "StemCNNFeatures" in stemroi.features.__all__


# ---- the STEM-pretrained MobileNetV2 ("mobilenet_v2-stem"; MobileNetV2Classifier's default start)
MNV2_KEY = "mobilenet_v2-stem"


def _mobilenet_stem_features(X, weights="stem"):
    """(n, 1280) spatial means of the backbone's last map, input prepared as in training."""
    from stemroi._lib import _core

    state = W.resolve_weights(weights, architecture="mobilenet_v2")[0] if weights else None
    net = stemroi.models.MobileNetV2(num_classes=2, weights=state, n_threads=1)
    Z = _core.standardize_contrast(np.ascontiguousarray(X, np.float32))
    return net.features(net.prepare(Z, size=96)).mean(axis=(2, 3))


def test_mobilenet_stem_file_matches_registry():
    spec = W.REGISTRY[MNV2_KEY]
    path = W.weights_path(MNV2_KEY)
    assert spec.shipped and spec.architecture == "mobilenet_v2" and spec.preprocessing == "tf"
    assert path.parent == W.pretrained_dir() and path.stat().st_size == spec.size
    assert W.sha256_file(path) == spec.sha256 and W.fetch(MNV2_KEY, download=False) == path
    log = json.loads(path.with_suffix(".json").read_text())
    assert log["sha256"] == spec.sha256 and log["size"] == spec.size
    assert log["training"]["backbone"] == "mobilenet_v2" and log["training"]["input_size"] == spec.input_size == 96
    assert W.stem_key("mobilenet_v2") == MNV2_KEY
    state, preprocessing, _ = W.resolve_weights("stem", architecture="mobilenet_v2")
    init = stemroi.models.MobileNetV2(num_classes=2).state_dict()
    # features only: the ImageNet classifier is never trained here and not shipped
    assert sorted(state) == sorted(k for k in init if not k.startswith("classifier."))
    for k, v in state.items():
        assert v.shape == init[k].shape and np.isfinite(v).all(), k
    assert not np.allclose(state["features.0.0.weight"], init["features.0.0.weight"])


def test_mobilenet_classifier_fine_tunes_from_stem_weights(synth_patches):
    X, y, _ = synth_patches
    state = W.resolve_weights("stem", architecture="mobilenet_v2")[0]
    # head mode: the backbone is frozen with the shipped values (the file's classifier is absent and unused)
    head = stemroi.PatchClassifier(backbone="mobilenet_v2", mode="head", weights="stem", input_size=64, max_epochs=1,
                                   validation_fraction=0, random_state=0, n_threads=1).fit(X, y)
    sd = head.net_.state_dict()
    for k, v in state.items():
        np.testing.assert_array_equal(sd["backbone." + k], v, err_msg=k)
    # MobileNetV2Classifier() starts from them: the head stage, then every stage at 0.3 x the rate
    ft = stemroi.MobileNetV2Classifier(input_size=64, max_epochs=1, validation_fraction=0, random_state=0,
                                       n_threads=1).fit(X, y)
    assert [e["stage"] for e in ft.history_["epochs"]] == [0, 1]
    assert ft.model_card_["stages"][1][:2] == [-1, pytest.approx(3e-4)] and MNV2_KEY in ft.model_card_["backbone"]
    moved = ft.net_.state_dict()
    assert not np.allclose(moved["backbone.features.0.0.weight"], state["features.0.0.weight"])
    # a MobileNetV2 named without a mode is fine-tuned (frozen features + head measured far worse)
    assert stemroi.PatchClassifier(backbone="mobilenet_v2")._p("mode") == "finetune"
    assert stemroi.PatchClassifier(backbone="vgg16")._p("mode") == "head"
    # without input_size, the size the weights were pretrained at
    assert stemroi.PatchClassifier(backbone="mobilenet_v2", weights="stem")._net_input_size() == 96
    assert stemroi.PatchClassifier(backbone="small_cnn", weights="stem")._net_input_size() == 64
    # the same start through weights="auto" when the ImageNet file is absent
    assert stemroi.PatchClassifier(backbone="mobilenet_v2", weights="auto")._stem_weights() is \
        (W.cached_path("mobilenet_v2-imagenet") is None)


@pytest.mark.data
def test_mobilenet_stem_features_of_real_patches(ayyubi_dir):
    X, y = _sto_subset(ayyubi_dir)
    stem = _nearest_mean_accuracy(_mobilenet_stem_features(X), y)
    untrained = _nearest_mean_accuracy(_mobilenet_stem_features(X, weights=None), y)
    # measured: 0.75 with the shipped weights (0.77 with the 20-epoch file), 0.38 untrained, 0.25 by chance
    assert stem > 0.7 and stem > untrained + 0.2, (stem, untrained)
