"""stemroi: regions of interest in atomic-resolution STEM images.

Public names are re-exported lazily from their modules so that ``import
stemroi`` stays fast and optional parts load only when used.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it (one line per name; areas add theirs)
_EXPORTS = {
    # shared
    "save_model_file": "model_file",
    "load_model_file": "model_file",
    "gaussian_filter": "filters",
    "uniform_filter": "filters",
    "ROIResult": "roi",
    # unet / mobilenet (issue 8)
    "DefectSegmenter": "segment",
    "pseudo_label_masks": "segment",
    "pseudo_label_scores": "segment",
    "make_multi_defect_samples": "segment",
    "map_descriptors": "segment",
    "plot_class_heatmaps": "segment",
    "MobileNetV2": "mobilenet",
    "MobileNetV2Classifier": "mobilenet",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stemroi' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from .filters import gaussian_filter, uniform_filter  # noqa: F401
    from .mobilenet import MobileNetV2, MobileNetV2Classifier  # noqa: F401
    from .model_file import load_model_file, save_model_file  # noqa: F401
    from .segment import (  # noqa: F401
        DefectSegmenter,
        make_multi_defect_samples,
        map_descriptors,
        plot_class_heatmaps,
        pseudo_label_masks,
        pseudo_label_scores,
    )
