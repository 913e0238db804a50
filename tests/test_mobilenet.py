"""MobileNetV2 in the C++ core: torchvision parity (names, shapes, outputs),
weight loading checks (hash, names, shapes), the [-1, 1] preprocessing and a
real (tiny) fine-tuning run."""
from __future__ import annotations

import numpy as np
import pytest

import stemroi
from stemroi.mobilenet import MobileNetV2, MobileNetV2Classifier, load_torchvision_state_dict

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


def test_pth_file_hash_check(tmp_path):
    tv = torchvision_net()
    path = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(tv.state_dict(), path)
    with pytest.raises(ValueError, match="SHA-256 of .* expected b0353104"):
        load_torchvision_state_dict(path)
    state = load_torchvision_state_dict(path, check_hash=False)
    np.testing.assert_array_equal(state["classifier.1.bias"], tv.state_dict()["classifier.1.bias"].numpy())
    with pytest.raises(FileNotFoundError, match="not found"):
        load_torchvision_state_dict(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(OSError, match="cannot read MobileNetV2 weights"):
        load_torchvision_state_dict(garbage, check_hash=False)


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
    with pytest.raises(ValueError, match="at least 2 classes"):
        MobileNetV2Classifier(epochs=1).fit(np.zeros((4, 32, 32), np.float32), ["a"] * 4)
    with pytest.raises(ValueError, match="unknown stage 'block5'"):
        MobileNetV2Classifier(epochs=1, input_size=32, trainable_stages=["block5"]).fit(
            np.zeros((4, 32, 32), np.float32), ["a", "b"] * 2)


def test_fine_tuning_learns_a_simple_task():
    rng = np.random.default_rng(0)
    n = 24
    X = rng.uniform(0, 0.3, (n, 32, 32)).astype(np.float32)
    y = np.array(["dark", "bright"] * (n // 2))
    X[y == "bright"] += 0.6
    # from scratch (all stages, BatchNorm in training mode); torchvision's
    # initialisation makes an untrained network's eval-mode features vanish,
    # so head-only training on random weights cannot work
    kw = dict(input_size=32, epochs=8, batch_size=8, learning_rate=3e-3, random_state=0, dropout=0.0)
    clf = MobileNetV2Classifier(n_threads=2, **kw).fit(X, y)
    assert clf.loss_history_[-1] < 0.5 * clf.loss_history_[0]
    assert clf.score(X, y) >= 0.75  # eval mode, BatchNorm recalibrated on the training set
    assert set(clf.predict(X[:3])) <= {"dark", "bright"}
    clf2 = MobileNetV2Classifier(n_threads=2, **kw).fit(X, y)
    np.testing.assert_array_equal(clf2.loss_history_, clf.loss_history_)


def test_exported():
    assert stemroi.MobileNetV2 is MobileNetV2
