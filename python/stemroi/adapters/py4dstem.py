"""py4DSTEM adapter: virtual images in, ROI masks and per-class mean diffraction out.

A whole 4D-STEM pipeline, DataCube to defect-region diffraction::

    >>> from stemroi.adapters import py4dstem as p4a
    >>> rois = p4a.find_rois(datacube, detector, geometry=((qx0, qy0), (r_in, r_out)))
    >>> rois.virtual_image                        # the ADF image the detector saw (py4DSTEM VirtualImage)
    >>> rois.masks                                # py4DSTEM RealSlice, one boolean slice per ROI class
    >>> rois.mean_patterns                        # py4DSTEM DiffractionSlice, one mean pattern per class
    >>> rois.pattern("Anomaly") / rois.pattern("Bulk")

Or a step at a time: :func:`virtual_image` (py4DSTEM's own
``DataCube.get_virtual_image``), any detector on :func:`to_image` of it,
:func:`class_masks` of its :class:`stemroi.ROIResult`, :func:`mean_patterns`.
:func:`to_image` refuses a 4-D DataCube with a hint: detectors work on
real-space images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

import numpy as np

from ._common import as_detector, calibration, require, run_detector

__all__ = ["to_image", "virtual_image", "default_adf_geometry", "class_masks", "mean_patterns", "find_rois",
           "DataCubeROIs"]


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


# -- DataCube -> virtual image --------------------------------------------------------------
def _check_datacube(datacube):
    py4d = require("py4DSTEM", "py4dstem")
    if not isinstance(datacube, py4d.DataCube):
        raise TypeError(f"expected a py4DSTEM DataCube, got {type(datacube).__name__}")
    if np.ndim(datacube.data) != 4:
        raise ValueError(f"expected a 4-D DataCube (Rx, Ry, Qx, Qy), got shape {np.shape(datacube.data)}")
    return py4d


def _row_blocks(n_rows: int, row_bytes: int, budget: int = 256 * 2**20):
    step = max(1, budget // max(row_bytes, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _mean_pattern(datacube) -> np.ndarray:
    """Mean diffraction pattern over all scan positions, a block of scan rows at a time."""
    data = datacube.data
    rx, ry, qx, qy = data.shape
    acc = np.zeros((qx, qy), np.float64)
    for rows in _row_blocks(rx, ry * qx * qy * np.dtype(data.dtype).itemsize):
        acc += np.asarray(data[rows], dtype=np.float64).sum(axis=(0, 1))
    return acc / (rx * ry)


def default_adf_geometry(datacube):
    """``((qx0, qy0), (r_inner, r_outer))``: an annular dark-field detector centred on
    the bright-field disc (py4DSTEM's ``get_probe_size`` of the mean pattern), from
    three bright-field radii to the nearest detector edge. A rough ADF for
    exploring; pass the geometry of the real detector when it is known."""
    _check_datacube(datacube)
    r, x0, y0 = datacube.get_probe_size(dp=_mean_pattern(datacube), plot=False, write_to_cal=False)
    qx, qy = datacube.data.shape[2:]
    outer = float(min(x0, y0, qx - 1 - x0, qy - 1 - y0))
    inner = 3.0 * float(r)
    if not inner < outer:
        raise ValueError(f"the bright-field disc (radius {r:.1f} px at ({x0:.1f}, {y0:.1f})) leaves no room for an "
                         f"annular detector on a {qx} x {qy} pattern; pass geometry=((qx0, qy0), (r_in, r_out))")
    return (float(x0), float(y0)), (inner, outer)


def _annulus_mask(shape, geometry) -> np.ndarray:
    """py4DSTEM's annular detector: r_in < |q - q0| < r_out (pixel centres)."""
    (x0, y0), (r_in, r_out) = geometry
    qx, qy = np.indices(shape)
    d2 = (qx - x0) ** 2 + (qy - y0) ** 2
    return (d2 > r_in**2) & (d2 < r_out**2)


def _copy_pixel_calibration(obj, datacube):
    """Give ``obj`` (a new py4DSTEM root) the real- and diffraction-space pixel
    sizes and units of ``datacube``: copied, so the two stay independent."""
    src, dst = getattr(datacube, "calibration", None), getattr(obj, "calibration", None)
    if src is None or dst is None:
        return obj
    for what in ("R_pixel_size", "R_pixel_units", "Q_pixel_size", "Q_pixel_units"):
        try:
            value = getattr(src, f"get_{what}")()
        except Exception:  # a field this calibration does not hold
            continue
        if value is not None:
            getattr(dst, f"set_{what}")(value)
    return obj


def _virtual_image_from_array(datacube, geometry, name: str):
    """The annular virtual image summed from the array directly, a block of scan rows at a time."""
    py4d = require("py4DSTEM", "py4dstem")
    data = datacube.data
    rx, ry, qx, qy = data.shape
    mask = _annulus_mask((qx, qy), geometry).astype(np.float64)
    out = np.empty((rx, ry), np.float64)
    for rows in _row_blocks(rx, ry * qx * qy * np.dtype(data.dtype).itemsize):
        out[rows] = np.tensordot(np.asarray(data[rows], dtype=np.float64), mask, axes=([2, 3], [0, 1]))
    return _copy_pixel_calibration(py4d.RealSlice(out, name=name), datacube)


def virtual_image(datacube, geometry=None, *, mode: str = "annulus", name: str = "adf"):
    """The virtual image of ``datacube`` (py4DSTEM ``DataCube.get_virtual_image``).

    ``geometry``: py4DSTEM's detector geometry for ``mode`` (for the default
    annular dark field, ``((qx0, qy0), (r_inner, r_outer))`` in detector
    pixels); None estimates an ADF annulus with :func:`default_adf_geometry`.
    When this py4DSTEM's ``get_virtual_image`` does not take these arguments
    (an older or newer API), an annular image is summed from the array with
    py4DSTEM's annulus definition (``r_inner < r < r_outer``) and returned as
    a ``RealSlice`` with the datacube's calibration.
    """
    _check_datacube(datacube)
    if geometry is None:
        if mode != "annulus":
            raise ValueError(f"mode={mode!r} needs an explicit geometry")
        geometry = default_adf_geometry(datacube)
    try:
        return datacube.get_virtual_image(mode=mode, geometry=geometry, name=name, returncalc=True, verbose=False)
    except (TypeError, AttributeError):
        if mode != "annulus":
            raise
        return _virtual_image_from_array(datacube, geometry, name)


# -- ROIResult -> real-space masks -> mean diffraction ------------------------------------------------
def class_masks(result, *, by: str = "label") -> Dict[str, np.ndarray]:
    """Boolean masks ``(H, W)`` of ``result``'s image, one per class: every pixel
    takes the class of the tile whose centre is nearest
    (:meth:`stemroi.ROIResult.pixel_map`), so the masks of a tiling never
    overlap. ``by="label"``: one mask per label found (the bulk label
    included); ``by="roi"``: two, ``"ROI"`` (every tile to inspect, unknown
    included) and the bulk label. Pixels no tile covers are in no mask.
    """
    if by not in ("label", "roi"):
        raise ValueError(f"by must be 'label' or 'roi', got {by!r}")
    if result.image_shape is None:
        raise ValueError("class_masks needs a result with image_shape")
    if by == "roi":
        bulk = str(result.bulk_label) if result.bulk_label is not None else "Bulk"
        names = np.where(result.is_roi, "ROI", bulk).astype(object)
    else:
        names = result.labels.astype(str).astype(object)
    order = list(dict.fromkeys(str(n) for n in names))
    index = np.array([order.index(str(n)) for n in names], dtype=np.int64)
    painted = result.pixel_map(index, fill=-1)
    return {name: painted == k for k, name in enumerate(order)}


def mean_patterns(datacube, masks: Dict[str, np.ndarray], *, name: str = "roi_mean_patterns"):
    """The mean diffraction pattern over each real-space mask, as one py4DSTEM
    ``DiffractionSlice`` with a slice per mask (``slicelabels`` = the mask
    names) and the datacube's calibration. The same means as
    ``datacube.get_virtual_diffraction("mean", mask=m)``, computed a block of
    scan rows at a time (the boolean-mask path of py4DSTEM copies every
    selected pattern at once). A mask without any position gives NaN."""
    py4d = _check_datacube(datacube)
    data = datacube.data
    rx, ry, qx, qy = data.shape
    labels = list(masks)
    stack = np.stack([np.asarray(masks[k], dtype=bool) for k in labels]) if labels else np.zeros((0, rx, ry), bool)
    if stack.shape[1:] != (rx, ry):
        raise ValueError(f"masks must have the scan shape {(rx, ry)}, got {stack.shape[1:]}")
    acc = np.zeros((len(labels), qx, qy), np.float64)
    for rows in _row_blocks(rx, ry * qx * qy * np.dtype(data.dtype).itemsize):
        block = np.asarray(data[rows], dtype=np.float64).reshape(-1, qx * qy)
        weights = stack[:, rows].reshape(len(labels), -1).astype(np.float64)
        acc += (weights @ block).reshape(len(labels), qx, qy)
    counts = stack.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = acc / counts[:, None, None]
    return _copy_pixel_calibration(py4d.DiffractionSlice(mean, name=name, slicelabels=[str(k) for k in labels]),
                                   datacube)


@dataclass
class DataCubeROIs:
    """What :func:`find_rois` returns.

    virtual_image : the py4DSTEM virtual image the detector analysed.
    result : the detector's :class:`stemroi.ROIResult` on it.
    masks : py4DSTEM ``RealSlice``, one boolean slice per class (``labels``).
    mean_patterns : py4DSTEM ``DiffractionSlice``, the mean pattern of each class.
    labels : the class names, in slice order.
    n_positions : scan positions per class.
    """

    virtual_image: Any
    result: Any
    masks: Any
    mean_patterns: Any
    labels: list
    n_positions: Dict[str, int] = field(default_factory=dict)

    def _index(self, label: str) -> int:
        if label not in self.labels:
            raise KeyError(f"no class {label!r}; the classes are {self.labels}")
        return self.labels.index(label)

    def mask(self, label: str) -> np.ndarray:
        """The boolean real-space mask ``(Rx, Ry)`` of class ``label``."""
        return np.asarray(self.masks.data[self._index(label)], dtype=bool)

    def pattern(self, label: str) -> np.ndarray:
        """The mean diffraction pattern ``(Qx, Qy)`` of class ``label``."""
        return np.asarray(self.mean_patterns.data[self._index(label)])


def find_rois(datacube, detector, *, geometry=None, mode: str = "annulus", image=None, by: str = "label",
              **detector_kwargs) -> DataCubeROIs:
    """DataCube -> virtual image -> ROIs -> per-class real-space masks and mean
    diffraction patterns.

    Parameters
    ----------
    datacube : py4DSTEM DataCube ``(Rx, Ry, Qx, Qy)``.
    detector : fitted model, model file path or callable ``image -> ROIResult``
        (see :func:`stemroi.detection.make_detector`; ``detector_kwargs`` go to
        it). The datacube's real-space pixel size goes to it as
        ``pixel_size=`` when calibrated and accepted. The detector must tile
        the scan grid itself (no resampling of the virtual image), so the
        masks line up with the scan positions.
    geometry, mode : the virtual detector (:func:`virtual_image`).
    image : a virtual image already formed (py4DSTEM RealSlice); then
        ``geometry`` and ``mode`` are unused.
    by : ``"label"`` (a mask and pattern per detector label) or ``"roi"``
        (``"ROI"`` vs the bulk label: defect regions vs bulk).
    """
    _check_datacube(datacube)
    vi = virtual_image(datacube, geometry, mode=mode) if image is None else image
    img, cal = to_image(vi)
    if img.shape != tuple(datacube.data.shape[:2]):
        raise ValueError(f"the virtual image has shape {img.shape}, the scan {tuple(datacube.data.shape[:2])}")
    result = run_detector(as_detector(detector, **detector_kwargs), img, cal)
    if tuple(result.image_shape or ()) != img.shape:
        raise ValueError(f"the detector reported tiles on a {result.image_shape} grid, not the scan's {img.shape}")
    masks = class_masks(result, by=by)
    labels = list(masks)
    py4d = require("py4DSTEM", "py4dstem")
    mask_slice = _copy_pixel_calibration(
        py4d.RealSlice(np.stack([masks[k] for k in labels]), name="roi_masks", slicelabels=labels), datacube)
    patterns = mean_patterns(datacube, masks)
    return DataCubeROIs(virtual_image=vi, result=result, masks=mask_slice, mean_patterns=patterns, labels=labels,
                        n_positions={k: int(m.sum()) for k, m in masks.items()})
