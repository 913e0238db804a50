"""TEMPORARY scikit-learn stand-in for stemroi's numeric engine, used only
until the ``numeric`` branch (stemroi.PCA, select_n_clusters, ...) is merged.
Delete this file then."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple

import numpy as np


def PCA(n_components=None, random_state=None, n_threads=None):
    from sklearn.decomposition import PCA as _PCA

    return _PCA(n_components=n_components, svd_solver="full")


def KMeans(n_clusters=8, n_init=10, random_state=None, n_threads=None):
    from sklearn.cluster import KMeans as _KM

    return _KM(n_clusters, n_init=n_init, random_state=random_state)


@dataclass
class NClustersSelection:
    k_values: List[int]
    scores: np.ndarray
    inertias: np.ndarray
    labels: Dict[int, np.ndarray]
    best_k: int
    centers: Dict[int, np.ndarray] = field(default_factory=dict)


def select_n_clusters(X, k_range=range(2, 11), *, n_init=10, random_state=None, n_threads=None):
    from sklearn.metrics import silhouette_score

    ks = list(k_range)
    labels, centers, scores, inertias = {}, {}, [], []
    for k in ks:
        km = KMeans(k, n_init=n_init, random_state=random_state).fit(X)
        labels[k] = km.labels_.astype(np.int64)
        centers[k] = km.cluster_centers_
        scores.append(silhouette_score(X, km.labels_))
        inertias.append(km.inertia_)
    scores = np.asarray(scores)
    return NClustersSelection(ks, scores, np.asarray(inertias), labels, ks[int(np.argmax(scores))], centers)


class ClusterConfusion(NamedTuple):
    matrix: np.ndarray
    mapping: dict
    classes: np.ndarray
    clusters: np.ndarray


def cluster_confusion_matrix(y_true, labels):
    from scipy.optimize import linear_sum_assignment

    classes, yc = np.unique(np.asarray(y_true), return_inverse=True)
    clusters, cc = np.unique(np.asarray(labels), return_inverse=True)
    m = np.zeros((len(classes), len(clusters)), np.int64)
    np.add.at(m, (yc, cc), 1)
    r, c = linear_sum_assignment(-m)
    return ClusterConfusion(m, {clusters[j].item(): classes[i].item() for i, j in zip(r, c)}, classes, clusters)


def cluster_accuracy(y_true, labels, *, sample_weighted=False):
    conf = cluster_confusion_matrix(y_true, labels)
    m = conf.matrix
    ci = {c: j for j, c in enumerate(conf.clusters.tolist())}
    ri = {c: i for i, c in enumerate(conf.classes.tolist())}
    matched = np.zeros(len(conf.classes))
    for cl, cls in conf.mapping.items():
        matched[ri[cls]] = m[ri[cls], ci[cl]]
    return float(np.mean(matched / m.sum(1))) if sample_weighted else float(matched.sum() / m.sum())
