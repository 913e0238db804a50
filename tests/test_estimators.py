"""The estimator base: one parameter API, one NotFittedError, one model-file
schema, and pickle / joblib round trips of every fitted estimator through
the safe model format (tiny sizes, one thread, seconds each)."""
from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

import stemroi
from stemroi.base import BaseEstimator, NotFittedError, _load_model, _save_model
from stemroi.cluster import KMeans, PatchClusterer
from stemroi.decomposition import PCA
from stemroi.features.descriptors import FFTMagnitude, LatticeResidual, PolarPowerSpectrum, Precomputed
from stemroi.features.vgg16 import VGG16Features
from stemroi.models.classifier import PatchClassifier
from stemroi.models.cvae import BulkCVAE
from stemroi.models.few_label import FewLabelClassifier
from stemroi.models.mobilenet import MobileNetV2, MobileNetV2Classifier
from stemroi.models.unet import DefectSegmenter

joblib = pytest.importorskip("joblib")


# --------------------------------------------------------------------------- data
def _rows(n=30, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def _lattice_patches(n_per_class=8, size=32, seed=0):
    """Two classes of lattice patches: plain, and with a missing column."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out, labels = [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            img = np.zeros((size, size))
            for r in range(4, size, 8):
                for c in range(4, size, 8):
                    if label == 1 and (r, c) == (12, 12):
                        continue
                    img += np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 1.5**2))
            img = img / img.max() * 0.8 + rng.normal(0, 0.03, img.shape)
            out.append(np.roll(img, tuple(rng.integers(0, 8, 2)), axis=(0, 1)) if label == 0 else img)
            labels.append(label)
    return np.clip(np.stack(out), 0, 1).astype(np.float32), np.array(labels)


# --------------------------------------------------------------------------- cases
# name -> (unfitted estimator, fit(est), outputs(est) -> dict of arrays)
def _pca():
    X = _rows()
    return PCA(n_components=2, n_threads=1), lambda e: e.fit(X), lambda e: {
        "transform": e.transform(X), "inverse": e.inverse_transform(e.transform(X))}


def _kmeans():
    X = _rows()
    return KMeans(3, n_init=2, random_state=0, n_threads=1), lambda e: e.fit(X), lambda e: {
        "predict": e.predict(X), "transform": e.transform(X), "labels": e.labels_}


def _patch_clusterer():
    P, _ = _lattice_patches()
    return (PatchClusterer("polar_fft", n_components=3, k_range=[2, 3], n_init=2, random_state=0, n_threads=1),
            lambda e: e.fit(P), lambda e: {"predict": e.predict(P), "transform": e.transform(P), "labels": e.labels_})


def _vgg16():
    P, _ = _lattice_patches(n_per_class=2)
    return VGG16Features(input_size=32, n_threads=1, random_state=0), lambda e: e.fit(), lambda e: {
        "transform": e.transform(P)}


def _classifier_outputs(P):
    return lambda e: {"proba": e.predict_proba(P), "predict": e.predict(P), "embed": e.transform(P)}


def _small_cnn():
    P, y = _lattice_patches(size=16)
    est = PatchClassifier("small_cnn", "finetune", weights=None, input_size=16, max_epochs=2, batch_size=8,
                          random_state=0, n_threads=1)
    return est, lambda e: e.fit(P, y), _classifier_outputs(P)


def _vgg16_head():
    P, y = _lattice_patches(n_per_class=4)
    est = PatchClassifier("vgg16", "head", weights=None, input_size=32, max_epochs=3, batch_size=8,
                          random_state=0, n_threads=1)
    return est, lambda e: e.fit(P, y), _classifier_outputs(P)


def _mobilenet_classifier():
    P, y = _lattice_patches(n_per_class=4, size=16)
    est = MobileNetV2Classifier(input_size=32, max_epochs=1, batch_size=8, random_state=0, n_threads=1)
    return est, lambda e: e.fit(P, y), _classifier_outputs(P)


def _cvae():
    crops = np.random.default_rng(0).uniform(size=(24, 16, 16)).astype(np.float32)
    est = BulkCVAE(latent_dim=4, epochs=2, batch_size=8, learning_rate=1e-3, crop_size=16, blur_sigma=0.5,
                   detector="energy", energy_window=5, random_state=0, n_threads=1)
    return est, lambda e: e.fit(crops), lambda e: {
        "reconstruct": e.reconstruct(crops), "latent": e.transform(crops), "predict": e.predict(crops),
        **{f"score_{k}": v for k, v in e.score_all(crops).items()}}


def _segmenter():
    P, y = _lattice_patches(n_per_class=4, size=16)
    labels = np.where(y == 0, "Bulk", "Vacancy")
    est = DefectSegmenter(epochs=1, batch_size=4, base_channels=4, samples_per_epoch=8, max_parts=1,
                          random_state=0, n_threads=1)
    image = np.tile(P[0], (2, 2))
    return est, lambda e: e.fit(P, labels), lambda e: {
        "patch_maps": e.predict_patch_maps(P), "maps": e.predict_maps(image)}


def _few_label():
    P, y = _lattice_patches(n_per_class=6)
    labels = np.where(y == 0, "Bulk", "Vacancy")
    U, _ = _lattice_patches(n_per_class=4, seed=1)
    est = FewLabelClassifier(views=4, self_training=1, max_epochs=20, random_state=0, n_threads=1)
    return est, lambda e: e.fit(P, labels, unlabelled=U), lambda e: {
        "proba": e.predict_proba(P), "features": e.transform(P)}


CASES = {
    "PCA": _pca,
    "KMeans": _kmeans,
    "PatchClusterer": _patch_clusterer,
    "VGG16Features": _vgg16,
    "PatchClassifier-small_cnn": _small_cnn,
    "PatchClassifier-vgg16-head": _vgg16_head,
    "MobileNetV2Classifier": _mobilenet_classifier,
    "FewLabelClassifier": _few_label,
    "BulkCVAE": _cvae,
    "DefectSegmenter": _segmenter,
}


def _pickle(est, tmp_path):
    return pickle.loads(pickle.dumps(est))


def _joblib(est, tmp_path):
    path = tmp_path / "est.joblib"
    joblib.dump(est, path)
    return joblib.load(path)


def _pickled_modules(blob: bytes) -> set:
    """Modules of the classes and functions a pickle refers to."""
    seen = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add(module)
            return super().find_class(module, name)

    Recorder(io.BytesIO(blob)).load()
    return seen


def _assert_same_outputs(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.mark.parametrize("name", list(CASES))
def test_fitted_estimator_round_trips(name, tmp_path):
    est, fit, outputs = CASES[name]()
    fit(est)
    expected = outputs(est)
    blob = pickle.dumps(est)
    # the compiled networks travel as model-file bytes, never as pybind or torch objects
    modules = _pickled_modules(blob)
    assert not [m for m in modules if m.startswith(("stemroi._core", "stemroi._lib", "torch"))], modules
    for load in (_pickle, _joblib):
        back = load(est, tmp_path)
        assert type(back) is type(est)
        _assert_same_outputs(expected, outputs(back))
        assert back.get_params() == est.get_params()
        assert repr(back) == repr(est)
        # the restored estimator pickles again to the same outputs
        _assert_same_outputs(expected, outputs(pickle.loads(pickle.dumps(back))))


@pytest.mark.parametrize("name", list(CASES))
def test_unfitted_estimator_round_trips(name, tmp_path):
    est, _, _ = CASES[name]()
    for load in (_pickle, _joblib):
        back = load(est, tmp_path)
        assert back.get_params() == est.get_params()
        assert repr(back) == repr(est)


# VGG16Features is stateless (weights are loaded on first use), so it has no not-fitted state
UNFITTED_CALLS = {
    "PCA": lambda e: e.transform(_rows()),
    "KMeans": lambda e: e.predict(_rows()),
    "PatchClusterer": lambda e: e.predict(_lattice_patches(2)[0]),
    "PatchClassifier-small_cnn": lambda e: e.predict(_lattice_patches(2, size=16)[0]),
    "PatchClassifier-vgg16-head": lambda e: e.predict_proba(_lattice_patches(2)[0]),
    "MobileNetV2Classifier": lambda e: e.decision_function(_lattice_patches(2, size=16)[0]),
    "FewLabelClassifier": lambda e: e.predict(_lattice_patches(2)[0]),
    "BulkCVAE": lambda e: e.reconstruct(np.zeros((2, 16, 16), np.float32)),
    "DefectSegmenter": lambda e: e.predict_maps(np.zeros((16, 16), np.float32)),
}


@pytest.mark.parametrize("name", list(UNFITTED_CALLS))
def test_unfitted_estimator_raises_the_one_not_fitted_error(name):
    est, _, _ = CASES[name]()
    with pytest.raises(stemroi.NotFittedError, match=f"This {type(est).__name__} instance is not fitted yet") as info:
        UNFITTED_CALLS[name](est)
    assert type(info.value) is NotFittedError
    # catchable as scikit-learn's (ValueError, AttributeError) and as the networks' RuntimeError
    assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)
    assert isinstance(info.value, RuntimeError)


def test_one_not_fitted_error_class():
    assert stemroi.NotFittedError is NotFittedError
    assert stemroi.decomposition._pca.NotFittedError is NotFittedError


ESTIMATOR_CLASSES = [PCA, KMeans, PatchClusterer, VGG16Features, FFTMagnitude, PolarPowerSpectrum, LatticeResidual,
                     Precomputed, PatchClassifier, FewLabelClassifier, BulkCVAE, DefectSegmenter]


@pytest.mark.parametrize("cls", ESTIMATOR_CLASSES, ids=lambda c: c.__name__)
def test_every_estimator_uses_the_base(cls):
    assert issubclass(cls, BaseEstimator)
    for plumbing in ("get_params", "set_params", "__repr__", "__getstate__", "__setstate__", "_check_fitted"):
        owners = [k.__name__ for k in cls.__mro__ if plumbing in vars(k)]
        assert cls.__name__ not in owners, f"{cls.__name__} redefines {plumbing}"


def test_params_repr_and_clone():
    sklearn_base = pytest.importorskip("sklearn.base")
    clf = PatchClassifier("small_cnn", "finetune", max_epochs=3)
    assert repr(clf) == "PatchClassifier(backbone='small_cnn', max_epochs=3, mode='finetune')"
    assert repr(BulkCVAE()) == "BulkCVAE()"
    assert repr(BulkCVAE(latent_dim=5)) == "BulkCVAE(latent_dim=5)"
    assert repr(DefectSegmenter(epochs=3)) == "DefectSegmenter(epochs=3)"
    assert repr(Precomputed(feature_groups=[("a", 2)])) == "Precomputed(feature_groups=[('a', 2)])"
    assert clf.get_params()["max_epochs"] == 3 and clf.get_params()["weights"] == "auto"
    assert clf.set_params(max_epochs=4) is clf and clf.max_epochs == 4
    with pytest.raises(ValueError, match="(?i)invalid parameter 'bogus'"):
        BulkCVAE().set_params(bogus=1)
    for est in (clf, BulkCVAE(latent_dim=5), DefectSegmenter(classes=["Bulk", "V"]), PatchClusterer("fft"),
                LatticeResidual(n_peaks=4), Precomputed(feature_groups=[("a", 2)]), VGG16Features(input_size=64)):
        twin = sklearn_base.clone(est)
        assert twin is not est and twin.get_params() == est.get_params()


def test_fitted_descriptor_round_trips():
    P, _ = _lattice_patches(n_per_class=2)
    desc = LatticeResidual(n_peaks=4)
    back = pickle.loads(pickle.dumps(desc))
    np.testing.assert_array_equal(back.transform(P), desc.fit_transform(P))
    assert back.feature_groups == desc.feature_groups == [("blob", 9), ("residual_polar", 72), ("image_polar", 72)]


def test_mobilenet_handle_round_trips():
    net = MobileNetV2(3, n_threads=1, random_state=1)
    x = net.prepare(_lattice_patches(1)[0], 32)
    back = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(back.forward(x), net.forward(x))
    assert back.num_classes == 3 and back.weights_origin == "random"


# --------------------------------------------------------------------------- model files
def test_model_file_schema(tmp_path):
    path = tmp_path / "toy.stemroi"
    _save_model(path, {"w": np.arange(3, dtype=np.float32)}, architecture="toy", config={"a": 1},
                model_card={"data": "none"})
    tensors, meta = _load_model(path, "toy", what="toy")
    np.testing.assert_array_equal(tensors["w"], [0, 1, 2])
    assert meta["config"] == {"a": 1} and meta["model_card"] == {"data": "none"}
    assert meta["format"] == "stemroi-model" and meta["architecture"] == "toy"
    with pytest.raises(ValueError, match=r"not a PatchClassifier model file \(architecture 'toy', expected 'x'\)"):
        _load_model(path, "x", what="PatchClassifier")


@pytest.mark.parametrize("name, architecture", [("PatchClassifier-small_cnn", "stemroi.PatchClassifier"),
                                                ("BulkCVAE", "cvae"), ("DefectSegmenter", "unet_multilabel")])
def test_saved_files_share_the_schema(name, architecture, tmp_path):
    est, fit, outputs = CASES[name]()
    fit(est)
    path = tmp_path / "model.stemroi"
    est.save(path)
    _, meta = _load_model(path, architecture, what=name)
    assert isinstance(meta["config"], dict) and isinstance(meta["model_card"], dict)
    assert isinstance(meta["preprocessing"], dict)
    loaded = type(est).load(path)
    loaded.n_threads = est.n_threads  # results are reproducible for a given thread count
    _assert_same_outputs(outputs(est), outputs(loaded))
