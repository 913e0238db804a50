"""Figures of the clustering study (matplotlib, headless-safe).

Every function draws on a new figure (or the given ``ax``) and returns the
figure; pass ``path=`` to also save it atomically (format from the suffix).
Nothing here needs a display: the Agg backend is selected when pyplot is
not imported yet and there is no display.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from ._common import class_colors, palette, pyplot, save_figure

__all__ = [
    "plot_silhouette_curve",
    "plot_cluster_map",
    "plot_cluster_montage",
    "plot_per_class_accuracy",
    "plot_embedding_2d",
    "tsne_embedding",
]


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def plot_silhouette_curve(scores: Mapping[int, float], *, best_k: Optional[int] = None, ax=None,
                          label: Optional[str] = None, title: str = "Silhouette vs number of clusters", path=None):
    """Mean silhouette against k (``scores``: {k: score}, e.g. ``PatchClusterer.silhouette_scores_``)."""
    plt = pyplot()
    if not scores:
        raise ValueError("scores is empty; expected {k: silhouette} for at least one k")
    ks = sorted(scores)
    vals = [scores[k] for k in ks]
    fig = ax.figure if ax is not None else plt.figure(figsize=(4.5, 3.2))
    ax = ax or fig.add_subplot(111)
    ax.plot(ks, vals, "o-", label=label)
    best_k = best_k if best_k is not None else ks[int(np.argmax(vals))]
    ax.axvline(best_k, color="0.6", ls="--", lw=1)
    ax.set_xlabel("number of clusters k")
    ax.set_ylabel("mean silhouette")
    ax.set_title(title)
    if label:
        ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_cluster_map(image, result, *, ax=None, alpha: float = 0.35, title: Optional[str] = None,
                     tint_bulk: bool = False, legend_names: Optional[Mapping[str, str]] = None, path=None):
    """The image with every tile of ``result`` (a ROIResult of cluster labels) tinted by its cluster.

    Tiles that are not regions of interest (``result.is_roi`` False: the bulk
    cluster's, or the unflagged ones when the map flags by score) are left
    untinted unless ``tint_bulk``;
    ``legend_names`` maps labels to longer legend text (e.g. the dominant
    labelled class of each cluster)."""
    plt = pyplot()
    from matplotlib.patches import Patch, Rectangle

    img = np.asarray(image, dtype=float)
    if img.ndim != 2:
        raise ValueError(f"image: expected a 2-D array, got shape {img.shape}")
    names = list(result.class_names)
    colors = class_colors(names, result.bulk_label, include_bulk=True)
    fig = ax.figure if ax is not None else plt.figure(figsize=(6.5, 6.5))
    ax = ax or fig.add_subplot(111)
    ax.imshow(img, cmap="gray")
    for (r, c), (h, w), lab, roi in zip(result.origins, result.sizes, result.labels, result.is_roi):
        if not tint_bulk and not roi:
            continue
        col = colors.get(str(lab), (0.5, 0.5, 0.5, 1.0))
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, facecolor=col, alpha=alpha, edgecolor=col, lw=0.8))
    counts = result.counts()
    legend_names = dict(legend_names or {})
    handles = []
    for n in names:
        if n == result.bulk_label:
            bulk = " - bulk" + (", untinted" if not tint_bulk and result.flagged is None else "")
        else:
            bulk = ""
        handles.append(Patch(color=colors[n], label=f"{legend_names.get(n, n)} ({counts.get(n, 0)}){bulk}"))
    if result.flagged is not None and not tint_bulk:
        handles.append(Patch(facecolor="none", edgecolor="none",
                             label=f"tinted: {int(result.is_roi.sum())} tiles flagged by score"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_axis_off()
    ax.set_title(title or f"cluster map ({len(result)} tiles)")
    return _finish(fig, path)


def plot_cluster_montage(patches, labels, *, n_per_cluster: int = 8, random_state=0, cluster_names=None,
                         path=None):
    """A row of example patches per cluster (randomly drawn, seeded)."""
    plt = pyplot()
    P = np.asarray(patches)
    lab = np.asarray(labels)
    if P.ndim != 3 or len(P) != len(lab):
        raise ValueError(f"patches (n, h, w) and labels (n,) must match, got shapes {P.shape} and {lab.shape}")
    clusters = np.unique(lab)
    rng = np.random.default_rng(random_state)
    fig, axes = plt.subplots(len(clusters), n_per_cluster, figsize=(1.2 * n_per_cluster, 1.3 * len(clusters)),
                             squeeze=False)
    for i, c in enumerate(clusters):
        idx = np.nonzero(lab == c)[0]
        pick = rng.choice(idx, size=min(n_per_cluster, len(idx)), replace=False)
        for j in range(n_per_cluster):
            a = axes[i, j]
            a.set_axis_off()
            if j < len(pick):
                a.imshow(P[pick[j]], cmap="gray")
        name = cluster_names[i] if cluster_names is not None else f"cluster {c}"
        axes[i, 0].set_title(f"{name} (n={len(idx)})", fontsize=8, loc="left")
    fig.tight_layout()
    return _finish(fig, path)


def plot_per_class_accuracy(per_class: Mapping[str, float], *, ax=None, title: str = "Per-class cluster accuracy",
                            label: Optional[str] = None, offset: float = 0.0, color: str = "C0", path=None):
    """The study's lollipop plot: fraction of each class in its matched cluster."""
    plt = pyplot()
    names = [str(k) for k in per_class]
    vals = np.array([per_class[k] for k in per_class], dtype=float)
    fig = ax.figure if ax is not None else plt.figure(figsize=(5.0, 3.2))
    ax = ax or fig.add_subplot(111)
    y = np.arange(len(names)) + offset
    ax.hlines(y, 0, vals, lw=1.5, color=color)
    ax.plot(vals, y, "o", label=label, color=color)
    ax.set_yticks(np.arange(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("fraction of class in matched cluster")
    ax.set_title(title)
    if label:
        ax.legend(fontsize=8, loc="lower left")
    return _finish(fig, path)


def tsne_embedding(X, *, random_state: int = 0, perplexity: float = 30.0, max_iter: int = 1000) -> np.ndarray:
    """2-D t-SNE of ``X`` for visualisation only (scikit-learn; never used for clustering).

    ``max_iter`` (at least 250) is passed as scikit-learn's ``max_iter``, or as
    ``n_iter`` on scikit-learn < 1.5, which named it so.
    """
    import inspect

    try:
        from sklearn.manifold import TSNE
    except ImportError as exc:  # pragma: no cover
        raise ImportError("tsne_embedding needs scikit-learn (visualisation only)") from exc
    X = np.asarray(X, dtype=float)
    perplexity = min(perplexity, max(2.0, (len(X) - 1) / 3.0))
    iters = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
    return TSNE(n_components=2, init="pca", learning_rate="auto", perplexity=perplexity,
                random_state=random_state, **{iters: max(250, int(max_iter))}).fit_transform(X)


def plot_embedding_2d(xy, labels, *, names: Optional[Sequence[str]] = None, ax=None, title: str = "",
                      path=None):
    """Scatter of a 2-D embedding coloured by ``labels`` (clusters or classes)."""
    plt = pyplot()
    xy = np.asarray(xy, dtype=float)
    lab = np.asarray(labels)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(lab):
        raise ValueError(f"xy must be (n, 2) matching labels (n,), got shapes {xy.shape} and {lab.shape}")
    fig = ax.figure if ax is not None else plt.figure(figsize=(4.5, 4.0))
    ax = ax or fig.add_subplot(111)
    uniq = np.unique(lab)
    for col, u in zip(palette(len(uniq)), uniq):
        m = lab == u
        name = names[int(u)] if names is not None and np.issubdtype(type(u), np.integer) else str(u)
        ax.scatter(xy[m, 0], xy[m, 1], s=4, color=col, label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=6, markerscale=2, loc="best", frameon=False)
    return _finish(fig, path)
