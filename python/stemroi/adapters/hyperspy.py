"""HyperSpy adapter: Signal2D in, ROIs out as HyperSpy markers.

    >>> import hyperspy.api as hs
    >>> from stemroi.adapters import hyperspy as hsa
    >>> image, cal = hsa.signal_to_image(s)            # float32 (H, W) + pixel size
    >>> result = stemroi.detect(image, model)           # any detector -> ROIResult
    >>> hsa.add_roi_markers(s, result); s.plot()       # rectangles in calibrated units

Stacks (signals with navigation axes: a time or tilt series, lazy or not) go
through any detector one frame at a time with :func:`detect_stack`: only the
frame being analysed is computed (a dask-backed stack is never loaded whole),
and the ROIs come back as one ragged ``Rectangles`` marker set per class and
as a Signal2D of per-tile scores with the stack's navigation axes::

    >>> s = hs.load("series.hspy", lazy=True)             # (time | y, x)
    >>> found = hsa.detect_stack(s, model, patch=64, stride=32)
    >>> hsa.add_stack_markers(s, found.markers); s.plot()
    >>> found.scores.save("scores.hspy")                   # (time | tile_y, tile_x)

Frames can also be iterated with :func:`iter_signal_frames`. stemroi's PCA and KMeans follow scikit-learn's
API, so ``s.decomposition(algorithm=stemroi.PCA(...))`` and
``s.cluster_analysis(..., algorithm=stemroi.KMeans(...))`` work directly.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from ._common import as_detector, calibration, require, run_detector, score_name, tile_grid, tile_scores

__all__ = ["signal_to_image", "iter_signal_frames", "image_to_signal", "roi_markers", "add_roi_markers",
           "detect_stack", "StackDetection", "stack_markers", "add_stack_markers", "tile_score_signal"]

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
        yield idx, _frame(data, idx)


def _frame(data, idx) -> np.ndarray:
    """Frame ``idx`` of ``data`` as float32; for a dask array only that frame is computed."""
    frame = data[idx]
    if hasattr(frame, "compute"):
        frame = frame.compute()
    frame = np.asarray(frame)
    if np.iscomplexobj(frame):
        raise TypeError(f"complex signal data (dtype {frame.dtype}) is not an image; take abs() or .real first")
    return np.ascontiguousarray(frame, dtype=np.float32)


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
        offsets, w, h = _tile_rectangles(result, keep & (labels == name), (sx, ox, sy, oy))
        m = hs.plot.markers.Rectangles(offsets=offsets, widths=w, heights=h,
                                       color=colors.get(name, _DEFAULT_COLORS[i % len(_DEFAULT_COLORS)]),
                                       facecolor="none", linewidth=1.5)
        m.name = str(name)  # a plain str: h5py cannot store NumPy unicode when saving .hspy
        markers.append(m)
    return markers


def add_roi_markers(signal, result, **kwargs) -> None:
    """Attach :func:`roi_markers` to ``signal`` permanently (saved with it)."""
    for m in roi_markers(result, signal, **kwargs):
        signal.add_marker(m, permanent=True, plot_marker=False)


# -- stacks --------------------------------------------------------------------------
def _signal_transform(signal) -> Tuple[float, float, float, float]:
    """(x scale, x offset, y scale, y offset) of the signal axes."""
    ax_x, ax_y = signal.axes_manager.signal_axes
    return float(ax_x.scale), float(ax_x.offset), float(ax_y.scale), float(ax_y.offset)


def _tile_rectangles(result, sel, transform):
    """Centres (n, 2) as (x, y), widths and heights of the tiles ``sel`` in calibrated units."""
    sx, ox, sy, oy = transform
    r, c = result.origins[sel, 0], result.origins[sel, 1]
    h, w = result.sizes[sel, 0], result.sizes[sel, 1]
    offsets = np.stack([ox + (c + (w - 1) / 2.0) * sx, oy + (r + (h - 1) / 2.0) * sy], axis=1)
    return offsets, w * sx, h * sy


class StackDetection(NamedTuple):
    """What :func:`detect_stack` returns.

    Attributes
    ----------
    markers : list
        HyperSpy ``Rectangles``, one per ROI class, each with ragged offsets
        (a different number of tiles on every frame); add them with
        :func:`add_stack_markers`.
    scores : Signal2D
        Per-tile scores, ``(navigation | tile rows, tile cols)``.
    results : list
        The :class:`stemroi.ROIResult` of every frame in navigation order
        (flattened, C order), tile tables only (the per-pixel ``maps`` are
        dropped so the stack's maps never sit in memory together).
    """

    markers: List[Any]
    scores: Any
    results: List[Any]


def detect_stack(signal, detector, *, score="auto", include_bulk: bool = False,
                 colors: Optional[Dict[str, str]] = None, progress: Optional[Callable[[int, int], None]] = None,
                 **detector_kwargs) -> StackDetection:
    """Run ``detector`` on every frame of the Signal2D ``signal`` (a stack with
    any navigation axes, lazy or not), one frame at a time.

    Parameters
    ----------
    signal : hyperspy Signal2D or LazySignal2D
        Frames on the signal axes. For a lazy (dask-backed) signal each frame
        is computed on its own just before it is analysed: the stack is
        never loaded whole (with one chunk per frame, or frames sliced from
        a file, that reads one frame).
    detector : fitted model, model file path or callable
        A :class:`~stemroi.PatchClassifier`, :class:`~stemroi.BulkCVAE`,
        :class:`~stemroi.PatchClusterer` or :class:`~stemroi.DefectSegmenter`
        (or a model file) made into a detector by
        :func:`stemroi.detection.make_detector` with ``detector_kwargs``
        (``patch``, ``stride``, ...), or any callable ``image -> ROIResult``.
        The signal's pixel size and unit go to the detector as
        ``pixel_size=`` when they are calibrated and the detector takes that
        keyword (all four model detectors do, and resample frames to the
        model's pixel size when the two differ).
    score : str or callable
        The per-tile value of the score signal (see
        :func:`stemroi.adapters._common.tile_scores`): ``"auto"`` is the
        detector's ``scores`` (CVAE anomaly score, U-Net largest defect
        probability, cluster distance) or a classifier's ``1 - p(bulk)``.
    include_bulk, colors : as in :func:`roi_markers`.
    progress : callable, optional
        ``progress(done, total)`` after every frame.

    Returns
    -------
    StackDetection
        ``(markers, scores, results)``. The score signal's navigation axes are
        the stack's (names, scales, offsets, units); its signal axes are the
        tile grid, with scale ``stride * pixel scale``, offset the centre of
        the first tile and the stack's units (an edge tile shifted flush with
        the frame border, as CVAE and U-Net maps place it, makes that axis
        non-uniform: its values are then the tile centres). Tiles a frame
        lacks are NaN.
    """
    _check_signal2d(signal)
    det = as_detector(detector, **detector_kwargs)
    cal = _signal_calibration(signal)
    nav = tuple(signal.axes_manager.navigation_shape[::-1])  # array order
    total = int(np.prod(nav)) if nav else 1
    results, values, grid = [], None, None
    for k, idx in enumerate(np.ndindex(*nav) if nav else [()]):
        result = run_detector(det, _frame(signal.data, idx), cal)
        rows, cols, ri, ci = tile_grid(result)
        if grid is None:
            grid = (rows, cols)
            values = np.full((total, len(rows), len(cols)), np.nan)
        elif not (np.array_equal(rows, grid[0]) and np.array_equal(cols, grid[1])):
            raise ValueError(f"frame {idx}: the detector tiled it on a different grid than the first frame "
                             f"({len(rows)} x {len(cols)} tiles vs {len(grid[0])} x {len(grid[1])})")
        values[k, ri, ci] = tile_scores(result, score)
        result.maps = {}
        results.append(result)
        if progress is not None:
            progress(k + 1, total)
    scores = _score_signal(values.reshape(nav + values.shape[1:]), results[0], signal, score_name(results[0], score))
    markers = stack_markers(results, signal, include_bulk=include_bulk, colors=colors)
    return StackDetection(markers, scores, results)


def _tile_axis(centres: np.ndarray, step: float, ax, default_name: str) -> dict:
    name = ax.name if isinstance(ax.name, str) and ax.name not in ("", "<undefined>") else default_name
    d: Dict[str, Any] = {"name": name, "navigate": False}
    if isinstance(ax.units, str) and ax.units not in ("", "<undefined>"):
        d["units"] = ax.units
    gaps = np.diff(centres)
    if len(centres) < 2 or np.allclose(gaps, gaps[0], rtol=1e-9, atol=0.0):
        d.update(size=len(centres), offset=float(centres[0]),
                 scale=float(gaps[0]) if len(centres) > 1 else float(step))
    else:
        d["axis"] = np.asarray(centres, dtype=np.float64)
    return d


def _score_signal(values: np.ndarray, first, signal, quantity: str):
    hs = require("hyperspy.api", "hyperspy")
    rows, cols, _, _ = tile_grid(first)
    th, tw = (int(v) for v in first.sizes[0]) if len(first) else (1, 1)
    sx, ox, sy, oy = _signal_transform(signal)
    ax_x, ax_y = signal.axes_manager.signal_axes
    axes = []
    for ax in signal.axes_manager.navigation_axes[::-1]:  # array order
        d = ax.get_axis_dictionary()
        d.pop("_type", None)
        d["navigate"] = True
        axes.append(d)
    axes.append(_tile_axis(oy + (rows + (th - 1) / 2.0) * sy, th * sy, ax_y, "y"))
    axes.append(_tile_axis(ox + (cols + (tw - 1) / 2.0) * sx, tw * sx, ax_x, "x"))
    out = hs.signals.Signal2D(values, axes=axes)
    title = signal.metadata.get_item("General.title", "") or "stack"
    out.metadata.General.title = f"{title}: {first.method or 'detector'} tile scores"
    out.metadata.set_item("Signal.quantity", quantity)
    stride = [int(np.diff(rows)[0]) if len(rows) > 1 else th, int(np.diff(cols)[0]) if len(cols) > 1 else tw]
    info = {"method": str(first.method), "score": quantity, "class_names": [str(c) for c in first.class_names],
            "bulk_label": str(first.bulk_label) if first.bulk_label is not None else "",
            "tile_size": [th, tw], "stride": stride,
            "first_tile_origin": [int(rows[0]), int(cols[0])] if len(rows) else [0, 0]}
    for key, value in info.items():
        out.metadata.set_item(f"stemroi.{key}", value)
    return out


def tile_score_signal(results, signal, score="auto"):
    """The score signal of :func:`detect_stack` from ``results`` already computed
    (one :class:`stemroi.ROIResult` per frame of ``signal``, in navigation
    order, C order, all on the same tile grid)."""
    _check_signal2d(signal)
    results = list(results)
    nav = tuple(signal.axes_manager.navigation_shape[::-1])
    if len(results) != (int(np.prod(nav)) if nav else 1):
        raise ValueError(f"expected one result per frame ({int(np.prod(nav)) if nav else 1}), got {len(results)}")
    rows, cols, _, _ = tile_grid(results[0])
    values = np.full((len(results), len(rows), len(cols)), np.nan)
    for k, result in enumerate(results):
        r, c, ri, ci = tile_grid(result)
        if not (np.array_equal(r, rows) and np.array_equal(c, cols)):
            raise ValueError(f"results[{k}] is on a different tile grid than results[0]")
        values[k, ri, ci] = tile_scores(result, score)
    return _score_signal(values.reshape(nav + values.shape[1:]), results[0], signal, score_name(results[0], score))


def stack_markers(results, signal, *, include_bulk: bool = False,
                  colors: Optional[Dict[str, str]] = None) -> List["object"]:
    """One HyperSpy ``Rectangles`` per ROI class over a whole stack: ragged
    offsets, the tiles of that class on each navigation index, in the signal's
    calibrated units (``results`` in navigation order, C order)."""
    hs = require("hyperspy.api", "hyperspy")
    _check_signal2d(signal)
    results = list(results)
    nav = tuple(signal.axes_manager.navigation_shape[::-1])
    if not nav:
        return roi_markers(results[0], signal, include_bulk=include_bulk, colors=colors)
    if len(results) != int(np.prod(nav)):
        raise ValueError(f"expected one result per frame ({int(np.prod(nav))}), got {len(results)}")
    transform = _signal_transform(signal)
    keeps = [r.is_roi if not include_bulk else np.ones(len(r), bool) for r in results]
    labels = [r.labels.astype(str) for r in results]
    names = list(dict.fromkeys(name for lab, keep in zip(labels, keeps) for name in lab[keep]))
    colors = dict(colors or {})
    markers = []
    for i, name in enumerate(names):
        offsets = np.empty(len(results), dtype=object)
        widths = np.empty(len(results), dtype=object)
        heights = np.empty(len(results), dtype=object)
        for k, (result, lab, keep) in enumerate(zip(results, labels, keeps)):
            offsets[k], widths[k], heights[k] = _tile_rectangles(result, keep & (lab == name), transform)
        shapes = {(float(w), float(h)) for ws, hs_ in zip(widths, heights) for w, h in zip(ws, hs_)}
        if len(shapes) == 1:  # every tile the same size: plain numbers
            widths_arg, heights_arg = shapes.pop()
        else:
            widths_arg, heights_arg = widths.reshape(nav), heights.reshape(nav)
        m = hs.plot.markers.Rectangles(offsets=offsets.reshape(nav), widths=widths_arg, heights=heights_arg,
                                       color=colors.get(name, _DEFAULT_COLORS[i % len(_DEFAULT_COLORS)]),
                                       facecolor="none", linewidth=1.5)
        m.name = str(name)
        markers.append(m)
    return markers


def add_stack_markers(signal, markers) -> None:
    """Attach the markers of :func:`detect_stack` / :func:`stack_markers` to the
    stack ``signal`` permanently (saved with it in ``.hspy``)."""
    for m in markers:
        signal.add_marker(m, permanent=True, plot_marker=False)
