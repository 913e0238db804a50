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
    # cluster (issue 6)
    "PatchClusterer": "clustering",
    "pca_k_grid": "clustering",
    "evaluate_clustering": "clustering",
    "per_class_accuracy": "clustering",
    "FFTMagnitude": "descriptors",
    "PolarPowerSpectrum": "descriptors",
    "LatticeResidual": "descriptors",
    "lattice_fit_residual": "descriptors",
    # cvae (issue 7)
    "BulkCVAE": "anomaly",
    "AnomalyMap": "anomaly",
    "anomaly_map": "anomaly",
    "plot_anomaly_map": "anomaly",
    "preprocess_crops": "anomaly",
    "anm_scores": "anomaly",
    "local_energy_scores": "anomaly",
    "cvae_cluster_workflow": "cvae_features",
    # data
    "read_image": "io",
    "load_patch_folder": "datasets",
    "overlap_groups": "grouping",
    "grouped_train_test_split": "grouping",
    "GroupedStratifiedKFold": "grouping",
    "leakage_report": "grouping",
    "label_audit": "grouping",
    "mosaic_positions": "grouping",
    "spatial_blocks": "grouping",
    "purge_overlapping": "grouping",
    "spatial_train_test_split": "grouping",
    # patches / preprocess (issue 3); `stemroi.preprocess` is a submodule
    "PatchGrid": "patches",
    "extract_patches": "patches",
    "prepare_patches": "preprocess",
    # numeric
    "PCA": "decomposition",
    "KMeans": "cluster",
    "NClustersSelection": "cluster",
    "select_n_clusters": "cluster",
    "silhouette_samples": "metrics",
    "silhouette_score": "metrics",
    "cluster_accuracy": "metrics",
    "cluster_confusion_matrix": "metrics",
    # vgg16 (issue 4); `stemroi.weights` is a submodule (`from stemroi import weights`)
    "VGG16Features": "features",
    "extract_image_features": "features",
    # classifier
    "PatchClassifier": "classifier",
    "detect": "detection",
    "expected_calibration_error": "calibration",
    "fit_temperature": "calibration",
    "plot_rois": "plots",
    "plot_confusion_matrix": "plots",
    # unet / mobilenet (issue 8)
    "DefectSegmenter": "segment",
    "pseudo_label_masks": "segment",
    "residual_pseudo_labels": "segment",
    "pseudo_label_scores": "segment",
    "make_multi_defect_samples": "segment",
    "map_descriptors": "segment",
    "plot_class_heatmaps": "segment",
    "MobileNetV2": "mobilenet",
    "MobileNetV2Classifier": "mobilenet",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


# public submodules reachable as attributes (stemroi.preprocess.resize, ...)
_SUBMODULES = {"adapters", "cluster", "datasets", "decomposition", "features", "filters", "grouping", "io", "metrics", "model_file", "patches", "preprocess", "weights",
               "roi", "synth",
               "clustering", "descriptors", "plots_cluster", "anomaly", "cvae_features", "classifier", "detection",
               "plots", "calibration", "segment", "mobilenet"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stemroi' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from .clustering import PatchClusterer, evaluate_clustering, pca_k_grid, per_class_accuracy  # noqa: F401
    from .descriptors import FFTMagnitude, LatticeResidual, PolarPowerSpectrum, lattice_fit_residual  # noqa: F401
    from . import weights  # noqa: F401
    from .features import VGG16Features, extract_image_features  # noqa: F401
    from .filters import gaussian_filter, uniform_filter  # noqa: F401
    from .mobilenet import MobileNetV2, MobileNetV2Classifier  # noqa: F401
    from .model_file import load_model_file, save_model_file  # noqa: F401
    from .anomaly import (AnomalyMap, BulkCVAE, anm_scores, anomaly_map, local_energy_scores,  # noqa: F401
                          plot_anomaly_map, preprocess_crops)
    from .cvae_features import cvae_cluster_workflow  # noqa: F401
    from .datasets import load_patch_folder  # noqa: F401
    from .grouping import (  # noqa: F401
        GroupedStratifiedKFold,
        grouped_train_test_split,
        label_audit,
        leakage_report,
        mosaic_positions,
        overlap_groups,
        purge_overlapping,
        spatial_blocks,
        spatial_train_test_split,
    )
    from .io import read_image  # noqa: F401
    from .patches import PatchGrid, extract_patches  # noqa: F401
    from .preprocess import prepare_patches  # noqa: F401
    from .cluster import KMeans, NClustersSelection, select_n_clusters  # noqa: F401
    from .decomposition import PCA  # noqa: F401
    from .metrics import (  # noqa: F401
        cluster_accuracy,
        cluster_confusion_matrix,
        silhouette_samples,
        silhouette_score,
    )
    from .calibration import expected_calibration_error, fit_temperature  # noqa: F401
    from .classifier import PatchClassifier  # noqa: F401
    from .detection import detect  # noqa: F401
    from .plots import plot_confusion_matrix, plot_rois  # noqa: F401
    from .segment import (  # noqa: F401
        DefectSegmenter,
        make_multi_defect_samples,
        map_descriptors,
        plot_class_heatmaps,
        pseudo_label_masks,
        residual_pseudo_labels,
        pseudo_label_scores,
    )
