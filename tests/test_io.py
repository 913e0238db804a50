"""Readers: every reference file, every storage variant, every bad input."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import tifffile
from PIL import Image

import stemroi
from stemroi.io import (
    Calibration,
    iter_frames,
    read_image,
    read_image_with_calibration,
    read_stack,
    scale_to_unit,
)


# ---------------------------------------------------------------- real data


def _pil_reference(path):
    """Independent reference: PIL's decoded pixels, R channel for colour files."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    return arr if arr.ndim == 2 else arr[..., 0]


@pytest.mark.parametrize("folder", ["CdTe", "STO"])
def test_every_patch_file_reads_to_64x64_exact_values(ayyubi_dir, folder):
    files = sorted((ayyubi_dir / folder).glob("*.tif"))
    assert len(files) == {"CdTe": 1119, "STO": 764}[folder]
    modes = set()
    for f in files:
        img = read_image(f)
        assert img.dtype == np.float32 and img.shape == (64, 64), f
        ref = _pil_reference(f)
        with Image.open(f) as im:
            modes.add(im.mode)
        # grey from RGB/RGBA is the R channel exactly (R = G = B in these files)
        np.testing.assert_array_equal(img, ref.astype(np.float32), err_msg=str(f))
    assert modes == ({"RGBA"} if folder == "CdTe" else {"L", "RGB", "RGBA"})


def test_lzw_rgba_training_image(ayyubi_dir):
    path = ayyubi_dir / "CdTe_Training_Image.tif"
    with Image.open(path) as im:
        assert im.info["compression"] == "tiff_lzw" and im.mode == "RGBA"
        rgba = np.asarray(im)
    img, cal = read_image_with_calibration(path)
    assert img.shape == (768, 768) and img.dtype == np.float32
    np.testing.assert_array_equal(img, rgba[..., 0].astype(np.float32))
    assert isinstance(cal, Calibration)


@pytest.mark.parametrize("name", ["ayyubi-stem-defects/STO_Training_Image.jpg", "prifti-sto-cvae/20111206DF.jpg"])
def test_jpegs(data_dir, name):
    img = read_image(data_dir / name)
    assert img.shape == (512, 512)
    np.testing.assert_array_equal(img, _pil_reference(data_dir / name).astype(np.float32))
    assert 0 <= img.min() and img.max() <= 255 and img.std() > 5


def test_every_npy_set_reads_as_a_stack(prifti_dir):
    files = sorted(prifti_dir.glob("*.npy"))
    assert len(files) == 8
    for f in files:
        ref = np.load(f)
        assert ref.shape == (1000, 64, 64) and ref.dtype == np.uint8
        with pytest.raises(ValueError, match=r"stack of 1000 frames of shape \(64, 64\).*iter_frames"):
            read_image(f)
        stack = read_stack(f)
        assert stack.dtype == np.float32 and stack.shape == (1000, 64, 64)
        np.testing.assert_array_equal(stack, ref.astype(np.float32))
    frames = iter_frames(files[0])
    first = next(frames)
    np.testing.assert_array_equal(first, np.load(files[0])[0].astype(np.float32))


# ---------------------------------------------------------------- storage variants


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiff_dtypes_roundtrip(tmp_path, rng, dtype, compression):
    if np.dtype(dtype).kind == "f":
        data = rng.random((20, 30)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -30000), min(info.max, 60000), size=(20, 30)).astype(dtype)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, data, compression=compression)
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == (20, 30)
    np.testing.assert_array_equal(img, data.astype(np.float32))


def test_bilevel_tiff_is_not_taken_for_truncated(tmp_path, rng):
    # 1 bit per pixel: 200 x 200 pixels in 5000 bytes, which the size check once read as 40000
    arr = rng.random((200, 200)) > 0.5
    tifffile.imwrite(tmp_path / "mask.tif", arr)  # tifffile writes bilevel pages uncompressed
    np.testing.assert_array_equal(read_image(tmp_path / "mask.tif"), arr.astype(np.float32))


def test_pil_formats_and_colour(tmp_path, rng):
    grey = rng.integers(0, 256, size=(12, 17), dtype=np.uint8)
    for mode in ("L", "RGB", "RGBA", "LA"):
        arr = grey if mode == "L" else np.dstack([grey] * (len(mode) - (mode.endswith("A"))) + ([np.full_like(grey, 7)] if mode.endswith("A") else []))
        for ext in (".png", ".tif"):
            p = tmp_path / f"{mode}{ext}"
            im = Image.fromarray(arr)  # the mode follows from the array (fromarray's mode= is deprecated)
            assert im.mode == mode
            im.save(p)
            np.testing.assert_array_equal(read_image(p), grey.astype(np.float32), err_msg=f"{mode}{ext}")
    # 16-bit PNG
    g16 = rng.integers(0, 65536, size=(9, 11)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")  # mode I;16 (Pillow >= 13 cannot write mode I as PNG)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), g16.astype(np.float32))


def test_unequal_colour_uses_luminance_and_says_so(tmp_path, rng):
    rgb = rng.integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    p = tmp_path / "c.png"
    Image.fromarray(rgb).save(p)
    with pytest.warns(UserWarning, match="luminance"):
        img = read_image(p)
    np.testing.assert_allclose(img, rgb @ np.array([0.299, 0.587, 0.114]), rtol=1e-6)


def test_to_grey_is_the_one_grey_rule(tmp_path, rng):
    from stemroi.io import to_grey

    grey = rng.integers(0, 256, size=(8, 9), dtype=np.uint8)
    assert to_grey(grey) is grey
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 9)])
    out = to_grey(rgba)
    assert out.dtype == np.uint8 and np.array_equal(out, grey)  # equal channels: channel 0, exact
    np.testing.assert_array_equal(to_grey(np.dstack([grey, np.full_like(grey, 3)])), grey)  # grey + alpha
    f = rng.random((8, 9)).astype(np.float32) * 0.1
    np.testing.assert_array_equal(to_grey(np.dstack([f, f, f])), f)  # exact, not (3 f) / 3
    rgb = rng.integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="my image: colour image with unequal channels"):
        luma = to_grey(rgb, where="my image")
    np.testing.assert_array_equal(luma, rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    # the readers use the same rule
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.warns(UserWarning, match="luminance"):
        np.testing.assert_array_equal(read_image(tmp_path / "c.png"), luma.astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \(8, 9, 5\) is not a 2-D image"):
        to_grey(np.zeros((8, 9, 5)))
    with pytest.raises(ValueError, match="expected a 2-D image"):
        to_grey(np.zeros(5))


def test_npy_2d_colour_and_memmap(tmp_path, rng):
    a = rng.random((10, 12)).astype(np.float64)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(read_image(tmp_path / "a.npy"), a.astype(np.float32))
    c = np.repeat(rng.integers(0, 255, (10, 12, 1), dtype=np.uint8), 3, axis=2)
    np.save(tmp_path / "c.npy", c)
    np.testing.assert_array_equal(read_image(tmp_path / "c.npy"), c[..., 0].astype(np.float32))


def test_tiff_stack_refused_and_iterated(tmp_path, rng):
    stack = rng.integers(0, 255, size=(3, 16, 16), dtype=np.uint8)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, stack, photometric="minisblack")
    with pytest.raises(ValueError, match="stack of 3 frames"):
        read_image(p)
    frames = list(iter_frames(p))
    assert len(frames) == 3
    np.testing.assert_array_equal(np.stack(frames), stack.astype(np.float32))


@pytest.mark.parametrize("shape", [(1, 16, 20), (1, 1, 16, 20)])
def test_a_stack_of_one_frame_reads_as_that_frame(tmp_path, rng, shape):
    frame = rng.random(shape, dtype=np.float32)
    np.save(tmp_path / "one.npy", frame)
    tifffile.imwrite(tmp_path / "one.tif", frame.reshape(1, 16, 20), photometric="minisblack")
    for name in ("one.npy", "one.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), frame.reshape(16, 20))
    np.save(tmp_path / "two.npy", np.concatenate([frame.reshape(1, 16, 20)] * 2))
    with pytest.raises(ValueError, match=r"stack of 2 frames of shape \(16, 20\)"):
        read_image(tmp_path / "two.npy")


def test_tiff_calibration_from_imagej_metadata(tmp_path):
    data = np.arange(64, dtype=np.uint16).reshape(8, 8)
    p = tmp_path / "cal.tif"
    tifffile.imwrite(p, data, imagej=True, resolution=(1 / 0.025, 1 / 0.025), metadata={"unit": "nm"})
    img, cal = read_image_with_calibration(p)
    np.testing.assert_array_equal(img, data)
    assert cal.unit == "nm" and cal.pixel_size == pytest.approx(0.025, rel=1e-6)
    tifffile.imwrite(tmp_path / "plain.tif", data)
    assert read_image_with_calibration(tmp_path / "plain.tif")[1] == Calibration(None, None)
    # unit "pixel" (size 1): the file says it is not calibrated, not that its pixel is 1 "pixel" long
    for unit in ("pixel", "px", "Pixels"):
        tifffile.imwrite(tmp_path / "px.tif", data, imagej=True, resolution=(1, 1), metadata={"unit": unit})
        assert read_image_with_calibration(tmp_path / "px.tif")[1] == Calibration(None, None), unit


@pytest.mark.parametrize("resolution, unit, expected", [
    ((300, 300), "INCH", Calibration(None, None)),  # a print density (85 um), not a microscope pixel
    ((72, 72), "INCH", Calibration(None, None)),
    ((118.11, 118.11), "CENTIMETER", Calibration(None, None)),  # 300 dpi in px/cm
    ((1e8, 1e8), "CENTIMETER", Calibration(1e-8, "cm")),  # 0.1 nm pixels in cm
    ((2.54e8, 2.54e8), "INCH", Calibration(1 / 2.54e8, "inch")),  # 0.1 nm pixels in inch
])
def test_tiff_resolution_tags_count_only_below_a_micrometre(tmp_path, resolution, unit, expected):
    p = tmp_path / "r.tif"
    tifffile.imwrite(p, np.zeros((8, 8), np.uint8), resolution=resolution, resolutionunit=unit)
    cal = read_image_with_calibration(p)[1]
    assert cal.unit == expected.unit
    if expected.pixel_size is not None:
        assert cal.pixel_size == pytest.approx(expected.pixel_size, rel=1e-6)
        assert cal.metres() == pytest.approx(1e-10, rel=1e-4)


def test_public_export():
    assert stemroi.read_image is read_image


# ---------------------------------------------------------------- scale_to_unit


def test_scale_to_unit():
    u8 = np.array([[0, 255], [51, 102]], np.uint8)
    np.testing.assert_allclose(scale_to_unit(u8), u8 / 255.0, rtol=1e-7)
    np.testing.assert_allclose(scale_to_unit(u8.astype(np.float32), source_dtype=np.uint8), u8 / 255.0, rtol=1e-7)
    u16 = np.array([[0, 65535]], np.uint16)
    np.testing.assert_array_equal(scale_to_unit(u16), [[0.0, 1.0]])
    f = np.array([[2.0, 4.0], [6.0, 10.0]], np.float32)
    np.testing.assert_allclose(scale_to_unit(f, "minmax"), [[0, 0.25], [0.5, 1.0]])
    assert scale_to_unit(np.full((3, 3), 5.0), "minmax").max() == 0.0  # constant: zeros, no NaN
    with pytest.raises(ValueError, match=r"needs values in \[0, 1\].*source_dtype"):
        scale_to_unit(f, "dtype")
    with pytest.raises(ValueError, match="mode must be 'dtype' or 'minmax'"):
        scale_to_unit(f, "zscore")
    with pytest.raises(TypeError, match="unsupported dtype complex"):
        scale_to_unit(np.ones((2, 2), np.complex64))


# ---------------------------------------------------------------- bad input


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.tif: no such file"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(OSError, match=r"empty\.png: file is empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(OSError, match="is a directory"):
        read_image(tmp_path)
    (tmp_path / "x.xyz").write_bytes(b"abc")
    with pytest.raises(ValueError, match=r"x\.xyz: unsupported file type '\.xyz'"):
        read_image(tmp_path / "x.xyz")
    with pytest.raises(TypeError, match="path must be a str"):
        read_image(123)


def test_corrupt_and_truncated_files(tmp_path, rng):
    (tmp_path / "junk.tif").write_bytes(b"this is not a tiff file at all" * 10)
    with pytest.raises(OSError, match=r"junk\.tif: cannot read TIFF"):
        read_image(tmp_path / "junk.tif")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG garbage" * 10)
    with pytest.raises(OSError, match=r"junk\.png: .*(corrupt|truncated|not a readable)"):
        read_image(tmp_path / "junk.png")
    img = rng.integers(0, 255, size=(64, 64), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "full.jpg", quality=90)
    raw = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OSError, match=r"cut\.jpg: cannot read image, the file is corrupt or truncated"):
        read_image(tmp_path / "cut.jpg")
    tifffile.imwrite(tmp_path / "full.tif", img)
    raw = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[:300])
    with pytest.raises(OSError, match=r"cut\.tif: cannot read TIFF"):
        read_image(tmp_path / "cut.tif")
    np.save(tmp_path / "full.npy", img)
    raw = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:200])
    with pytest.raises(OSError, match=r"cut\.npy: cannot read NPY file"):
        read_image(tmp_path / "cut.npy")


def test_tiny_nan_and_dtype_errors(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((1, 1), np.uint8))
    with pytest.raises(ValueError, match=r"one\.tif: image is 1x1 pixels; at least 2x2"):
        read_image(tmp_path / "one.tif")
    a = np.ones((8, 8), np.float32)
    a[2, 3] = a[5, 5] = np.nan
    a[0, 0] = np.inf
    tifffile.imwrite(tmp_path / "nan.tif", a)
    with pytest.raises(ValueError, match=r"nan\.tif: 2 NaN and 1 infinite pixel\(s\) of 64"):
        read_image(tmp_path / "nan.tif")
    tifffile.imwrite(tmp_path / "cplx.tif", np.ones((4, 4), np.complex64))
    with pytest.raises(TypeError, match=r"cplx\.tif: unsupported pixel dtype complex64"):
        read_image(tmp_path / "cplx.tif")
    np.save(tmp_path / "cplx.npy", np.ones((4, 4), np.complex64))
    with pytest.raises(TypeError, match=r"cplx\.npy: unsupported pixel dtype complex64"):
        read_image(tmp_path / "cplx.npy")
    np.save(tmp_path / "obj.npy", np.array([[1, "a"], [2, None]], dtype=object), allow_pickle=True)
    with pytest.raises(TypeError, match=r"obj\.npy: NPY file holds Python objects"):
        read_image(tmp_path / "obj.npy")
    np.save(tmp_path / "vec.npy", np.ones(5))
    with pytest.raises(ValueError, match=r"vec\.npy: NPY array of shape \(5,\) is not an image"):
        read_image(tmp_path / "vec.npy")


# ---------------------------------------------------------------- microscope formats


def _write_mrc(path, data: np.ndarray, pixel_size_angstrom: float):
    """Minimal MRC2014 file (1024-byte header, mode 2 float32)."""
    nz, ny, nx = data.shape
    header = bytearray(1024)
    struct.pack_into("<3i", header, 0, nx, ny, nz)
    struct.pack_into("<i", header, 12, 2)  # mode 2: float32
    struct.pack_into("<3i", header, 28, nx, ny, nz)  # mx, my, mz
    struct.pack_into("<3f", header, 40, nx * pixel_size_angstrom, ny * pixel_size_angstrom, nz * pixel_size_angstrom)
    struct.pack_into("<3f", header, 52, 90.0, 90.0, 90.0)
    struct.pack_into("<3i", header, 64, 1, 2, 3)
    header[208:212] = b"MAP "
    header[212:216] = bytes([0x44, 0x44, 0, 0])
    struct.pack_into("<i", header, 220, 0)
    with open(path, "wb") as fh:
        fh.write(bytes(header))
        fh.write(data.astype("<f4").tobytes())


def test_microscope_format_without_rosettasciio_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "rsciio" or name.startswith("rsciio."):
            raise ImportError("No module named 'rsciio'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    _write_mrc(tmp_path / "a.mrc", np.ones((1, 8, 8), np.float32), 1.0)
    with pytest.raises(ImportError, match=r"pip install stemroi\[hyperspy\]"):
        read_image(tmp_path / "a.mrc")


def test_mrc_through_rosettasciio(tmp_path, rng):
    pytest.importorskip("rsciio", reason="RosettaSciIO not installed (pip install stemroi[hyperspy])")
    data = rng.random((1, 24, 32)).astype(np.float32)
    _write_mrc(tmp_path / "img.mrc", data, 0.5)
    img, cal = read_image_with_calibration(tmp_path / "img.mrc")
    np.testing.assert_array_equal(img, data[0])
    assert cal == Calibration(pytest.approx(0.05), "nm")  # 0.5 angstrom, reported in nm
    stack = rng.random((3, 16, 16)).astype(np.float32)
    _write_mrc(tmp_path / "stack.mrc", stack, 0.5)
    with pytest.raises(ValueError, match="stack of 3 frames"):
        read_image(tmp_path / "stack.mrc")
    np.testing.assert_array_equal(read_stack(tmp_path / "stack.mrc"), stack)
    (tmp_path / "bad.mrc").write_bytes(b"\x00" * 100)
    with pytest.raises(OSError, match=r"bad\.mrc: cannot read \.mrc file"):
        read_image(tmp_path / "bad.mrc")


def test_hspy_in_pixel_units_is_not_calibrated(tmp_path, rng):
    hs = pytest.importorskip("hyperspy.api", reason="HyperSpy not installed (pip install stemroi[hyperspy])")
    for units, expected in (("nm", Calibration(pytest.approx(0.02), "nm")), ("px", Calibration(None, None))):
        s = hs.signals.Signal2D(rng.random((12, 16)).astype(np.float32))
        for ax in s.axes_manager.signal_axes:
            ax.scale, ax.units = (0.02 if units == "nm" else 1.0), units
        s.save(tmp_path / f"{units}.hspy", overwrite=True)
        assert read_image_with_calibration(tmp_path / f"{units}.hspy")[1] == expected, units


def test_a_stack_given_to_read_image_raises_a_stack_error_with_its_shape(tmp_path):
    """StackOfFramesError is a ValueError (as before) that carries the frame count and shape, so the
    command line maps the frames one by one; it pickles (dask workers send errors back)."""
    import pickle

    from stemroi.io import StackOfFramesError, iter_frames

    p = tmp_path / "series.npy"
    np.save(p, np.arange(3 * 20 * 24, dtype=np.float32).reshape(3, 20, 24))
    with pytest.raises(StackOfFramesError, match=r"series.npy: holds a stack of 3 frames of shape \(20, 24\)") as info:
        read_image(p)
    assert isinstance(info.value, ValueError)
    assert (info.value.n_frames, info.value.frame_shape, info.value.path) == (3, (20, 24), p)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.n_frames == 3
    assert len(list(iter_frames(p))) == 3
    assert info.value.calibration.pixel_size is None  # an NPY file says nothing of its pixel
    # an ImageJ TIFF series: the error carries the pixel size every frame shares
    t = tmp_path / "series.tif"
    tifffile.imwrite(t, np.zeros((3, 20, 24), np.uint16), imagej=True, resolution=(1 / 0.025, 1 / 0.025),
                     metadata={"unit": "nm", "axes": "TYX"})
    with pytest.raises(StackOfFramesError) as info:
        read_image(t)
    assert (info.value.n_frames, info.value.calibration.pixel_size, info.value.calibration.unit) == (3, 0.025, "nm")
    assert pickle.loads(pickle.dumps(info.value)).calibration.pixel_size == 0.025
