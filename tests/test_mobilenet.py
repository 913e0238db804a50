"""MobileNetV2 in the C++ core: torchvision parity (names, shapes, outputs),
weight loading checks (hash, names, shapes), the [-1, 1] preprocessing and a
real (tiny) training run of MobileNetV2Classifier (= PatchClassifier with the
mobilenet_v2 backbone)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import stemroi
from stemroi.models import mobilenet, weights
from stemroi.models.mobilenet import MobileNetV2, MobileNetV2Classifier

torch = pytest.importorskip("torch")
tv_models = pytest.importorskip("torchvision.models")


def torchvision_net(num_classes=10, seed=0):
    torch.manual_seed(seed)
    net = tv_models.mobilenet_v2(num_classes=num_classes)
    # non-trivial BatchNorm statistics so eval-mode parity means something
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def state_numpy(net):
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def test_names_and_shapes_match_torchvision():
    tv = torchvision_net()
    ours = MobileNetV2(10).state_dict()
    ref = state_numpy(tv)
    assert sorted(ours) == sorted(ref)
    assert all(ours[k].shape == ref[k].shape for k in ref)


def test_parity_with_torchvision_eval_mode():
    tv = torchvision_net(seed=3)
    ours = MobileNetV2(10, weights=state_numpy(tv), n_threads=2)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref_logits = tv(torch.from_numpy(x)).numpy()
        ref_feats = tv.features(torch.from_numpy(x)).numpy()
    feats = ours.features(x)
    assert feats.shape == (2, 1280, 2, 2)
    np.testing.assert_allclose(feats, ref_feats, rtol=1e-4, atol=1e-4 * np.abs(ref_feats).max())
    np.testing.assert_allclose(ours.forward(x), ref_logits, rtol=1e-4, atol=1e-4 * np.abs(ref_logits).max())


def test_transfer_loads_features_only():
    tv = torchvision_net(num_classes=1000, seed=1)
    ours = MobileNetV2(4, weights=state_numpy(tv))  # classifier shape differs -> features only
    np.testing.assert_array_equal(ours.state_dict()["features.5.conv.1.0.weight"],
                                  tv.state_dict()["features.5.conv.1.0.weight"].numpy())
    assert ours.state_dict()["classifier.1.weight"].shape == (4, 1280)


def test_weight_mismatch_messages():
    state = state_numpy(torchvision_net())
    bad = dict(state)
    bad["features.0.0.weight"] = np.zeros((32, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"shape mismatch.*'features\.0\.0\.weight': weights have \(32, 1, 3, 3\), model expects \(32, 3, 3, 3\)"):
        MobileNetV2(10, weights=bad)
    missing = {k: v for k, v in state.items() if k != "features.3.conv.2.weight"}
    with pytest.raises(ValueError, match=r"missing \(1\): features\.3\.conv\.2\.weight"):
        MobileNetV2(10, weights=missing)
    extra = dict(state, **{"features.19.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"unexpected \(1\): features\.19\.weight"):
        MobileNetV2(10, weights=extra)


def test_imagenet_file_is_in_the_one_registry(tmp_path):
    spec = weights.REGISTRY[mobilenet.IMAGENET_WEIGHTS]
    assert (spec.filename, spec.architecture, spec.format, spec.sha256_prefix) == (
        "mobilenet_v2-b0353104.pth", "mobilenet_v2", "torchvision", "b0353104")
    assert (spec.preprocessing, spec.input_size) == ("torchvision", 224)
    for own in ("MOBILENET_WEIGHTS", "find_imagenet_weights", "load_torchvision_state_dict", "_sha256", "_cache_dirs"):
        assert not hasattr(mobilenet, own)
    tv = torchvision_net()
    path = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(tv.state_dict(), path)
    with pytest.raises(weights.WeightsError, match=r"sha256 mismatch .*expected b0353104\.\.\."):
        weights.verify_file(path, spec)
    state = weights.load_torchvision_state(path)
    np.testing.assert_array_equal(state["classifier.1.bias"], tv.state_dict()["classifier.1.bias"].numpy())
    assert state["features.0.1.num_batches_tracked"].shape == ()
    # the registry's loader feeds the backbone (float32 BatchNorm counters included)
    ours = MobileNetV2(10, weights=path)
    assert ours.weights_origin == str(path)
    np.testing.assert_array_equal(ours.state_dict()["features.3.conv.2.weight"],
                                  tv.state_dict()["features.3.conv.2.weight"].numpy())
    with pytest.raises(FileNotFoundError, match="not found"):
        weights.load_torchvision_state(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(weights.WeightsError, match="cannot read torchvision weights file"):
        MobileNetV2(2, weights=garbage)


def test_preprocessing_is_minus_one_to_one():
    net = MobileNetV2(2)
    x = net.prepare(np.stack([np.zeros((64, 64)), np.ones((64, 64))]).astype(np.float32), size=96)
    assert x.shape == (2, 3, 96, 96)
    assert x[0].min() == -1.0 and x[1].max() == 1.0
    assert net.net.preprocessing == "tf" and net.net.architecture == "mobilenet_v2"
    assert net.net.out_channels == 1280
    assert net.stages == ["stage1", "stage2", "stage3", "stage4", "stage5", "head"]


def test_bad_inputs():
    net = MobileNetV2(2)
    with pytest.raises(ValueError, match="expected a 4-D array"):
        net.forward(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"must be \(n, 3, H, W\)"):
        net.features(np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(ValueError, match="at least 32 x 32"):
        net.features(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        MobileNetV2(0)
    with pytest.raises(FileNotFoundError, match="not found"):
        MobileNetV2(2, weights="/nonexistent/mobilenet.pth")


def test_classifier_bad_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMROI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("STEMROI_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"mobilenet_v2 weights 'mobilenet_v2-imagenet' are not available "
                                                r"\(not cached and downloads are off\)\. Download mobilenet_v2-b0353104\.pth"
                                                r".*weights=None"):
        MobileNetV2Classifier(weights="imagenet")
    # "auto" without the file: the shipped STEM weights
    assert MobileNetV2Classifier(weights="auto").weights == mobilenet.STEM_WEIGHTS
    # torchvision's own cache is searched after $STEMROI_HOME/weights
    hub = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"not the torchvision file either")
    assert weights.cached_path(mobilenet.IMAGENET_WEIGHTS) == hub
    fake = tmp_path / "home" / "weights" / "mobilenet_v2-b0353104.pth"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the torchvision file")
    assert weights.cached_path(mobilenet.IMAGENET_WEIGHTS) == fake
    for w in ("imagenet", "auto"):
        with pytest.raises(weights.WeightsError, match=r"sha256 mismatch for weights file .*home.*expected b0353104"):
            MobileNetV2Classifier(weights=w)
    with pytest.raises(TypeError, match="weights must be None, 'random', 'stem', 'imagenet', 'auto' or a file path"):
        MobileNetV2Classifier(weights={"features.0.0.weight": np.zeros(1)})
    with pytest.raises(TypeError, match="sets backbone itself"):
        MobileNetV2Classifier(backbone="vgg16")
    with pytest.raises(ValueError, match="input_size must be >= 32, got 16"):
        MobileNetV2Classifier(input_size=16)
    with pytest.raises(ValueError, match="at least 2 classes"):
        MobileNetV2Classifier(max_epochs=1).fit(np.zeros((4, 32, 32), np.float32), ["a"] * 4)
    with pytest.raises(FileNotFoundError, match="no such file"):
        MobileNetV2Classifier(weights=tmp_path / "nope.pth", max_epochs=1, input_size=32).fit(
            np.zeros((4, 32, 32), np.float32), ["a", "b"] * 2)


def test_classifier_is_a_patch_classifier():
    clf = MobileNetV2Classifier(max_epochs=5, n_threads=1)
    assert isinstance(clf, stemroi.PatchClassifier)
    p = clf.get_params()
    assert (p["backbone"], p["mode"], p["weights"], p["input_size"], p["random_state"], p["max_epochs"]) == (
        "mobilenet_v2", "finetune", "mobilenet_v2-stem", 96, 0, 5)
    assert p["plateau_patience"] == 3  # PatchClassifier's: fine-tuning from the STEM weights
    # from scratch the learning rate waits longer before halving; an explicit value wins
    assert MobileNetV2Classifier(weights=None).get_params()["plateau_patience"] == 10
    assert MobileNetV2Classifier(weights=None, plateau_patience=4).get_params()["plateau_patience"] == 4
    # predictions average the 8 dihedral views (the measured best); one view on request
    assert p["views"] == 8 and MobileNetV2Classifier(views=1).get_params()["views"] == 1
    # from the STEM weights at most 15 epochs per stage (the measured best); from scratch PatchClassifier's
    assert MobileNetV2Classifier().get_params()["max_epochs"] == 15
    assert MobileNetV2Classifier(weights=None).get_params()["max_epochs"] is None


def tiny_task(n=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 0.3, (n, 32, 32)).astype(np.float32)
    y = np.array(["dark", "bright"] * (n // 2))
    X[y == "bright"] += 0.6
    return X, y


def test_fine_tuning_learns_a_simple_task():
    X, y = tiny_task()
    # from scratch (all stages, BatchNorm in training mode, statistics recomputed on
    # the training set); brightness task, so no per-patch standardisation. One full
    # batch of 24 at 1e-3: the loss falls steadily on any CPU kernel path (0.70 -> ~0.15,
    # the label-smoothing floor; score 1.0 over seeds 0-5). Batches of 8 at 3e-3 jumped
    # (0.24 -> 0.55 -> 0.24) and one CPU's trajectory is not another's.
    kw = dict(weights=None, input_size=32, max_epochs=8, batch_size=24, learning_rate=1e-3, dropout=0.0, patience=8,
              patch_contrast="none", validation_fraction=0.0, augment=False, views=1, random_state=0, n_threads=1)
    clf = MobileNetV2Classifier(**kw).fit(X, y)
    losses = [e["train_loss"] for e in clf.history_["epochs"]]
    assert len(losses) >= 2 and losses[-1] < 0.5 * losses[0], losses
    assert clf.net_.architecture == "mobilenet_v2" and clf.net_.preprocessing == "tf"
    assert clf.score(X, y) >= 0.9  # eval mode
    assert set(clf.predict(X[:3])) <= {"dark", "bright"}
    clf2 = MobileNetV2Classifier(**kw).fit(X, y)
    assert [e["train_loss"] for e in clf2.history_["epochs"]] == losses
    np.testing.assert_array_equal(clf2.decision_function(X), clf.decision_function(X))


def test_pretrained_file_passes_through(tmp_path, monkeypatch):
    # a torchvision MobileNetV2 .pth (random here; the ImageNet file is not needed)
    # reaches the backbone: converted once into the project's backbone file (the
    # BatchNorm counters are 0-d), then staged fine-tuning never unfreezes stage1
    monkeypatch.setenv("STEMROI_HOME", str(tmp_path / "home"))
    tv = torchvision_net(num_classes=1000, seed=2)
    path = tmp_path / "tv_mobilenet.pth"
    torch.save(tv.state_dict(), path)
    X, y = tiny_task(n=16)
    clf = MobileNetV2Classifier(weights=path, input_size=32, max_epochs=1, batch_size=8, validation_fraction=0.0,
                                n_threads=1)
    converted = Path(clf.weights)
    assert clf.get_params()["plateau_patience"] == 3  # pretrained: PatchClassifier's default schedule
    assert converted.parent == tmp_path / "home" / "weights" and converted.suffix == ".stemroi"
    assert MobileNetV2Classifier(weights=str(path)).weights == clf.weights  # cached by content
    clf.fit(X, y)
    assert clf.net_.preprocessing == "torchvision"  # ImageNet normalisation of torchvision's weights
    assert len(clf.model_card_["stages"]) == 3  # staged fine-tuning
    state = clf.net_.state_dict()
    ref = tv.state_dict()
    np.testing.assert_array_equal(state["backbone.features.0.0.weight"], ref["features.0.0.weight"].numpy())
    np.testing.assert_array_equal(state["backbone.features.0.1.running_var"], ref["features.0.1.running_var"].numpy())
    # a project backbone file passes through as it is
    assert MobileNetV2Classifier(weights=converted).weights == str(converted)


def test_exported():
    assert stemroi.models.MobileNetV2 is MobileNetV2
    assert stemroi.MobileNetV2Classifier is MobileNetV2Classifier
    assert "PatchClassifier" in MobileNetV2Classifier.__doc__ and "MobileNetV2" in MobileNetV2Classifier.__doc__
