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


def read_rsciio(path: Path) -> Tuple[np.ndarray, Optional[float], Optional[str], int]:
    """(data, pixel_size, unit, number of leading frame axes) of the first image signal."""
    plugin = _import_plugin(path)
    if path.suffix.lower() == ".mrc":
        try:
            _check_mrc_header(path)
        except ValueError as exc:
            raise OSError(f"{path}: cannot read .mrc file ({exc})") from None
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
