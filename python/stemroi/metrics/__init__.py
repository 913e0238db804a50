"""Scores: silhouette coefficients, cluster-vs-class accuracy, per-class
accuracy of a clustering, and the calibration error of probabilities."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "silhouette_samples": "._cluster",
    "silhouette_score": "._cluster",
    "cluster_accuracy": "._cluster",
    "cluster_purity": "._cluster",
    "cluster_confusion_matrix": "._cluster",
    "ClusterConfusion": "._cluster",
    "adjusted_rand_score": "._cluster",
    "evaluate_clustering": "..cluster._patch_clusterer",
    "per_class_accuracy": "..cluster._patch_clusterer",
    "expected_calibration_error": "..models.calibration",
})
