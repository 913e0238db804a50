"""stemroi: regions of interest in atomic-resolution STEM images.

The pipeline, one subpackage per step (``docs/developer.md`` has the map)::

    io               images, patch folders, synthetic frames, model files
    preprocessing    PatchGrid tiles, network inputs, filters
    features         VGG16 embeddings, spectral/lattice and CVAE descriptors
    decomposition    PCA
    cluster          K-means, the choice of k, PatchClusterer
    models           PatchClassifier, BulkCVAE, DefectSegmenter, weights
    model_selection  overlap-aware splits, leakage report
    detection        detect, anomaly / cluster / segmentation maps, ROIResult
    metrics          silhouette, cluster accuracy, calibration error
    plotting         figures

The names below are the curated entry points; everything else is reachable
in its subpackage. Names load lazily, so ``import stemroi`` stays fast.
"""
from __future__ import annotations

import importlib

from . import _compat

__version__ = "0.1.0"

# curated public name -> subpackage that offers it
_EXPORTS = {
    "read_image": "io",
    "load_patch_folder": "io",
    "PatchGrid": "preprocessing",
    "PCA": "decomposition",
    "KMeans": "cluster",
    "select_n_clusters": "cluster",
    "PatchClusterer": "cluster",
    "silhouette_score": "metrics",
    "silhouette_samples": "metrics",
    "cluster_accuracy": "metrics",
    "VGG16Features": "features",
    "StemCNNFeatures": "features",
    "PatchClassifier": "models",
    "MobileNetV2Classifier": "models",
    "FewLabelClassifier": "models",
    "BulkCVAE": "models",
    "DefectSegmenter": "models",
    "detect": "detection",
    "anomaly_map": "detection",
    "ROIResult": "detection",
    "overlap_groups": "model_selection",
    "grouped_train_test_split": "model_selection",
    "spatial_train_test_split": "model_selection",
    "leakage_report": "model_selection",
    "NotFittedError": "base",
}

_SUBPACKAGES = {
    "adapters", "base", "cluster", "decomposition", "detection", "features", "io", "metrics",
    "model_selection", "models", "plotting", "preprocessing", "cli", "demo",
}

# names that left the top level: still resolved, with a FutureWarning naming the new path
_MOVED_NAMES = {
    "save_model_file": "io",
    "load_model_file": "io",
    "gaussian_filter": "preprocessing",
    "uniform_filter": "preprocessing",
    "pca_k_grid": "cluster",
    "evaluate_clustering": "metrics",
    "per_class_accuracy": "metrics",
    "FFTMagnitude": "features",
    "PolarPowerSpectrum": "features",
    "LatticeResidual": "features",
    "lattice_fit_residual": "features",
    "AnomalyMap": "detection",
    "plot_anomaly_map": "plotting",
    "preprocess_crops": "models",
    "anm_scores": "models",
    "local_energy_scores": "models",
    "cvae_cluster_workflow": "features",
    "GroupedStratifiedKFold": "model_selection",
    "label_audit": "model_selection",
    "mosaic_positions": "model_selection",
    "spatial_blocks": "model_selection",
    "purge_overlapping": "model_selection",
    "extract_patches": "preprocessing",
    "prepare_patches": "preprocessing",
    "NClustersSelection": "cluster",
    "cluster_confusion_matrix": "metrics",
    "extract_image_features": "features",
    "expected_calibration_error": "metrics",
    "fit_temperature": "models",
    "plot_rois": "plotting",
    "plot_confusion_matrix": "plotting",
    "pseudo_label_masks": "models",
    "residual_pseudo_labels": "models",
    "pseudo_label_scores": "models",
    "make_multi_defect_samples": "models",
    "map_descriptors": "detection",
    "plot_class_heatmaps": "plotting",
    "MobileNetV2": "models",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

_compat.install(__name__)


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _MOVED_NAMES:
        new = f"stemroi.{_MOVED_NAMES[name]}.{name}"
        _compat.warn_moved(f"stemroi.{name}", new)
        return getattr(importlib.import_module(f".{_MOVED_NAMES[name]}", __name__), name)
    elif name in _compat.MOVED_MODULES:
        return importlib.import_module(f".{name}", __name__)  # the shim warns
    else:
        raise AttributeError(f"module 'stemroi' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(__all__) | _SUBPACKAGES)
