"""Shared pieces of the cross-image protocol of benchmarks/classify.py and benchmarks/segment.py.

* the reference regions of the 768 x 768 CdTe frame (docs/segmentation.md) and the tile truth of
  notebooks/cdte_vgg16_study.ipynb: a 64 x 64 tile (stride 64, 144 tiles) is a region tile when at least
  5 % of its pixels lie in a region, a bulk tile when all of it lies more than 30 px from every region,
  and is left out otherwise (19 region tiles, 111 bulk tiles);
* acquisition shifts of patches and frames: detector gain, noise, blur, pixel size 0.8x / 1.25x.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

DATA = Path(os.environ.get("STEMROI_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "ayyubi-stem-defects"

# name -> (kind, value); pixel size f x the training one shows the content magnified 1 / f
SHIFTS = {"gain 1.3": ("gain", 1.3), "gain 0.75": ("gain", 0.75), "noise 0.03": ("noise", 0.03),
          "blur 1 px": ("blur", 1.0), "pixel 0.8x": ("zoom", 1.25), "pixel 1.25x": ("zoom", 0.8)}


def reference_regions(shape):
    """Boolean (row, col) masks of the CdTe frame's reference regions and of the area more than 30 px
    away from all of them (docs/segmentation.md)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    lc = np.hypot(yy - 346, xx - 334) <= 22
    sf_vertical = (np.abs(xx - 334) <= 16) & (yy <= 330) & ~lc
    line_c, line_r = np.array([0, 60, 160, 250, 320.0]), np.array([245, 265, 298, 328, 344.0])
    sf_inclined = (np.abs(yy - np.interp(xx, line_c, line_r)) <= 18) & (xx <= 318) & ~lc
    lower_left = (yy >= 685 + 0.34 * xx) & (xx <= 260)
    regions = {"LC junction": lc, "vertical SF": sf_vertical, "inclined SF": sf_inclined, "lower-left": lower_left}
    outside = ~ndimage.binary_dilation(np.any(list(regions.values()), axis=0), iterations=30)
    return regions, outside


def cdte_frame():
    import stemroi
    import stemroi.io

    raw = stemroi.read_image(DATA / "CdTe_Training_Image.tif")
    return stemroi.io.scale_to_unit(raw, "dtype", source_dtype=np.uint8)


def tile_truth(anyreg, outside, tile=64, min_share=0.05):
    """(origins, truth): 1 = region tile, 0 = bulk tile, -1 = neither (left out)."""
    origins, truth = [], []
    for r in range(0, anyreg.shape[0] - tile + 1, tile):
        for c in range(0, anyreg.shape[1] - tile + 1, tile):
            origins.append((r, c))
            a, o = anyreg[r:r + tile, c:c + tile], outside[r:r + tile, c:c + tile]
            truth.append(1 if a.mean() >= min_share else (0 if o.all() else -1))
    return np.array(origins), np.array(truth)


def auroc(truth, score):
    from sklearn.metrics import roc_auc_score

    keep = truth >= 0
    return float(roc_auc_score(truth[keep], score[keep]))


def shift_image(img, kind, value, seed=0):
    """One acquisition shift of a [0, 1] image (float32)."""
    img = np.asarray(img, np.float64)
    if kind == "gain":
        out = img * value
    elif kind == "noise":
        out = img + np.random.default_rng(seed).normal(0, value, img.shape)
    elif kind == "blur":
        out = ndimage.gaussian_filter(img, value, mode="reflect")
    elif kind == "zoom":
        out = ndimage.zoom(img, value, order=1, mode="reflect", grid_mode=True)
    else:
        raise ValueError(f"unknown shift {kind!r}")
    return np.clip(out, 0, 1).astype(np.float32)


def shift_patches(X, kind, value, seed=0):
    """The shift applied to each patch; zoomed patches are centre-cropped or reflect-padded back to size."""
    n, h, w = X.shape
    out = np.empty_like(X)
    for i in range(n):
        p = shift_image(X[i], kind, value, seed + i)
        if p.shape != (h, w):
            if p.shape[0] >= h:
                r0, c0 = (p.shape[0] - h) // 2, (p.shape[1] - w) // 2
                p = p[r0:r0 + h, c0:c0 + w]
            else:
                ph, pw = h - p.shape[0], w - p.shape[1]
                p = np.pad(p, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="reflect")
        out[i] = p
    return out


def shifted_frame_truth(img, kind, value, seed=0):
    """(shifted frame, region union, outside) with the masks zoomed like the frame."""
    regions, outside = reference_regions(img.shape)
    anyreg = np.any(list(regions.values()), axis=0)
    s = shift_image(img, kind, value, seed)
    if s.shape != img.shape:
        z = (s.shape[0] / img.shape[0], s.shape[1] / img.shape[1])
        anyreg = ndimage.zoom(anyreg.astype(np.uint8), z, order=0, grid_mode=True, mode="nearest")[: s.shape[0], : s.shape[1]] > 0
        outside = ndimage.zoom(outside.astype(np.uint8), z, order=0, grid_mode=True, mode="nearest")[: s.shape[0], : s.shape[1]] > 0
    return s, anyreg, outside
