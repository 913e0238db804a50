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
    # cvae (issue 7)
    "BulkCVAE": "anomaly",
    "AnomalyMap": "anomaly",
    "anomaly_map": "anomaly",
    "plot_anomaly_map": "anomaly",
    "preprocess_crops": "anomaly",
    "anm_scores": "anomaly",
    "local_energy_scores": "anomaly",
    "cvae_cluster_workflow": "cvae_features",
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
    from .model_file import load_model_file, save_model_file  # noqa: F401
    from .anomaly import (AnomalyMap, BulkCVAE, anm_scores, anomaly_map, local_energy_scores,  # noqa: F401
                          plot_anomaly_map, preprocess_crops)
    from .cvae_features import cvae_cluster_workflow  # noqa: F401
