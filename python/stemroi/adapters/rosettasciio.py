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


def read_rsciio(path: Path) -> Tuple[np.ndarray, Optional[float], Optional[str], int]:
    """(data, pixel_size, unit, number of leading frame axes) of the first image signal."""
    plugin = _import_plugin(path)
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
