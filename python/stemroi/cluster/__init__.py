"""Clustering: K-means on the C++ core, the choice of the number of
clusters, and ``PatchClusterer`` (label-free ROI discovery)."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "KMeans": "._kmeans",
    "NClustersSelection": "._kmeans",
    "select_n_clusters": "._kmeans",
    "ConvergenceWarning": "._kmeans",
    "PatchClusterer": "._patch_clusterer",
    "pca_k_grid": "._patch_clusterer",
})
