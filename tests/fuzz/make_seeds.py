"""Write the seed corpora of the fuzz targets into a folder (one sub-folder per
target), generated at run time and never committed:

    python tests/fuzz/make_seeds.py OUT_DIR

Images come from the real reference data (STEMROI_DATA_DIR, default
../shared/data): a few TIFF patches, a JPEG, a .npy crop and header, and the
same pixels re-encoded as PNG/BMP/GIF; synthetic images when the data is
absent. Microscope formats (read through RosettaSciIO; see microscope_seeds):
a single-image and a two-image-series TIA .ser built by hand
(tests/_malformed_files.py), a hand-built MRC2014 .mrc, and a .hspy and a
Berkeley (NCEM) .emd written by HyperSpy, which are left out with a note when
HyperSpy is not installed. Velox .emd (no writer; its layout of JSON metadata
is too involved to build by hand here) and DM3/DM4 (no writer exists) have no
seeds. Model files are written by stemroi itself (format 2 with hashes and a
version-1 copy without, which lets the fuzzer reach the structural checks
behind the hash), including a small CVAE for the C++ load path. Weight files
are small torch.save (zip and legacy) and Keras-layout .h5 files.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import sys
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("STEMROI_DATA_DIR", ROOT.parent / "shared" / "data"))


def _put(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def without_hashes(raw: bytes) -> bytes:
    """The same model file as format_version 1 (no hash fields)."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header["__metadata__"]
    meta.pop("tensor_sha256")
    meta.pop("header_sha256")
    meta["format_version"] = "1"
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + raw[8 + n:]


def _malformed_files():
    """tests/_malformed_files.py, imported by path (it is no package module)."""
    path = Path(__file__).resolve().parents[1] / "_malformed_files.py"
    spec = importlib.util.spec_from_file_location("_stemroi_seed_malformed_files", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_pixels() -> np.ndarray:
    """The 24 x 32 float32 image of the .mrc/.hspy/.emd seeds (not square, so a
    transposed read shows)."""
    return np.arange(24 * 32, dtype=np.float32).reshape(24, 32) * 0.25 - 3.0


def mrc_image(image: np.ndarray, pixel_angstrom: float = 1.0) -> bytes:
    """A minimal MRC2014 file (little-endian, mode 2 float32, nz = 1, no extended
    header) holding ``image`` (rows = ny)."""
    a = np.ascontiguousarray(image, dtype="<f4")
    ny, nx = a.shape
    h = bytearray(1024)
    struct.pack_into("<10i", h, 0, nx, ny, 1, 2, 0, 0, 0, nx, ny, 1)  # sizes, mode, starts, sampling
    struct.pack_into("<6f", h, 40, nx * pixel_angstrom, ny * pixel_angstrom, pixel_angstrom, 90, 90, 90)
    struct.pack_into("<3i3f2i", h, 64, 1, 2, 3, a.min(), a.max(), a.mean(), 0, 0)  # axes, dmin/max/mean, ispg, nsymbt
    h[104:108] = b"MRCO"  # exttyp
    struct.pack_into("<i", h, 108, 20140)  # nversion
    h[208:216] = b"MAP " + bytes([0x44, 0x44, 0, 0])  # map, machine stamp (little-endian)
    struct.pack_into("<fi", h, 216, a.std(), 1)  # rms, nlabl
    h[224:304] = b"stemroi fuzz seed".ljust(80)
    return bytes(h) + a.tobytes()


def _hyperspy_files(image: np.ndarray, pixel_nm: float) -> Dict[str, bytes]:
    """``image`` saved by HyperSpy as .hspy and as .emd (Berkeley/NCEM variant):
    {suffix: bytes}, empty (with a note) when HyperSpy is not installed."""
    import tempfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import hyperspy.api as hs
    except ImportError as exc:
        print(f"make_seeds: no .hspy/.emd seeds, HyperSpy is not installed ({exc})", file=sys.stderr)
        return {}
    s = hs.signals.Signal2D(image)
    for axis in s.axes_manager.signal_axes:
        axis.scale, axis.units = pixel_nm, "nm"
    files = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for suffix in (".hspy", ".emd"):
            path = Path(tmp) / f"image{suffix}"
            s.save(path)
            files[suffix] = path.read_bytes()
    return files


def microscope_seeds() -> Dict[str, Tuple[str, bytes, np.ndarray, Optional[float]]]:
    """The seeds of the formats read through RosettaSciIO: {file name: (suffix, file
    bytes, the float32 frames stemroi.io.read_stack gives back, the pixel size in nm)}.
    The .ser and .mrc files are built here byte by byte; .hspy and .emd need HyperSpy."""
    mf = _malformed_files()

    def ser_frames(ax, ay, n):  # TIA stores rows bottom-up: RosettaSciIO flips them
        return np.repeat(np.flipud(np.arange(ax * ay, dtype=np.float32).reshape(ay, ax))[None], n, axis=0)

    image = seed_pixels()
    seeds = {
        "image.ser": (".ser", mf.ser_image_series(ax=16, ay=12), ser_frames(16, 12, 1), 0.1),
        "series.ser": (".ser", mf.ser_image_series(scan=(2,), ax=16, ay=16, stored=2), ser_frames(16, 16, 2), 0.1),
        "image.mrc": (".mrc", mrc_image(image, pixel_angstrom=1.0), image[None], 0.1),
    }
    for suffix, data in _hyperspy_files(image, pixel_nm=0.1).items():
        seeds[f"image{suffix}"] = (suffix, data, image[None], 0.1)
    return seeds


def image_seeds(out: Path) -> None:
    from PIL import Image

    from stemroi.io import SUPPORTED_SUFFIXES

    def put(suffix: str, name: str, data: bytes) -> None:
        _put(out, name, bytes([SUPPORTED_SUFFIXES.index(suffix)]) + data)

    tifs = sorted((DATA / "ayyubi-stem-defects" / "CdTe").glob("*.tif"))[:2]
    tifs += sorted((DATA / "ayyubi-stem-defects" / "STO").glob("*.tif"))[:1]
    for p in tifs:
        put(".tif", f"{p.parent.name}_{p.name}", p.read_bytes())
    if tifs:
        pixels = np.asarray(Image.open(tifs[0]))
    else:
        pixels = (np.add.outer(np.arange(64), np.arange(64)) % 256).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="TIFF")
        put(".tif", "synthetic.tif", buf.getvalue())
    grey = np.asarray(Image.fromarray(pixels).convert("L"))[:32, :32]
    for suffix, fmt in ((".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"), (".gif", "GIF")):
        buf = io.BytesIO()
        Image.fromarray(grey).save(buf, format=fmt)
        put(suffix, f"patch{suffix}", buf.getvalue())
    jpg = DATA / "prifti-sto-cvae" / "20111206DF.jpg"
    if jpg.exists():
        put(".jpg", "frame.jpg", jpg.read_bytes())
    npys = sorted((DATA / "prifti-sto-cvae").glob("*.npy"))
    crop = np.load(npys[0], mmap_mode="r")[0] if npys else grey.astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(np.squeeze(crop)))
    put(".npy", "crop.npy", buf.getvalue())
    if npys:
        put(".npy", "header_only.npy", npys[0].read_bytes()[:128])
    for name, (suffix, data, _, _) in microscope_seeds().items():
        put(suffix, name, data)


def model_seeds(out: Path, cvae_out: Path, tmp: Path) -> None:
    from stemroi import BulkCVAE
    from stemroi.io import save_model_file

    rng = np.random.default_rng(0)
    p = tmp / "m.stemroi"
    save_model_file(p, {"conv.weight": rng.standard_normal((2, 1, 3, 3)).astype(np.float32),
                        "conv.bias": rng.standard_normal(2), "steps": np.array(3, np.int64),
                        "mask": np.array([True, False]), "empty": np.zeros((0, 2), np.float16),
                        "bytes": np.arange(5, dtype=np.uint8)},
                    {"architecture": "toy", "config": {"k": 3, "names": ["a", "b"]}})
    raw = p.read_bytes()
    _put(out, "tensors_v2.stemroi", raw)
    _put(out, "tensors_v1.stemroi", without_hashes(raw))
    _put(cvae_out, "tensors_v1.stemroi", without_hashes(raw))
    img = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cvae = BulkCVAE(latent_dim=1, epochs=1, batch_size=4, crop_size=16, n_crops=8, calibration_fraction=0.25,
                        detector="energy", random_state=0, n_threads=1).fit(img)
    p = tmp / "cvae.stemroi"
    cvae.model_.save(os.fspath(p), {})  # the network alone: the smallest CVAE file
    raw = p.read_bytes()
    _put(cvae_out, "cvae_v2.stemroi", raw)
    _put(cvae_out, "cvae_v1.stemroi", without_hashes(raw))
    # A CVAE header over tiny tensors: mutations reach the config parser and the
    # module's name/shape matching without carrying 2 MB of weights each time.
    save_model_file(p, {"encoder.0.weight": np.zeros((2, 1, 3, 3), np.float32)},
                    {"architecture": "cvae", "config": {"latent_dim": 1, "variant": "study", "crop_size": 16}})
    _put(cvae_out, "cvae_config_v1.stemroi", without_hashes(p.read_bytes()))


def weight_seeds(torch_out: Path, h5_out: Path, tmp: Path) -> None:
    import h5py
    import torch

    state = {"features.0.weight": torch.arange(12, dtype=torch.float32).reshape(2, 2, 3, 1),
             "features.0.bias": torch.zeros(2), "features.1.num_batches_tracked": torch.tensor(4)}
    for name, zipped in (("state_zip.pth", True), ("state_legacy.pth", False)):
        buf = io.BytesIO()
        torch.save(state, buf, _use_new_zipfile_serialization=zipped)
        _put(torch_out, name, buf.getvalue())
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(3)}}, buf)
    _put(torch_out, "nested.pth", buf.getvalue())

    p = tmp / "w.h5"
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1", b"block1_conv1", b"block1_pool"])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name in ("input_1", "block1_pool"):
            f.create_group(name).attrs["weight_names"] = np.array([], dtype="S1")
        g = f.create_group("block1_conv1")
        names = ["block1_conv1/kernel:0", "block1_conv1/bias:0"]
        g.attrs["weight_names"] = np.array([n.encode() for n in names])
        g.create_dataset(names[0], data=np.ones((3, 3, 3, 2), np.float32))
        g.create_dataset(names[1], data=np.zeros(2, np.float32))
    _put(h5_out, "keras2.h5", p.read_bytes())


def main(out_dir: str) -> None:
    import tempfile

    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        image_seeds(out / "read_image")
        model_seeds(out / "model_file", out / "cvae_load", Path(tmp))
        weight_seeds(out / "torch_weights", out / "keras_h5", Path(tmp))
    # The C++ model-file parser takes the same seeds as the Python loader.
    for f in (out / "model_file").iterdir():
        _put(out / "fuzz_model_file", f.name, f.read_bytes())
    (out / "cvae_load").rename(out / "fuzz_cvae_load")
    for d in sorted(out.iterdir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds, {sum(f.stat().st_size for f in d.iterdir())} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    main(sys.argv[1])
