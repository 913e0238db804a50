"""Weakly supervised multi-defect segmentation benchmark (issue 8).

1. Synthetic truth (Gaussian-column lattice with planted vacancies and
   interstitials; local stand-in until stemroi.synth is merged): quality of the
   pseudo-labels against the true defect positions, then a U-Net trained from
   each pseudo-label method ("deviation" = the study's, "lattice" = this
   project's) is run on large fields: detection recall and false positives of
   the planted defects per class.
2. CdTe and STO labelled patches: pixel precision / recall / IoU per class of
   the U-Net maps against the pseudo-labels on held-out patches (as the study
   reports them; note this only measures agreement with the heuristic), then
   map descriptors -> standardise -> PCA -> K-means with silhouette-chosen k ->
   cluster accuracy, t-SNE figure.
3. Heatmaps of the 768 x 768 CdTe frame (stacking faults, Lomer-Cottrell junction).

Clustering uses scikit-learn (PCA, KMeans, silhouette_score, TSNE) until the
numeric area (stemroi.PCA / KMeans / select_n_clusters) is merged.

    python benchmarks/segment.py [--out /tmp/stemroi_bench] [--quick]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import _stem_local as L
import stemroi

SETTINGS = dict(batch_size=32, learning_rate=2e-3, random_state=0, positive_weight=10.0)


def disk_masks(shape, truth, radius=3.0):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.stack([
        np.zeros(shape, bool) if t is None else (np.hypot(yy - t[0], xx - t[1]) <= radius) for t in truth
    ])


def prf(pred, ref):
    tp = np.logical_and(pred, ref).sum()
    fp = np.logical_and(pred, ~ref).sum()
    fn = np.logical_and(~pred, ref).sum()
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
    return p, r, iou


def detect(maps_c, threshold=0.5):
    """Blob peak positions of one channel's map above threshold."""
    lab, n = ndimage.label(maps_c > threshold, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2))
    return np.array(ndimage.maximum_position(maps_c, lab, range(1, n + 1)), float)


def synthetic_part(args, out):
    print("== 1. synthetic lattice with planted defects (ground truth known)")
    rng = np.random.default_rng(0)
    X, y, truth = L.synthetic_patches(rng, n_per_class=args.syn_per_class, size=64)
    disks = disk_masks(X.shape[1:], truth)
    is_def = y != "Bulk"
    print(f"   {len(y)} patches 64x64 (Bulk / Vacancy / Interstitial), lattice spacing {L.SPACING}px, noise 0.03")
    print("   pseudo-labels vs true defect disks (r = 3 px) on defect patches:")
    for method in ("deviation", "lattice"):
        m = stemroi.pseudo_label_masks(X, ~is_def, method=method, percentile=args.percentile).astype(bool)
        p, r, iou = prf(m[is_def], disks[is_def])
        hit = np.mean([np.any(m[k] & disks[k]) for k in np.flatnonzero(is_def)])
        print(f"     {method:9s} pixel precision {p:.3f} recall {r:.3f} IoU {iou:.3f}; "
              f"patches whose mask touches the defect {hit:.2f}")
    fields = [L.synthetic_field(np.random.default_rng(100 + i), (256, 256), n_each=6) for i in range(args.fields)]
    sites = 32 * 32
    for method in ("deviation", "lattice"):
        seg = stemroi.DefectSegmenter(epochs=args.syn_epochs, n_threads=args.threads, base_channels=args.base,
                                      samples_per_epoch=args.samples, pseudo_label=method,
                                      percentile=args.percentile, **SETTINGS)
        seg.fit(X, y)
        t0 = time.perf_counter()
        maps = [seg.predict_maps(img) for img, _ in fields]
        pred_s = (time.perf_counter() - t0) / len(fields)
        print(f"   U-Net from '{method}' pseudo-labels: fit {seg.fit_time_:.0f} s "
              f"(loss {seg.loss_history_[0]:.3f} -> {seg.loss_history_[-1]:.3f}), 256x256 maps in {pred_s:.1f} s")
        for cls in ("Vacancy", "Interstitial"):
            c = seg.channel_names_.index(cls)
            found = planted = fp = 0
            for (img, tr), mp in zip(fields, maps):
                pk = detect(mp[c])
                pos = np.array(tr[cls], float)
                planted += len(pos)
                if len(pk):
                    d = np.hypot(pk[:, None, 0] - pos[None, :, 0], pk[:, None, 1] - pos[None, :, 1])
                    found += int((d.min(axis=0) <= 4).sum())
                    fp += int((d.min(axis=1) > 4).sum())
            print(f"     {cls:12s} detection recall {found}/{planted} = {found / planted:.2f}; false positives "
                  f"{fp} in {len(fields)} fields = {1000 * fp / (sites * len(fields)):.1f} per 1000 lattice sites")
        if method == "lattice":
            img, tr = fields[0]
            fig = stemroi.plot_class_heatmaps(img, maps[0], seg.channel_names_, out / "synthetic_field_maps.png",
                                              title="synthetic field: planted vacancies (6) and interstitials (6)")
            import matplotlib.pyplot as plt
            plt.close(fig)


def cluster_part(name, maps, channel_names, y, out, seed=0):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.metrics import confusion_matrix, silhouette_score
    from scipy.optimize import linear_sum_assignment

    feats, _ = stemroi.map_descriptors(maps, channel_names)
    Z = (feats - feats.mean(0)) / (feats.std(0) + 1e-12)
    Z = PCA(n_components=min(10, Z.shape[1]), random_state=seed).fit_transform(Z)
    scores = {}
    labels_k = {}
    for k in range(2, 11):
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(Z)
        labels_k[k] = km.labels_
        scores[k] = silhouette_score(Z, km.labels_)
    best = max(scores, key=scores.get)
    classes, yi = np.unique(y, return_inverse=True)

    def majority_acc(lab):
        return sum(np.bincount(yi[lab == c]).max() for c in np.unique(lab)) / len(yi)

    def hungarian_acc(lab):
        cm = confusion_matrix(yi, lab)
        r, c = linear_sum_assignment(-cm)
        return cm[r, c].sum() / len(yi)

    kc = len(classes)
    print(f"   {name}: silhouette-chosen k = {best} (silhouette {scores[best]:.3f}); cluster accuracy at k={best}: "
          f"Hungarian {hungarian_acc(labels_k[best]):.3f}, majority {majority_acc(labels_k[best]):.3f}; "
          f"at k = {kc} classes: Hungarian {hungarian_acc(labels_k[kc]) if kc <= 10 else float('nan'):.3f}")
    emb = TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(30, len(y) // 4)).fit_transform(Z)
    import matplotlib.pyplot as plt
    from stemroi._atomic import atomic_savefig

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ci, c in enumerate(classes):
        axes[0].scatter(*emb[yi == ci].T, s=8, label=c)
    axes[0].legend(fontsize=7, markerscale=2)
    axes[0].set_title(f"{name}: t-SNE of map descriptors, true classes")
    axes[1].scatter(*emb.T, s=8, c=labels_k[best], cmap="tab10")
    axes[1].set_title(f"K-means clusters (silhouette k = {best})")
    fig.tight_layout()
    atomic_savefig(fig, out / f"{name}_tsne.png", dpi=100)
    plt.close(fig)
    return best


def real_part(args, out):
    print("== 2. labelled patches: U-Net maps vs pseudo-labels (as the study), clustering of map descriptors")
    root = L.data_dir() / "ayyubi-stem-defects"
    models = {}
    for name in args.sets.split(","):
        X, y, _ = L.load_patch_folder(root / name)
        tr, _, te = L.random_split(len(y), (0.8, 0.0, 0.2), random_state=0)
        seg = stemroi.DefectSegmenter(epochs=args.epochs, n_threads=args.threads, base_channels=args.base,
                                      samples_per_epoch=args.samples, **SETTINGS)
        seg.fit(X[tr], y[tr])
        models[name] = seg
        print(f"   {name}: trained on {len(tr)} patches in {seg.fit_time_:.0f} s "
              f"(base {args.base}, {args.epochs} epochs x {args.samples} samples; loss "
              f"{seg.loss_history_[0]:.3f} -> {seg.loss_history_[-1]:.3f})")
        pm = seg.predict_patch_maps(X[te])
        masks = stemroi.pseudo_label_masks(X[te], y[te] == seg.bulk_class).astype(bool)
        print(f"   {name}: pixel agreement with pseudo-labels on {len(te)} held-out patches (random split, threshold 0.5)")
        for c, cname in enumerate(seg.defect_classes_):
            sel = y[te] == cname
            if not sel.any():
                continue
            p, r, iou = prf(pm[sel, c] > 0.5, masks[sel])
            print(f"     {cname:14s} precision {p:.3f} recall {r:.3f} IoU {iou:.3f}")
        bulk = y[te] == seg.bulk_class
        if bulk.any():
            print(f"     {'Bulk':14s} fraction of pixels flagged as any defect {np.mean(pm[bulk, :-1].max(1) > 0.5):.4f}")
        cluster_part(name, pm, seg.channel_names_, y[te], out)
    return models


def frame_part(models, out):
    if "CdTe" not in models:
        return
    print("== 3. heatmaps of the 768 x 768 CdTe frame")
    img = L.read_grey(L.data_dir() / "ayyubi-stem-defects" / "CdTe_Training_Image.tif")
    seg = models["CdTe"]
    t0 = time.perf_counter()
    maps = seg.predict_maps(img)
    dt = time.perf_counter() - t0
    path = out / "CdTe_frame_heatmaps.png"
    fig = stemroi.plot_class_heatmaps(img, maps, seg.channel_names_, path, ncols=4,
                                      title="CdTe 768x768: per-class U-Net probability maps")
    import matplotlib.pyplot as plt
    plt.close(fig)
    np.save(out / "CdTe_frame_maps.npy", maps)
    means = ", ".join(f"{n} {m:.3f}" for n, m in zip(seg.channel_names_, maps.mean(axis=(1, 2))))
    print(f"   maps {maps.shape} in {dt:.1f} s; mean probability per channel: {means}")
    print(f"   figure: {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/stemroi_bench")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--syn-epochs", type=int, default=8)
    ap.add_argument("--samples", type=int, default=384, help="synthetic multi-defect samples per epoch")
    ap.add_argument("--base", type=int, default=16, help="U-Net base channels (study: 32)")
    ap.add_argument("--syn-per-class", type=int, default=40)
    ap.add_argument("--fields", type=int, default=3)
    ap.add_argument("--percentile", type=float, default=98.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sets", default="CdTe,STO")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.syn_epochs, args.samples, args.syn_per_class, args.fields = 2, 2, 64, 10, 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"(timings on a shared, loaded 2-core machine; outputs in {out})")
    t0 = time.perf_counter()
    if not args.skip_synthetic:
        synthetic_part(args, out)
    models = real_part(args, out)
    frame_part(models, out)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
