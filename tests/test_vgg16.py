"""VGG16Features: parity with torchvision (same seeded weights), layers and
pooling, input handling, bf16, determinism, dense mode, sklearn behaviour.

Costs: VGG16 is 30.7 GFLOP per 224x224 patch (2.5 at 64x64, 0.6 at 32x32),
so the 224 parity cases use one patch each and the rest use small inputs.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import stemroi
from stemroi import VGG16Features
from stemroi.features import extract_image_features
from stemroi._lib import _core

# Published constants, written out here so the test does not share code with
# the implementation: torchvision ImageNet mean/std (RGB, [0, 1]) and Keras
# caffe-mode BGR means ([0, 255]).
TV_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
TV_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CAFFE_BGR_MEAN = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


def reference_input(patches: np.ndarray, size: int | None, preset: str) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(patches, dtype=np.float32))[:, None]
    if size is not None:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    rgb = x.repeat(1, 3, 1, 1)
    if preset == "torchvision":
        return (rgb - TV_MEAN) / TV_STD
    bgr = rgb.flip(1) * 255.0
    return bgr - CAFFE_BGR_MEAN


@pytest.fixture(scope="module")
def tv_model():
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(1234)
        model = torchvision.models.vgg16(weights=None).features.eval()
    return model


@pytest.fixture(scope="module")
def pth_path(tv_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vgg16-features.pth"
    torch.save({f"features.{k}": v for k, v in tv_model.state_dict().items()}, path)
    return path


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def cosine_min(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


@pytest.mark.parametrize("size", [224, 64])
@pytest.mark.parametrize("preset", ["torchvision", "caffe"])
def test_parity_with_torchvision(tv_model, pth_path, size, preset, rng):
    n = 1 if size == 224 else 3
    patches = rng.random((n, 64, 64), dtype=np.float32)
    with torch.inference_mode():
        ref = tv_model(reference_input(patches, size, preset)).mean((2, 3)).numpy()
    ext = VGG16Features(weights=pth_path, input_size=size, preprocessing=preset, n_threads=2)
    out = ext.transform(patches)
    assert out.dtype == np.float32 and out.shape == (n, 512)
    assert rel_err(out, ref) < 1e-4
    assert ext.weights_source_ == str(pth_path)
    if size == 224:
        return  # (the eager check below costs another 30 GFLOP per patch at 224)
    # The plain NCHW path agrees too (the reference backend of the benchmark).
    eager = VGG16Features(weights=pth_path, input_size=size, preprocessing=preset, backend="eager").transform(patches)
    assert rel_err(eager, ref) < 1e-4


def test_layers_and_pooling_match_torchvision_maps(tv_model, pth_path, rng):
    patches = rng.random((2, 40, 40), dtype=np.float32)
    with torch.inference_mode():
        x = reference_input(patches, None, "torchvision")
        maps = {}
        for i, layer in enumerate(tv_model):
            x = layer(x)
            maps[i] = x.clone()
    b3, b5, c22 = maps[16], maps[30], maps[8]  # block3_pool, block5_pool, block2_conv2 (after ReLU)
    kw = dict(weights=pth_path, input_size=None, preprocessing="torchvision")
    cat = VGG16Features(layer=["block3_pool", "block5"], **kw).transform(patches)
    assert cat.shape == (2, 256 + 512)
    assert rel_err(cat[:, :256], b3.mean((2, 3)).numpy()) < 1e-4
    assert rel_err(cat[:, 256:], b5.mean((2, 3)).numpy()) < 1e-4
    mx = VGG16Features(layer="block2_conv2", pooling="max", **kw).transform(patches)
    assert rel_err(mx, c22.amax((2, 3)).numpy()) < 1e-4
    flat = VGG16Features(layer="block3_pool", pooling="flatten", **kw)
    out = flat.transform(patches)
    assert out.shape == (2, 256 * 5 * 5)
    assert rel_err(out, b3.flatten(1).numpy()) < 1e-4
    assert len(flat.get_feature_names_out()) == out.shape[1]


def test_input_dtypes_and_channels(rng):
    ext = VGG16Features(input_size=None, random_state=3)
    u8 = rng.integers(0, 256, (2, 32, 32), dtype=np.uint8)
    f32 = u8.astype(np.float32) / np.float32(255)
    a = ext.transform(u8)
    np.testing.assert_array_equal(a, ext.transform(f32))
    np.testing.assert_allclose(ext.transform(f32.astype(np.float64)), a, rtol=1e-6)
    np.testing.assert_array_equal(ext.transform(f32[:, None]), a)
    rgb = np.repeat(f32[:, None], 3, axis=1)
    np.testing.assert_allclose(ext.transform(rgb), a, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, X, error, match",
    [
        ({}, np.full((2, 32, 32), np.nan, np.float32), ValueError, "NaN"),
        ({}, np.zeros((32, 32), np.float32), ValueError, "single patch"),
        ({}, np.full((1, 32, 32), 200.0, np.float32), ValueError, r"\[0, 1\]"),
        ({}, np.zeros((0, 32, 32), np.float32), ValueError, "empty"),
        ({}, np.zeros((1, 2, 32, 32), np.float32), ValueError, "1 or 3 channels"),
        ({}, np.zeros((1, 32, 32), np.int32), TypeError, "ambiguous"),
        ({"input_size": None}, np.zeros((1, 16, 16), np.float32), ValueError, "too small"),
        ({"layer": "block6_pool"}, np.zeros((1, 32, 32), np.float32), ValueError, "unknown VGG16 layer 'block6_pool'"),
        ({"pooling": "median"}, np.zeros((1, 32, 32), np.float32), ValueError, "pooling must be"),
        ({"dtype": "float16"}, np.zeros((1, 32, 32), np.float32), ValueError, "dtype must be"),
        ({"input_size": 16}, np.zeros((1, 32, 32), np.float32), ValueError, "input_size must be >= 32"),
        ({"device": "tpu"}, np.zeros((1, 32, 32), np.float32), ValueError, "device must be"),
        ({"weights": "imagenet-v9"}, np.zeros((1, 32, 32), np.float32), FileNotFoundError, "imagenet-v9"),
    ],
)
def test_bad_input_and_params_are_rejected(kwargs, X, error, match):
    with pytest.raises(error, match=match):
        VGG16Features(**kwargs).fit().transform(X)


def test_determinism_batches_threads_and_progress(rng):
    patches = rng.random((5, 32, 32), dtype=np.float32)
    ext = VGG16Features(input_size=None, batch_size=2, n_threads=2, random_state=11)
    calls = []
    a = ext.transform(patches, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    np.testing.assert_array_equal(a, ext.transform(patches))
    # Same seed, new estimator: same weights, same bits.
    np.testing.assert_array_equal(
        a, VGG16Features(input_size=None, batch_size=2, n_threads=2, random_state=11).transform(patches)
    )
    # Thread count: oneDNN splits the work over outputs, not over the
    # reduction, so 1 and 2 threads give the same bits.
    np.testing.assert_array_equal(
        VGG16Features(input_size=None, batch_size=2, n_threads=1, random_state=11).transform(patches), a
    )
    # Another batch size may make oneDNN pick another blocking: equal to rounding.
    b = VGG16Features(input_size=None, batch_size=5, n_threads=2, random_state=11).transform(patches)
    assert rel_err(b, a) < 1e-5
    c = VGG16Features(input_size=None, batch_size=2, n_threads=2, random_state=12).transform(patches)
    assert rel_err(c, a) > 1e-2  # another seed, other weights


@pytest.mark.parametrize("torch_threads", [1, 2])
def test_torch_thread_count_is_restored_and_left_alone_when_equal(torch_threads, rng):
    # The core sets LibTorch's thread count for a call only when it differs
    # (setting it recreates LibTorch's thread pool, which costs ms of spinning
    # CPU) and puts the caller's count back; results do not depend on it.
    patches = rng.random((2, 32, 32), dtype=np.float32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(torch_threads)
        a = VGG16Features(input_size=None, n_threads=2, random_state=3).transform(patches)
        assert torch.get_num_threads() == torch_threads
        b = VGG16Features(input_size=None, n_threads=1, random_state=3).transform(patches)
        assert torch.get_num_threads() == torch_threads
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(a, b)


def test_bfloat16_close_to_float32(rng):
    patches = rng.random((2, 64, 64), dtype=np.float32)
    f32 = VGG16Features(input_size=None, random_state=5).transform(patches)
    try:
        bf = VGG16Features(input_size=None, random_state=5, dtype="bfloat16").transform(patches)
    except RuntimeError as exc:  # CPUs without AVX512 BW/VL/DQ: the message says what to do
        assert "dtype='bfloat16'" in str(exc) and "AVX512" in str(exc) and "dtype='float32'" in str(exc)
        pytest.skip(f"no bfloat16 path on this CPU: {exc}")
    assert bf.dtype == np.float32
    assert cosine_min(bf, f32) > 0.999


def test_network_input_matches_reference_and_prepare_patches(rng):
    from stemroi.preprocessing.transforms import prepare_patches

    patches = rng.random((2, 20, 20), dtype=np.float32)
    for preset in ("torchvision", "caffe"):
        ours = _core.network_input(patches, size=56, preset=preset)
        ref = reference_input(patches, 56, preset).numpy()
        # torch's bilinear rounds differently (its loop depends on the output size):
        # 2e-6 of the [0, 1] input range times the preset's gain
        gain = 255.0 if preset == "caffe" else 1 / 0.225
        np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6 * gain)
        # VGG16Features and prepare_patches share the core's one network input
        np.testing.assert_array_equal(prepare_patches(patches, size=56, preset=preset), ours)


def test_extract_image_features_grid_and_dense(rng):
    image = rng.random((128, 100), dtype=np.float32)
    ext = VGG16Features(input_size=None, random_state=2, batch_size=8)
    feats, origins = extract_image_features(image, ext, patch_size=64, stride=32)
    rows, cols = np.arange(0, 65, 32), np.arange(0, 37, 32)
    expected = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)
    np.testing.assert_array_equal(origins, expected)
    crops = np.stack([image[r : r + 64, c : c + 64] for r, c in origins])
    np.testing.assert_array_equal(feats, ext.transform(crops))
    dense_ext = VGG16Features(input_size=None, random_state=2, dense=True)
    dfeats, dorigins = extract_image_features(image, dense_ext, patch_size=64, stride=32)
    np.testing.assert_array_equal(dorigins, origins)
    assert dfeats.shape == feats.shape
    # Windows see their neighbours in dense mode (per patch: zero padding), so
    # they are close, not equal; with random weights the cosine stays high.
    assert cosine_min(dfeats, feats) > 0.9
    with pytest.raises(ValueError, match=r"patch_size must be <= image size \(128, 100\), got 200"):
        extract_image_features(image, ext, patch_size=200)
    with pytest.raises(ValueError, match="pooling must be 'avg'"):
        extract_image_features(image, VGG16Features(pooling="max", dense=True, input_size=None), 64, 32)


def test_extract_image_features_batches_follow_patchgrid(rng):
    image = rng.random((96, 130), dtype=np.float32)
    ext = VGG16Features(input_size=None, random_state=1, layer="block3_pool")
    seen = []
    feats, origins = extract_image_features(image, ext, patch_size=32, stride=24, chunk=4,
                                            progress=lambda d, t: seen.append((d, t)))
    grid = stemroi.PatchGrid(32, 24, edge="drop")
    np.testing.assert_array_equal(origins, grid.origins(image.shape))
    assert len(origins) == 15 and seen == [(4, 15), (8, 15), (12, 15), (15, 15)]
    np.testing.assert_array_equal(feats, ext.transform(grid.extract(image)))
    # uint8 windows are scaled by the readers' rule (stemroi.io.scale_to_unit)
    u8 = (rng.random((2, 32, 32)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(ext.transform(u8), ext.transform(stemroi.io.scale_to_unit(u8)))


def test_sklearn_conventions_and_pickle(rng):
    sklearn_base = pytest.importorskip("sklearn.base")
    ext = VGG16Features(weights="random", layer=["block4_pool"], input_size=32, random_state=4)
    assert ext.fit() is ext and not hasattr(VGG16Features(), "model_")
    params = ext.get_params()
    assert params["layer"] == ["block4_pool"] and params["input_size"] == 32
    clone = sklearn_base.clone(ext)
    patches = rng.random((2, 32, 32), dtype=np.float32)
    a = ext.transform(patches)
    np.testing.assert_array_equal(clone.transform(patches), a)
    assert ext.n_features_out_ == 512 and ext.get_feature_names_out()[0] == "vgg16_block4_pool_avg0"
    restored = pickle.loads(pickle.dumps(ext))
    np.testing.assert_array_equal(restored.transform(patches), a)
    assert stemroi.VGG16Features is VGG16Features


@pytest.mark.data
def test_real_cdte_image_windows(ayyubi_dir):
    img = stemroi.io.scale_to_unit(stemroi.read_image(ayyubi_dir / "CdTe_Training_Image.tif"), source_dtype=np.uint8)
    crop = np.ascontiguousarray(img[:128, :128])
    ext = VGG16Features(input_size=None, random_state=0)
    feats, origins = extract_image_features(crop, ext, patch_size=64, stride=64)
    assert feats.shape == (4, 512) and np.isfinite(feats).all() and (feats >= 0).all()
    dense, _ = extract_image_features(crop, VGG16Features(input_size=None, dense=True), 64, 32)
    assert dense.shape == (9, 512)


def _window_weights(start: float, length: float, n_cells: int) -> np.ndarray:
    """Fraction of the span [start, start + length) (in map cells) on each cell, over the cells that exist."""
    w = np.array([max(0.0, min(start + length, j + 1) - max(start, j)) for j in range(n_cells)])
    return w / w.sum()


@pytest.mark.parametrize("size, patch, stride, shape", [(None, 64, 16, (160, 128)), (56, 16, 8, (48, 40))])
def test_dense_is_one_fully_convolutional_pass(tv_model, pth_path, size, patch, stride, shape, rng):
    # Dense mode = torchvision's features over the whole resized image (one
    # fully convolutional pass), each window pooled as the area-weighted mean
    # of the block5 cells its resized footprint covers: windows on the 32-px
    # cell grid are plain means of whole cells, the others weight the partly
    # covered cells by their overlap. Checked for every window, at the native
    # scale and at a x3.5 scale (as 64 -> 224).
    image = rng.random(shape, dtype=np.float32)
    ext = VGG16Features(weights=pth_path, input_size=size, dense=True, n_threads=2)
    feats, origins = extract_image_features(image, ext, patch, stride)
    scale = (size or patch) / patch
    rh, rw = round(shape[0] * scale), round(shape[1] * scale)
    with torch.inference_mode():
        x = reference_input(image[None], None, "torchvision")
        if scale != 1:
            x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
        fmap = tv_model(x)[0].numpy().astype(np.float64)  # (512, rh // 32, rw // 32)
    ref = np.stack([
        np.einsum("i,cij,j->c", _window_weights(r * scale / 32, patch * scale / 32, fmap.shape[1]), fmap,
                  _window_weights(c * scale / 32, patch * scale / 32, fmap.shape[2]))
        for r, c in origins
    ])
    assert rel_err(feats, ref) < 1e-4
    # Strips: a few rows of cells at a time with a 96-px halo give the one-pass result.
    strips, _ = ext.model_.dense(image, patch, stride, ext.layers_, input_size=size or 0,
                                 preprocessing="torchvision", n_threads=2, strip_bytes=rw * 64 * 4 * (192 + 32))
    assert rel_err(strips, feats) < 1e-5


@pytest.mark.parametrize("size", [None, 112])
def test_dense_window_without_context_equals_per_patch(size, rng):
    # A window that is the whole image has no context: dense == per patch. Other
    # windows differ only by their context (per patch the network zero-pads at
    # the window border and the resize clamps there; dense sees the neighbours).
    image = rng.random((64, 64), dtype=np.float32)
    dense = VGG16Features(input_size=size, dense=True, random_state=3, n_threads=2)
    f_dense, origins = extract_image_features(image, dense, 64, 16)
    assert origins.tolist() == [[0, 0]]
    f_patch = VGG16Features(input_size=size, random_state=3, n_threads=2).transform(image[None])
    assert rel_err(f_dense, f_patch) < 1e-5


def test_sub_batches_keep_results_independent_of_batch_size(rng):
    # On the CPU a batch runs through the network in sub-batches of <= 16 MiB of
    # first-block activation (2 patches at 160 x 160 in float32): batch sizes 3
    # and 2 give the same sub-batches, hence the same bits; one patch per pass
    # may make oneDNN pick another blocking (equal to rounding).
    patches = rng.random((3, 40, 40), dtype=np.float32)
    kw = dict(input_size=160, layer="block1_pool", random_state=6, n_threads=2)
    a = VGG16Features(batch_size=3, **kw).transform(patches)
    np.testing.assert_array_equal(VGG16Features(batch_size=2, **kw).transform(patches), a)
    assert rel_err(VGG16Features(batch_size=1, **kw).transform(patches), a) < 1e-5
