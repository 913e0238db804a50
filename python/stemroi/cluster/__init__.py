"""Clustering: K-means and average linkage on the C++ core, the choice of the number of
clusters, and ``PatchClusterer`` (label-free ROI discovery)."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "KMeans": "._kmeans",
    "NClustersSelection": "._kmeans",
    "select_n_clusters": "._kmeans",
    "ConvergenceWarning": "._kmeans",
    "PatchClusterer": "._patch_clusterer",
    "average_linkage": "._linkage",
    "cut_dendrogram": "._linkage",
    "pca_k_grid": "._patch_clusterer",
})
