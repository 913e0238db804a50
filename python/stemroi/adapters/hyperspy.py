"""HyperSpy adapter: Signal2D in, ROIs out as HyperSpy markers.

    >>> import hyperspy.api as hs
    >>> from stemroi.adapters import hyperspy as hsa
    >>> image, cal = hsa.signal_to_image(s)            # float32 (H, W) + pixel size
    >>> result = stemroi.detect(image, model)           # any detector -> ROIResult
    >>> hsa.add_roi_markers(s, result); s.plot()       # rectangles in calibrated units

Stacks (signals with navigation axes) are never flattened: iterate them with
:func:`iter_signal_frames`. stemroi's PCA and KMeans follow scikit-learn's
API, so ``s.decomposition(algorithm=stemroi.PCA(...))`` and
``s.cluster_analysis(..., algorithm=stemroi.KMeans(...))`` work directly.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from ._common import calibration, require

__all__ = ["signal_to_image", "iter_signal_frames", "image_to_signal", "roi_markers", "add_roi_markers"]

_DEFAULT_COLORS = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink",
                   "tab:olive", "tab:cyan", "tab:gray"]


def _check_signal2d(signal):
    require("hyperspy.api", "hyperspy")
    if not hasattr(signal, "axes_manager") or signal.axes_manager.signal_dimension != 2:
        dim = getattr(getattr(signal, "axes_manager", None), "signal_dimension", None)
        raise TypeError(
            f"expected a HyperSpy Signal2D (signal dimension 2), got {type(signal).__name__}"
            + (f" with signal dimension {dim}" if dim is not None else "")
        )


def _signal_calibration(signal):
    ax_x, ax_y = signal.axes_manager.signal_axes
    units = ax_x.units if isinstance(ax_x.units, str) and ax_x.units not in ("", "<undefined>") else None
    if not np.isclose(ax_x.scale, ax_y.scale, rtol=1e-6):
        raise ValueError(f"non-square pixels are not supported: x scale {ax_x.scale}, y scale {ax_y.scale}")
    size = float(ax_x.scale) if (units is not None or ax_x.scale != 1.0) else None
    return calibration(size, units)


def signal_to_image(signal) -> Tuple[np.ndarray, "object"]:
    """(image float32 (H, W), Calibration) of a Signal2D without navigation axes."""
    _check_signal2d(signal)
    nav = signal.axes_manager.navigation_shape
    if len(nav) > 0 and int(np.prod(nav)) > 1:
        raise ValueError(
            f"signal has navigation shape {nav}: {int(np.prod(nav))} frames. stemroi never flattens stacks; "
            "iterate them with stemroi.adapters.hyperspy.iter_signal_frames(signal)"
        )
    data = np.asarray(signal.data)
    if np.iscomplexobj(data):
        raise TypeError(f"complex signal data (dtype {data.dtype}) is not an image; take abs() or .real first")
    return np.ascontiguousarray(data.reshape(data.shape[-2:]), dtype=np.float32), _signal_calibration(signal)


def iter_signal_frames(signal) -> Iterator[Tuple[Tuple[int, ...], np.ndarray]]:
    """Yield ``(navigation index, image)`` for every frame of a Signal2D stack."""
    _check_signal2d(signal)
    nav = signal.axes_manager.navigation_shape[::-1]  # array order
    data = signal.data
    for idx in np.ndindex(*nav) if nav else [()]:
        yield idx, np.ascontiguousarray(np.asarray(data[idx]), dtype=np.float32)


def image_to_signal(image: np.ndarray, calibration=None, title: str = ""):
    """A Signal2D of ``image`` with the pixel size and unit of ``calibration``."""
    hs = require("hyperspy.api", "hyperspy")
    s = hs.signals.Signal2D(np.asarray(image))
    s.metadata.General.title = title
    if calibration is not None and calibration.pixel_size is not None:
        for ax in s.axes_manager.signal_axes:
            ax.scale = calibration.pixel_size
            ax.units = calibration.unit or ax.units
    return s


def roi_markers(result, signal=None, *, include_bulk: bool = False,
                colors: Optional[Dict[str, str]] = None) -> List["object"]:
    """One HyperSpy ``Rectangles`` marker per label, in the signal's calibrated units.

    A tile covering pixel columns ``col .. col + w - 1`` is drawn from the left
    edge of its first pixel to the right edge of its last one.
    """
    hs = require("hyperspy.api", "hyperspy")
    if signal is not None:
        _check_signal2d(signal)
        ax_x, ax_y = signal.axes_manager.signal_axes
        sx, ox, sy, oy = ax_x.scale, ax_x.offset, ax_y.scale, ax_y.offset
    else:
        sx, ox, sy, oy = 1.0, 0.0, 1.0, 0.0
    labels = result.labels.astype(str)
    keep = result.is_roi if not include_bulk else np.ones(len(result), bool)
    names = list(dict.fromkeys(labels[keep]))
    colors = dict(colors or {})
    markers = []
    for i, name in enumerate(names):
        sel = keep & (labels == name)
        r, c = result.origins[sel, 0], result.origins[sel, 1]
        h, w = result.sizes[sel, 0], result.sizes[sel, 1]
        offsets = np.stack([ox + (c + (w - 1) / 2.0) * sx, oy + (r + (h - 1) / 2.0) * sy], axis=1)
        m = hs.plot.markers.Rectangles(offsets=offsets, widths=w * sx, heights=h * sy,
                                       color=colors.get(name, _DEFAULT_COLORS[i % len(_DEFAULT_COLORS)]),
                                       facecolor="none", linewidth=1.5)
        m.name = str(name)  # a plain str: h5py cannot store NumPy unicode when saving .hspy
        markers.append(m)
    return markers


def add_roi_markers(signal, result, **kwargs) -> None:
    """Attach :func:`roi_markers` to ``signal`` permanently (saved with it)."""
    for m in roi_markers(result, signal, **kwargs):
        signal.add_marker(m, permanent=True, plot_marker=False)
