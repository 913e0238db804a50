"""The fuzz targets as a fast regression test: each target on its generated
seeds and on deterministic mutations of them (bytes inverted at spread
positions, truncations), plus the inputs the fuzzers found, rebuilt here.
Every input must be read or refused with the documented error types; the
targets themselves re-raise anything else."""
from __future__ import annotations

import importlib.util
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_targets  # noqa: E402
import make_seeds  # noqa: E402


@pytest.fixture(autouse=True)
def _probe_timeout_restored(monkeypatch):
    """The targets lower stemroi._hdf5.PROBE_TIMEOUT for libFuzzer's process; here it is put back after
    each test, or a later test that reads HDF5 runs with 5 s (and times out on a loaded machine)."""
    from stemroi import _hdf5

    monkeypatch.setattr(_hdf5, "PROBE_TIMEOUT", _hdf5.PROBE_TIMEOUT)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds")
    make_seeds.main(str(out))
    return out


def _mutations(data: bytes, n_positions: int):
    yield data
    if not data:
        return
    for i in np.unique(np.linspace(0, len(data) - 1, n_positions).astype(int)):
        b = bytearray(data)
        b[i] ^= 0xFF
        yield bytes(b)
    for frac in (0.0, 0.1, 0.5, 0.9, 0.99):
        yield data[: int(len(data) * frac)]


@pytest.mark.parametrize("target,n_positions", [("model_file", 200), ("read_image", 40), ("torch_weights", 80),
                                                ("keras_h5", 120)])
def test_target_on_seeds_and_mutations(seeds, target, n_positions):
    fn = fuzz_targets.TARGETS[target]
    files = sorted((seeds / target).iterdir())
    assert files, f"no seeds for {target}"
    n = 0
    for f in files:
        for data in _mutations(f.read_bytes(), n_positions):
            fn(data)  # raises on anything but the documented errors
            n += 1
    assert n >= len(files) * 5


@pytest.fixture(scope="module")
def microscope_seeds():
    return make_seeds.microscope_seeds()


@pytest.mark.parametrize("name", ["image.ser", "series.ser", "image.mrc", "image.hspy", "image.emd"])
def test_microscope_seeds_are_valid_files(seeds, microscope_seeds, tmp_path, name):
    """Each microscope-format seed, less its suffix byte, is a file that stemroi.io reads back to the
    pixels and pixel size it was built with (a two-image series is refused by read_image as a stack)."""
    pytest.importorskip("rsciio", reason="RosettaSciIO is not installed: the microscope formats are not read")
    if name.endswith((".hspy", ".emd")) and importlib.util.find_spec("hyperspy") is None:
        pytest.skip("HyperSpy is not installed: make_seeds writes no .hspy/.emd seeds")
    from stemroi.io import SUPPORTED_SUFFIXES, read_image_with_calibration, read_stack

    suffix, _, frames, pixel_nm = microscope_seeds[name]
    raw = (seeds / "read_image" / name).read_bytes()
    assert SUPPORTED_SUFFIXES[raw[0]] == suffix
    path = tmp_path / f"seed{suffix}"
    path.write_bytes(raw[1:])
    np.testing.assert_array_equal(read_stack(path), frames)
    if len(frames) > 1:
        with pytest.raises(ValueError, match=f"holds a stack of {len(frames)} frames"):
            read_image_with_calibration(path)
        return
    image, calibration = read_image_with_calibration(path)
    np.testing.assert_array_equal(image, frames[0])
    assert calibration.unit == "nm" and calibration.pixel_size == pytest.approx(pixel_nm)


def _h5(path, bias, kernel_shape=(3, 3, 3, 2)):
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"block1_conv1"])
        g = f.create_group("block1_conv1")
        names = ["block1_conv1/kernel:0", "block1_conv1/bias:0"]
        g.attrs["weight_names"] = np.array([n.encode() for n in names])
        g.create_dataset(names[0], shape=kernel_shape, dtype="f4")  # never written: the file stays small
        g.create_dataset(names[1], data=bias)


def test_keras_h5_with_text_weights_is_refused(tmp_path):
    from stemroi.models.weights import WeightsError, load_keras_h5

    p = tmp_path / "text.h5"
    _h5(p, np.array([b"bias:0", b"x"]))
    with pytest.raises(WeightsError, match=r"weight 'block1_conv1/bias:0' of layer 'block1_conv1' has dtype \|S6"):
        load_keras_h5(p)


def test_keras_h5_claiming_huge_kernel_is_refused_before_reading(tmp_path):
    from stemroi.models.weights import WeightsError, load_keras_h5

    p = tmp_path / "huge.h5"
    _h5(p, np.zeros(2, np.float32), kernel_shape=(68719476739, 3, 3, 2))
    assert p.stat().st_size < 100_000
    with pytest.raises(WeightsError, match=r"claims shape \(68719476739, 3, 3, 2\)"):
        load_keras_h5(p)


@pytest.mark.parametrize("claim,match", [
    # 4 kB files whose unwritten datasets h5py would fill with the fill value: each claims 300 MB or more
    ({"dtype": "S100000", "shape": (3000,)}, r"has dtype \|S100000, expected numbers"),
    ({"dtype": np.dtype(("f8", (1000,))), "shape": (400000,)}, r"has dtype \('<f8', \(1000,\)\), expected numbers"),
    ({"dtype": "f8", "shape": (1 << 24,), "layers": 3}, r"its VGG16 layers claim more than 256 MiB of weights, "
                                                         r"up to weight 'block1_conv2/kernel:0'"),
    ({"dtype": "f4", "shape": (2,), "chunks": (1 << 27,)}, r"claims chunks of \(134217728,\) values, more than 256 MiB"),
    ({"attr": 1 << 21}, r"attribute 'layer_names' of '/' claims 4194304 bytes \(shape \(2,\), dtype \|S2097152\)"),
])
def test_keras_h5_claiming_gigabytes_is_refused_before_reading(tmp_path, claim, match):
    """The datasets' dtype, values, chunks and total bytes and the attributes' bytes are checked before
    h5py allocates anything (a fuzzed file made the reader touch 4 GB: a string dtype passed the count)."""
    import h5py

    from stemroi.models.weights import WeightsError, load_keras_h5

    p = tmp_path / "claim.h5"
    layers = ["block1_conv1", "block1_conv2", "block2_conv1"][: claim.get("layers", 1)]
    with h5py.File(p, "w", libver="latest") as f:  # latest: attributes over 64 kB in dense storage
        names = [n.encode() for n in layers]
        f.attrs["layer_names"] = np.array(names + [b"x" * claim["attr"]] if "attr" in claim else names)
        for layer in layers:
            g = f.create_group(layer)
            names = [f"{layer}/kernel:0", f"{layer}/bias:0"]
            g.attrs["weight_names"] = np.array([n.encode() for n in names])
            g.create_dataset(names[0], shape=claim.get("shape", (3, 3, 3, 2)), dtype=claim.get("dtype", "f4"),
                             chunks=claim.get("chunks"), maxshape=(None,) if "chunks" in claim else None)
            g.create_dataset(names[1], data=np.zeros(2, np.float32))
    assert p.stat().st_size < 100_000 or "attr" in claim
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with pytest.raises(WeightsError, match=match):
            load_keras_h5(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, f"{peak >> 20} MiB allocated before the refusal"


def test_keras_h5_on_which_libhdf5_runs_out_of_memory_is_refused():
    """regressions/keras_heap_free_list_loop.h5 (the fuzzer's keras2.h5 seed with one byte changed: the
    local heap's free list points at itself) made libhdf5 allocate 4.2 GB inside a link lookup, out of
    reach of any check in the process. The probe's child reads it first under a 1 GiB limit."""
    import time

    from stemroi.models.weights import WeightsError, load_keras_h5

    path = Path(__file__).parent / "regressions" / "keras_heap_free_list_loop.h5"
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match=r"keras_heap_free_list_loop\.h5: the HDF5 library needs more than 1 GiB "
                                           r"to read it \(.*memory allocation failed.*\); the file is corrupt"):
        load_keras_h5(path)
    assert time.perf_counter() - t0 < 30


def test_hdf5_probe_refuses_a_child_that_hangs_hogs_or_dies_and_ignores_ordinary_errors(tmp_path, monkeypatch):
    """stemroi._hdf5.probe with stand-in readers for libhdf5's failure modes (a module in tmp_path)."""
    from stemroi import _hdf5

    (tmp_path / "bad_readers.py").write_text(
        "import os, time\n"
        "def hang(path): time.sleep(60)\n"
        "def hog(path): return bytearray(2 << 30)\n"
        "def die(path): os.abort()\n"
        "def refuse(path): raise ValueError('not a weights file')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    path = tmp_path / "any.h5"
    path.write_bytes(b"not HDF5")
    assert _hdf5.probe(path, timeout=2, reader="bad_readers:hang") == (
        "the HDF5 library did not finish reading it within 2 s; the file is corrupt (it loops on it)")
    assert _hdf5.probe(path, reader="bad_readers:hog") == (
        "the HDF5 library needs more than 1 GiB to read it (MemoryError); the file is corrupt")
    assert _hdf5.probe(path, reader="bad_readers:die") == (
        "the HDF5 library crashed reading it (SIGABRT); the file is corrupt")
    # ordinary errors: the in-process reader reports them in its own words
    assert _hdf5.probe(path, reader="bad_readers:refuse") is None
    assert _hdf5.probe(path) is None
    assert _hdf5.probe(path, reader="stemroi.models.weights:_read_keras_layers") is None


def test_keras_h5_with_corrupt_structure_is_a_weights_error(tmp_path):
    """HDF5's own RuntimeErrors (bad symbol table node, ...) become WeightsError:
    every single-byte inversion of a small file is read or refused cleanly."""
    p = tmp_path / "w.h5"
    _h5(p, np.zeros(2, np.float32))
    raw = p.read_bytes()
    for i in range(0, len(raw), 7):
        b = bytearray(raw)
        b[i] ^= 0xFF
        fuzz_targets.keras_h5(bytes(b))


def test_model_file_claiming_a_huge_cvae_is_refused_before_allocating(tmp_path):
    """A 1 KB file whose config asks for a CVAE with a multi-GB dense layer."""
    from stemroi import BulkCVAE
    from stemroi._lib import _core
    from stemroi.io import save_model_file

    p = tmp_path / "bomb.stemroi"
    save_model_file(p, {"w": np.zeros(1, np.float32)},
                    {"architecture": "cvae", "config": {"latent_dim": 20, "variant": "study", "crop_size": 65536}})
    with pytest.raises(ValueError, match="crop_size must be a multiple of 8 in"):
        _core.CVAE.load(str(p))
    save_model_file(p, {"w": np.zeros(1, np.float32)},
                    {"architecture": "cvae", "config": {"latent_dim": 4096, "variant": "study", "crop_size": 1024}})
    with pytest.raises(ValueError, match="crop_size 1024 with latent_dim 4096 needs dense layers of up to"):
        BulkCVAE.load(p)


def test_cvae_config_with_float_sizes_is_refused(tmp_path):
    """1e55 as latent_dim reached an undefined float-to-int64 conversion (UBSan)."""
    from stemroi._lib import _core
    from stemroi.io import save_model_file

    p = tmp_path / "float.stemroi"
    for field, value in (("latent_dim", 1.1e55), ("crop_size", 64.0)):
        config = {"latent_dim": 4, "variant": "study", "crop_size": 64, field: value}
        save_model_file(p, {"w": np.zeros(1, np.float32)}, {"architecture": "cvae", "config": config})
        with pytest.raises(OSError, match=f"CVAE config '{field}' must be an integer"):
            _core.CVAE.load(str(p))


def test_model_file_header_length_bomb(tmp_path):
    from stemroi.io import load_model_file

    p = tmp_path / "len.stemroi"
    p.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(OSError, match="exceeds the limit"):
        load_model_file(p)


@pytest.mark.parametrize("loop", ["self", "cycle"])
def test_tiff_with_a_loop_in_its_page_chain_is_refused(tmp_path, loop):
    """A 500-byte TIFF whose last IFD points back made tifffile walk pages forever."""
    import io

    import tifffile

    from stemroi.io import read_image

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((2, 8, 8), np.uint8), photometric="minisblack", metadata=None)
    b = bytearray(buf.getvalue())
    first = struct.unpack_from("<I", b, 4)[0]
    next_of_first = first + 2 + 12 * struct.unpack_from("<H", b, first)[0]
    second = struct.unpack_from("<I", b, next_of_first)[0]
    at = next_of_first if loop == "self" else second + 2 + 12 * struct.unpack_from("<H", b, second)[0]
    struct.pack_into("<I", b, at, first)
    path = tmp_path / "loop.tif"
    path.write_bytes(bytes(b))
    with pytest.raises(OSError, match="loop in the page chain"):
        read_image(path)


def test_uncompressed_tiff_claiming_more_bytes_than_the_file_is_refused(tmp_path):
    """tifffile fills missing strips with zeros: a 221-byte file claiming a
    16842816 x 64 image allocated 6 GB before."""
    import tifffile

    from stemroi.io import read_image

    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((256, 256), np.uint8), photometric="minisblack", metadata=None)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(OSError, match=r"cut\.tif: cannot read TIFF \(header claims an uncompressed image of shape "
                                      r"\(256, 256\) \(65536 bytes\) but the file has 1000 bytes"):
        read_image(path)


def test_gif_truncated_inside_an_extension_block_is_an_oserror(tmp_path):
    """Found by the read_image fuzz target: a GIF whose trailer byte became an extension introducer
    made PIL's n_frames raise IndexError; it is a corrupt file (OSError naming the file)."""
    import io as _io

    from PIL import Image

    from stemroi.io import read_image

    buf = _io.BytesIO()
    Image.fromarray((np.arange(64).reshape(8, 8) * 3).astype(np.uint8)).save(buf, format="GIF")
    path = tmp_path / "cut.gif"
    path.write_bytes(buf.getvalue()[:-1] + b"!")
    with pytest.raises(OSError, match=r"cut\.gif.*corrupt or truncated.*IndexError"):
        read_image(path)


def _tiff_header_only(byteorder: str, big: bool, tags) -> bytes:
    """A TIFF holding one IFD with ``tags`` [(code, type, count, value)] and no image data."""
    bo = "<" if byteorder == "II" else ">"
    field = 8 if big else 4
    sizes = {3: 2, 4: 4}

    def inline(t, v):  # a value shorter than the field sits left-aligned in it
        return v << (8 * (field - sizes[t])) if bo == ">" else v

    if big:
        head = byteorder.encode() + struct.pack(bo + "HHHQ", 43, 8, 0, 16)
        ifd = struct.pack(bo + "Q", len(tags)) + b"".join(
            struct.pack(bo + "HHQQ", c, t, n, inline(t, v)) for c, t, n, v in tags)
        return head + ifd + struct.pack(bo + "Q", 0)
    head = byteorder.encode() + struct.pack(bo + "HI", 42, 8)
    ifd = struct.pack(bo + "H", len(tags)) + b"".join(
        struct.pack(bo + "HHII", c, t, n, inline(t, v)) for c, t, n, v in tags)
    return head + ifd + struct.pack(bo + "I", 0)


@pytest.mark.parametrize("byteorder", ["II", "MM"])
@pytest.mark.parametrize("big", [False, True])
def test_tiff_claiming_a_huge_page_is_refused_before_tifffile_parses_it(tmp_path, monkeypatch, byteorder, big):
    """Found by the read_image fuzz target: a 300-byte TIFF whose tags claim a huge page made
    tifffile (2023.2) reach 4.9 GB inside TiffFile(...), before stemroi's own checks."""
    import tifffile

    from stemroi.io import read_image

    def no_parse(*a, **k):
        raise AssertionError("tifffile must not see a file whose header is already refused")

    monkeypatch.setattr(tifffile, "TiffFile", no_parse)
    path = tmp_path / "huge.tif"
    # 100000 x 100000 x 3 samples, 8-bit, one strip at offset 8
    path.write_bytes(_tiff_header_only(byteorder, big, [(256, 4, 1, 100000), (257, 4, 1, 100000),
                                                        (258, 3, 1, 8), (277, 3, 1, 3), (273, 4, 1, 8)]))
    with pytest.raises(ValueError, match=r"huge\.tif: header claims shape \(1, 100000, 100000, 3\)"):
        read_image(path)


def test_tiff_tag_claiming_more_values_than_the_file_holds_is_refused(tmp_path, monkeypatch):
    import tifffile

    from stemroi.io import read_image

    monkeypatch.setattr(tifffile, "TiffFile", lambda *a, **k: pytest.fail("tifffile reached"))
    path = tmp_path / "bomb.tif"
    # StripOffsets claiming 2**30 LONG values (4 GiB) in a ~70-byte file
    path.write_bytes(_tiff_header_only("II", False, [(256, 3, 1, 8), (257, 3, 1, 8), (273, 4, 2**30, 8)]))
    with pytest.raises(OSError, match=r"bomb\.tif: cannot read TIFF \(tag 273 .* claims 1073741824 values"):
        read_image(path)


def test_valid_tiffs_pass_the_header_walk(tmp_path):
    """The pre-check must not refuse what tifffile writes: classic, BigTIFF, tiled, multi-page, RGB."""
    import tifffile

    from stemroi.io import read_image, read_stack

    img = (np.arange(96 * 80) % 251).astype(np.uint16).reshape(96, 80)
    for name, kw in {"classic": {}, "big": {"bigtiff": True}, "tiled": {"tile": (32, 32)},
                     "be": {"byteorder": ">"}}.items():
        path = tmp_path / f"{name}.tif"
        tifffile.imwrite(path, img, photometric="minisblack", metadata=None, **kw)
        np.testing.assert_array_equal(read_image(path), img.astype(np.float32))
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([img, img[::-1]]), photometric="minisblack", metadata=None)
    assert read_stack(path).shape == (2, 96, 80)


def test_compressed_tiff_claiming_more_than_its_bytes_can_decode_to_is_refused(tmp_path):
    """Found by the read_image fuzz target: a 226-byte deflate TIFF claiming 40000 x 40000 pixels
    (under the pixel budget) made tifffile allocate 1.6 GB to decode it; deflate expands at most 1032:1."""
    import tracemalloc
    import zlib

    from stemroi.io import read_image

    payload = zlib.compress(b"\0" * 4096)
    tags = [(256, 4, 1, 40000), (257, 4, 1, 40000), (258, 3, 1, 8), (259, 3, 1, 8), (273, 4, 1, 200),
            (278, 4, 1, 40000), (279, 4, 1, len(payload))]
    b = _tiff_header_only("II", False, tags)
    path = tmp_path / "inflated.tif"
    path.write_bytes(b + b"\0" * (200 - len(b)) + payload)
    tracemalloc.start()
    try:
        with pytest.raises(OSError, match=r"inflated\.tif: cannot read TIFF \(header claims an image \(compression 8\) "
                                          r"of shape \(40000, 40000\) \(1600000000 bytes\) but the file has 226 bytes, "
                                          r"which can decode to at most 233232 bytes"):
            read_image(path)
        assert tracemalloc.get_traced_memory()[1] < 50e6
    finally:
        tracemalloc.stop()


def test_highly_compressible_tiffs_still_read(tmp_path):
    """The expansion bound must not refuse real files: a blank (all-zero) frame compresses best."""
    import tifffile

    from stemroi.io import read_image

    blank = np.zeros((1024, 1024), np.uint16)
    for compression in ("zlib",):  # packbits needs imagecodecs to write
        path = tmp_path / f"blank_{compression}.tif"
        tifffile.imwrite(path, blank, photometric="minisblack", metadata=None, compression=compression,
                         **({"compressionargs": {"level": 9}} if compression == "zlib" else {}))
        np.testing.assert_array_equal(read_image(path), blank.astype(np.float32))


def test_tiff_size_tag_with_many_values_is_refused_before_tifffile(tmp_path, monkeypatch):
    """Found by the read_image fuzz target: an ImageWidth tag with 257 values made tifffile (2023.2)
    multiply the page shape out with a tuple in it, repeating the tuple into 8 GB inside TiffFile(...)."""
    import tifffile

    from stemroi.io import read_image

    monkeypatch.setattr(tifffile, "TiffFile", lambda *a, **k: pytest.fail("tifffile reached"))
    path = tmp_path / "width.tif"
    b = _tiff_header_only("II", False, [(256, 4, 257, 64), (257, 4, 1, 4194368), (258, 3, 1, 8)])
    path.write_bytes(b + b"\0" * 1100)
    with pytest.raises(OSError, match=r"width\.tif: cannot read TIFF \(tag ImageWidth at IFD offset 8 has 257 "
                                      r"values, expected 1\)"):
        read_image(path)
    # the fuzzer's next one: ImageWidth as a RATIONAL (read as a (numerator, denominator) tuple)
    b = _tiff_header_only("II", False, [(256, 5, 1, 64), (257, 4, 1, 4194368), (258, 3, 1, 8)])
    path.write_bytes(b + b"\0" * 1100)
    with pytest.raises(OSError, match=r"tag ImageWidth at IFD offset 8 has field type 5, expected an unsigned integer"):
        read_image(path)


def test_mrc_header_claiming_more_than_the_file_is_refused_before_rosettasciio(tmp_path):
    """Found by the read_image fuzz target: a 1 kB .mrc whose header claims ~10^9 x 10^9 values kept
    RosettaSciIO's chunking busy past the fuzzer's 30 s timeout."""
    pytest.importorskip("rsciio")
    import time

    from stemroi.io import read_image

    header = bytearray(1024)
    struct.pack_into("<4i", header, 0, 0x2D2C2B2A, 0x08000000, 1, 2)
    path = tmp_path / "huge.mrc"
    path.write_bytes(bytes(header) + b"\0" * 22)
    t = time.perf_counter()
    with pytest.raises(OSError, match=r"huge\.mrc: cannot read \.mrc file \(header claims 757869354 x 134217728 x 1 "
                                      r"values of mode 2 .* but the file has 1046 bytes"):
        read_image(path)
    assert time.perf_counter() - t < 5
    path.write_bytes(bytes(header[:500]))
    with pytest.raises(OSError, match="fewer than the 1024-byte MRC header"):
        read_image(path)
    struct.pack_into("<4i", header, 0, 8, 8, 1, 7)
    path.write_bytes(bytes(header) + b"\0" * 256)
    with pytest.raises(OSError, match=r"mode 7, expected one of \[0, 1, 2, 3, 4, 6, 12, 101\]"):
        read_image(path)
