"""Microscope formats (dm3, dm4, emd, mrc, ser, hspy) through RosettaSciIO.

RosettaSciIO is optional (``pip install stemroi[hyperspy]``) and imported
only when such a file is read. This module returns the raw array and the
calibration; :mod:`stemroi.io` does the checks and the float32 conversion.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from .. import _hdf5

PLUGINS = {
    ".dm3": "digitalmicrograph",
    ".dm4": "digitalmicrograph",
    ".emd": "emd",
    ".mrc": "mrc",
    ".ser": "tia",
    ".hspy": "hspy",
}


def _import_plugin(path: Path):
    try:
        import rsciio  # noqa: F401
    except ImportError:
        raise ImportError(
            f"{path}: reading {path.suffix} files needs RosettaSciIO, which is not installed; "
            "install it with `pip install stemroi[hyperspy]` (or `pip install rosettasciio`)"
        ) from None
    return importlib.import_module(f"rsciio.{PLUGINS[path.suffix.lower()]}")


def _unit(value) -> Optional[str]:
    if isinstance(value, str) and value and value not in ("<undefined>", "Undefined"):
        return {"µm": "um", "\u00b5m": "um"}.get(value, value)
    return None


# bytes per value of the MRC modes (MRC2014; 101: 4-bit, two values per byte)
_MRC_MODE_BYTES = {0: 1.0, 1: 2.0, 2: 4.0, 3: 4.0, 4: 8.0, 6: 2.0, 12: 2.0, 101: 0.5}


def _check_mrc_header(path: Path) -> None:
    """Refuse an MRC header whose sizes the file cannot hold before RosettaSciIO
    sees it: its reader chunks the claimed volume, and a 1 kB file claiming
    ~10^9 x 10^9 values kept it busy for longer than the fuzzer's 30 s limit."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(1024)
    if len(head) < 1024:
        raise ValueError(f"the file has {size} bytes, fewer than the 1024-byte MRC header")
    bo = ">" if head[212] == 0x11 else "<"  # machine stamp 0x11 0x11: big-endian
    nx, ny, nz, mode = struct.unpack_from(bo + "4i", head, 0)
    nsymbt = struct.unpack_from(bo + "i", head, 92)[0]
    if min(nx, ny, nz) < 1 or nsymbt < 0:
        raise ValueError(f"header gives sizes (nx, ny, nz) = ({nx}, {ny}, {nz}) and extended header {nsymbt} bytes; "
                         "expected positive sizes")
    per_value = _MRC_MODE_BYTES.get(mode)
    if per_value is None:
        raise ValueError(f"header gives mode {mode}, expected one of {sorted(_MRC_MODE_BYTES)}")
    claimed = int(nx * ny * nz * per_value)
    if 1024 + nsymbt + claimed > size:
        raise ValueError(f"header claims {nx} x {ny} x {nz} values of mode {mode} ({claimed} bytes after "
                         f"{1024 + nsymbt} header bytes) but the file has {size} bytes: truncated or corrupt")


# bytes per value of the SER data types (TIA), as RosettaSciIO reads them
_SER_TYPE_BYTES = {1: 1, 2: 2, 3: 4, 4: 1, 5: 2, 6: 4, 7: 4, 8: 8, 9: 8, 10: 16}
# an acquisition stopped early is filled up (NaN) to the scan it claims: up to this
# many times the file's size is read, more is refused
_SER_MAX_FILL = 64


def _check_ser_header(path: Path) -> None:
    """Refuse a SER (TIA) header whose claims the file cannot back, before RosettaSciIO
    allocates them: it fills a scan whose acquisition stopped early up to the size its
    dimensions claim, so a 416-byte file claiming 1000 x 1000 positions of 8 x 8 images
    took 290 MB (and 4000 x 4000, 4 GB)."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        def read(offset, fmt):
            fh.seek(offset)
            raw = fh.read(struct.calcsize(fmt))
            if len(raw) < struct.calcsize(fmt):
                raise ValueError(f"the header ends at byte {size} inside a field at offset {offset}: truncated")
            return struct.unpack(fmt, raw)

        version, type_id, _, total, valid = read(4, "<HIIII")
        wide = version > 528
        offsets_at, n_dims = read(22, "<QI" if wide else "<II")
        pos = 34 if wide else 30
        dims = []
        for _ in range(n_dims):
            if len(dims) > 8:
                raise ValueError(f"header claims {n_dims} dimensions, expected at most 8")
            dims.append(read(pos, "<I")[0])
            desc_len = read(pos + 24, "<I")[0]
            units_len = read(pos + 28 + desc_len, "<I")[0]
            pos += 32 + desc_len + units_len
            if pos > size:
                raise ValueError(f"dimension {len(dims)} runs past the end of the {size}-byte file")
        if valid == 0:
            return
        ptr = 8 if wide else 4
        if offsets_at + 2 * valid * ptr > size:
            raise ValueError(f"header claims {valid} stored elements, whose offset arrays do not fit in the "
                             f"{size}-byte file")
        first = read(offsets_at, "<Q" if wide else "<I")[0]
        if type_id == 0x4122:  # images
            dtype, ax, ay = read(first + 40, "<HII")
            values, header = ax * ay, 50
        else:  # spectra
            dtype, n = read(first + 20, "<HI")
            values, header = n, 26
    per_value = _SER_TYPE_BYTES.get(dtype)
    if per_value is None:
        raise ValueError(f"data type {dtype}, expected one of {sorted(_SER_TYPE_BYTES)}")
    element = header + values * per_value
    if valid * element > size:
        raise ValueError(f"header claims {valid} stored elements of {element} bytes but the file has {size} bytes: "
                         "truncated or corrupt")
    from ..io._readers import MAX_IMAGE_PIXELS

    scan = int(np.prod(dims, dtype=np.float64)) if dims else max(total, 1)
    claimed = scan * values
    if claimed > MAX_IMAGE_PIXELS or claimed * per_value > _SER_MAX_FILL * size:
        raise ValueError(f"header claims a scan of {tuple(dims)} positions of {values} values ({claimed * per_value} "
                         f"bytes once filled) from a {size}-byte file with {valid} elements stored: corrupt")


# The most an HDF5 filter pipeline can expand stored bytes: deflate 1032:1; LZF
# (back-references of <= 264 bytes per 3-byte token) about 90:1; the rest (szip,
# blosc, zstd, ...) a bound far above any micrograph's ratio.
_HDF5_MAX_EXPANSION = {1: 1032, 32000: 90}
_HDF5_DEFAULT_EXPANSION = 65536
_HDF5_SMALL = 1 << 20  # datasets up to 1 MiB are read whatever they claim


def _check_hdf5_sizes(path: Path) -> None:
    """Refuse an HDF5 file (.emd, .hspy) whose datasets claim more than its bytes
    hold, before RosettaSciIO reads them: chunks that were never written read as
    fill values, so a 24 kB .hspy claiming a 30000 x 30000 float32 image took
    8 GB and came back as an image of zeros."""
    import h5py

    from ..io._readers import MAX_IMAGE_PIXELS

    size = path.stat().st_size
    problems = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset) or obj.shape is None or problems:
            return
        n = int(np.prod(obj.shape, dtype=np.float64))
        claimed = n * obj.dtype.itemsize
        if n > MAX_IMAGE_PIXELS:
            problems.append(f"dataset {name!r} claims shape {obj.shape} ({n} values), more than the "
                            f"{MAX_IMAGE_PIXELS} a reader allocates")
            return
        if claimed <= _HDF5_SMALL:
            return
        stored = obj.id.get_storage_size()
        filters = obj.id.get_create_plist()
        ratio = 1
        for i in range(filters.get_nfilters()):
            code = filters.get_filter(i)[0]
            ratio = max(ratio, _HDF5_MAX_EXPANSION.get(code, _HDF5_DEFAULT_EXPANSION))
        offset = obj.id.get_offset()
        if claimed > stored * ratio:
            problems.append(f"dataset {name!r} claims shape {obj.shape} of {obj.dtype} ({claimed} bytes) but only "
                            f"{stored} bytes of it are stored" + ("" if ratio == 1 else f" (compressed, at most "
                                                                  f"{stored * ratio} bytes decoded)"))
        elif offset is not None and offset + claimed > size:
            problems.append(f"dataset {name!r} ({claimed} bytes at offset {offset}) runs past the end of the "
                            f"{size}-byte file")

    try:
        with h5py.File(path, "r") as fh:
            fh.visititems(visit)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise OSError(f"{path}: cannot read {path.suffix} file, it is corrupt or truncated ({exc})") from None
    if problems:
        raise OSError(f"{path}: {problems[0]}: truncated or corrupt")


def read_rsciio(path: Path) -> Tuple[np.ndarray, Optional[float], Optional[str], int]:
    """(data, pixel_size, unit, number of leading frame axes) of the first image signal."""
    plugin = _import_plugin(path)
    if path.suffix.lower() == ".mrc":
        try:
            _check_mrc_header(path)
        except ValueError as exc:
            raise OSError(f"{path}: cannot read .mrc file ({exc})") from None
    if path.suffix.lower() == ".ser":
        try:
            _check_ser_header(path)
        except ValueError as exc:
            raise OSError(f"{path}: cannot read .ser file ({exc})") from None
    if path.suffix.lower() in (".emd", ".hspy"):
        with open(path, "rb") as fh:
            is_hdf5 = fh.read(8) == b"\x89HDF\r\n\x1a\n"
        if is_hdf5:  # .emd of Velox, Berkeley and NCEM; .hspy: HDF5 (anything else: the plugin refuses it)
            # libhdf5 can loop or fill gigabytes on a corrupt file: read it in a child process first
            problem = _hdf5.probe(path)
            if problem:
                raise OSError(f"{path}: {problem}")
            _check_hdf5_sizes(path)
    try:
        signals = plugin.file_reader(str(path))
    except Exception as exc:  # each plugin raises its own types on corrupt input
        raise OSError(f"{path}: cannot read {path.suffix} file, it is corrupt or truncated ({exc})") from None
    shapes = []
    for signal in signals:
        data = np.asarray(signal["data"])
        axes = signal.get("axes", [])
        shapes.append(data.shape)
        if data.ndim < 2:
            continue
        n_signal = sum(1 for a in axes if not a.get("navigate", False)) if len(axes) == data.ndim else 2
        if n_signal != 2:
            continue  # spectra, diffraction stacks of 1-D signals, ...
        x_axis = axes[-1] if len(axes) == data.ndim else {}
        scale = x_axis.get("scale")
        unit = _unit(x_axis.get("units"))
        pixel_size = float(scale) if scale is not None and unit is not None else None
        return data, pixel_size, unit, data.ndim - 2
    raise ValueError(f"{path}: holds no 2-D image signal (signal shapes {shapes})")
