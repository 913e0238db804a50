"""A corpus of malformed inputs to every public entry point: broken image files
in every supported format, broken model files, bad arrays, bad tile sizes and
degenerate clustering problems.

Every case must raise ValueError, TypeError or OSError (FileNotFoundError and
friends included) with a message that names the offending file or value; a few
of the nastiest also run in a fresh process to show they end with an error,
not a crash. The files come from tests/_malformed_files.py.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import stemroi
from stemroi.io import read_image, read_image_with_calibration, load_patch_folder

sys.path.insert(0, str(Path(__file__).parent))
import _malformed_files as mf  # noqa: E402

CLEAR_ERRORS = (ValueError, TypeError, OSError)
HAS_RSCIIO = importlib.util.find_spec("rsciio") is not None


def _check_error(exc_info, *needles: str, types=CLEAR_ERRORS) -> None:
    """A clear error type, and a message naming the offending value (any of ``needles``)."""
    exc = exc_info.value
    assert isinstance(exc, types), f"{type(exc).__name__}: {exc}"
    msg = str(exc).lower()
    assert any(n.lower() in msg for n in needles), f"message names none of {needles}: {exc}"


# ---- image files -------------------------------------------------------------------------------
IMAGE_FORMATS = ["tif", "png", "jpg", "npy"] + (["dm3", "dm4", "emd"] if HAS_RSCIIO else [])
COMMON_KINDS = ["empty", "random", "zeros", "magic_then_random", "magic_only", "text"]
STRUCTURED_KINDS = ["truncated_half", "truncated_header", "bomb"]  # "other_format" reads: see below
NPY_KINDS = ["pickled_object", "bad_header", "1d", "complex", "strings", "nan", "tiny"]

IMAGE_CASES = ([(f, k) for f in IMAGE_FORMATS for k in COMMON_KINDS]
               + [(f, k) for f in ("tif", "png", "jpg", "npy") for k in STRUCTURED_KINDS]
               + [("npy", k) for k in NPY_KINDS] + [("gif", "frame_bomb")])
READERS = {"read_image": read_image, "read_image_with_calibration": read_image_with_calibration}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("malformed")


def _image_file(folder: Path, fmt: str, kind: str) -> Path:
    path = folder / f"{kind}.{fmt}"
    if not path.exists():
        mf.write(path, b"" if kind == "empty" else mf.image_file_bytes(fmt, kind))
    return path


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("fmt,kind", IMAGE_CASES, ids=[f"{f}-{k}" for f, k in IMAGE_CASES])
def test_broken_image_files(corpus_dir, reader, fmt, kind):
    path = _image_file(corpus_dir, fmt, kind)
    with pytest.raises(Exception) as exc_info:
        READERS[reader](path)
    _check_error(exc_info, path.name)


def test_frame_bomb_refused_before_decoding(corpus_dir, monkeypatch):
    """The claim is checked from the header: no frame is decoded."""
    import stemroi.io._readers as readers

    def decode(im):
        raise AssertionError("a frame was decoded")

    monkeypatch.setattr(readers, "_pil_to_array", decode)
    path = _image_file(corpus_dir, "gif", "frame_bomb")
    with pytest.raises(ValueError, match=r"10 frames of 9000 x 9000 pixels .* 250-byte GIF"):
        read_image(path)


def _hspy_with_unwritten_data(path: Path, shape) -> Path:
    """A valid .hspy file whose image dataset is then replaced by a chunked one of ``shape`` whose
    chunks are never written (HDF5 reads them as fill values)."""
    hs = pytest.importorskip("hyperspy.api")
    h5py = pytest.importorskip("h5py")
    hs.signals.Signal2D(np.ones((16, 16), np.float32)).save(path, overwrite=True)
    with h5py.File(path, "r+") as fh:
        name = "Experiments/__unnamed__/data"
        del fh[name]
        fh.create_dataset(name, shape=shape, dtype="f4", chunks=(256, 256))
    return path


@pytest.mark.skipif(not HAS_RSCIIO, reason="RosettaSciIO (optional, stemroi[hyperspy]) is not installed")
def test_hdf5_file_on_which_libhdf5_loops_is_refused_in_bounded_time(monkeypatch):
    """A fuzzer-found .emd (tests/fuzz/regressions) on which libhdf5 never returns from reading a root
    attribute: the attribute probe runs in a child process, which is killed after the timeout."""
    import time

    from stemroi import _hdf5

    monkeypatch.setattr(_hdf5, "PROBE_TIMEOUT", 3.0)
    path = Path(__file__).parent / "fuzz" / "regressions" / "hdf5_attribute_loop.emd"
    t0 = time.perf_counter()
    with pytest.raises(OSError, match=r"hdf5_attribute_loop.emd: the HDF5 library did not finish reading it "
                                      r"within 3 s; the file is corrupt"):
        read_image(path)
    assert time.perf_counter() - t0 < 20


@pytest.mark.skipif(not HAS_RSCIIO, reason="RosettaSciIO (optional, stemroi[hyperspy]) is not installed")
def test_hdf5_file_on_which_libhdf5_runs_out_of_memory_is_refused(tmp_path):
    """The fuzzer's Keras file whose local heap free list loops (tests/fuzz/regressions), as a .hspy:
    listing the root group makes libhdf5 allocate without end; the probe's child walks the file under a
    1 GiB limit and the file is refused before this process opens it."""
    path = tmp_path / "loop.hspy"
    path.write_bytes((Path(__file__).parent / "fuzz" / "regressions" / "keras_heap_free_list_loop.h5").read_bytes())
    with pytest.raises(OSError, match=r"loop\.hspy: the HDF5 library needs more than 1 GiB to read it "
                                      r"\(.*memory allocation failed.*\); the file is corrupt"):
        read_image(path)


def test_hdf5_dataset_claiming_unwritten_chunks_is_refused(tmp_path):
    """A 24 kB .hspy claiming 30000 x 30000 float32 took 8 GB and returned zeros; now refused from the
    dataset's storage size before RosettaSciIO reads it (a smaller claim here, 64 MiB)."""
    path = _hspy_with_unwritten_data(tmp_path / "unwritten.hspy", (4096, 4096))
    with pytest.raises(OSError, match=r"unwritten.hspy: dataset 'Experiments/__unnamed__/data' claims shape "
                                      r"\(4096, 4096\) of float32 \(67108864 bytes\) but only 0 bytes"):
        read_image(path)


@pytest.mark.skipif(not HAS_RSCIIO, reason="RosettaSciIO (optional, stemroi[hyperspy]) is not installed")
def test_ser_header_claims_are_checked(tmp_path):
    """A SER scan stopped early is filled up to its claimed size by RosettaSciIO: a 416-byte file
    claiming 4000 x 4000 positions is refused from the header; a well-formed file reads exactly."""
    good = mf.write(tmp_path / "good.ser", mf.ser_image_series(ax=4, ay=6))
    # ArraySizeX is the width; TIA stores rows bottom-up
    np.testing.assert_array_equal(read_image(good), np.arange(24, dtype=np.float32).reshape(6, 4)[::-1])
    bomb = mf.write(tmp_path / "bomb.ser", mf.ser_scan_bomb())
    with pytest.raises(OSError, match=r"bomb.ser: .*scan of \(4000, 4000\) positions of 64 values"):
        read_image(bomb)
    cut = mf.write(tmp_path / "cut.ser", mf.ser_truncated())
    with pytest.raises(OSError, match=r"cut.ser: .*3 stored elements"):
        read_image(cut)


def test_hdf5_compressed_image_larger_than_the_check_threshold_reads(tmp_path):
    """The size check passes a real compressed image of 4 MiB (smooth, so it compresses well)."""
    hs = pytest.importorskip("hyperspy.api")
    img = np.add.outer(np.arange(1024), np.arange(1024)).astype(np.float32)
    path = tmp_path / "smooth.hspy"
    hs.signals.Signal2D(img).save(path, overwrite=True, compression="gzip")
    np.testing.assert_array_equal(read_image(path), img)


BAD_PATHS = {
    "missing": lambda d: d / "no_such_image.tif",
    "folder": lambda d: d,
    "unsupported_suffix": lambda d: mf.write(d / "notes.txt", b"hello"),
    "no_suffix": lambda d: mf.write(d / "image_without_suffix", mf.valid_png()),
    "not_a_path": lambda d: 12345,
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("case", sorted(BAD_PATHS))
def test_bad_image_paths(tmp_path, reader, case):
    path = BAD_PATHS[case](tmp_path)
    with pytest.raises(Exception) as exc_info:
        READERS[reader](path)
    expected = {"missing": FileNotFoundError, "folder": IsADirectoryError, "not_a_path": TypeError}
    _check_error(exc_info, str(path) if not isinstance(path, Path) else path.name, "int",
                 types=expected.get(case, CLEAR_ERRORS))


@pytest.mark.parametrize("fmt", ["tif", "png", "jpg", "npy"])
@pytest.mark.parametrize("kind", ["random", "truncated_half"])
def test_patch_folder_with_a_broken_file(tmp_path, fmt, kind):
    for i in range(3):
        mf.write(tmp_path / f"Bulk_{i}.{fmt}", mf.VALID[fmt]())
    mf.write(tmp_path / f"vacancy_7.{fmt}", mf.image_file_bytes(fmt, kind))
    with pytest.raises(Exception) as exc_info:
        load_patch_folder(tmp_path, pattern=f"*.{fmt}")
    _check_error(exc_info, f"vacancy_7.{fmt}")


@pytest.mark.parametrize("case", ["missing", "empty_folder", "a_file", "mixed_shapes"])
def test_bad_patch_folders(tmp_path, case):
    folder = tmp_path / "patches"
    if case == "empty_folder":
        folder.mkdir()
    elif case == "a_file":
        mf.write(folder.with_suffix(".tif"), mf.valid_tif())
        folder = folder.with_suffix(".tif")
    elif case == "mixed_shapes":
        folder.mkdir()
        mf.write(folder / "Bulk_0.npy", mf.valid_npy())
        mf.write(folder / "Bulk_1.npy", mf.valid_npy(np.zeros((16, 16), np.uint8)))
    with pytest.raises(Exception) as exc_info:
        load_patch_folder(folder, pattern="*.npy" if case == "mixed_shapes" else "*.tif")
    _check_error(exc_info, "patches", "Bulk_1.npy")


# ---- model files --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    return _Fitted()


class _Fitted:
    """Small fitted models, built on first use and shared by the module's cases."""

    def __init__(self):
        self._cache = {}

    def _get(self, name, build):
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    @property
    def patches(self):
        from stemroi.io import synth

        return self._get("patches", lambda: synth.make_patch_dataset(
            n_per_class=6, patch_size=64, classes=["Bulk", "vacancy"], random_state=0))

    @property
    def classifier(self):
        X, y, names = self.patches
        return self._get("classifier", lambda: stemroi.PatchClassifier(
            backbone="small_cnn", mode="finetune", weights=None, max_epochs=1, input_size=16, batch_size=8,
            validation_fraction=0, calibrate=False, random_state=0, n_threads=1).fit(X, y, class_names=names))

    @property
    def cvae(self):
        from stemroi.io import synth

        return self._get("cvae", lambda: stemroi.BulkCVAE(
            latent_dim=2, epochs=1, crop_size=16, n_crops=32, blur_sigma=0.5, detector="energy", energy_window=5,
            random_state=0, n_threads=1).fit(synth.make_image((64, 64), random_state=1).image))

    @property
    def segmenter(self):
        X, y, _ = self.patches
        return self._get("segmenter", lambda: stemroi.DefectSegmenter(
            epochs=1, batch_size=8, base_channels=4, random_state=0, n_threads=1).fit(X, y))

    @property
    def clusterer(self):
        X, _, _ = self.patches
        return self._get("clusterer", lambda: stemroi.PatchClusterer(
            features="fft", n_components=3, k_range=range(2, 4), n_init=2, random_state=0, n_threads=1).fit(X))

    @property
    def pca(self):
        return self._get("pca", lambda: stemroi.PCA(n_components=2).fit(np.random.default_rng(0).random((20, 4))))

    @property
    def kmeans(self):
        return self._get("kmeans", lambda: stemroi.KMeans(n_clusters=2, n_init=2, random_state=0).fit(
            np.random.default_rng(0).random((20, 4))))

    @property
    def vgg(self):
        return self._get("vgg", lambda: stemroi.VGG16Features(weights=None, input_size=32, random_state=0,
                                                              n_threads=1).fit())

    def model_file(self, kind: str, folder: Path) -> Path:
        path = folder / f"valid-{kind}.stemroi"
        if not path.exists():
            getattr(self, kind).save(path)
        return path


MODEL_LOADERS = {
    "PatchClassifier.load": lambda p: stemroi.PatchClassifier.load(p),
    "BulkCVAE.load": lambda p: stemroi.BulkCVAE.load(p),
    "DefectSegmenter.load": lambda p: stemroi.DefectSegmenter.load(p),
    "load_model_file": lambda p: stemroi.io.load_model_file(p),
}
LOADER_MODEL = {"PatchClassifier.load": "classifier", "BulkCVAE.load": "cvae", "DefectSegmenter.load": "segmenter",
                "load_model_file": "classifier"}


# bugs of the compiled model-file reader, to fix in cpp/ (strict: these fail loudly once fixed)
KNOWN_MODEL_FILE_BUGS: dict = {}


@pytest.mark.filterwarnings("ignore:.*no hash:UserWarning")
@pytest.mark.parametrize("loader", sorted(MODEL_LOADERS))
@pytest.mark.parametrize("kind", mf.MODEL_KINDS + ("empty", "missing", "folder"))
def test_broken_model_files(request, fitted, corpus_dir, loader, kind):
    if kind in KNOWN_MODEL_FILE_BUGS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KNOWN_MODEL_FILE_BUGS[kind]))
    model = LOADER_MODEL[loader]
    if kind == "missing":
        path = corpus_dir / "no_such_model.stemroi"
    elif kind == "folder":
        path = corpus_dir
    else:
        valid = fitted.model_file(model, corpus_dir).read_bytes()
        path = mf.write(corpus_dir / f"{model}-{kind}.stemroi", b"" if kind == "empty" else mf.model_file_bytes(valid, kind))
    with pytest.raises(Exception) as exc_info:
        MODEL_LOADERS[loader](path)
    _check_error(exc_info, path.name, types=OSError if kind in ("missing", "folder") else (ValueError, OSError))


@pytest.mark.parametrize("loader,other", [("PatchClassifier.load", "cvae"), ("BulkCVAE.load", "classifier"),
                                          ("DefectSegmenter.load", "cvae"), ("PatchClassifier.load", "segmenter")])
def test_model_file_of_another_kind(fitted, corpus_dir, loader, other):
    path = fitted.model_file(other, corpus_dir)
    with pytest.raises(Exception) as exc_info:
        MODEL_LOADERS[loader](path)
    _check_error(exc_info, path.name, types=(ValueError, OSError))


# ---- arrays -------------------------------------------------------------------------------------
def _bad(kind: str, good_shape):
    """A bad version of an array of ``good_shape``, and the substrings its error must name."""
    n = int(np.prod(good_shape))
    if kind == "nan":
        a = np.ones(good_shape, np.float32)
        a.flat[n // 2] = np.nan
        return a, ("nan",)
    if kind == "inf":
        a = np.ones(good_shape, np.float32)
        a.flat[-1] = -np.inf
        return a, ("inf",)
    if kind == "empty":
        shape = (0,) + tuple(good_shape[1:])
        return np.zeros(shape, np.float32), ("empty", "0 samples", str(shape), "at least")
    if kind == "complex":
        return np.ones(good_shape, np.complex128), ("complex",)
    if kind == "object":
        return np.full(good_shape, None, dtype=object), ("object",)
    if kind == "strings":
        return np.full(good_shape, "x"), ("<u1", "str")
    if kind == "fewer_dims":
        a = np.ones(good_shape[1:], np.float32)
        return a, (str(a.shape)[1:-1], "ndim", "dimension")
    if kind == "more_dims":
        a = np.ones((2,) * 2 + tuple(good_shape), np.float32)
        return a, (str(a.shape), "ndim", "dimension")
    if kind == "ragged":
        return [[1.0, 2.0], [3.0]], ("ragged", "inhomogeneous", "sequence", "convert")
    raise KeyError(kind)


FEATURES = (20, 4)
PATCHES = (6, 64, 64)
IMAGE = (128, 128)
ARRAY_KINDS = ["nan", "inf", "empty", "complex", "object", "strings", "fewer_dims", "more_dims"]

# entry point -> (shape of a good input, call taking the fitted models and the bad input)
ARRAY_ENTRY_POINTS = {
    "PCA.fit": (FEATURES, lambda m, X: stemroi.PCA(n_components=2).fit(X)),
    "PCA.transform": (FEATURES, lambda m, X: m.pca.transform(X)),
    "KMeans.fit": (FEATURES, lambda m, X: stemroi.KMeans(n_clusters=2, n_init=1, random_state=0).fit(X)),
    "KMeans.predict": (FEATURES, lambda m, X: m.kmeans.predict(X)),
    "select_n_clusters": (FEATURES, lambda m, X: stemroi.select_n_clusters(X, k_range=range(2, 4), n_init=1)),
    "silhouette_score": (FEATURES, lambda m, X: stemroi.silhouette_score(X, np.arange(len(X)) % 2)),
    "VGG16Features.transform": (PATCHES, lambda m, X: m.vgg.transform(X)),
    "PatchClassifier.fit": (PATCHES, lambda m, X: stemroi.PatchClassifier(
        backbone="small_cnn", mode="finetune", weights=None, max_epochs=1).fit(X, np.arange(len(X)) % 2)),
    "PatchClassifier.predict": (PATCHES, lambda m, X: m.classifier.predict(X)),
    "BulkCVAE.fit": (PATCHES, lambda m, X: stemroi.BulkCVAE(crop_size=16, epochs=1).fit(X)),
    "BulkCVAE.score": (PATCHES, lambda m, X: m.cvae.score(X)),
    "overlap_groups": (PATCHES, lambda m, X: stemroi.overlap_groups(X)),
    "spatial_train_test_split": (PATCHES, lambda m, X: stemroi.spatial_train_test_split(X, np.arange(len(X)) % 2)),
    "PatchGrid.extract": (IMAGE, lambda m, X: stemroi.PatchGrid(patch_size=16).extract(X)),
    "detect": (IMAGE, lambda m, X: stemroi.detect(X, m.classifier)),
    "anomaly_map": (IMAGE, lambda m, X: stemroi.anomaly_map(X, m.cvae)),
    "cluster_map": (IMAGE, lambda m, X: stemroi.detection.cluster_map(X, m.clusterer)),
    "segmentation_map": (IMAGE, lambda m, X: stemroi.detection.segmentation_map(X, m.segmenter)),
}
# a 2-D input to BulkCVAE.fit is an image to draw crops from, not a malformed stack
ARRAY_CASES = [(e, k) for e in ARRAY_ENTRY_POINTS for k in ARRAY_KINDS if (e, k) != ("BulkCVAE.fit", "fewer_dims")]


@pytest.mark.parametrize("entry,kind", ARRAY_CASES, ids=[f"{e}-{k}" for e, k in ARRAY_CASES])
def test_bad_arrays(fitted, entry, kind):
    shape, call = ARRAY_ENTRY_POINTS[entry]
    X, needles = _bad(kind, shape)
    with pytest.raises(Exception) as exc_info:
        call(fitted, X)
    _check_error(exc_info, *needles)


@pytest.mark.parametrize("entry", ["PCA.fit", "KMeans.fit", "silhouette_score", "PatchGrid.extract"])
def test_bool_arrays_are_numbers(fitted, entry):
    """bool input is taken as 0 / 1, exactly as the same array of floats."""
    shape, call = ARRAY_ENTRY_POINTS[entry]
    b = (np.arange(int(np.prod(shape))).reshape(shape) * 7919 % 13) < 6
    out_bool, out_float = call(fitted, b), call(fitted, b.astype(np.float64))
    for attr in ("components_", "cluster_centers_"):
        if hasattr(out_bool, attr):
            out_bool, out_float = getattr(out_bool, attr), getattr(out_float, attr)
    np.testing.assert_allclose(np.asarray(out_bool, np.float64), np.asarray(out_float, np.float64))


# ---- tile sizes, strides and other parameters ---------------------------------------------------------------
PARAMETER_CASES = {
    "PatchGrid-patch0": (lambda m, img: stemroi.PatchGrid(patch_size=0).extract(img), ("got 0",)),
    "PatchGrid-patch-negative": (lambda m, img: stemroi.PatchGrid(patch_size=-8).extract(img), ("got -8",)),
    "PatchGrid-patch-float": (lambda m, img: stemroi.PatchGrid(patch_size=2.5).extract(img), ("2.5",)),
    "PatchGrid-patch-str": (lambda m, img: stemroi.PatchGrid(patch_size="64").extract(img), ("'64'", "str")),
    "PatchGrid-patch-too-large": (lambda m, img: stemroi.PatchGrid(patch_size=1000).extract(img), ("got 1000",)),
    "PatchGrid-stride0": (lambda m, img: stemroi.PatchGrid(patch_size=16, stride=0).extract(img), ("got 0",)),
    "PatchGrid-stride-negative": (lambda m, img: stemroi.PatchGrid(patch_size=16, stride=-3).extract(img), ("got -3",)),
    "PatchGrid-edge": (lambda m, img: stemroi.PatchGrid(patch_size=16, edge="wrap").extract(img), ("wrap",)),
    "detect-patch0": (lambda m, img: stemroi.detect(img, m.classifier, patch=0), ("got 0",)),
    "detect-patch-negative": (lambda m, img: stemroi.detect(img, m.classifier, patch=-64), ("got -64",)),
    "detect-patch-small": (lambda m, img: stemroi.detect(img, m.classifier, patch=8), ("got 8",)),
    "detect-patch-too-large": (lambda m, img: stemroi.detect(img, m.classifier, patch=10000), ("got 10000",)),
    "detect-patch-not-trained": (lambda m, img: stemroi.detect(img, m.classifier, patch=32), ("got 32",)),
    "detect-stride0": (lambda m, img: stemroi.detect(img, m.classifier, stride=0), ("got 0",)),
    "detect-stride-negative": (lambda m, img: stemroi.detect(img, m.classifier, stride=-1), ("got -1",)),
    "detect-unknown-below": (lambda m, img: stemroi.detect(img, m.classifier, unknown_below=1.5), ("1.5",)),
    "detect-batch0": (lambda m, img: stemroi.detect(img, m.classifier, batch_size=0), ("got 0",)),
    "detect-scale": (lambda m, img: stemroi.detect(img, m.classifier, scale="log"), ("log",)),
    "detect-not-a-model": (lambda m, img: stemroi.detect(img, object()), ("object",)),
    "detect-missing-model-file": (lambda m, img: stemroi.detect(img, "no_such_model.stemroi"),
                                  ("no_such_model.stemroi",)),
    "anomaly_map-stride0": (lambda m, img: stemroi.anomaly_map(img, m.cvae, stride=0), ("got 0",)),
    "anomaly_map-stride-negative": (lambda m, img: stemroi.anomaly_map(img, m.cvae, stride=-16), ("got -16",)),
    "anomaly_map-stride-float": (lambda m, img: stemroi.anomaly_map(img, m.cvae, stride=2.5), ("2.5",)),
    "anomaly_map-batch0": (lambda m, img: stemroi.anomaly_map(img, m.cvae, batch_size=0), ("got 0",)),
    "anomaly_map-image-smaller-than-crop": (lambda m, img: stemroi.anomaly_map(img[:8, :8], m.cvae), ("(8, 8)",)),
    "cluster_map-patch0": (lambda m, img: stemroi.detection.cluster_map(img, m.clusterer, patch=0), ("got 0",)),
    "cluster_map-patch-not-the-fitted-size": (lambda m, img: stemroi.detection.cluster_map(img, m.clusterer, patch=512),
                                              ("patch=512, but this clusterer was fitted on",)),
    "cluster_map-image-smaller-than-patch": (lambda m, img: stemroi.detection.cluster_map(img[:8, :8], m.clusterer),
                                             ("patch must be <= image size (8, 8)",)),
    "PatchClusterer.predict-other-patch-size": (lambda m, img: m.clusterer.predict(np.stack([img[:20, :20]] * 2)),
                                                ("patches are 20x20, this clusterer was fitted on",)),
    "cluster_map-stride-negative": (lambda m, img: stemroi.detection.cluster_map(img, m.clusterer, stride=-2),
                                    ("got -2",)),
    "segmentation_map-patch0": (lambda m, img: stemroi.detection.segmentation_map(img, m.segmenter, patch=0),
                                ("got 0",)),
    "segmentation_map-stride-negative": (lambda m, img: stemroi.detection.segmentation_map(
        img, m.segmenter, stride=-4), ("got -4",)),
    "segmentation_map-threshold": (lambda m, img: stemroi.detection.segmentation_map(
        img, m.segmenter, threshold=2.0), ("2.0",)),
    "predict_maps-tile-not-multiple-of-4": (lambda m, img: m.segmenter.predict_maps(img, tile=30), ("got 30",)),
    "predict_maps-stride-above-tile": (lambda m, img: m.segmenter.predict_maps(img, tile=32, stride=64), ("got 64",)),
    "BulkCVAE-crop0": (lambda m, img: stemroi.BulkCVAE(crop_size=0).fit(img), ("got 0",)),
    "BulkCVAE-crop-negative": (lambda m, img: stemroi.BulkCVAE(crop_size=-16).fit(img), ("got -16",)),
    "BulkCVAE-crop-too-large": (lambda m, img: stemroi.BulkCVAE(crop_size=256, epochs=1).fit(img), ("got 256",)),
    "PatchClassifier-batch0": (lambda m, img: m.classifier.predict_proba(m.patches[0], batch_size=0),
                               ("got 0",)),
    "VGG16Features-input-size": (lambda m, img: stemroi.VGG16Features(weights=None, input_size=8).fit(),
                                 ("got 8",)),
}


@pytest.fixture(scope="module")
def image():
    from stemroi.io import synth

    return synth.make_image(IMAGE, random_state=3).image


@pytest.mark.parametrize("case", sorted(PARAMETER_CASES))
def test_bad_parameters(fitted, image, case):
    call, needles = PARAMETER_CASES[case]
    with pytest.raises(Exception) as exc_info:
        call(fitted, image)
    _check_error(exc_info, *needles)


# ---- degenerate clustering -----------------------------------------------------------------------
SAME = np.ones((10, 3))
THREE = np.random.default_rng(0).random((3, 3))
DEGENERATE_CASES = {
    "KMeans-more-clusters-than-samples": (lambda: stemroi.KMeans(n_clusters=5, n_init=1).fit(THREE), ("n_samples=3",)),
    "KMeans-zero-clusters": (lambda: stemroi.KMeans(n_clusters=0).fit(THREE), ("got 0",)),
    "KMeans-negative-clusters": (lambda: stemroi.KMeans(n_clusters=-2).fit(THREE), ("got -2",)),
    "KMeans-n_init0": (lambda: stemroi.KMeans(n_clusters=2, n_init=0).fit(THREE), ("got 0",)),
    "KMeans-one-sample": (lambda: stemroi.KMeans(n_clusters=2, n_init=1).fit(THREE[:1]), ("n_samples=1",)),
    "select-k-above-samples": (lambda: stemroi.select_n_clusters(THREE, k_range=range(2, 6), n_init=1), ("= 2, got 3",)),
    "select-k-one": (lambda: stemroi.select_n_clusters(SAME, k_range=[1], n_init=1), ("got 1",)),
    "select-empty-k-range": (lambda: stemroi.select_n_clusters(SAME, k_range=[], n_init=1), ("k_range is empty",)),
    "silhouette-one-label": (lambda: stemroi.silhouette_score(SAME, np.zeros(10, int)), ("labels is 1",)),
    "silhouette-every-sample-its-own-label": (lambda: stemroi.silhouette_score(THREE, np.arange(3)), ("labels is 3",)),
    "silhouette-label-count-mismatch": (lambda: stemroi.silhouette_score(SAME, np.zeros(4, int)), ("4", "10")),
    "silhouette-labels-2d": (lambda: stemroi.silhouette_score(SAME, np.zeros((10, 2), int)), ("(10, 2)",)),
    "PCA-more-components-than-features": (lambda: stemroi.PCA(n_components=10).fit(THREE), ("n_components=10",)),
    "PCA-zero-components": (lambda: stemroi.PCA(n_components=0).fit(THREE), ("n_components=0",)),
    "PCA-variance-fraction-above-1": (lambda: stemroi.PCA(n_components=1.5).fit(THREE), ("1.5",)),
    "PatchClusterer-k-range-above-samples": (lambda: stemroi.PatchClusterer(
        features="fft", n_components=None, k_range=range(2, 9), n_init=1).fit(np.random.default_rng(0).random(
            (4, 64, 64), dtype=np.float32)), ("= 3, got 8",)),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE_CASES))
def test_degenerate_clustering(case):
    call, needles = DEGENERATE_CASES[case]
    with pytest.raises(Exception) as exc_info:
        call()
    _check_error(exc_info, *needles)


# ---- the nastiest, in a fresh process: an error and a normal exit, never a signal -------------
SUBPROCESS_CASES = {
    "tif-bomb": ("image", "tif", "bomb"),
    "png-bomb": ("image", "png", "bomb"),
    "npy-bomb": ("image", "npy", "bomb"),
    "gif-frame-bomb": ("image", "gif", "frame_bomb"),
    "npy-pickled-object": ("image", "npy", "pickled_object"),
    "model-random-bytes-core-reader": ("model", "random", None),
    "model-header-length-huge": ("model", "header_length_huge", None),
    "model-offsets-out-of-range": ("model", "offsets_out_of_range", None),
}
if HAS_RSCIIO:
    SUBPROCESS_CASES["ser-scan-bomb"] = ("image", "ser", "scan_bomb")
if HAS_RSCIIO and importlib.util.find_spec("hyperspy") is not None:
    # found by the read_image fuzz target; a segmentation fault with h5py 3.11's HDF5 1.14.2
    SUBPROCESS_CASES["hspy-bad-attribute-datatype"] = ("image", "hspy", "bad_attribute_datatype")
CHILD = textwrap.dedent("""
    import sys
    kind, path = sys.argv[1], sys.argv[2]
    if kind == "image":
        from stemroi.io import read_image as load
    else:
        from stemroi import BulkCVAE
        load = BulkCVAE.load
    try:
        load(path)
    except (ValueError, TypeError, OSError) as exc:
        print("clear error:", type(exc).__name__, exc)
        sys.exit(0)
    print("no error")
    sys.exit(3)
""")


@pytest.mark.parametrize("case", sorted(SUBPROCESS_CASES))
def test_nastiest_inputs_in_a_fresh_process(fitted, corpus_dir, tmp_path, case):
    what, kind, arg = SUBPROCESS_CASES[case]
    if what == "image":
        path = _image_file(corpus_dir, kind, arg)
    else:
        valid = fitted.model_file("cvae", corpus_dir).read_bytes()
        path = mf.write(tmp_path / f"{kind}.stemroi", mf.model_file_bytes(valid, kind))
    proc = subprocess.run([sys.executable, "-c", CHILD, what, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "clear error" in proc.stdout and path.name in proc.stdout


def test_gif_frame_placed_off_the_canvas_is_refused_in_a_fresh_process():
    """A fuzzer-found 1.6 kB GIF (tests/fuzz/regressions) whose third frame sits at x = 65535 of a
    32 x 32 canvas: Pillow 9.4 (the Debian lane's) crashed the process decoding it; Pillow >= 10
    raises on its first frame. Either way a clear error naming the file, in a child that exits."""
    path = Path(__file__).parent / "fuzz" / "regressions" / "gif_frame_outside_canvas.gif"
    proc = subprocess.run([sys.executable, "-c", CHILD, "image", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "clear error: " in proc.stdout and "gif_frame_outside_canvas.gif: " in proc.stdout
    assert ("frame 2 is placed at (65535, 255, 65794, 258), outside the 32 x 32 image" in proc.stdout
            or "tile cannot extend outside image" in proc.stdout), proc.stdout


def test_corrupt_tiff_logs_nothing_beside_the_error(tmp_path, caplog, monkeypatch):
    """tifffile logs a line before it raises on a corrupt file; read_image's error says it all, so the
    command line keeps its one line on stderr. tifffile's records outside stemroi's reads still pass."""
    import logging

    import tifffile

    bad = tmp_path / "Bulk_1.tif"
    bad.write_bytes(b"II*\x00garbage")
    for name in ("tifffile", "tifffile.tifffile"):
        # a package imported earlier in the run may have disabled them (logging.config with
        # disable_existing_loggers) or raised their level: the check below needs them live
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
        caplog.set_level(logging.DEBUG, logger=name)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(OSError, match="Bulk_1.tif: cannot read TIFF, the file is corrupt or truncated"):
            read_image(bad)
        assert not [r for r in caplog.records if r.name.startswith("tifffile")]
        try:  # not through stemroi: tifffile's own log line is kept (it may return nothing or raise)
            tifffile.imread(bad)
        except Exception:
            pass
        assert [r for r in caplog.records if r.name.startswith("tifffile")]


def test_npy_without_its_header_is_not_called_a_pickle(tmp_path):
    """np.load takes any headerless file for a pickle; the message says it is not an NPY file."""
    bad = tmp_path / "frame.npy"
    bad.write_bytes(b"garbage-bytes-not-an-array")
    with pytest.raises(OSError, match=r"frame.npy: not an NPY file \(it does not start with the NPY header\)"):
        read_image(bad)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TypeError, match="objects.npy: NPY file holds Python objects"):
        read_image(objects)



@pytest.mark.parametrize("fmt", ["tif", "png", "jpg", "npy"])
def test_a_valid_file_under_another_suffix_reads_by_its_content(corpus_dir, fmt):
    """A PNG saved as .tif, an NPY as .png: the leading bytes choose the reader, not the name
    (the same pixels as the file under its right suffix); bytes of no known format still go to
    the suffix's reader, which refuses them (the cases above)."""
    path = _image_file(corpus_dir, fmt, "other_format")
    right = corpus_dir / f"right_suffix_for_{fmt}.{'npy' if fmt != 'npy' else 'png'}"
    right.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(read_image(path), read_image(right))


def test_a_tiff_saved_as_png_keeps_its_calibration(tmp_path):
    import tifffile

    data = (np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)
    path = tmp_path / "scan.png"
    with open(path, "wb") as f:  # TIFF bytes under a .png name
        tifffile.imwrite(f, data, resolution=(4e7, 4e7), resolutionunit="CENTIMETER")  # 0.25 nm
    image, cal = read_image_with_calibration(path)
    np.testing.assert_array_equal(image, data)
    assert cal.unit == "cm" and cal.metres() == pytest.approx(0.25e-9)
