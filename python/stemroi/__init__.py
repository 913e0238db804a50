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
    # numeric
    "PCA": "decomposition",
    "KMeans": "cluster",
    "NClustersSelection": "cluster",
    "select_n_clusters": "cluster",
    "silhouette_samples": "metrics",
    "silhouette_score": "metrics",
    "cluster_accuracy": "metrics",
    "cluster_confusion_matrix": "metrics",
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
    from .cluster import KMeans, NClustersSelection, select_n_clusters  # noqa: F401
    from .decomposition import PCA  # noqa: F401
    from .metrics import (  # noqa: F401
        cluster_accuracy,
        cluster_confusion_matrix,
        silhouette_samples,
        silhouette_score,
    )
