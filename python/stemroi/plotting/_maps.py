"""Figures of dense detector maps: the CVAE anomaly map and the U-Net
per-class heatmaps (headless-safe; saved atomically when ``path`` is given)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..detection.roi import ROIResult
from ._common import pyplot, save_figure

__all__ = ["plot_anomaly_map", "plot_class_heatmaps"]


def plot_anomaly_map(image, result: ROIResult, path=None, *, title: str = "CVAE anomaly map", ax=None):
    """Overlay of the anomaly map on the image with flagged tiles outlined.

    ``result``: the :class:`ROIResult` of :func:`stemroi.detection.anomaly_map`
    (``maps["anomaly"]``, ``metadata["map_threshold"]``). Without ``ax`` a
    second panel shows the whole map. Saved atomically to ``path`` when given.
    Returns the figure."""
    from matplotlib.patches import Rectangle

    from ..models.cvae import _image_2d

    plt = pyplot()
    if "anomaly" not in result.maps:
        raise ValueError(f"result has no 'anomaly' map (maps: {sorted(result.maps)}); "
                         "pass the result of stemroi.detection.anomaly_map")
    amap = result.maps["anomaly"]
    threshold = float(result.metadata["map_threshold"])
    img = _image_2d(image)
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
    else:
        fig, axes = ax.figure, [ax]
    axes[0].imshow(img, cmap="gray")
    hm = axes[0].imshow(np.ma.masked_less(amap, threshold), cmap="inferno", alpha=0.55,
                        vmin=threshold, vmax=max(float(amap.max()), threshold + 1e-6))
    for (r, c), (h, w), roi in zip(result.origins, result.sizes, result.is_roi):
        if roi:
            axes[0].add_patch(Rectangle((c - 0.5, r - 0.5), w, h, fill=False, ec="cyan", lw=0.8))
    axes[0].set_title(f"{title}: {int(result.is_roi.sum())}/{len(result)} tiles flagged")
    axes[0].axis("off")
    fig.colorbar(hm, ax=axes[0], fraction=0.046, label="local RMS residual above bulk threshold")
    if len(axes) > 1:
        im = axes[1].imshow(amap, cmap="magma")
        axes[1].set_title("local RMS residual (input - reconstruction)")
        axes[1].axis("off")
        fig.colorbar(im, ax=axes[1], fraction=0.046)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=110)
    return fig


def plot_class_heatmaps(image, maps, channel_names: Optional[Sequence[str]] = None, path=None, *, ncols: int = 3,
                        title=None, dpi=110):
    """The image and one heatmap per channel (the study's Figures 2-3).

    ``maps``: the :class:`ROIResult` of :func:`stemroi.detection.segmentation_map`
    (its ``maps``, in order; ``channel_names`` selects and orders them) or a
    (C, H, W) array with ``channel_names``. Saved atomically to ``path`` when
    given. Returns the figure."""
    img = np.asarray(image)
    if isinstance(maps, ROIResult):
        names = list(maps.maps) if channel_names is None else [str(c) for c in channel_names]
        missing = [c for c in names if c not in maps.maps]
        if missing:
            raise ValueError(f"channel_names {missing} are not maps of the result (maps: {list(maps.maps)})")
        M = np.stack([maps.maps[c] for c in names]) if names else np.zeros((0,) + img.shape[-2:])
    else:
        M = np.asarray(maps)
        if channel_names is None:
            raise TypeError("channel_names is required when maps is an array")
        names = list(channel_names)
    if M.ndim != 3 or M.shape[1:] != img.shape[-2:]:
        raise ValueError(f"maps must be (C, H, W) matching the image {img.shape}, got {M.shape}")
    if len(names) != M.shape[0]:
        raise ValueError(f"channel_names has {len(names)} names, maps have {M.shape[0]} channels")
    plt = pyplot()
    panels = 1 + M.shape[0]
    nrows = int(np.ceil(panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 4 * nrows), squeeze=False)
    axes = axes.ravel()
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("image")
    for k in range(M.shape[0]):
        ax = axes[k + 1]
        ax.imshow(img, cmap="gray")
        im = ax.imshow(M[k], cmap="inferno", alpha=0.6, vmin=0, vmax=1)
        ax.set_title(f"{names[k]} (max {M[k].max():.2f})")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig
