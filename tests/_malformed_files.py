"""Builders of malformed files for tests/test_malformed.py: broken images in
every supported format and broken model files. Every builder is deterministic
and writes a small file (the "bombs" only claim huge sizes in their headers)."""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Callable, Dict

import numpy as np

BOMB_SIDE = 100_000  # 10^10 pixels claimed: far beyond any reader's budget


def _rng(tag: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(tag.encode()))


def random_bytes(tag: str, n: int = 4096) -> bytes:
    return _rng(tag).integers(0, 256, n, dtype=np.uint8).tobytes()


def _image() -> np.ndarray:
    return (np.arange(32 * 32).reshape(32, 32) * 7 % 251).astype(np.uint8)


# -- valid files, to truncate -------------------------------------------------------------
def valid_tif() -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, _image())
    return buf.getvalue()


def _pil(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_image()).save(buf, format=fmt)
    return buf.getvalue()


def valid_png() -> bytes:
    return _pil("PNG")


def valid_jpg() -> bytes:
    return _pil("JPEG")


def valid_npy(array=None) -> bytes:
    buf = io.BytesIO()
    np.save(buf, _image() if array is None else array, allow_pickle=True)
    return buf.getvalue()


# -- bombs: tiny files whose headers claim BOMB_SIDE x BOMB_SIDE pixels ---------------------------
def bomb_tif() -> bytes:
    """Little-endian baseline TIFF, one uncompressed strip of 8-bit pixels."""
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 4, BOMB_SIDE), (257, 4, BOMB_SIDE), (258, 3, 8), (259, 3, 1), (262, 3, 1),
        (273, 4, 0), (277, 3, 1), (278, 4, BOMB_SIDE), (279, 4, 64),
    ]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries)))
    for tag, typ, value in entries:
        if tag == 273:
            value = data_offset
        packed = struct.pack("<H", value) + b"\x00\x00" if typ == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, 1) + packed
    out += struct.pack("<I", 0) + bytes(64)
    return bytes(out)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png() -> bytes:
    ihdr = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(bytes(1024)))
            + _png_chunk(b"IEND", b""))


def bomb_jpg() -> bytes:
    """A valid JPEG with the frame size in its SOF0 header patched to 65500 x 65500."""
    data = bytearray(valid_jpg())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65500, 65500)
    return bytes(data)


def bomb_npy() -> bytes:
    """An NPY header claiming a (BOMB_SIDE, BOMB_SIDE) float64 array, with 64 bytes of data."""
    header = repr({"descr": "<f8", "fortran_order": False, "shape": (BOMB_SIDE, BOMB_SIDE)}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(64)


# -- format-specific oddities ----------------------------------------------------------------
def ser_image_series(scan=(1,), ax: int = 8, ay: int = 8, stored: int = 1) -> bytes:
    """A TIA SER file (version 0x0210) of ``ax`` x ``ay`` float32 images at the positions of ``scan``
    (one dimension per entry), ``stored`` of them written; pixel values 0, 1, 2, ... in file order."""
    def dim(n):
        return struct.pack("<IddII", n, 0.0, 1.0, 0, 0) + struct.pack("<I", 0)

    head = struct.pack("<HHHIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, int(np.prod(scan)), stored)
    head += struct.pack("<II", 0, len(scan)) + b"".join(dim(n) for n in scan)
    offsets_at = len(head)
    head = head[:22] + struct.pack("<I", offsets_at) + head[26:]
    element = (struct.pack("<ddIddIHII", 0.0, 1e-10, 0, 0.0, 1e-10, 0, 7, ax, ay)
               + np.arange(ax * ay, dtype=np.float32).tobytes())
    start = offsets_at + 8 * stored
    data_offsets = [start + i * len(element) for i in range(stored)]
    tag_offsets = [start + stored * len(element) + 8 * i for i in range(stored)]
    return (head + struct.pack(f"<{stored}I", *data_offsets) + struct.pack(f"<{stored}I", *tag_offsets)
            + element * stored + struct.pack("<HHI", 0x4152, 0, 0) * stored)


def ser_scan_bomb() -> bytes:
    """416 bytes claiming a 4000 x 4000 scan of 8 x 8 images (4 GB once filled), one stored."""
    return ser_image_series(scan=(4000, 4000))


def ser_truncated() -> bytes:
    data = ser_image_series(stored=3)
    return data[: len(data) - 200]


def hspy_bad_attribute_datatype() -> bytes:
    """A HyperSpy .hspy file whose boolean ``navigate`` attribute has a datatype message of an
    unknown version (one byte changed, as the fuzzer found). With HDF5 1.14.2 (h5py 3.11) the
    failed attribute read left the file in a state in which closing it was a segmentation fault."""
    import tempfile
    import warnings

    import hyperspy.api as hs

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "image.hspy"
        hs.signals.Signal2D(np.arange(24 * 32, dtype=np.float32).reshape(24, 32)).save(path)
        raw = bytearray(path.read_bytes())
    # the attribute's enum datatype (class 8, 2 members, 1 byte), then its base type: version 1, fixed-point
    start = raw.find(b"\x18\x02\x00\x00\x01\x00\x00\x00\x10\x08\x00", raw.find(b"navigate"))
    if start < 0:
        raise RuntimeError("this HyperSpy / h5py version writes 'navigate' differently; update the builder")
    raw[start + 8] = 0xF0  # base type version 15: "bad version number for datatype message"
    return bytes(raw)


def gif_frame_bomb(side: int = 9000, n_frames: int = 10) -> bytes:
    """A 250-byte GIF: ``n_frames`` frames of 1 x 1 pixel on a ``side`` x ``side`` canvas.
    Each frame decodes to the whole canvas (3.1 GB resident before the size check)."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    for _ in range(n_frames):
        out += b"\x21\xf9\x04\x04\x00\x00\x00\x00"  # graphic control: no disposal
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return bytes(out + b"\x3b")


def npy_pickled_object() -> bytes:
    return valid_npy(np.array([{"a": 1}, None], dtype=object))


def npy_bad_header() -> bytes:
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (oops)}" + b" " * 5 + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(64)


def npy_1d() -> bytes:
    return valid_npy(np.arange(16, dtype=np.float32))


def npy_complex() -> bytes:
    return valid_npy(np.ones((8, 8), np.complex64))


def npy_strings() -> bytes:
    return valid_npy(np.full((8, 8), "px"))


def npy_nan() -> bytes:
    return valid_npy(np.full((8, 8), np.nan, np.float32))


def npy_tiny() -> bytes:
    return valid_npy(np.ones((1, 8), np.float32))


VALID: Dict[str, Callable[[], bytes]] = {"tif": valid_tif, "png": valid_png, "jpg": valid_jpg, "npy": valid_npy}
BOMBS: Dict[str, Callable[[], bytes]] = {"tif": bomb_tif, "png": bomb_png, "jpg": bomb_jpg, "npy": bomb_npy}
MAGIC = {"tif": b"II*\x00", "png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff\xe0", "npy": b"\x93NUMPY\x01\x00",
         "dm3": b"\x00\x00\x00\x03", "dm4": b"\x00\x00\x00\x04", "emd": b"\x89HDF\r\n\x1a\n"}


def image_file_bytes(fmt: str, kind: str) -> bytes:
    """The bytes of a malformed ``fmt`` file of the given ``kind``."""
    tag = f"{fmt}/{kind}"
    if kind == "random":
        return random_bytes(tag)
    if kind == "zeros":
        return bytes(1024)
    if kind == "magic_then_random":
        return MAGIC[fmt] + random_bytes(tag, 2048)
    if kind == "magic_only":
        return MAGIC[fmt]
    if kind == "truncated_half":
        data = VALID[fmt]()
        return data[: len(data) // 2]
    if kind == "truncated_header":
        return VALID[fmt]()[:20]
    if kind == "bomb":
        return BOMBS[fmt]()
    if kind == "other_format":  # a valid file of another format under this suffix
        return VALID["npy" if fmt != "npy" else "png"]()
    if kind == "text":
        return b"this is not an image\n" * 8
    builder = globals().get(f"{fmt}_{kind}")
    if builder is None:
        raise KeyError(tag)
    return builder()


# -- model files ---------------------------------------------------------------------------------
def model_file_bytes(valid: bytes, kind: str) -> bytes:
    """``valid`` (a model file: u64 header length, JSON header, data) broken in one way."""
    (hlen,) = struct.unpack_from("<Q", valid)
    if kind == "random":
        return random_bytes("model")
    if kind == "zeros":
        return bytes(4096)
    if kind == "too_short":
        return valid[:5]
    if kind == "truncated_header":
        return valid[: 8 + hlen // 2]
    if kind == "truncated_data":
        return valid[: len(valid) - max(1, (len(valid) - 8 - hlen) // 2)]
    if kind == "header_length_huge":
        return struct.pack("<Q", 2**63 - 1) + valid[8:]
    if kind == "header_length_past_end":
        return struct.pack("<Q", len(valid)) + valid[8:]
    if kind == "header_not_json":
        return valid[:8] + b"\x00" * hlen + valid[8 + hlen:]
    if kind == "header_random":
        return valid[:8] + random_bytes("model-header", hlen) + valid[8 + hlen:]
    if kind in ("offsets_out_of_range", "shape_mismatch", "bad_dtype"):
        header = json.loads(valid[8:8 + hlen])
        meta = header.get("__metadata__", {})
        # without its hashes (as a file of format version 1) the broken header reaches the structural checks
        for key in ("tensor_sha256", "header_sha256"):
            meta.pop(key, None)
        if "format_version" in meta:
            meta["format_version"] = "1"
        name = next(k for k in header if k != "__metadata__")
        if kind == "offsets_out_of_range":
            header[name]["data_offsets"] = [0, 10**12]
        elif kind == "shape_mismatch":
            header[name]["shape"] = [d + 1 for d in header[name]["shape"]] or [2]
        else:
            header[name]["dtype"] = "Q99"
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        return struct.pack("<Q", len(raw)) + raw + valid[8 + hlen:]
    raise KeyError(kind)


MODEL_KINDS = ("random", "zeros", "too_short", "truncated_header", "truncated_data", "header_length_huge",
               "header_length_past_end", "header_not_json", "header_random", "offsets_out_of_range",
               "shape_mismatch", "bad_dtype")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
