"""Figures (matplotlib, headless-safe): ROI overlays, confusion matrices,
silhouette curves, cluster maps and montages, embeddings, anomaly maps and
per-class heatmaps."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "plot_rois": "._rois",
    "plot_confusion_matrix": "._rois",
    "class_colors": "._common",
    "palette": "._common",
    "save_figure": "._common",
    "plot_silhouette_curve": "._cluster",
    "plot_cluster_map": "._cluster",
    "plot_cluster_montage": "._cluster",
    "plot_per_class_accuracy": "._cluster",
    "plot_embedding_2d": "._cluster",
    "tsne_embedding": "._cluster",
    "plot_anomaly_map": "._maps",
    "plot_class_heatmaps": "._maps",
})
