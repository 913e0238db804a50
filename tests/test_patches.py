import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stemroi import PatchGrid
from stemroi.preprocessing import extract_patches


def _slices(image, origins, p, mode=None):
    """NumPy reference: slice (after symmetric padding for edge='pad')."""
    if mode == "pad":
        image = np.pad(image, ((0, 2 * p), (0, 2 * p)), mode="symmetric")
    return np.stack([image[r:r + p, c:c + p] for r, c in origins])


def _cdte_image(ayyubi_dir):
    from PIL import Image  # Debian's tifffile lacks LZW (imagecodecs); PIL reads it

    rgba = np.asarray(Image.open(ayyubi_dir / "CdTe_Training_Image.tif"))
    assert rgba.shape == (768, 768, 4)
    return rgba[..., 0].astype(np.float32) / 255.0


def test_cdte_image_tiles_into_144_patches(ayyubi_dir):
    image = _cdte_image(ayyubi_dir)
    patches, origins = extract_patches(image, 64)
    assert patches.shape == (144, 64, 64) and patches.dtype == np.float32
    assert origins.dtype == np.int64 and origins.shape == (144, 2)
    # row-major, non-overlapping, tiling the image exactly
    expected = np.array([(r, c) for r in range(0, 768, 64) for c in range(0, 768, 64)])
    np.testing.assert_array_equal(origins, expected)
    coverage = np.zeros(image.shape, int)
    for r, c in origins:
        coverage[r:r + 64, c:c + 64] += 1
    assert (coverage == 1).all()
    np.testing.assert_array_equal(patches, _slices(image, origins, 64))
    # the tiles reassemble the image
    tiled = patches.reshape(12, 12, 64, 64).transpose(0, 2, 1, 3).reshape(768, 768)
    np.testing.assert_array_equal(tiled, image)


def test_cdte_image_stride_16_gives_2025_patches(ayyubi_dir):
    image = _cdte_image(ayyubi_dir)
    grid = PatchGrid(64, stride=16)
    assert grid.n_patches(image.shape) == 2025  # (768 - 64) / 16 + 1 = 45 per axis
    patches = grid.extract(image)
    origins = grid.origins(image)
    assert patches.shape == (2025, 64, 64)
    np.testing.assert_array_equal(patches, _slices(image, origins, 64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.uint16])
@pytest.mark.parametrize("edge", ["drop", "shift", "pad"])
def test_extract_equals_numpy_slicing(rng, dtype, edge):
    image = (rng.random((37, 50)) * 200).astype(dtype)
    grid = PatchGrid(16, stride=7, edge=edge)
    patches = grid.extract(image)
    origins = grid.origins(image.shape)
    assert patches.dtype == dtype and patches.flags.c_contiguous
    assert len(patches) == grid.n_patches(image.shape) == len(origins)
    np.testing.assert_array_equal(patches, _slices(image, origins, 16, edge))


def test_edge_mode_origins():
    # 37 rows, patch 16, stride 7: drop 0,7,14,21 (21+16=37 covers); 50 cols: 0..28 (28+16=44 < 50)
    drop = PatchGrid(16, 7, "drop").origins((37, 50))
    assert sorted(set(drop[:, 0])) == [0, 7, 14, 21]
    assert sorted(set(drop[:, 1])) == [0, 7, 14, 21, 28]
    shift = PatchGrid(16, 7, "shift").origins((37, 50))
    assert sorted(set(shift[:, 0])) == [0, 7, 14, 21]  # already covered: no extra window
    assert sorted(set(shift[:, 1])) == [0, 7, 14, 21, 28, 34]  # last window moved inside
    pad = PatchGrid(16, 7, "pad").origins((37, 50))
    assert sorted(set(pad[:, 1])) == [0, 7, 14, 21, 28, 35]  # 35 + 16 = 51 > 50: padded
    # every pixel is covered by shift and pad, not by drop here
    for origins, covered in ((shift, True), (pad, True), (drop, False)):
        cov = np.zeros((37 + 16, 50 + 16), bool)
        for r, c in origins:
            cov[r:r + 16, c:c + 16] = True
        assert cov[:37, :50].all() == covered


def _axis_origins_reference(length, p, s, edge):
    if edge == "pad":
        out = [0]
        while out[-1] + p < length and out[-1] + s < length:  # origins stay inside the image
            out.append(out[-1] + s)
        return out
    out = list(range(0, length - p + 1, s))
    if edge == "shift" and out[-1] + p < length:
        out.append(length - p)
    return out


def test_random_geometries_against_numpy_reference():
    rng = np.random.default_rng(7)
    for _ in range(150):
        edge = ["drop", "shift", "pad"][rng.integers(3)]
        p = int(rng.integers(1, 12))
        s = int(rng.integers(1, 15))
        lo = 1 if edge == "pad" else p
        h, w = (int(v) for v in rng.integers(lo, 40, size=2))
        image = rng.random((h, w)).astype(np.float32)
        grid = PatchGrid(p, s, edge)
        rows, cols = _axis_origins_reference(h, p, s, edge), _axis_origins_reference(w, p, s, edge)
        expected = np.array([(r, c) for r in rows for c in cols]).reshape(-1, 2)
        np.testing.assert_array_equal(grid.origins(image.shape), expected, err_msg=f"{grid} on {image.shape}")
        padded = np.pad(image, ((0, 2 * p + 40), (0, 2 * p + 40)), mode="symmetric")
        np.testing.assert_array_equal(grid.extract(image), _slices(padded, expected, p))
        k = len(expected)
        a, b = sorted(int(v) for v in rng.choice(k + 1, size=2, replace=False)) if k > 1 else (0, 1)
        np.testing.assert_array_equal(grid.extract(image, a, b), grid.extract(image)[a:b])


def test_extract_range_bad_bounds():
    with pytest.raises(ValueError, match=r"0 <= start < stop <= 4, got \[3, 9\)"):
        PatchGrid(4).extract(np.zeros((8, 8)), 3, 9)
    with pytest.raises(ValueError, match="start must be >= 0, got -1"):
        PatchGrid(4).extract(np.zeros((8, 8)), -1, 2)


def test_pad_reflects_small_and_tiny_images():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    patches, origins = extract_patches(image, 8, edge="pad")
    np.testing.assert_array_equal(origins, [[0, 0]])
    np.testing.assert_array_equal(patches[0], np.pad(image, ((0, 5), (0, 4)), mode="symmetric"))
    one = extract_patches(np.full((1, 1), 7, np.uint8), 4, edge="pad")[0]
    assert one.shape == (1, 4, 4) and (one == 7).all()


def test_thread_count_determinism(rng):
    image = rng.random((300, 280)).astype(np.float32)
    a = PatchGrid(32, 5, "pad", n_threads=1).extract(image)
    b = PatchGrid(32, 5, "pad", n_threads=2).extract(image)
    np.testing.assert_array_equal(a, b)


def test_non_contiguous_and_converted_dtypes(rng):
    image = (rng.random((40, 60)) * 1000).astype(np.int32)
    patches = PatchGrid(16, 8).extract(image.T)  # Fortran view, int32 -> float32
    assert patches.dtype == np.float32
    origins = PatchGrid(16, 8).origins(image.T.shape)
    np.testing.assert_array_equal(patches, _slices(image.T.astype(np.float32), origins, 16))


@pytest.mark.parametrize("edge", ["drop", "pad", "shift"])
def test_iter_batches_equals_extract(rng, tmp_path, edge):
    image = rng.random((150, 130)).astype(np.float32)
    path = tmp_path / "img.npy"
    np.save(path, image)
    mm = np.load(path, mmap_mode="r")
    grid = PatchGrid(20, 9, edge)
    batches = list(grid.iter_batches(mm, batch_size=17))
    assert all(len(p) <= 17 for _, p in batches)
    np.testing.assert_array_equal(np.concatenate([p for _, p in batches]), grid.extract(image))
    np.testing.assert_array_equal(np.concatenate([o for o, _ in batches]), grid.origins(image.shape))
    # a non-contiguous (strided) memmap view streams through the row-band path
    strided = list(grid.iter_batches(mm[:, ::2], batch_size=5))
    np.testing.assert_array_equal(np.concatenate([p for _, p in strided]), grid.extract(np.ascontiguousarray(image[:, ::2])))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_streaming_memmap_keeps_rss_bounded(tmp_path):
    """2048 x 2048 float32 (16 MiB) streamed in 64-patch batches: RSS growth << image.

    The 8192 x 8192 (256 MiB) run is in benchmarks/preprocess.py.
    """
    path = tmp_path / "big.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(2048, 2048))
    for r in range(0, 2048, 256):
        mm[r:r + 256] = np.float32(r)
    mm.flush()
    del mm
    # ru_maxrss survives fork + exec (the child would start at pytest's peak):
    # reset and read the child's own high-water mark (VmHWM) instead.
    code = textwrap.dedent(f"""
        import numpy as np, stemroi

        def status_mib(key):
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) / 1024 for l in f if l.startswith(key + ":"))

        image = np.load({str(path)!r}, mmap_mode="r")
        grid = stemroi.PatchGrid(64, 32)  # imports the core (and torch) before the baseline
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status_mib("VmRSS")
        n = total = 0
        for origins, patches in grid.iter_batches(image, batch_size=64):
            n += len(patches); total += float(patches[:, 0, 0].sum())
        print(n, total, status_mib("VmHWM") - base)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    n, total, growth_mib = int(out[0]), float(out[1]), float(out[2])
    origins = PatchGrid(64, 32).origins((2048, 2048))
    assert n == len(origins) == 63 * 63
    assert total == pytest.approx(float(((origins[:, 0] // 256) * 256).sum()))
    assert growth_mib < 8, f"peak RSS grew by {growth_mib:.1f} MiB streaming a 16 MiB image"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_streaming_8192_memmap_under_1gib(tmp_path):
    """The acceptance run: 8192 x 8192 float32 (256 MiB) memmap, 64 x 64 tiles in batches of 256."""
    path = tmp_path / "huge.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(8192, 8192))
    for r in range(0, 8192, 1024):
        mm[r:r + 1024] = np.float32(r % 7)
    mm.flush()
    del mm
    code = textwrap.dedent(f"""
        import numpy as np, stemroi

        def status_mib(key):
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) / 1024 for l in f if l.startswith(key + ":"))

        image = np.load({str(path)!r}, mmap_mode="r")
        grid = stemroi.PatchGrid(64)  # imports the core (and torch) before the baseline
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = status_mib("VmRSS")
        n = 0
        for origins, patches in grid.iter_batches(image, batch_size=256):
            n += len(patches)
        print(n, status_mib("VmHWM"), status_mib("VmHWM") - base)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    n, peak_mib, growth_mib = int(out[0]), float(out[1]), float(out[2])
    assert n == 128 * 128
    assert peak_mib < 1024 and growth_mib < 64, (peak_mib, growth_mib)


@pytest.mark.parametrize(
    "kwargs,shape,match",
    [
        ({"patch_size": 64}, (31, 40), r"patch_size must be <= image size \(31, 40\), got 64"),
        ({"patch_size": 64, "edge": "shift"}, (31, 100), r"patch_size must be <= image size \(31, 100\), got 64"),
        ({"patch_size": 2}, (1, 1), r"image size \(1, 1\), got 2"),
        ({"patch_size": 0}, (8, 8), "patch_size must be >= 1, got 0"),
        ({"patch_size": -3}, (8, 8), "patch_size must be >= 1, got -3"),
        ({"patch_size": 4, "stride": 0}, (8, 8), "stride must be >= 1, got 0"),
        ({"patch_size": 4, "edge": "wrap"}, (8, 8), "edge must be 'drop', 'pad' or 'shift', got 'wrap'"),
    ],
)
def test_bad_grid_input(kwargs, shape, match):
    grid = PatchGrid(**kwargs)
    with pytest.raises(ValueError, match=match):
        grid.extract(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match=match):
        grid.origins(shape)


def test_bad_image_input():
    grid = PatchGrid(4)
    with pytest.raises(ValueError, match=r"expected a 2-D image, got shape \(16,\)"):
        grid.extract(np.zeros(16))
    with pytest.raises(ValueError, match=r"expected a 2-D image, got shape \(8, 8, 3\).*colour"):
        grid.extract(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match=r"empty image of shape \(0, 8\)"):
        grid.extract(np.zeros((0, 8)))
    with pytest.raises(TypeError, match="complex"):
        grid.extract(np.zeros((8, 8), complex))
    with pytest.raises(TypeError, match="patch_size must be an int, got float"):
        PatchGrid(4.5).extract(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        next(grid.iter_batches(np.zeros((8, 8)), batch_size=0))
    with pytest.raises(ValueError, match=r"image must have at least one pixel, got shape \(0, 5\)"):
        grid.n_patches((0, 5))


def test_nan_pixels_rejected_or_allowed():
    image = np.zeros((16, 16), np.float32)
    image[9, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity inside patch 2 at origin \(8, 0\).*allow_nan=True"):
        PatchGrid(8).extract(image)
    with pytest.raises(ValueError, match="NaN or infinity"):
        list(PatchGrid(8).iter_batches(image, 1))
    patches = PatchGrid(8, allow_nan=True).extract(image)
    assert np.isnan(patches[2, 1, 5]) and np.isfinite(np.delete(patches, 2, axis=0)).all()
    # a NaN outside every patch (dropped border) is not read
    image = np.zeros((10, 10), np.float32)
    image[9, 9] = np.nan
    assert PatchGrid(8).extract(image).shape == (1, 8, 8)
