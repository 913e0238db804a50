"""Figures: the VGG16 study's ROI overlay and a confusion matrix (Agg-safe).

Both draw into a given matplotlib Axes (or a new figure) and return the Axes;
save them with :func:`stemroi.plotting.save_figure`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..detection.roi import UNKNOWN, ROIResult
from ._common import class_colors, pyplot

__all__ = ["plot_rois", "plot_confusion_matrix"]


UNFAMILIAR_COLOR = "#ffd400"


def plot_rois(image, result: ROIResult, ax=None, *, show_unknown: bool = True, linewidth: float = 1.5,
              title: Optional[str] = None, legend: bool = True, show_unfamiliar: bool = True):
    """The study's overlay: the image in grey, a coloured rectangle per non-bulk tile
    (one colour per class, dashed white for unknown), bulk not drawn, and a legend.

    ``show_unfamiliar``: tiles whose features are unlike the model's training
    data (``result.unfamiliar``, docs/unfamiliar.md) are cross-hatched in
    yellow, bulk-labelled ones included, since their labels are not to be
    trusted; the legend counts them."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        from ..io._readers import to_grey

        img = to_grey(img)
    if img.ndim != 2:
        raise ValueError(f"image: expected a 2-D array, got shape {img.shape}")
    if not isinstance(result, ROIResult):
        raise TypeError(f"result must be an ROIResult, got {type(result).__name__}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(img, cmap="gray", interpolation="nearest")
    colors = class_colors(result.class_names, result.bulk_label)
    used = {}
    for (r, c), (h, w), lab, unk, roi in zip(result.origins, result.sizes, result.labels, result.unknown,
                                             result.is_roi):
        lab = str(lab)
        if not roi:
            continue
        if unk and not show_unknown:
            continue
        color = colors.get(lab, "#cccccc")
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, edgecolor=color, linewidth=linewidth,
                               linestyle="--" if unk else "-"))
        used[lab] = color
    unfamiliar = None if result.unfamiliar is None or not show_unfamiliar else np.asarray(result.unfamiliar, bool)
    n_unfamiliar = 0 if unfamiliar is None else int(unfamiliar.sum())
    if n_unfamiliar:
        for (r, c), (h, w) in zip(result.origins[unfamiliar], result.sizes[unfamiliar]):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, hatch="xx", edgecolor=UNFAMILIAR_COLOR,
                                   linewidth=0.0, alpha=0.6))
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    counts = result.counts()
    if legend and (used or n_unfamiliar):
        handles = [Line2D([0], [0], color=col, lw=2, linestyle="--" if lab == UNKNOWN else "-",
                          label=f"{lab} ({counts.get(lab, 0)})") for lab, col in sorted(used.items())]
        if n_unfamiliar:
            handles.append(Patch(facecolor="none", edgecolor=UNFAMILIAR_COLOR, hatch="xx",
                                 label=f"unfamiliar ({n_unfamiliar}): unlike the training data"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    n_roi = int(result.is_roi.sum())
    ax.set_title(title if title is not None else f"{n_roi} of {len(result)} tiles flagged")
    return ax


def plot_confusion_matrix(cm_or_true, y_pred=None, class_names: Optional[Sequence[str]] = None, ax=None,
                          normalize: Optional[str] = None, title: Optional[str] = None, cmap: str = "Blues"):
    """Confusion matrix from a (k, k) count matrix or from (y_true, y_pred) class indices.

    ``normalize="true"`` shows per-row (recall) fractions."""
    plt = pyplot()
    if y_pred is None:
        cm = np.asarray(cm_or_true)
        if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
            raise ValueError(f"confusion matrix must be square (k, k), got shape {cm.shape}")
    else:
        yt, yp = np.asarray(cm_or_true), np.asarray(y_pred)
        if yt.shape != yp.shape or yt.ndim != 1:
            raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {yt.shape} and {yp.shape}")
        labels = np.unique(np.concatenate([yt, yp])) if class_names is None else np.arange(len(class_names))
        cm = np.zeros((len(labels), len(labels)), np.int64)
        pos = {v: i for i, v in enumerate(labels.tolist())}
        for a, b in zip(yt.tolist(), yp.tolist()):
            if a not in pos or b not in pos:
                raise ValueError(f"label {a if a not in pos else b} outside the {len(labels)} classes")
            cm[pos[a], pos[b]] += 1
    k = cm.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    if len(names) != k:
        raise ValueError(f"class_names: {len(names)} names for a {k} x {k} matrix")
    if normalize not in (None, "true"):
        raise ValueError(f"normalize must be None or 'true', got {normalize!r}")
    shown = cm.astype(np.float64)
    if normalize == "true":
        shown = shown / np.maximum(shown.sum(1, keepdims=True), 1)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * k, 0.8 + 0.7 * k))
    ax.imshow(shown, cmap=cmap, vmin=0)
    for i in range(k):
        for j in range(k):
            txt = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > 0.6 * shown.max() else "black")
    ax.set_xticks(range(k))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return ax
