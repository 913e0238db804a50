"""py4DSTEM adapter: virtual images (and other 2-D real-space slices) in.

    >>> vi = datacube.get_virtual_image(mode="annulus", geometry=((qx0, qy0), (r_in, r_out)), name="haadf")
    >>> image, cal = stemroi.adapters.py4dstem.to_image(vi)

A 4-D DataCube is refused with a hint: stemroi works on real-space images,
so form the virtual (HAADF/ADF) image first with py4DSTEM itself.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ._common import calibration, require

__all__ = ["to_image"]


def _py4dstem_calibration(obj):
    cal = getattr(obj, "calibration", None)
    if cal is None:
        return calibration(None, None)
    try:
        size = cal.get_R_pixel_size()
        unit = cal.get_R_pixel_units()
    except Exception:  # object not attached to a tree with a calibration
        return calibration(None, None)
    if unit in (None, "pixels") and size in (None, 1):
        return calibration(None, None)
    return calibration(float(size) if size is not None else None, unit)


def to_image(obj) -> Tuple[np.ndarray, "object"]:
    """(image float32 (H, W), Calibration) of a py4DSTEM RealSlice / VirtualImage."""
    py4d = require("py4DSTEM", "py4dstem")
    if isinstance(obj, py4d.DataCube):
        raise TypeError(
            f"got a 4-D DataCube of shape {tuple(obj.data.shape)}; stemroi needs a real-space image. "
            "Make one with py4DSTEM first, e.g. datacube.get_virtual_image(mode='annulus', "
            "geometry=((qx0, qy0), (r_inner, r_outer)))"
        )
    data = getattr(obj, "data", None)
    if data is None:
        raise TypeError(f"expected a py4DSTEM RealSlice or VirtualImage, got {type(obj).__name__}")
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ValueError(
            f"{type(obj).__name__} '{getattr(obj, 'name', '')}' holds data of shape {data.shape}; "
            "expected one 2-D real-space image (select a slice first)"
        )
    return np.ascontiguousarray(data, dtype=np.float32), _py4dstem_calibration(obj)
