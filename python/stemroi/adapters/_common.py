from __future__ import annotations

import importlib

import numpy as np


def require(module: str, extra: str):
    """Import ``module`` or raise ImportError naming the pip extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this feature needs the '{module.split('.')[0]}' package: pip install \"stemroi[{extra}]\""
        ) from exc


def calibration(pixel_size, unit):
    from ..io._readers import file_calibration

    return file_calibration(pixel_size, unit)


def as_detector(detector, **detector_kwargs):
    """``image -> ROIResult`` for a fitted model, a model file path or a callable
    (see :func:`stemroi.detection.make_detector`)."""
    from ..detection._batch import make_detector

    return make_detector(detector, **detector_kwargs)


def _accepts_pixel_size(func) -> bool:
    import inspect

    from ..detection._batch import ModelDetector

    if isinstance(func, ModelDetector):
        return "pixel_size" not in func.kwargs  # a pixel size given to the detector itself wins
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins and C callables without a signature
        return False
    return any(p.name == "pixel_size" or p.kind is p.VAR_KEYWORD for p in params)


def run_detector(detector, image, cal=None):
    """``detector(image)``, with ``pixel_size=cal`` when the calibration is known and
    the detector takes a ``pixel_size`` keyword; checks that an ROIResult comes back."""
    from ..detection.roi import ROIResult

    if cal is not None and cal.pixel_size is not None and _accepts_pixel_size(detector):
        result = detector(image, pixel_size=cal)
    else:
        result = detector(image)
    if not isinstance(result, ROIResult):
        raise TypeError(f"the detector returned {type(result).__name__}, expected an ROIResult")
    return result


def tile_grid(result):
    """``(rows, cols, row_index, col_index)``: the distinct tile origins along each
    image axis (sorted) and each tile's position in them."""
    rows = np.unique(result.origins[:, 0])
    cols = np.unique(result.origins[:, 1])
    return rows, cols, np.searchsorted(rows, result.origins[:, 0]), np.searchsorted(cols, result.origins[:, 1])


def tile_scores(result, score="auto") -> np.ndarray:
    """One float per tile of ``result``.

    ``score``: ``"auto"`` (the detector's ``scores`` when it has them: the
    anomaly score of a CVAE map, the largest defect probability of a U-Net
    map, the distance to the image's median tile embedding of a cluster map; else, for a
    classifier, the probability of not being bulk, ``1 - p(bulk)``; else the
    confidence), ``"scores"``, ``"confidence"``, a class name (that class's
    probability column) or a callable ``result -> (n,) array``.
    """
    n = len(result)
    if callable(score):
        values = np.asarray(score(result), dtype=np.float64)
    elif score == "auto":
        if result.scores is not None:
            values = result.scores
        elif result.probabilities is not None and result.bulk_label in result.class_names:
            values = 1.0 - result.probabilities[:, result.class_names.index(result.bulk_label)]
        else:
            values = result.confidence
    elif score == "scores":
        if result.scores is None:
            raise ValueError(f"score='scores': this {result.method or 'detector'} result has no scores")
        values = result.scores
    elif score == "confidence":
        values = result.confidence
    elif isinstance(score, str) and score in result.class_names:
        if result.probabilities is None:
            raise ValueError(f"score={score!r}: this {result.method or 'detector'} result has no probabilities")
        values = result.probabilities[:, result.class_names.index(score)]
    else:
        raise ValueError(f"score must be 'auto', 'scores', 'confidence', a class name of {result.class_names} "
                         f"or a callable, got {score!r}")
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"score: expected one value per tile, shape ({n},), got {values.shape}")
    return values


def score_name(result, score) -> str:
    if callable(score):
        return getattr(score, "__name__", "score")
    if score != "auto":
        return str(score)
    if result.scores is not None:
        return "scores"
    if result.probabilities is not None and result.bulk_label in result.class_names:
        return f"1 - p({result.bulk_label})"
    return "confidence"
