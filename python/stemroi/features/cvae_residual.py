"""The Ayyubi dataset repo's CVAE clustering workflow.

A CVAE trained on a bulk training image reconstructs each labelled patch; the
difference image (input - reconstruction) and a filtered difference (Gaussian
smoothed, |.| < threshold zeroed) give 47 handcrafted descriptors (pixel
intensity, shape of the residual blobs, frequency content). Three-tier
selection (one of each pair with |Pearson| > 0.95 dropped; features with a
negative or low (<= 0.05) per-feature silhouette dropped; raw variance < 0.1 dropped),
standardisation, PCA and K-means with the silhouette-chosen k follow.

Note: the per-feature silhouette uses the class labels (as the workflow
does), so the selection is label-informed and the cluster accuracy is an
optimistic, in-sample figure.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..io.patch_folders import load_patch_folder
from ..metrics._cluster import silhouette_score
from ..preprocessing.filters import gaussian_filter

__all__ = ["difference_features", "FEATURE_NAMES", "select_features", "cvae_cluster_workflow",
           "per_feature_silhouette"]

_INTENSITY = ["mean", "std", "min", "max", "median", "abs_mean", "energy", "skew", "kurtosis", "abs_p95",
              "frac_above"]
_SHAPE = ["area", "n_blobs", "largest_blob", "eccentricity", "centroid_offset", "bbox_aspect"]
_FREQ = ["low_band", "mid_band", "high_band", "spectral_centroid", "spectral_entropy", "peak_radius"]
FEATURE_NAMES: List[str] = ([f"diff_{n}" for n in _INTENSITY + _SHAPE + _FREQ]
                            + [f"filt_{n}" for n in _INTENSITY + _SHAPE + _FREQ] + ["anm"])


def _label_components(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    from scipy import ndimage

    return ndimage.label(mask)


def _moments(x: np.ndarray) -> Tuple[float, float]:
    m, s = x.mean(), x.std()
    if s == 0:
        return 0.0, 0.0
    z = (x - m) / s
    return float((z**3).mean()), float((z**4).mean() - 3.0)


def _image_features(d: np.ndarray, threshold: float) -> List[float]:
    a = np.abs(d)
    skew, kurt = _moments(d)
    intensity = [d.mean(), d.std(), d.min(), d.max(), np.median(d), a.mean(), (d**2).mean(), skew, kurt,
                 np.percentile(a, 95), (a >= threshold).mean()]
    h, w = d.shape
    mask = a >= threshold
    lab, n = _label_components(mask)
    if n == 0:
        shape = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    else:
        sizes = np.bincount(lab.ravel())[1:]
        big = int(np.argmax(sizes)) + 1
        rr, cc = np.nonzero(lab == big)
        if len(rr) > 1:
            cov = np.cov(np.stack([rr, cc]).astype(np.float64))
            ev = np.sort(np.linalg.eigvalsh(cov))
            ecc = float(np.sqrt(max(0.0, 1 - ev[0] / ev[1]))) if ev[1] > 0 else 0.0
        else:
            ecc = 0.0
        off = np.hypot(rr.mean() - (h - 1) / 2, cc.mean() - (w - 1) / 2) / np.hypot(h / 2, w / 2)
        bh, bw = rr.max() - rr.min() + 1, cc.max() - cc.min() + 1
        shape = [mask.mean(), float(n), sizes.max() / (h * w), ecc, off, min(bh, bw) / max(bh, bw)]
    power = np.abs(np.fft.fftshift(np.fft.fft2(d - d.mean()))) ** 2
    fy, fx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij")
    radius = np.hypot(fy / h, fx / w)  # cycles / pixel
    total = power.sum()
    if total <= 0:
        freq = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    else:
        p = power / total
        freq = [p[radius < 0.1].sum(), p[(radius >= 0.1) & (radius < 0.25)].sum(), p[radius >= 0.25].sum(),
                (p * radius).sum(), float(-(p[p > 0] * np.log(p[p > 0])).sum()), float(radius.ravel()[np.argmax(p)])]
    return [float(v) for v in intensity + shape + freq]


def difference_features(model, patches, *, filter_sigma: float = 1.0, threshold: float = 0.2) -> np.ndarray:
    """47 descriptors per patch from the CVAE difference and filtered difference.

    ``model`` is a fitted ``stemroi.BulkCVAE``; patches (n, s, s) are
    preprocessed as the model's training crops."""
    from ..models.cvae import preprocess_crops

    x = preprocess_crops(patches, float(model.blur_sigma), n_threads=model.n_threads)
    diff = model.difference(x, preprocessed=True)
    filt = gaussian_filter(diff, float(filter_sigma)) if filter_sigma > 0 else diff.copy()
    filt = np.where(np.abs(filt) < threshold / 2, 0, filt).astype(np.float32)
    anm = model.score(x, kind="anm", preprocessed=True)
    rows = []
    for i in range(len(x)):
        rows.append(_image_features(diff[i], threshold) + _image_features(filt[i], threshold / 2) + [float(anm[i])])
    return np.asarray(rows, dtype=np.float64)


def per_feature_silhouette(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Silhouette of the class labels along each feature alone (standardised).

    A constant feature, or fewer than two classes, scores -1; when every class
    is a single sample every silhouette is 0 (singletons score 0).
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    out = np.zeros(X.shape[1])
    for j in range(X.shape[1]):
        f = X[:, j]
        sd = f.std()
        if sd == 0 or n_classes < 2:
            out[j] = -1.0
        elif n_classes < len(f):
            out[j] = silhouette_score(((f - f.mean()) / sd)[:, None], labels)
    return out


def select_features(X: np.ndarray, labels, *, corr_max: float = 0.95, min_silhouette: float = 0.0,
                    min_variance: float = 0.1, min_features: int = 5,
                    names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Three-tier selection. Returns {'keep': indices, 'dropped_corr', 'dropped_silhouette',
    'dropped_variance', 'silhouette'}.

    Single features rarely separate many overlapping classes, so the
    silhouette tier keeps at least ``min_features`` (the best ones) even when
    their silhouette is <= ``min_silhouette``."""
    X = np.asarray(X, dtype=np.float64)
    names = list(names) if names is not None else [str(i) for i in range(X.shape[1])]
    keep = [j for j in range(X.shape[1]) if X[:, j].std() > 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(X[:, keep], rowvar=False)
    dropped_corr = []
    alive = list(range(len(keep)))
    for i in range(len(keep)):
        if i not in alive:
            continue
        for j in range(i + 1, len(keep)):
            if j in alive and abs(corr[i, j]) > corr_max:
                alive.remove(j)
                dropped_corr.append(names[keep[j]])
    keep = [keep[i] for i in alive]
    sil = per_feature_silhouette(X[:, keep], labels)
    floor = np.sort(sil)[::-1][min(min_features, len(sil)) - 1] if len(sil) else np.inf
    passed = [s > min_silhouette or s >= floor for s in sil]
    dropped_sil = [names[k] for k, ok in zip(keep, passed) if not ok]
    keep = [k for k, ok in zip(keep, passed) if ok]
    var = X[:, keep].var(0)
    passed = var >= min_variance
    if len(keep) and not passed.any():  # never empty: keep the most variable feature
        passed[int(np.argmax(var))] = True
    dropped_var = [names[k] for k, ok in zip(keep, passed) if not ok]
    keep = [k for k, ok in zip(keep, passed) if ok]
    return {"keep": np.asarray(keep, dtype=np.int64), "dropped_corr": dropped_corr, "dropped_silhouette": dropped_sil,
            "dropped_variance": dropped_var, "silhouette": sil}


def _stemroi_engine():
    import stemroi

    def pca(X, var):
        return stemroi.PCA(n_components=var, random_state=0).fit_transform(X)

    def select(X, k_range, random_state):
        sel = stemroi.select_n_clusters(X, k_range=k_range, random_state=random_state, n_init=10)
        return sel.best_k, dict(zip(sel.k_values, sel.scores)), sel.labels

    def kmeans(X, k, random_state):
        return stemroi.KMeans(n_clusters=k, random_state=random_state, n_init=10).fit(X).labels_

    return {"name": "stemroi numeric engine", "pca": pca, "select": select, "kmeans": kmeans,
            "accuracy": stemroi.cluster_accuracy}


def cvae_cluster_workflow(image, patch_folder, *, epochs: int = 5, variant: str = "dataset_repo",
                          blur_sigma: float = 1.0, n_crops: int = 600, pca_variance: float = 0.95,
                          k_range=range(2, 11), random_state: int = 0, n_threads=None,
                          engine: Optional[Dict[str, Callable]] = None, model=None,
                          pattern: str = "*.tif") -> Dict[str, Any]:
    """Run the workflow end to end and return a summary dict (accuracy, best_k, ...).

    The labelled patches are read by :func:`stemroi.io.load_patch_folder`
    (``pattern``; files ordered by class and index) and used as 8-bit values (0..255).

    ``engine``: dict with 'pca'(X, variance) -> Z, 'select'(X, k_range, seed) ->
    (best_k, scores, labels_by_k), 'kmeans'(X, k, seed) -> labels,
    'accuracy'(y, labels) -> float, 'name'. Default: stemroi's numeric engine.
    ``model``: an already fitted BulkCVAE on bulk of this material (then
    ``image`` is not used for training)."""
    from ..models.cvae import BulkCVAE

    if engine is None:
        engine = _stemroi_engine()
    data = load_patch_folder(patch_folder, pattern)
    # the workflow's stored 8-bit values: x / 255 * 255 gives every uint8 value back exactly
    patches, y, classes = data.patches * np.float32(255), data.labels, data.class_names
    if model is None:
        model = BulkCVAE(latent_dim=20, variant=variant, epochs=epochs, blur_sigma=blur_sigma, n_crops=n_crops,
                         learning_rate=1e-3, crop_size=patches.shape[1], random_state=random_state,
                         n_threads=n_threads, recipe="study",
                         calibration_mode="fixed")  # the study's rule: same image
        model.fit(image)
    X = difference_features(model, patches, threshold=float(model.threshold))
    sel = select_features(X, y, names=FEATURE_NAMES)
    keep = sel["keep"]
    if len(keep) == 0:
        raise ValueError("feature selection kept no feature")
    Xs = X[:, keep]
    Xs = (Xs - Xs.mean(0)) / Xs.std(0)
    Z = engine["pca"](Xs, pca_variance)
    best_k, scores, labels_by_k = engine["select"](Z, k_range, random_state)
    acc = float(engine["accuracy"](y, labels_by_k[best_k]))
    n_cls = len(classes)
    lab_n = labels_by_k[n_cls] if n_cls in labels_by_k else engine["kmeans"](Z, n_cls, random_state)
    return {"engine": engine["name"], "n_patches": int(len(y)), "classes": classes, "n_classes": n_cls,
            "n_features": int(X.shape[1]), "n_selected": int(len(keep)),
            "selected": [FEATURE_NAMES[k] for k in keep], "n_components": int(Z.shape[1]), "best_k": int(best_k),
            "silhouette": float(scores[best_k]), "accuracy": acc,
            "accuracy_at_n_classes": float(engine["accuracy"](y, lab_n)), "selection": sel,
            "cvae_epochs": int(len(model.loss_history_)), "cvae_variant": model.variant}
