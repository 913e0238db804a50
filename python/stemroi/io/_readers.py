"""Image readers: TIFF, PNG, JPEG, NPY and microscope formats -> float32 2-D.

Readers return the *stored* values as float32 (uint8 stays 0..255, uint16
0..65535); :func:`scale_to_unit` maps them to [0, 1]. Colour inputs become
grey by :func:`to_grey`: when all colour channels are equal (the usual case for STEM images saved
as RGB/RGBA) channel 0 is returned, so values stay exact; otherwise the ITU-R
BT.601 luminance ``0.299 R + 0.587 G + 0.114 B`` is used and a warning says so.
An alpha channel is dropped. 3-D stacks are never flattened: :func:`read_image`
refuses them and :func:`iter_frames` / :func:`read_stack` read them
explicitly.

Microscope formats (dm3, dm4, emd, mrc, ser, hspy) go through RosettaSciIO
(``pip install stemroi[hyperspy]``), imported lazily by
:mod:`stemroi.adapters.rosettasciio`.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

import numpy as np

__all__ = [
    "Calibration",
    "read_image",
    "read_image_with_calibration",
    "read_stack",
    "iter_frames",
    "scale_to_unit",
    "to_grey",
    "SUPPORTED_SUFFIXES",
    "StackOfFramesError",
]

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
NPY_SUFFIXES = (".npy",)
MICROSCOPE_SUFFIXES = (".dm3", ".dm4", ".emd", ".mrc", ".ser", ".hspy")
SUPPORTED_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES + NPY_SUFFIXES + MICROSCOPE_SUFFIXES

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
MIN_SIDE = 2
# a header claiming more pixels than this is refused before anything is allocated
# (the float32 image alone would need 8 GiB)
MAX_IMAGE_PIXELS = 2**31


class _TooLargeError(ValueError):
    """A file whose header claims more pixels than :data:`MAX_IMAGE_PIXELS` (or PIL's limit)."""


class _CorruptFileError(OSError):
    """A refusal already worded for the user, passed through the readers' catch-alls."""


def _check_pixel_budget(path: Path, shape) -> None:
    n = int(np.prod([int(d) for d in shape], dtype=object))
    if n > MAX_IMAGE_PIXELS:
        raise _TooLargeError(f"{path}: header claims shape {tuple(int(d) for d in shape)} ({n} values), more than "
                             f"the {MAX_IMAGE_PIXELS} a reader allocates (stemroi.io._readers.MAX_IMAGE_PIXELS)")


# length units the readers and adapters report, in metres
_UNIT_METRES = {"m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6,
                "nm": 1e-9, "a": 1e-10, "å": 1e-10, "angstrom": 1e-10, "pm": 1e-12, "inch": 0.0254}

#: units that say a file is not calibrated (ImageJ, HyperSpy, py4DSTEM write "pixel" with a size of 1)
PIXEL_UNITS = ("pixel", "pixels", "px", "pix")


@dataclass(frozen=True)
class Calibration:
    """Pixel size of an image (``None`` when the file does not say)."""

    pixel_size: Optional[float] = None
    unit: Optional[str] = None

    @property
    def known(self) -> bool:
        """A finite, positive pixel size is given."""
        return self.pixel_size is not None and bool(np.isfinite(self.pixel_size)) and self.pixel_size > 0

    def metres(self) -> Optional[float]:
        """The pixel size in metres (None when unknown or in a unit that is not a length)."""
        factor = _UNIT_METRES.get(self.unit.strip().lower()) if self.unit is not None else None
        return float(self.pixel_size) * factor if self.known and factor is not None else None

    def ratio_to(self, other: "Calibration") -> float:
        """``self.pixel_size / other.pixel_size`` in a common unit (ValueError when not comparable)."""
        if not (self.known and other.known):
            raise ValueError(f"pixel sizes {self} and {other} are not both known")
        a, b = self.metres(), other.metres()
        if a is not None and b is not None:
            return a / b
        if self.unit == other.unit:
            return float(self.pixel_size) / float(other.pixel_size)
        raise ValueError(f"pixel sizes in units {self.unit!r} and {other.unit!r} cannot be compared")

    def to_dict(self) -> dict:
        return {"pixel_size": None if self.pixel_size is None else float(self.pixel_size), "unit": self.unit}

    @classmethod
    def coerce(cls, value, name: str = "pixel_size") -> "Calibration":
        """A Calibration from None, a Calibration (or an object with ``pixel_size`` and
        ``unit``), a ``(value, unit)`` pair, a ``{"pixel_size", "unit"}`` dict or a number."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            size, unit = value.pixel_size, value.unit
        elif isinstance(value, dict):
            size, unit = value.get("pixel_size"), value.get("unit")
        elif hasattr(value, "pixel_size") and hasattr(value, "unit"):
            size, unit = value.pixel_size, value.unit
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            size, unit = value
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            size, unit = value, None
        else:
            raise TypeError(f"{name}: expected (value, unit), a stemroi.io.Calibration or None, got {value!r}")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(size) or size <= 0:
                raise ValueError(f"{name}: the pixel size must be a positive number, got {size!r}")
            size = float(size)
        if unit is not None and not isinstance(unit, str):
            raise TypeError(f"{name}: the unit must be a string, got {unit!r}")
        return cls(size, unit)


@dataclass
class _Raw:
    data: np.ndarray  # native dtype, axes (frames..., H, W[, C])
    calibration: Calibration
    channel_axis: bool  # last axis holds colour samples
    frame_ndim: int  # number of leading stack axes


def file_calibration(pixel_size, unit) -> "Calibration":
    """The :class:`Calibration` of what a file or signal says: a unit that names the pixel itself
    ("px") means it is not calibrated, not that its pixel is one "pixel" long (which no model's
    nm could be compared with). Every reader and adapter builds its calibration here."""
    if isinstance(unit, str) and unit.strip().lower() in PIXEL_UNITS:
        return Calibration()
    return Calibration(pixel_size, unit)


# --------------------------------------------------------------------------
# public API


class StackOfFramesError(ValueError):
    """:func:`read_image` was given a file of several frames (a ValueError, with the
    frame count and shape as attributes, so a caller can go on with :func:`iter_frames`;
    ``calibration`` is the file's :class:`Calibration`, which every frame shares)."""

    def __init__(self, path, n_frames: int, frame_shape: Tuple[int, ...],
                 calibration: Optional[Calibration] = None):
        self.path, self.n_frames, self.frame_shape = Path(path), int(n_frames), tuple(frame_shape)
        self.calibration = calibration if calibration is not None else Calibration()
        super().__init__(
            f"{path}: holds a stack of {n_frames} frames of shape {self.frame_shape}, not a single "
            "2-D image; read it frame by frame with stemroi.io.iter_frames(path) or as a whole "
            "with stemroi.io.read_stack(path)")

    def __reduce__(self):  # picklable (dask workers send errors back)
        return type(self), (self.path, self.n_frames, self.frame_shape, self.calibration)


def read_image(path) -> np.ndarray:
    """Read a single 2-D image as float32 (stored values, not rescaled).

    The result is a fresh writable array, except for a float32 2-D NPY file
    of at least 256 MiB (``STEMROI_MMAP_MIN_MB``): that one comes back as a
    read-only memory map of the file, checked for NaN/inf in row strips and
    never copied, so a frame larger than memory streams through
    :func:`stemroi.detect`, :func:`~stemroi.detection.anomaly_map` and
    :func:`~stemroi.detection.cluster_map` (see docs/reliability.md, memory).
    """
    return read_image_with_calibration(path)[0]


def read_image_with_calibration(path) -> Tuple[np.ndarray, Calibration]:
    """Read a single 2-D image as float32 plus its :class:`Calibration`."""
    image, calibration, _ = _read_image_full(path)
    return image, calibration


def read_stack(path) -> np.ndarray:
    """Read every frame of a file as a float32 ``(n, H, W)`` array (a 2-D image gives n=1)."""
    return np.stack(list(iter_frames(path)))


def iter_frames(path) -> Iterator[np.ndarray]:
    """Yield the 2-D frames of a stack (or the single image) as float32, one at a time.

    NPY stacks are memory-mapped, so only one frame is in memory at a time.
    """
    path = _check_path(path)
    raw = _read_raw(path)
    frames = raw.data
    if raw.frame_ndim == 0:
        frames = frames[None]
    else:
        lead = int(np.prod(frames.shape[: raw.frame_ndim]))
        frames = frames.reshape((lead,) + frames.shape[raw.frame_ndim:])
    for i in range(frames.shape[0]):
        yield _finish(path, np.asarray(frames[i]), raw.channel_axis, frame=i)


def scale_to_unit(image, mode: str = "dtype", source_dtype=None) -> np.ndarray:
    """Map an image to float32 in [0, 1].

    mode="dtype": divide by the range of the stored integer dtype (uint8 -> /255,
    uint16 -> /65535, signed types map their full range). ``source_dtype`` is the
    stored dtype; it defaults to ``image.dtype``. Since readers return float32,
    pass e.g. ``source_dtype=np.uint8`` for their output. Float data must already
    lie in [0, 1] (returned unchanged).
    mode="minmax": ``(x - min) / (max - min)``; a constant image gives zeros.
    """
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"scale_to_unit: unsupported dtype {arr.dtype} (expected integer or float pixels)")
    if mode == "minmax":
        x = arr.astype(np.float32, copy=False)
        if x.size == 0:
            raise ValueError(f"scale_to_unit: empty image of shape {arr.shape}")
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("scale_to_unit: image contains NaN or infinity")
        if hi <= lo:
            return np.zeros(arr.shape, np.float32)
        return ((x - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32)
    if mode != "dtype":
        raise ValueError(f"scale_to_unit: mode must be 'dtype' or 'minmax', got {mode!r}")
    src = np.dtype(source_dtype) if source_dtype is not None else arr.dtype
    if src.kind == "b":
        return arr.astype(np.float32)
    if src.kind in "iu":
        info = np.iinfo(src)
        lo, span = float(info.min), float(info.max) - float(info.min)
        x = (arr.astype(np.float64) - lo) / span
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"scale_to_unit: values outside the range of source_dtype {src} "
                f"({float(arr.min())}..{float(arr.max())})"
            )
        return x.astype(np.float32)
    if src.kind == "f":
        x = arr.astype(np.float32, copy=False)
        if x.size and (float(np.min(x)) < 0.0 or float(np.max(x)) > 1.0):
            raise ValueError(
                f"scale_to_unit: mode='dtype' on float data needs values in [0, 1], got "
                f"{float(np.min(x))}..{float(np.max(x))}; for stored integer values read as float32 "
                "pass source_dtype (e.g. np.uint8), or use mode='minmax'"
            )
        return x.copy() if x is arr else x
    raise TypeError(f"scale_to_unit: unsupported source dtype {src}")


# --------------------------------------------------------------------------
# internals


def _read_image_full(path) -> Tuple[np.ndarray, Calibration, np.dtype]:
    """(float32 image, calibration, stored dtype) of a single-image file."""
    path = _check_path(path)
    raw = _read_raw(path)
    data = raw.data
    if raw.frame_ndim:
        nframes = int(np.prod(data.shape[: raw.frame_ndim]))
        frame_shape = data.shape[raw.frame_ndim:]
        if nframes != 1:
            raise StackOfFramesError(path, nframes, tuple(frame_shape), raw.calibration)
        data = data.reshape(frame_shape)  # a stack of one frame (a (1, H, W) export) is that frame
    return _finish(path, np.asarray(data), raw.channel_axis), raw.calibration, raw.data.dtype


def _check_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a directory, not an image file")
    if p.stat().st_size == 0:
        raise OSError(f"{p}: file is empty (0 bytes)")
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{p}: unsupported file type {p.suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return p


#: leading bytes of the formats read here without RosettaSciIO -> reader
_MAGIC = ((b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"),
          (b"\x89PNG\r\n\x1a\n", "pil"), (b"\xff\xd8\xff", "pil"), (b"GIF87a", "pil"), (b"GIF89a", "pil"),
          (b"BM", "pil"), (b"\x93NUMPY", "npy"))


def _reader_by_content(path: Path) -> Optional[str]:
    with open(path, "rb") as f:
        head = f.read(8)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def _read_raw(path: Path) -> _Raw:
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES + PIL_SUFFIXES + NPY_SUFFIXES:
        # the bytes decide, not the name: exports and renamed files often carry the wrong suffix
        # (a PNG saved as .tif, a TIFF with its calibration saved as .png); unknown bytes go to the
        # suffix's reader, which says what is wrong with them
        named = "tiff" if suffix in TIFF_SUFFIXES else "pil" if suffix in PIL_SUFFIXES else "npy"
        kind = _reader_by_content(path)
        if kind is None and named == "npy":
            # np.load would take it for a pickle and blame allow_pickle: say what it is not
            raise OSError(f"{path}: not an NPY file (it does not start with the NPY header), corrupt or of "
                          "another format")
        kind = kind or named
        return {"tiff": _read_tiff, "pil": _read_pil, "npy": _read_npy}[kind](path)
    from ..adapters.rosettasciio import read_rsciio

    data, pixel_size, unit, frame_ndim = read_rsciio(path)
    return _Raw(data, file_calibration(pixel_size, unit), False, frame_ndim)


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf":
        raise TypeError(
            f"{path}: unsupported pixel dtype {dtype} (expected integer, bool or real float pixels)"
        )


# The most a compressed stream can expand: a claim beyond file size x ratio cannot
# be backed by the bytes present. PackBits: 128 bytes from 2; deflate: 1032:1;
# LZW: 4096-byte strings from 12-bit codes; the rest (JPEG, zstd, LZMA, ...) get a
# bound far above any real micrograph's ratio (noisy STEM data compresses 2-5:1).
_TIFF_MAX_EXPANSION = {1: 1, 32773: 64, 8: 1032, 32946: 1032, 5: 2731}
_TIFF_DEFAULT_EXPANSION = 65536


def _check_claimed_size(path: Path, tif, series) -> None:
    """The decoded image must fit what the file's bytes can hold: tifffile fills
    missing strips with zeros and allocates the whole claimed image first, so a
    221-byte uncompressed header, or a 226-byte deflate one, could claim gigabytes."""
    compression = int(tif.pages[0].compression)
    ratio = _TIFF_MAX_EXPANSION.get(compression, _TIFF_DEFAULT_EXPANSION)
    # stored bits, not decoded bytes: a bilevel (1-bit) page decodes to 8x its stored size
    bits = int(getattr(tif.pages[0], "bitspersample", 0) or 0) or 8 * np.dtype(series.dtype).itemsize
    claimed = int(np.ceil(np.prod(series.shape, dtype=np.float64) * bits / 8))
    size = path.stat().st_size
    if claimed > size * ratio:
        what = "an uncompressed image" if compression == 1 else f"an image (compression {compression})"
        limit = "" if compression == 1 else f", which can decode to at most {size * ratio} bytes"
        raise ValueError(f"header claims {what} of shape {tuple(series.shape)} ({claimed} bytes) but the file "
                         f"has {size} bytes{limit}: truncated or corrupt")


# TIFF field types and their sizes in bytes (TIFF 6.0 and BigTIFF)
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
                    16: 8, 17: 8, 18: 8}
# tags whose first value sizes the image or one tile of it
_TIFF_SIZE_TAGS = {256: "ImageWidth", 257: "ImageLength", 277: "SamplesPerPixel", 32997: "ImageDepth",
                   322: "TileWidth", 323: "TileLength", 32998: "TileDepth"}


def _check_tiff_ifds(path: Path) -> None:
    """Walk the IFD chain with plain reads and refuse, before tifffile parses a
    page, a file whose tags claim more than it can hold: tifffile (2023.2) sizes
    buffers from the tags in ``TiffFile(...)`` itself, so a 300-byte file claiming
    a huge page reached 4.9 GB before any check of ours could run."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(16)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            return  # not a TIFF header: tifffile refuses it with its own message
        bo = "<" if head[:2] == b"II" else ">"
        version = struct.unpack(bo + "H", head[2:4])[0]
        if version == 42:
            count_fmt, entry_fmt, next_fmt, entry_size, offset = "H", "HHII", "I", 12, struct.unpack(bo + "I", head[4:8])[0]
        elif version == 43 and len(head) >= 16:
            count_fmt, entry_fmt, next_fmt, entry_size, offset = "Q", "HHQQ", "Q", 20, struct.unpack(bo + "Q", head[8:16])[0]
        else:
            return  # other variants (NDPI, RAW): left to tifffile
        inline = struct.calcsize(entry_fmt) - struct.calcsize("HH" + entry_fmt[2])
        seen: set[int] = set()
        max_ifds = size // 18 + 1  # an IFD takes >= 18 bytes (count, one tag, next offset)
        while offset:
            if offset in seen or len(seen) >= max_ifds:
                raise ValueError(f"more than {len(seen)} pages in a {size}-byte file: loop in the page chain")
            seen.add(offset)
            fh.seek(offset)
            raw = fh.read(struct.calcsize(count_fmt))
            if len(raw) < struct.calcsize(count_fmt):
                return  # IFD offset past the end: tifffile reports the corrupt chain
            n_tags = struct.unpack(bo + count_fmt, raw)[0]
            if n_tags * entry_size > size:
                raise ValueError(f"IFD at offset {offset} claims {n_tags} tags, more than a {size}-byte file holds")
            entries = fh.read(n_tags * entry_size)
            values: dict[str, int] = {}
            for i in range(len(entries) // entry_size):
                code, dtype, count, value = struct.unpack(bo + entry_fmt, entries[i * entry_size:(i + 1) * entry_size])
                itemsize = _TIFF_TYPE_SIZES.get(dtype)
                if itemsize is None:
                    continue  # tifffile skips unknown field types
                if count * itemsize > max(size, inline):
                    raise ValueError(f"tag {code} at IFD offset {offset} claims {count} values of type {dtype} "
                                     f"({count * itemsize} bytes), more than the {size}-byte file holds")
                name = _TIFF_SIZE_TAGS.get(code)
                if name is not None and dtype not in (1, 3, 4, 16):
                    # a RATIONAL or other non-integer value is read as a tuple: the same repetition
                    raise ValueError(f"tag {name} at IFD offset {offset} has field type {dtype}, expected an "
                                     "unsigned integer (BYTE, SHORT, LONG or LONG8)")
                if name is not None and count != 1:
                    # tifffile (2023.2) multiplies the shape out: a tuple there repeats itself
                    # into gigabytes inside TiffFile(...) (a 1153-byte file reached 8 GB)
                    raise ValueError(f"tag {name} at IFD offset {offset} has {count} values, expected 1")
                if name is not None and itemsize <= inline:
                    # the first value sits left-aligned in the value field
                    packed = struct.pack(bo + entry_fmt[-1], value)[:itemsize]
                    fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[itemsize]
                    values[name] = struct.unpack(bo + fmt, packed)[0]
            page = [values.get(k, 1) for k in ("ImageDepth", "ImageLength", "ImageWidth", "SamplesPerPixel")]
            tile = [values.get(k, 1) for k in ("TileDepth", "TileLength", "TileWidth", "SamplesPerPixel")]
            for shape in (page, tile):
                _check_pixel_budget(path, shape)
            raw = fh.read(struct.calcsize(next_fmt))
            if len(raw) < struct.calcsize(next_fmt):
                return
            offset = struct.unpack(bo + next_fmt, raw)[0]


class _QuietWhileReading(logging.Filter):
    """Drops tifffile's log records in a thread that is inside :func:`_read_tiff`: on a corrupt
    file tifffile logs a line before it raises, and the error stemroi raises already says it all
    (the command line promises one line on stderr). Other threads' and callers' records pass."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_TIFF_LOG_FILTER = _QuietWhileReading()


def _read_tiff(path: Path) -> _Raw:
    for name in ("tifffile", "tifffile.tifffile"):  # the logger's name differs between tifffile releases
        logger = logging.getLogger(name)
        if _TIFF_LOG_FILTER not in logger.filters:
            logger.addFilter(_TIFF_LOG_FILTER)
    _TIFF_LOG_FILTER.active.on = True
    try:
        return _read_tiff_file(path)
    finally:
        _TIFF_LOG_FILTER.active.on = False


def _read_tiff_file(path: Path) -> _Raw:
    import tifffile

    try:
        _check_tiff_ifds(path)
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            _check_pixel_budget(path, series.shape)
            _check_claimed_size(path, tif, series)
            data = series.asarray()
            calibration = _tiff_calibration(tif)
    except _TooLargeError:
        raise
    except ValueError as exc:
        if "imagecodecs" in str(exc):
            # tifffile needs imagecodecs for LZW and friends; PIL decodes them natively
            return _read_pil(path)
        raise OSError(f"{path}: cannot read TIFF ({exc})") from None
    except Exception as exc:  # tifffile raises many types on corrupt input
        raise OSError(f"{path}: cannot read TIFF, the file is corrupt or truncated ({exc})") from None
    _check_dtype(path, data.dtype)
    # drop singleton axes, put colour samples last, everything else is a stack
    keep = [i for i, a in enumerate(axes) if data.shape[i] != 1 or a in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    channel_axis = False
    if "S" in axes:
        s = axes.index("S")
        data = np.moveaxis(data, s, -1)
        axes = axes.replace("S", "") + "S"
        channel_axis = True
    n_frame_axes = len(axes) - 2 - int(channel_axis)
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"{path}: TIFF series has axes {series.axes!r}, expected an image with Y and X axes")
    return _Raw(data, calibration, channel_axis, n_frame_axes)


_MAX_TAG_PIXEL_METRES = 1e-6


def _tiff_calibration(tif) -> Calibration:
    """Pixel size from ImageJ metadata or the resolution tags (resolution unit cm/inch)."""
    try:
        page = tif.pages[0]
        tags = page.tags
        ij = tif.imagej_metadata or {}
        xres = tags.get("XResolution")
        if xres is None:
            return Calibration()
        num, den = xres.value
        if num == 0:
            return Calibration()
        size = den / num
        unit = ij.get("unit")
        if unit:
            unit = {"micron": "um", "\\u00B5m": "um", "µm": "um"}.get(unit, unit)
            return file_calibration(float(size), str(unit))
        res_unit = tags.get("ResolutionUnit")
        code = int(res_unit.value) if res_unit is not None else 2
        # Resolution tags in inch or cm are mostly a print or screen density (72, 96, 300 dpi, ...),
        # which writers add to any image; a microscope's pixel is far below 1 um (25400 dpi), so
        # only such a density is read as a calibration (300 dpi would otherwise be an 85 um pixel)
        unit = {2: "inch", 3: "cm"}.get(code)
        if unit is not None and float(size) * _UNIT_METRES[unit] < _MAX_TAG_PIXEL_METRES:
            return Calibration(float(size), unit)
    except Exception:  # calibration is best effort; the image itself is what matters
        pass
    return Calibration()


# The most decoded bytes one byte of a PIL-read file can back: deflate (PNG) 1032:1,
# LZW (GIF, and TIFFs that tifffile hands over) 4096 pixels per 12-bit code; the rest
# (JPEG, BMP RLE with its skip escapes, ...) get a bound far above any micrograph's ratio.
_PIL_MAX_EXPANSION = {"PNG": 1032, "GIF": 2731, "TIFF": 2731}
_PIL_DEFAULT_EXPANSION = 4096


def _check_pil_claimed_size(path: Path, im, n_frames: int) -> None:
    """Refuse before decoding what the file's bytes cannot back. Every GIF frame is
    composed onto the full canvas, so a 250-byte GIF of ten 1 x 1 frames on a
    9000 x 9000 canvas decoded to 3.1 GB; PIL's own limit is per frame."""
    width, height = im.size
    _check_pixel_budget(path, (n_frames, height, width))
    bits = {"1": 1, "I": 32, "F": 32}.get(im.mode, 16 if im.mode.startswith("I;16") else 8 * len(im.getbands()))
    claimed = n_frames * width * height * bits // 8
    size = path.stat().st_size
    ratio = _PIL_MAX_EXPANSION.get(str(im.format), _PIL_DEFAULT_EXPANSION)
    if claimed > size * ratio:
        frames = f"{n_frames} frames of " if n_frames > 1 else ""
        raise _TooLargeError(f"{path}: header claims {frames}{width} x {height} pixels in mode {im.mode} "
                             f"({claimed} bytes decoded) but the {size}-byte {im.format} file can decode to at "
                             f"most {size * ratio} bytes: corrupt, or a decompression bomb")


def _check_pil_frame_on_canvas(path: Path, im, canvas: Tuple[int, int], index: int) -> None:
    """Refuse a frame placed off the image before it is decoded: Pillow 9.4 (Debian 12's) grows the
    image to a GIF frame past the canvas's edge and then crashes decoding it (a segmentation fault,
    found by fuzzing); Pillow >= 10 raises."""
    width, height = canvas
    for tile in im.tile or ():
        extents = tile[1]
        if extents is None:
            continue
        x0, y0, x1, y1 = extents
        if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
            raise _CorruptFileError(f"{path}: frame {index} is placed at {tuple(extents)}, outside the "
                                    f"{width} x {height} image: the file is corrupt")


def _read_pil(path: Path) -> _Raw:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            n_frames = getattr(im, "n_frames", 1)
            _check_pil_claimed_size(path, im, n_frames)
            canvas = im.size
            frames = []
            for i in range(n_frames):
                im.seek(i)
                _check_pil_frame_on_canvas(path, im, canvas, i)
                frames.append(_pil_to_array(im))
    except (_TooLargeError, _CorruptFileError):
        raise
    except Image.DecompressionBombError as exc:
        raise _TooLargeError(f"{path}: image too large to read safely ({exc}); raise PIL.Image.MAX_IMAGE_PIXELS "
                             "if the file is trusted") from None
    except UnidentifiedImageError:
        raise OSError(f"{path}: not a readable {path.suffix.lstrip('.').upper()} image (corrupt or wrong format)") from None
    except Exception as exc:
        # PIL's plugins raise many types on corrupt input (a GIF cut inside an extension block
        # fails in n_frames with IndexError, others with struct.error or KeyError), as tifffile does
        raise OSError(f"{path}: cannot read image, the file is corrupt or truncated "
                      f"({type(exc).__name__}: {exc})") from None
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{path}: frames of different shapes {sorted(shapes)}")
    data = frames[0] if n_frames == 1 else np.stack(frames)
    channel_axis = frames[0].ndim == 3
    return _Raw(data, Calibration(), channel_axis, int(n_frames > 1))


def _pil_to_array(im) -> np.ndarray:
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "PA":
        im = im.convert("LA")
    arr = np.array(im)
    if im.mode == "LA":
        arr = arr[..., 0]
    return arr


def _read_npy(path: Path) -> _Raw:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "object" in str(exc).lower():
            raise TypeError(f"{path}: NPY file holds Python objects (dtype object), not pixels") from None
        raise OSError(f"{path}: cannot read NPY file, it is corrupt or truncated ({exc})") from None
    except Exception as exc:
        raise OSError(f"{path}: cannot read NPY file, it is corrupt or truncated ({exc})") from None
    if isinstance(data, np.lib.npyio.NpzFile):  # pragma: no cover - suffix excludes .npz
        raise ValueError(f"{path}: is an NPZ archive, expected a single NPY array")
    _check_dtype(path, data.dtype)
    if data.ndim < 2:
        raise ValueError(f"{path}: NPY array of shape {data.shape} is not an image (expected 2-D)")
    channel_axis = data.ndim >= 3 and data.shape[-1] in (3, 4) and min(data.shape[-3:-1]) > 4
    frame_ndim = data.ndim - 2 - int(channel_axis)
    return _Raw(data, Calibration(), channel_axis, frame_ndim)


def _mmap_min_bytes() -> int:
    """Frames of at least this many bytes are returned memory-mapped (``STEMROI_MMAP_MIN_MB``, default 256)."""
    try:
        return int(float(os.environ.get("STEMROI_MMAP_MIN_MB", "256")) * 2**20)
    except ValueError:
        return 256 * 2**20


def _large_mapped_float32(data: np.ndarray) -> Optional[np.ndarray]:
    """``data`` itself when it is a large 2-D float32 C-contiguous view of a read-only memory map.

    Such a frame (an NPY file, e.g. 16k x 16k = 1 GiB) is returned without a
    copy: the detectors cut it one batch of tiles at a time, so it never has to
    be resident whole. Smaller frames and other dtypes are copied to float32.
    """
    from ..preprocessing.grid import _read_only_map

    if (data.dtype != np.float32 or data.ndim != 2 or not data.flags.c_contiguous
            or data.nbytes < _mmap_min_bytes() or _read_only_map(data) is None):
        return None
    return data


def _check_finite_in_strips(image: np.ndarray, where: str) -> None:
    """The NaN / infinity check of :func:`_finish`, one row strip at a time (pages released)."""
    from ..preprocessing.grid import _iter_strips

    n_nan = n_inf = 0
    for _, strip in _iter_strips(image):
        n_nan += int(np.isnan(strip).sum())
        n_inf += int(np.isinf(strip).sum())
    if n_nan or n_inf:
        raise ValueError(
            f"{where}: {n_nan} NaN and {n_inf} infinite pixel(s) of {image.size}; "
            "clean the image (e.g. np.nan_to_num) before using it"
        )


def _finish(path: Path, data: np.ndarray, channel_axis: bool, frame: Optional[int] = None) -> np.ndarray:
    """Colour -> grey, dtype and content checks, float32 output."""
    where = f"{path}" if frame is None else f"{path} (frame {frame})"
    _check_dtype(path, data.dtype)
    if channel_axis:
        data = to_grey(data, where=where)
    if data.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D image, got shape {data.shape}")
    h, w = data.shape
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"{where}: image is {h}x{w} pixels; at least {MIN_SIDE}x{MIN_SIDE} needed")
    mapped = _large_mapped_float32(data)
    if mapped is not None:
        _check_finite_in_strips(mapped, where)
        return mapped
    out = np.array(data, dtype=np.float32)  # always a fresh, writable, C-contiguous copy
    if out.dtype.kind == "f" and data.dtype.kind == "f":
        n_nan = int(np.isnan(out).sum())
        n_inf = int(np.isinf(out).sum())
        if n_nan or n_inf:
            raise ValueError(
                f"{where}: {n_nan} NaN and {n_inf} infinite pixel(s) of {out.size}; "
                "clean the image (e.g. np.nan_to_num) before using it"
            )
    elif not np.isfinite(out).all():  # huge float64 -> inf in float32
        raise ValueError(f"{where}: pixel values overflow float32")
    return out


def to_grey(image, *, where: str = "image") -> np.ndarray:
    """The colour -> grey rule of every stemroi entry point.

    ``(H, W)`` is returned as it is. ``(..., C)`` with C = 1 (grey), 2 (grey +
    alpha), 3 (RGB) or 4 (RGBA): alpha is dropped; when R = G = B everywhere channel 0
    is returned (exact values, stored dtype); otherwise the ITU-R BT.601
    luminance ``0.299 R + 0.587 G + 0.114 B`` (float64) with a ``UserWarning``
    naming ``where``. Any other number of channels raises ValueError.
    """
    data = np.asarray(image)
    if data.ndim == 2:
        return data
    if data.ndim < 2:
        raise ValueError(f"{where}: expected a 2-D image or a colour image (H, W, C), got shape {data.shape}")
    c = data.shape[-1]
    if c in (1, 2):  # grey, grey + alpha
        return data[..., 0]
    if c not in (3, 4):
        raise ValueError(f"{where}: shape {data.shape} is not a 2-D image, and its last axis is not 1, 2 "
                         "(grey+alpha), 3 (RGB) or 4 (RGBA) colour channels")
    rgb = data[..., :3]
    r = rgb[..., 0]
    if np.array_equal(r, rgb[..., 1]) and np.array_equal(r, rgb[..., 2]):
        return r  # R = G = B: exact
    _warn_user(
        f"{where}: colour image with unequal channels converted to grey with luminance weights "
        f"{LUMA_WEIGHTS} (R, G, B)"
    )
    w = np.asarray(LUMA_WEIGHTS, np.float64)
    return rgb.astype(np.float64) @ w


def _warn_user(message: str) -> None:
    """Warn at the first caller outside the stemroi package (depth varies by entry point)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)
