"""device= of the estimators that run a network, and of detect / anomaly_map /
segmentation_map: names, errors, placement, model files and pickles.

On a machine without a usable CUDA device "auto" is the CPU and "cuda" raises
at fit; the GPU tests (same checks on "cuda", CPU and GPU predictions of the
same weights within 1e-4) need torch.cuda.is_available().
"""
from __future__ import annotations

import contextlib
import pickle

import numpy as np
import pytest
import torch

from stemroi import BulkCVAE, DefectSegmenter, PatchClassifier, VGG16Features
from stemroi._lib import _core
from stemroi.detection import anomaly_map, detect, segmentation_map
from stemroi.models.mobilenet import MobileNetV2Classifier

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")
without_cuda = pytest.mark.skipif(CUDA, reason="checks the error raised when no CUDA device is usable")
NO_CUDA = "requested but this LibTorch has no usable CUDA device"


# ---- tiny data and models ---------------------------------------------------------
def _patches(n=16, size=32, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, size, size), dtype=np.float32) * 0.5
    y = np.arange(n) % 2
    X[y == 1, 8:20, 8:20] += 0.5
    return X, np.where(y == 1, "A", "Bulk")


def _crops(n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = 0.5 + 0.4 * np.sin(yy * 1.3)[None] * np.cos(xx * 1.1)[None]
    return (base + 0.05 * rng.standard_normal((n, size, size))).clip(0, 1).astype(np.float32)


def classifier(**kw):
    return PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=1, batch_size=8,
                           input_size=16, random_state=0, n_threads=1, **kw)


def cvae(**kw):
    return BulkCVAE(latent_dim=2, epochs=1, batch_size=8, crop_size=16, learning_rate=1e-3, blur_sigma=0.5,
                    random_state=0, n_threads=1, **kw)


def segmenter(**kw):
    return DefectSegmenter(epochs=1, batch_size=4, base_channels=4, random_state=0, n_threads=1, **kw)


def vgg(**kw):
    return VGG16Features(**{"weights": None, "input_size": 32, "batch_size": 4, "n_threads": 1, **kw})


def fit_classifier(**kw):
    X, y = _patches()
    return classifier(**kw).fit(X, y), X


def fit_cvae(**kw):
    crops = _crops()
    return cvae(**kw).fit(crops), crops


def fit_segmenter(**kw):
    X, y = _patches(n=8, size=16)
    return segmenter(**kw).fit(X, y), X


def fit_vgg(**kw):
    X, _ = _patches(n=4)
    return vgg(**kw).fit(), X


def outputs(kind, est, X):
    """What each estimator predicts, for exact comparisons."""
    if kind == "classifier":
        return est.predict_proba(X)
    if kind == "cvae":
        return est.reconstruct(X)
    if kind == "segmenter":
        return est.predict_patch_maps(X)
    return est.transform(X)


FITS = {"classifier": fit_classifier, "cvae": fit_cvae, "segmenter": fit_segmenter, "vgg16": fit_vgg}
MAKERS = {"classifier": classifier, "cvae": cvae, "segmenter": segmenter, "vgg16": vgg}


def network_device(est) -> str:
    return (getattr(est, "net_", None) or est.model_).device


def fit_unfitted(kind, est):
    """fit() of an unfitted estimator on its tiny data (raises what fit raises)."""
    if kind == "classifier":
        return est.fit(*_patches())
    if kind == "cvae":
        return est.fit(_crops())
    if kind == "segmenter":
        X, y = _patches(n=8, size=16)
        return est.fit(X, y)
    return est.fit()


@pytest.fixture(scope="module")
def fitted():
    return {kind: fit() for kind, fit in FITS.items()}


# ---- names ------------------------------------------------------------------------
def test_device_names_resolve():
    assert _core.resolve_network_device("cpu") == "cpu"
    assert _core.resolve_network_device("auto") == (f"cuda:{torch.cuda.current_device()}" if CUDA else "cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:", "CPU", 3, None])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_bad_device_is_named_at_fit(kind, bad):
    est = MAKERS[kind](device=bad)
    with pytest.raises(ValueError, match=f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {bad!r}"):
        fit_unfitted(kind, est)


# ---- CPU: the default, "cpu" and (without CUDA) "auto" are the same computation -------
@pytest.mark.parametrize("kind", sorted(FITS))
def test_cpu_and_auto_equal_the_default(kind, fitted):
    default, X = fitted[kind]
    assert default.device == "cpu"
    assert network_device(default) == "cpu"
    expected = outputs(kind, default, X)
    devices = ["cpu"] if CUDA else ["cpu", "auto"]
    for device in devices:
        est, _ = FITS[kind](device=device)
        assert network_device(est) == "cpu"
        np.testing.assert_array_equal(outputs(kind, est, X), expected)


@without_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_cuda_without_a_gpu_raises_at_fit(kind, device):
    est = MAKERS[kind](device=device)  # construction only stores the parameter
    with pytest.raises(ValueError, match=f"device='{device}' {NO_CUDA}.*available: 'cpu'"):
        fit_unfitted(kind, est)
    assert not hasattr(est, "net_") and not hasattr(est, "model_")


@without_cuda
def test_mobilenet_classifier_takes_device():
    clf = MobileNetV2Classifier(input_size=32, device="cuda")
    assert clf.get_params()["device"] == "cuda"
    with pytest.raises(ValueError, match=f"device='cuda' {NO_CUDA}"):
        clf.fit(*_patches())


# ---- model files and pickles hold CPU tensors and load onto the asked device -----------
@pytest.mark.parametrize("kind", ["classifier", "cvae", "segmenter"])
def test_saved_model_loads_with_device(kind, fitted, tmp_path):
    est, X = fitted[kind]
    path = tmp_path / f"{kind}.stemroi"
    est.save(path)
    cls = type(est)
    threads = {"n_threads": 1} if kind == "segmenter" else {}  # its files do not keep n_threads
    back = cls.load(path, device="cpu", **threads)
    assert back.device == "cpu" and network_device(back) == "cpu"
    np.testing.assert_array_equal(outputs(kind, back, X), outputs(kind, est, X))
    with pytest.raises(ValueError, match="got 'gpu'"):
        cls.load(path, device="gpu")
    if not CUDA:
        with pytest.raises(ValueError, match=f"device='cuda' {NO_CUDA}"):
            cls.load(path, device="cuda")


@pytest.mark.parametrize("kind", sorted(FITS))
def test_pickle_restores_onto_the_estimators_device(kind, fitted):
    est, X = fitted[kind]
    back = pickle.loads(pickle.dumps(est))
    assert network_device(back) == "cpu"
    np.testing.assert_array_equal(outputs(kind, back, X), outputs(kind, est, X))


# ---- detect / anomaly_map / segmentation_map ----------------------------------------
def _image(seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((64, 64), dtype=np.float32)


def _maps(name, est, device):
    img = _image()
    if name == "detect":
        return detect(img, est, patch=32, stride=32, device=device).probabilities
    if name == "anomaly_map":
        return anomaly_map(img, est, stride=16, device=device).maps["anomaly"]
    return segmentation_map(img, est, device=device).probabilities


MAP_MODELS = {"detect": "classifier", "anomaly_map": "cvae", "segmentation_map": "segmenter"}


@pytest.mark.parametrize("name", sorted(MAP_MODELS))
def test_maps_run_on_the_models_device_by_default(name, fitted):
    est, _ = fitted[MAP_MODELS[name]]
    expected = _maps(name, est, None)
    for device in ["cpu"] if CUDA else ["cpu", "auto"]:
        np.testing.assert_array_equal(_maps(name, est, device), expected)
    with pytest.raises(ValueError, match="got 'gpu'"):
        _maps(name, est, "gpu")
    if not CUDA:
        with pytest.raises(ValueError, match=f"device='cuda' {NO_CUDA}"):
            _maps(name, est, "cuda")


def test_detect_loads_a_model_file_onto_device(fitted, tmp_path):
    est, _ = fitted["classifier"]
    path = tmp_path / "clf.stemroi"
    est.save(path)
    img = _image()
    np.testing.assert_array_equal(detect(img, str(path), patch=32, stride=32, device="cpu").probabilities,
                                  detect(img, est, patch=32, stride=32).probabilities)


# ---- GPU ------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("kind", sorted(FITS))
def test_cuda_fit_places_the_network_and_repeats(kind):
    a, X = FITS[kind](device="cuda")
    assert network_device(a).startswith("cuda")
    b, _ = FITS[kind](device="cuda")
    if kind == "segmenter":  # CUDA backward of bilinear upsampling / reflect padding uses atomics
        np.testing.assert_allclose(outputs(kind, a, X), outputs(kind, b, X), atol=1e-4)
    else:
        np.testing.assert_array_equal(outputs(kind, a, X), outputs(kind, b, X))


@contextlib.contextmanager
def cudnn_tf32(on: bool):
    """cuDNN convolutions in TF32 (PyTorch's default) or in true FP32 while inside."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(params=[False, True], ids=["tf32_off", "tf32_on"])
def tf32(request):
    with cudnn_tf32(request.param):
        yield request.param


@needs_cuda
@pytest.mark.parametrize("kind", sorted(FITS))
def test_cpu_and_cuda_predictions_agree(kind, fitted, tf32):
    """Same weights, CPU vs GPU: within 1e-4 of the output scale in true FP32; TF32 convolutions (10-bit
    mantissa inputs, PyTorch's default) move outputs by up to ~2e-4 of it (measured on an H200): 1e-3."""
    est, X = fitted[kind]
    on_gpu = pickle.loads(pickle.dumps(est))
    on_gpu.device = "cuda"
    on_gpu = pickle.loads(pickle.dumps(on_gpu))
    assert network_device(on_gpu).startswith("cuda")
    cpu, gpu = outputs(kind, est, X), outputs(kind, on_gpu, X)
    scale = max(1.0, float(np.abs(cpu).max()))
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=(1e-3 if tf32 else 1e-4) * scale)


@needs_cuda
@pytest.mark.parametrize("kind", ["classifier", "cvae", "segmenter"])
def test_model_files_load_onto_cuda_and_back(kind, fitted, tmp_path):
    est, X = fitted[kind]
    path = tmp_path / f"{kind}.stemroi"
    est.save(path)
    gpu = type(est).load(path, device="cuda")
    assert network_device(gpu).startswith("cuda")
    path2 = tmp_path / f"{kind}-from-gpu.stemroi"
    gpu.save(path2)  # written as CPU tensors
    cpu = type(est).load(path2, device="cpu", **({"n_threads": 1} if kind == "segmenter" else {}))
    np.testing.assert_array_equal(outputs(kind, cpu, X), outputs(kind, est, X))


@needs_cuda
@pytest.mark.parametrize("name", sorted(MAP_MODELS))
def test_maps_on_cuda_leave_the_model_on_its_device(name, fitted):
    est, _ = fitted[MAP_MODELS[name]]
    cpu = _maps(name, est, None)
    gpu = _maps(name, est, "cuda")
    assert network_device(est) == "cpu"
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("input_size", [48, 60])
def test_resized_network_input_on_cuda_equals_the_cpus(input_size):
    """On a GPU the patches are resized and normalised on the device (LibTorch's bilinear kernel): the
    features equal the CPU path's within rounding (TF32 off, so that only the input path differs)."""
    X, _ = _patches(n=6)
    with cudnn_tf32(False):
        cpu = vgg(input_size=input_size).fit().transform(X)
        gpu = vgg(input_size=input_size, device="cuda").fit().transform(X)
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-4 * max(1.0, float(np.abs(cpu).max())))
