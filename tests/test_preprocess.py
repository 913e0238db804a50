import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

import stemroi
from stemroi.preprocessing import prepare_patches, transforms as preprocess

CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68])
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])

SIZES = [((64, 64), (224, 224)), ((224, 224), (64, 64)), ((37, 53), (224, 100)), ((31, 17), (5, 64)), ((64, 64), (64, 64)),
         ((1, 7), (3, 2)), ((50, 50), (33, 33))]


def torch_bilinear(images, size):
    t = torch.from_numpy(np.ascontiguousarray(images))[:, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False).numpy()[:, 0]


def tf_bilinear_reference(images, size, half_pixel_centers=True):
    """NumPy transcription of TensorFlow's ResizeBilinear (tf.image.resize, antialias=False).

    half_pixel_centers=True is TF2's tf.image.resize; False is the legacy TF1
    resize_bilinear(align_corners=False). Per axis, as in TF's
    compute_interpolation_weights: lower = max(floor(in), 0),
    upper = min(ceil(in), L - 1) (legacy: min(lower + 1, L - 1)), lerp = in - floor(in).
    """
    def axis(in_len, out_len):
        scale = in_len / out_len
        i = np.arange(out_len, dtype=np.float64)
        src = (i + 0.5) * scale - 0.5 if half_pixel_centers else i * scale
        fl = np.floor(src)
        lower = np.maximum(fl, 0).astype(int)
        upper = np.minimum(np.ceil(src) if half_pixel_centers else fl + 1, in_len - 1).astype(int)
        return lower, upper, src - fl

    images = np.asarray(images, np.float64)
    ly, uy, wy = axis(images.shape[1], size[0])
    lx, ux, wx = axis(images.shape[2], size[1])
    top_left = images[:, ly][:, :, lx]
    top_right = images[:, ly][:, :, ux]
    bottom_left = images[:, uy][:, :, lx]
    bottom_right = images[:, uy][:, :, ux]
    top = top_left + (top_right - top_left) * wx
    bottom = bottom_left + (bottom_right - bottom_left) * wx
    return top + (bottom - top) * wy[:, None]


@pytest.fixture(scope="module")
def cdte_patches(ayyubi_dir):
    return stemroi.io.load_patch_folder(ayyubi_dir / "CdTe").patches[::40]


@pytest.mark.parametrize("in_size,out_size", SIZES)
def test_bilinear_matches_torch_interpolate(rng, in_size, out_size):
    images = rng.random((4,) + in_size).astype(np.float32)
    got = preprocess.resize(images, out_size)
    assert got.dtype == np.float32 and got.shape == (4,) + out_size
    assert np.abs(got - torch_bilinear(images, out_size)).max() <= 1e-5


@pytest.mark.parametrize("in_size,out_size", SIZES)
def test_bilinear_matches_tf_half_pixel_reference(rng, in_size, out_size):
    images = rng.random((3,) + in_size)
    ref = tf_bilinear_reference(images, out_size)
    for method in ("bilinear", "bilinear_tf"):
        assert np.abs(preprocess.resize(images, out_size, method) - ref).max() <= 1e-12  # float64
        got32 = preprocess.resize(images.astype(np.float32), out_size, method)
        assert np.abs(got32 - ref).max() <= 1e-5
    # so torch align_corners=False and TF2 half-pixel are one function, up and down
    assert np.abs(torch_bilinear(images, out_size) - ref).max() <= 1e-12


@pytest.mark.parametrize("in_size,out_size", SIZES[:4])
def test_legacy_tf1_bilinear(rng, in_size, out_size):
    images = rng.random((2,) + in_size)
    ref = tf_bilinear_reference(images, out_size, half_pixel_centers=False)
    got = preprocess.resize(images, out_size, "bilinear_tf1")
    assert np.abs(got - ref).max() <= 1e-12
    if in_size != out_size:  # and it is not the half-pixel resize
        assert np.abs(got - preprocess.resize(images, out_size)).max() > 1e-3


@pytest.mark.parametrize("out_size", [(224, 224), (64, 64), (32, 32), (100, 37)])
def test_bilinear_on_real_patches(cdte_patches, out_size):
    got = preprocess.resize(cdte_patches, out_size)
    assert np.abs(got - torch_bilinear(cdte_patches, out_size)).max() <= 1e-5
    assert np.abs(got - tf_bilinear_reference(cdte_patches, out_size)).max() <= 1e-5
    back = preprocess.resize(preprocess.resize(cdte_patches, 224), 64)  # 224 -> 64 on real content
    assert np.abs(back - torch_bilinear(torch_bilinear(cdte_patches, (224, 224)), (64, 64))).max() <= 1e-5


@pytest.mark.parametrize("in_size,out_size", SIZES)
def test_nearest_matches_pil(rng, in_size, out_size):
    images = rng.random((2,) + in_size).astype(np.float32)
    got = preprocess.resize(images, out_size, "nearest")
    for img, g in zip(images, got):
        ref = np.asarray(Image.fromarray(img, mode="F").resize(out_size[::-1], Image.NEAREST))
        np.testing.assert_array_equal(g, ref)
    as_uint8 = (images * 255).astype(np.uint8)
    got8 = preprocess.resize(as_uint8, out_size, "nearest")
    assert got8.dtype == np.uint8
    for img, g in zip(as_uint8, got8):
        np.testing.assert_array_equal(g, np.asarray(Image.fromarray(img).resize(out_size[::-1], Image.NEAREST)))


def test_nearest_vs_torch_modes(rng):
    """PIL nearest is torch 'nearest-exact' up to exact ties, never torch 'nearest'."""
    for in_size, out_size in (((224, 224), (64, 64)), ((37, 53), (224, 100)), ((64, 64), (224, 224))):
        images = rng.random((2,) + in_size).astype(np.float32)
        t = torch.from_numpy(images)[:, None]
        ours = preprocess.resize(images, out_size, "nearest")
        exact = F.interpolate(t, size=out_size, mode="nearest-exact").numpy()[:, 0]
        legacy = F.interpolate(t, size=out_size, mode="nearest").numpy()[:, 0]
        assert not np.array_equal(ours, legacy)
        if in_size == (64, 64):
            # (i + 0.5) * 64 / 224 is an exact integer for i = 3, 10, 17, ...: torch's float32
            # rounding and PIL's double accumulation pick neighbouring pixels there
            ties = np.flatnonzero(((2 * np.arange(224) + 1) * 64) % 448 == 0)
            cols_differ = np.flatnonzero((ours[0, 0] != exact[0, 0]))
            assert set(cols_differ) <= set(ties) and len(ties) == 32
        else:
            np.testing.assert_array_equal(ours, exact)


def test_resize_shapes_dtypes(rng):
    one = rng.random((10, 12)).astype(np.float32)
    assert preprocess.resize(one, (5, 6)).shape == (5, 6)
    chans = rng.random((2, 3, 10, 12))
    got = preprocess.resize(chans, 20)
    assert got.shape == (2, 3, 20, 20) and got.dtype == np.float64
    np.testing.assert_allclose(got[1, 2], preprocess.resize(chans[1, 2], 20), atol=0)
    ints = (rng.random((2, 10, 10)) * 255).astype(np.uint8)
    b = preprocess.resize(ints, 20)
    assert b.dtype == np.float32  # bilinear on integers: float32, values unscaled
    np.testing.assert_allclose(b, preprocess.resize(ints.astype(np.float32), 20))


def test_to_rgb_and_normalisation_presets(rng):
    grey = rng.random((5, 9, 11)).astype(np.float32)
    rgb = preprocess.to_rgb(grey)
    assert rgb.shape == (5, 3, 9, 11) and rgb.dtype == np.float32
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, c], grey)
    np.testing.assert_array_equal(preprocess.to_rgb(grey[:, None]), rgb)
    colour = rng.random((5, 3, 9, 11)).astype(np.float32)

    caffe = preprocess.normalize(colour, "caffe")
    ref = (colour.astype(np.float64) * 255.0)[:, ::-1] - CAFFE_BGR_MEAN[None, :, None, None]
    assert caffe.dtype == np.float32 and np.abs(caffe - ref).max() <= 1e-4  # float32 on [0, 255]

    tv = preprocess.normalize(colour, "torchvision")
    ref = (colour - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]
    assert np.abs(tv - ref).max() <= 1e-5
    import torchvision.transforms.functional as TF

    tv_ref = torch.stack([TF.normalize(torch.from_numpy(x), IMAGENET_MEAN.tolist(), IMAGENET_STD.tolist()) for x in colour])
    assert np.abs(tv - tv_ref.numpy()).max() <= 1e-5

    np.testing.assert_allclose(preprocess.normalize(colour, "tf"), colour * 2 - 1, atol=1e-6)
    np.testing.assert_array_equal(preprocess.normalize(colour, "unit"), colour)
    p = preprocess.normalization_preset("caffe")
    assert p["bgr"] and p["input_scale"] == 255 and np.allclose(p["mean"], CAFFE_BGR_MEAN)


@pytest.mark.parametrize("preset", ["caffe", "torchvision", "tf"])
@pytest.mark.parametrize("method", ["bilinear", "nearest", "bilinear_tf1"])
def test_prepare_patches_is_the_composition(rng, preset, method):
    patches = rng.random((6, 64, 64)).astype(np.float32)
    got = prepare_patches(patches, 224, preset, method)
    assert got.shape == (6, 3, 224, 224) and got.dtype == np.float32
    staged = preprocess.normalize(preprocess.to_rgb(preprocess.resize(patches, 224, method)), preset)
    np.testing.assert_array_equal(got, staged)


def test_prepare_patches_matches_torch_and_keras_pipelines(cdte_patches):
    got = prepare_patches(cdte_patches)  # 64 -> 224, caffe
    up = torch_bilinear(cdte_patches, (224, 224)).astype(np.float64)
    keras = np.repeat(up[:, None] * 255.0, 3, axis=1)[:, ::-1] - CAFFE_BGR_MEAN[None, :, None, None]
    assert np.abs(got - keras).max() <= 255 * 1e-5
    tv = prepare_patches(cdte_patches, 224, "torchvision")
    ref = (up[:, None] - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]
    assert np.abs(tv - ref).max() <= 1e-4  # float32, std < 0.23 amplifies the resize error
    rgb = prepare_patches(np.repeat(cdte_patches[:, None], 3, axis=1))
    np.testing.assert_array_equal(rgb, got)


def test_prepare_patches_rgb_channel_order(rng):
    rgb = rng.random((2, 3, 8, 8)).astype(np.float32)
    got = prepare_patches(rgb, 8, "caffe")
    ref = rgb[:, ::-1] * np.float32(255) - CAFFE_BGR_MEAN.astype(np.float32)[None, :, None, None]
    assert np.abs(got - ref).max() <= 1e-4


def test_thread_count_determinism(rng):
    patches = rng.random((40, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(prepare_patches(patches, n_threads=1), prepare_patches(patches, n_threads=2))
    np.testing.assert_array_equal(preprocess.resize(patches, 100, n_threads=1), preprocess.resize(patches, 100, n_threads=2))


def test_blur_divide_by_max_minmax(rng):
    patches = rng.random((4, 20, 24))
    blurred = preprocess.blur(patches, 1.5)
    for b, p in zip(blurred, patches):
        np.testing.assert_allclose(b, ndimage.gaussian_filter(p, 1.5, mode="reflect"), atol=1e-12)
    assert preprocess.blur(patches.astype(np.float32), 1.5).dtype == np.float32
    np.testing.assert_allclose(preprocess.divide_by_max(patches), patches / patches.max(axis=(1, 2), keepdims=True))
    lo, hi = patches.min(axis=(1, 2), keepdims=True), patches.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(preprocess.minmax_scale(patches), (patches - lo) / (hi - lo))
    # CVAE study order: blur, then divide by the patch maximum
    cvae = preprocess.divide_by_max(preprocess.blur(patches, 2.0))
    ref = np.stack([ndimage.gaussian_filter(p, 2.0) for p in patches])
    np.testing.assert_allclose(cvae, ref / ref.max(axis=(1, 2), keepdims=True), atol=1e-12)


def test_zero_variance_patches_give_no_nan():
    patches = np.stack([np.zeros((8, 8)), np.full((8, 8), 0.3), -np.ones((8, 8))]).astype(np.float32)
    dm = preprocess.divide_by_max(patches)
    assert np.isfinite(dm).all()
    np.testing.assert_array_equal(dm[0], 0)  # max 0: unchanged
    np.testing.assert_array_equal(dm[1], 1)
    np.testing.assert_array_equal(dm[2], -1)  # max < 0: unchanged
    mm = preprocess.minmax_scale(patches)
    assert np.isfinite(mm).all() and (mm == 0).all()  # constant patches -> zeros
    assert np.isfinite(preprocess.blur(patches, 1.0)).all()
    assert np.isfinite(prepare_patches(patches[:1], 16, "torchvision")).all()


def test_bad_preprocess_input(rng):
    x = rng.random((2, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"size must be >= 1, got 0"):
        preprocess.resize(x, 0)
    with pytest.raises(ValueError, match=r"size must be >= 1, got \(4, -1\)"):
        preprocess.resize(x, (4, -1))
    with pytest.raises(TypeError, match="size must be an int or a"):
        preprocess.resize(x, "big")
    with pytest.raises(ValueError, match="method must be one of .* got 'cubic'"):
        preprocess.resize(x, 4, "cubic")
    with pytest.raises(ValueError, match="preset must be one of .* got 'imagenet'"):
        prepare_patches(x, 16, "imagenet")
    with pytest.raises(ValueError, match=r"expected a 2-D or 3-D or 4-D array, got shape \(8,\)"):
        preprocess.resize(np.ones(8), 4)
    bad = x.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity \(first at index \(1, 2, 3\)"):
        prepare_patches(bad)
    with pytest.raises(ValueError, match=r"NaN"):
        preprocess.resize(bad, 4)
    with pytest.raises(TypeError, match=r"expected float values on \[0, 1\], got dtype uint8.*stemroi.io.scale_to_unit"):
        prepare_patches((x * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"expected 1 or 3 channels .* got shape \(2, 2, 8, 8\)"):
        prepare_patches(rng.random((2, 2, 8, 8)).astype(np.float32))
    with pytest.raises(ValueError, match=r"expected \(n, 3, h, w\) RGB, got shape \(2, 1, 8, 8\)"):
        preprocess.normalize(x[:, None], "caffe")
    with pytest.raises(ValueError, match=r"sigma must be a finite number >= 0, got -1"):
        preprocess.blur(x, -1)
    with pytest.raises(ValueError, match=r"empty array of shape \(0, 8, 8\)"):
        prepare_patches(np.zeros((0, 8, 8), np.float32))
    with pytest.raises(ValueError, match="square inputs"):
        prepare_patches(x, (16, 32))
