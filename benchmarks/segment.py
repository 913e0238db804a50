"""Weakly supervised multi-defect segmentation benchmark.

Uses stemroi's public API only (stemroi.io.synth, load_patch_folder,
spatial_train_test_split, pseudo_label_masks, DefectSegmenter, map_descriptors,
PCA, select_n_clusters, cluster_accuracy, read_image, plot_class_heatmaps);
scikit-learn only for the t-SNE view.

1. Synthetic truth (stemroi.io.synth: lattice of Gaussian columns with planted
   point defects at known positions, Poisson + Gaussian noise):
   a. pseudo-labels of the labelled 64 x 64 training patches against the true
      defect disks (radius = half a lattice spacing), for the study's rule
      ("deviation") and this project's ("lattice"), at the study's 98th
      percentile and at the percentile used for training: pixel precision /
      recall / IoU and the fraction of defect patches whose mask touches the
      defect at all;
   b. a U-Net trained from each pseudo-label method, run on new 256 x 256
      fields with planted defects: per class, detection recall of the planted
      defects (a blob of the class channel above the threshold whose peak lies
      within half a lattice spacing) and false positives per 1000 lattice
      sites (blob peaks farther than that from every planted defect of the
      class; how many of those sit on a defect of another class is printed),
      and the same for all planted defects on the kind-agnostic map
      1 - background.
2. CdTe and STO labelled patches (stemroi.load_patch_folder), overlap-aware
   80:20 split (stemroi.spatial_train_test_split; a random split leaks because
   patches are shifted crops of each other): pixel precision / recall / IoU
   per class of the U-Net maps against the pseudo-labels of the held-out
   patches, as the study reports them (this measures agreement with the
   heuristic, not with a true defect mask); then descriptors of the held-out
   maps (stemroi.detection.map_descriptors) -> standardise -> stemroi.PCA ->
   stemroi.select_n_clusters (K-means, silhouette-chosen k) ->
   stemroi.cluster_accuracy (Hungarian matching) and a t-SNE figure; the same
   on the maps of all patches (the train side was seen in training), because
   the CdTe held-out side lacks the classes that are one compact region each.
3. Heatmaps of the 768 x 768 CdTe frame (stemroi.plotting.plot_class_heatmaps) and,
   per defect channel, the mean probability inside reference regions (the
   Lomer-Cottrell junction, the vertical and the inclined stacking faults, a
   lower-left region of the same disturbed pattern) and outside all of them
   (checked by eye on the image; drawn in CdTe_reference_regions.png), and
   the pixel ROC-AUC of each region against the outside. With
   --cvae-model CdTe=PATH a U-Net trained on all CdTe patches with the CVAE
   residual pseudo-labels is added (the frame's reference maps).
4. --parts defaults: DefectSegmenter(recipe=...) with no other argument, trained on all CdTe patches:
   the frame's tile AUROC (benchmarks/_crossimage.py) and per-region pixel AUCs of the any-defect map.
5. --parts augment: the augmentation ablation on the cross-image protocol (train on the CdTe spatial
   train side; held-out patches, held-out patches under acquisition shifts, the frame and the shifted
   frame).
6. --parts encoder: the U-Net encoder started from the STEM-pretrained small_cnn
   (DefectSegmenter(encoder_weights="stem"), width 16) against the default random start (width 8)
   and a random start at width 16 (--encoder-variants random8,stem,random16), for each of
   --encoder-seeds, trained on all CdTe patches with the same CVAE-residual pseudo-labels (those of
   the first fit, whose CVAE is seeded by its seed).
   Per channel, the contrast (mean inside a region / mean outside all regions) on the frame;
   the channels count as class-specific when the LC channel's contrast on the Lomer-Cottrell
   junction is >= 1.5 and >= 1.25x its contrast on the inclined stacking fault, and the SF2
   channel's the other way round (the train-side maps of docs/segmentation.md pass: 3.2 vs 1.0,
   32 vs 3.8; the all-patches maps of the same run, one pattern in every channel, fail: 2.1 vs 1.8).

LibTorch's OpenMP threads spin-wait by default; on a machine shared with other
jobs that made 2-thread training 10-17x slower than 1 thread (measured), so
this script sets OMP_WAIT_POLICY=PASSIVE unless the environment sets it.

    python benchmarks/segment.py [--out /tmp/stemroi_bench_seg] [--quick] [--threads 2]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when the OpenMP runtime loads (with stemroi._core)

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import stemroi
import stemroi.io
from stemroi.io import synth as synth

DATA = Path(os.environ.get("STEMROI_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "ayyubi-stem-defects"


def unet_settings(args, **over):
    kw = dict(epochs=args.epochs, samples_per_epoch=args.samples, batch_size=args.batch, learning_rate=args.lr,
              base_channels=args.base, pseudo_label="lattice", percentile=args.percentile,
              positive_weight=args.positive_weight, max_parts=args.max_parts, random_state=0, n_threads=args.threads)
    kw.update(over)
    return kw


def budget(seg, method=None):
    labels = ("'cvae' pseudo-labels (bulk CVAE residual above its 0.99 bulk quantile)" if method == "cvae" else
              f"'{seg.pseudo_label}' pseudo-labels at p{seg.percentile:g}")
    return (f"base {seg.base_channels}, {seg.epochs} epochs x {seg.samples_per_epoch} samples, batch {seg.batch_size}, "
            f"lr {seg.learning_rate}, {labels}, "
            f"positive weight {seg.positive_weight:g}, max_parts {seg.max_parts}")


def prf(pred, ref):
    tp = np.logical_and(pred, ref).sum()
    fp = np.logical_and(pred, ~ref).sum()
    fn = np.logical_and(~pred, ref).sum()
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
    return p, r, iou


def detect(map_c, threshold=0.5):
    """Peak positions (row, col) of the 8-connected blobs of one channel's map above threshold."""
    lab, n = ndimage.label(map_c > threshold, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2))
    return np.array(ndimage.maximum_position(map_c, lab, range(1, n + 1)), float).reshape(-1, 2)


def match_peaks(peaks, truth, other, radius):
    """(planted defects in ``truth`` with a peak within ``radius``, peaks farther than that from every
    one of them, how many of those false peaks sit within ``radius`` of a defect in ``other``)."""
    if not len(peaks):
        return 0, 0, 0
    d = np.hypot(peaks[:, None, 0] - truth[None, :, 0], peaks[:, None, 1] - truth[None, :, 1])
    found = int((d.min(axis=0) <= radius).sum()) if len(truth) else 0
    false = d.min(axis=1) > radius if len(truth) else np.ones(len(peaks), bool)
    on_other = 0
    if len(other):
        do = np.hypot(peaks[:, None, 0] - other[None, :, 0], peaks[:, None, 1] - other[None, :, 1])
        on_other = int((false & (do.min(axis=1) <= radius)).sum())
    return found, int(false.sum()), on_other


def disks(shape, positions, radius):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    m = np.zeros(shape, bool)
    for r, c in positions:
        m |= np.hypot(yy - r, xx - c) <= radius
    return m


def close_fig(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---------------------------------------------------------------------------------------- 1. synthetic truth
def synthetic_part(args, out):
    kinds = args.syn_kinds.split(",")
    bad = [k for k in kinds if k not in synth.DEFECT_KINDS or k == "stacking_fault"]
    if bad:
        raise SystemExit(f"--syn-kinds: point-defect kinds of stemroi.io.synth only "
                         f"({[k for k in synth.DEFECT_KINDS if k != 'stacking_fault']}), got {bad}")
    cell = args.syn_cell
    look = dict(lattice=args.syn_lattice, cell_px=cell, column_sigma=args.syn_sigma)
    radius = cell / 2.0  # stemroi.io.synth's default mask radius; also the detection match radius
    print(f"== 1. synthetic truth (stemroi.io.synth, lattice '{args.syn_lattice}', cell {cell:g} px, column sigma "
          f"{args.syn_sigma:g} px, dose 500 e/px + noise 0.02)")
    t0 = time.perf_counter()
    X, yi, names, planted = synth.make_patch_dataset(args.syn_per_class, 64, ["Bulk"] + kinds, random_state=0,
                                                     return_defects=True, **look)
    y = np.asarray(names)[yi]
    is_def = y != "Bulk"
    truth = np.stack([disks(X.shape[1:], [(d["row"], d["col"]) for d in p], radius) for p in planted])
    print(f"   {len(y)} training patches 64x64 ({', '.join(names)}; {args.syn_per_class} each) made in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"   a. pseudo-labels vs true defect disks (r = {radius:g} px) on the {is_def.sum()} defect patches:")
    for method in ("deviation", "lattice"):
        for pct in sorted({98.0, args.percentile}):
            m = stemroi.models.pseudo_label_masks(X, ~is_def, method=method, percentile=pct, n_threads=args.threads).astype(bool)
            p, r, iou = prf(m[is_def], truth[is_def])
            hit = np.mean([np.any(m[k] & truth[k]) for k in np.flatnonzero(is_def)])
            print(f"      {method:9s} p{pct:g}: pixel precision {p:.3f} recall {r:.3f} IoU {iou:.3f}; "
                  f"defect patches whose mask touches the defect {hit:.2f}")

    fields = [synth.make_image((256, 256), defects={k: args.per_field for k in kinds}, random_state=100 + i, **look)
              for i in range(args.fields)]
    pos = [{k: np.array([(d["row"], d["col"]) for d in f.defects if d["kind"] == k], float).reshape(-1, 2)
            for k in kinds} for f in fields]
    sites = 0
    for f, pp in zip(fields, pos):
        rc = f.columns[:, :2]
        inside = (rc[:, 0] >= 0) & (rc[:, 0] < 256) & (rc[:, 1] >= 0) & (rc[:, 1] < 256)
        sites += int(inside.sum()) - len(pp.get("interstitial", ()))  # interstitials are extra columns, not sites
    print(f"   b. U-Nets on {args.fields} new 256x256 fields ({args.per_field} of each kind per field; "
          f"{sites} lattice sites in all); detection: blob peaks above a threshold, match radius {radius:g} px")
    for method in ("deviation", "lattice"):
        seg = stemroi.DefectSegmenter(**unet_settings(args, pseudo_label=method))
        seg.fit(X, y)
        t0 = time.perf_counter()
        maps = [seg.predict_maps(f.image) for f in fields]
        pred_s = (time.perf_counter() - t0) / len(fields)
        print(f"   U-Net from '{method}' pseudo-labels: fit {seg.fit_time_:.0f} s ({budget(seg)}; loss "
              f"{seg.loss_history_[0]:.3f} -> {seg.loss_history_[-1]:.3f}); 256x256 maps in {pred_s:.1f} s each")
        for cls in kinds:
            c = seg.channel_names_.index(cls)
            own_v, other_v, away_v = [], [], []
            for mp, pp in zip(maps, pos):
                other = np.concatenate([pp[k] for k in kinds if k != cls] or [np.zeros((0, 2))])
                own_v.append(mp[c][disks(mp[c].shape, pp[cls], radius)])
                other_v.append(mp[c][disks(mp[c].shape, other, radius)])
                away_v.append(mp[c][~disks(mp[c].shape, np.concatenate([pp[cls], other]), 2 * radius)])
            own_v, other_v, away_v = (np.concatenate(v) for v in (own_v, other_v, away_v))
            print(f"      {cls:12s} channel mean (max) on its defects {own_v.mean():.3f} ({own_v.max():.3f}), on the "
                  f"other kinds' {other_v.mean() if other_v.size else float('nan'):.3f} "
                  f"({other_v.max() if other_v.size else float('nan'):.3f}), away from defects {away_v.mean():.3f} "
                  f"(p99.9 {np.percentile(away_v, 99.9):.3f})")
            for thr in args.det_thresholds:
                found = planted_n = fp = fp_other = 0
                for mp, pp in zip(maps, pos):
                    own = pp[cls]
                    other = np.concatenate([pp[k] for k in kinds if k != cls] or [np.zeros((0, 2))])
                    planted_n += len(own)
                    f, false, on_other = match_peaks(detect(mp[c], thr), own, other, radius)
                    found, fp, fp_other = found + f, fp + false, fp_other + on_other
                print(f"        threshold {thr:g}: recall {found}/{planted_n} = {found / planted_n:.2f}; false positives "
                      f"{fp} ({fp_other} of them on another kind's defect) = {1000 * fp / sites:.1f} per 1000 sites")
        # kind-agnostic: does the U-Net find the planted defects at all? (1 - background channel)
        for thr in args.det_thresholds:
            found = planted_n = fp = 0
            for mp, pp in zip(maps, pos):
                allp = np.concatenate([pp[k] for k in kinds])
                planted_n += len(allp)
                f, false, _ = match_peaks(detect(1.0 - mp[-1], thr), allp, np.zeros((0, 2)), radius)
                found, fp = found + f, fp + false
            print(f"      any defect (1 - background) threshold {thr:g}: recall {found}/{planted_n} = "
                  f"{found / planted_n:.2f}; false positives {fp} = {1000 * fp / sites:.1f} per 1000 sites")
        path = out / f"synthetic_field_maps_{method}.png"
        fig = stemroi.plotting.plot_class_heatmaps(fields[0].image, maps[0], seg.channel_names_, path,
                                          title=f"synthetic field 0, U-Net from '{method}' pseudo-labels: "
                                          + ", ".join(f"{len(pos[0][k])} {k}" for k in kinds))
        close_fig(fig)
        print(f"      figure: {path}")


# ---------------------------------------------------------------------------------------- 2. real patches
def cluster_part(name, method, which, maps, channel_names, y, out, seed=0, threads=None):
    from sklearn.manifold import TSNE

    feats, _ = stemroi.detection.map_descriptors(maps, channel_names)
    sd = feats.std(0)
    Z = (feats - feats.mean(0)) / np.where(sd > 0, sd, 1.0)
    Z = stemroi.PCA(n_components=min(10, *Z.shape), n_threads=threads).fit_transform(Z)
    classes = np.unique(y)
    kc = len(classes)
    ks = list(range(2, min(10, len(y) - 1) + 1))
    sel = stemroi.select_n_clusters(Z, ks, n_init=10, random_state=seed, n_threads=threads)
    best = sel.best_k
    acc = stemroi.cluster_accuracy(y, sel.labels[best])
    bal = stemroi.cluster_accuracy(y, sel.labels[best], sample_weighted=True)
    at_kc = (f"{stemroi.cluster_accuracy(y, sel.labels[kc]):.3f} (silhouette {sel.scores[ks.index(kc)]:.3f})"
             if kc in sel.labels else "n/a")
    print(f"      clustering, {which} ({len(y)} patches, {kc} classes): {feats.shape[1]} descriptors -> PCA {Z.shape[1]}; "
          f"silhouette-chosen k = {best} (silhouette {sel.scores[ks.index(best)]:.3f}); cluster accuracy "
          f"(Hungarian) at k = {best}: {acc:.3f} (balanced {bal:.3f}); at k = {kc} classes: {at_kc}")
    print("        silhouette by k: " + ", ".join(f"{k}: {s:.3f}" for k, s in zip(ks, sel.scores)))
    emb = TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(30, len(y) // 4)).fit_transform(Z)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for c in classes:
        axes[0].scatter(*emb[y == c].T, s=8, label=c)
    axes[0].legend(fontsize=7, markerscale=2)
    axes[0].set_title(f"{name}, U-Net from '{method}' labels: t-SNE of map descriptors ({which}), true classes", fontsize=8)
    axes[1].scatter(*emb.T, s=8, c=sel.labels[best], cmap="tab10")
    axes[1].set_title(f"stemroi K-means clusters (silhouette k = {best})")
    fig.tight_layout()
    path = out / f"{name}_{method}_tsne_{which.split()[0].replace('-', '')}.png"
    stemroi.plotting.save_figure(fig, path, dpi=100)
    plt.close(fig)
    print(f"        figure: {path}")


CVAE_MODELS = {}  # set name -> fitted stemroi.BulkCVAE (--cvae-model NAME=PATH)


def masks_for(method, X, is_bulk, percentile, threads, name):
    """Pseudo-labels of ``method``: a pseudo_label_masks rule, or "cvae" (pixels the bulk CVAE of
    this set cannot reconstruct, stemroi.models.residual_pseudo_labels, 0.99 bulk quantile)."""
    if method == "cvae":
        return stemroi.models.residual_pseudo_labels(X, is_bulk, CVAE_MODELS[name], quantile=0.99, sigma=2.0,
                                              n_threads=threads)
    return stemroi.models.pseudo_label_masks(X, is_bulk, method=method, percentile=percentile, n_threads=threads)


def pseudo_label_figure(name, X, y, classes, method, percentile, out, n=6):
    """A few patches per defect class with their pseudo-label outlines (what the U-Net is asked to learn)."""
    import matplotlib.pyplot as plt

    defect = [c for c in classes if c != "Bulk"]
    fig, axes = plt.subplots(len(defect), n, figsize=(1.6 * n, 1.7 * len(defect)), squeeze=False)
    rng = np.random.default_rng(0)
    for i, c in enumerate(defect):
        idx = rng.choice(np.flatnonzero(y == c), min(n, int((y == c).sum())), replace=False)
        if method == "cvae":  # the threshold comes from the bulk patches: compute on all, show some
            m = masks_for(method, X, y == "Bulk", percentile, None, name)[idx]
        else:
            m = masks_for(method, X[idx], None, percentile, None, name)
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(idx):
                ax.imshow(X[idx[j]], cmap="gray")
                ax.contour(m[j], levels=[0.5], colors="r", linewidths=0.8)
        axes[i, 0].set_title(c, fontsize=8, loc="left")
    fig.suptitle(f"{name}: '{method}' p{percentile:g} pseudo-labels (red) on training-class patches", fontsize=9)
    fig.tight_layout()
    path = out / f"{name}_pseudo_labels_{method}.png"
    stemroi.plotting.save_figure(fig, path, dpi=80)
    plt.close(fig)
    return path


def agreement(seg, X, y, maps, threshold, threads, method, name):
    """Per defect class: (n, precision, recall, IoU, flagged fraction, mean in mask, mean outside, max)
    of the class channel against the pseudo-labels of the model's method."""
    masks = masks_for(method, X, y == seg.bulk_class, seg.percentile, threads, name).astype(bool)
    rows = {}
    for c, cname in enumerate(seg.defect_classes_):
        sel = y == cname
        if not sel.any():
            continue
        P, M = maps[sel, c], masks[sel]
        rows[cname] = (int(sel.sum()),) + prf(P > threshold, M) + (
            float(np.mean(P > threshold)), float(P[M].mean()), float(P[~M].mean()), float(P.max()))
    bulk = y == seg.bulk_class
    bulk_flag = float(np.mean(maps[bulk, :-1].max(1) > threshold)) if bulk.any() else float("nan")
    return rows, bulk_flag, int(bulk.sum())


def real_part(args, out):
    print("== 2. labelled patches: U-Net maps vs pseudo-labels on held-out patches (as the study), "
          "clustering of map descriptors")
    models = {}
    for name in args.sets.split(","):
        ds = stemroi.load_patch_folder(DATA / name)
        X, y = ds.patches, np.asarray(ds.class_names)[ds.labels]
        t0 = time.perf_counter()
        tr, te = stemroi.spatial_train_test_split(X, y, test_size=0.2, random_state=0)
        split_s = time.perf_counter() - t0
        tr, te = np.asarray(tr), np.asarray(te)
        print(f"   {name}: {len(y)} patches, {len(ds.class_names)} classes; spatial split ({split_s:.0f} s): "
              f"{len(tr)} train, {len(te)} test, {len(y) - len(tr) - len(te)} purged")
        counts = lambda idx: ", ".join(f"{c} {int((y[idx] == c).sum())}" for c in ds.class_names)
        print(f"      train: {counts(tr)}\n      test:  {counts(te)}")
        missing = [c for c in ds.class_names if not (y[te] == c).any()]
        if missing:
            print(f"      classes with no held-out patch (each is one overlap region, too compact to split): {missing}")
        for method in args.real_pseudo_labels.split(","):
            if method == "cvae" and name not in CVAE_MODELS:
                print(f"   {name} / 'cvae': skipped (no --cvae-model {name}=PATH)")
                continue
            seg = stemroi.DefectSegmenter(**unet_settings(args, pseudo_label="lattice" if method == "cvae" else method))
            if method == "cvae":
                seg.fit(X[tr], y[tr], masks=masks_for(method, X[tr], y[tr] == seg.bulk_class, seg.percentile,
                                                      args.threads, name))
            else:
                seg.fit(X[tr], y[tr])
            models[name, method] = seg
            fig_path = pseudo_label_figure(name, X[tr], y[tr], ds.class_names, method, seg.percentile, out)
            print(f"   {name} / '{method}': fit {seg.fit_time_:.0f} s ({budget(seg, method)}; loss {seg.loss_history_[0]:.3f} -> "
                  f"{seg.loss_history_[-1]:.3f}); pseudo-label examples: {fig_path}")
            all_maps = seg.predict_patch_maps(X)
            print(f"      agreement of each class channel with the '{method}' p{seg.percentile:g} pseudo-labels "
                  f"(threshold {args.threshold:g}; precision nan = nothing flagged):")
            print(f"      {'side':5s} {'class':14s} {'n':>4s} {'prec':>6s} {'recall':>6s} {'IoU':>6s} {'flagged':>8s} "
                  f"{'mean in mask':>12s} {'mean outside':>12s} {'max':>6s}")
            for side, idx in (("test", te), ("train", tr)):
                rows, bulk_flag, n_bulk = agreement(seg, X[idx], y[idx], all_maps[idx], args.threshold, args.threads,
                                                    method, name)
                for cname, (n, p, r, iou, fl, mi, mo, mx) in rows.items():
                    print(f"      {side:5s} {cname:14s} {n:4d} {p:6.3f} {r:6.3f} {iou:6.3f} {fl:8.4f} {mi:12.3f} {mo:12.3f} "
                          f"{mx:6.3f}")
                print(f"      {side:5s} {seg.bulk_class:14s} {n_bulk:4d} fraction of pixels flagged as any defect {bulk_flag:.4f}")
            cluster_part(name, method, "held-out", all_maps[te], seg.channel_names_, y[te], out, threads=args.threads)
            cluster_part(name, method, "all patches (train side seen in training)", all_maps, seg.channel_names_, y, out,
                         threads=args.threads)
    return models


# ---------------------------------------------------------------------------------------- 3. CdTe frame
def reference_regions(shape):
    """Boolean masks of the CdTe frame's reference regions (row, col pixels), read off the image
    (CdTe_reference_regions.png) and off a smoothed lattice-residual score of it."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    lc = np.hypot(yy - 346, xx - 334) <= 22
    sf_vertical = (np.abs(xx - 334) <= 16) & (yy <= 330) & ~lc
    # inclined fault: band of horizontally smeared columns from the left edge down to the junction
    line_c = np.array([0, 60, 160, 250, 320], float)
    line_r = np.array([245, 265, 298, 328, 344], float)
    sf_inclined = (np.abs(yy - np.interp(xx, line_c, line_r)) <= 18) & (xx <= 318) & ~lc
    lower_left = (yy >= 685 + 0.34 * xx) & (xx <= 260)
    regions = {"Lomer-Cottrell junction": lc, "vertical stacking fault": sf_vertical,
               "inclined stacking fault": sf_inclined, "lower-left disturbed region": lower_left}
    near = ndimage.binary_dilation(np.any(list(regions.values()), axis=0), iterations=30)
    return regions, ~near


def frame_part(args, models, out):
    cdte = [(method, seg) for (name, method), seg in models.items() if name == "CdTe"]
    if not cdte and "CdTe" not in CVAE_MODELS:
        print("== 3. CdTe frame: skipped (no CdTe U-Net from part 2 and no --cvae-model CdTe=PATH)")
        return
    print("== 3. heatmaps of the 768 x 768 CdTe frame (U-Nets of part 2, trained on the CdTe train side, and, "
          "with --cvae-model CdTe=..., one trained on all CdTe patches; the patches are likely crops of frames "
          "like this one, so this is not held-out data)")
    raw = stemroi.read_image(DATA / "CdTe_Training_Image.tif")
    if raw.max() > 255:
        raise SystemExit("CdTe_Training_Image.tif: expected 8-bit values")
    img = stemroi.io.scale_to_unit(raw, "dtype", source_dtype=np.uint8)
    regions, outside = reference_regions(img.shape)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(img, cmap="gray")
    for k, (rname, m) in enumerate(regions.items()):
        ax.contour(m, levels=[0.5], colors=[f"C{k}"], linewidths=1.2)
        ax.plot([], [], color=f"C{k}", label=rname)
    ax.contour(outside, levels=[0.5], colors=["w"], linewidths=0.6, linestyles="dashed")
    ax.plot([], [], "w--", label="outside = beyond the dashed line")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("CdTe frame: reference regions")
    fig.tight_layout()
    rpath = out / "CdTe_reference_regions.png"
    stemroi.plotting.save_figure(fig, rpath, dpi=100)
    plt.close(fig)
    short = ["LC junction", "SF vertical", "SF inclined", "lower-left", "outside"]
    print(f"   reference regions: {rpath} (sizes: " + ", ".join(
        f"{s} {int(m.sum())} px" for s, m in zip(short, list(regions.values()) + [outside])) + ")")
    if "CdTe" in CVAE_MODELS:
        # the frame's own U-Net: all labelled CdTe patches (the frame is not held-out data either way)
        ds = stemroi.load_patch_folder(DATA / "CdTe")
        X, y = ds.patches, np.asarray(ds.class_names)[ds.labels]
        seg = stemroi.DefectSegmenter(**unet_settings(args))
        seg.fit(X, y, masks=masks_for("cvae", X, y == seg.bulk_class, seg.percentile, args.threads, "CdTe"))
        print(f"   frame U-Net: all {len(y)} CdTe patches, fit {seg.fit_time_:.0f} s ({budget(seg, 'cvae')}; loss "
              f"{seg.loss_history_[0]:.3f} -> {seg.loss_history_[-1]:.3f})")
        cdte.append(("cvae-all-patches", seg))
    from sklearn.metrics import roc_auc_score

    for method, seg in cdte:
        t0 = time.perf_counter()
        maps = seg.predict_maps(img)
        dt = time.perf_counter() - t0
        anyd = 1.0 - maps[-1]
        shown = np.concatenate([maps, anyd[None]], 0)
        names = list(seg.channel_names_) + ["any defect (1 - background)"]
        path = out / f"CdTe_frame_heatmaps_{method}.png"
        fig = stemroi.plotting.plot_class_heatmaps(img, shown, names, path, ncols=5,
                                          title=f"CdTe 768x768: per-class U-Net maps ('{method}' pseudo-labels)")
        close_fig(fig)
        np.save(out / f"CdTe_frame_maps_{method}.npy", maps)
        print(f"   U-Net from '{method}' pseudo-labels: maps {maps.shape} in {dt:.1f} s; figure: {path}")
        print("      mean probability per defect channel inside each region and outside all of them (> 30 px away); "
              "AUC: pixels of each region against the outside pixels (0.5 = no contrast, 1 = every region pixel "
              "above every outside pixel)")
        print(f"      {'channel':14s} " + " ".join(f"{s:>12s}" for s in short) + "   max(frame)")
        for c, cname in enumerate(names):
            if cname == "background":
                continue
            m_c = shown[c]
            vals = [m_c[m].mean() for m in regions.values()] + [m_c[outside].mean()]
            print(f"      {cname[:14]:14s} " + " ".join(f"{v:12.3f}" for v in vals) + f"   {m_c.max():.3f}")
            aucs = [roc_auc_score(np.r_[np.ones(int(m.sum())), np.zeros(int(outside.sum()))],
                                  np.r_[m_c[m], m_c[outside]]) for m in regions.values()]
            print(f"      {'  AUC':14s} " + " ".join(f"{a:12.3f}" for a in aucs))


# ---------------------------------------------------------------------------------------- 4. defaults, recipes
def any_defect_tile_scores(seg, img, origins, tile=64):
    """Mean of the any-defect map (1 - background) over each tile."""
    anyd = 1.0 - seg.predict_maps(img)[-1]
    return np.array([anyd[r:r + tile, c:c + tile].mean() for r, c in origins])


def frame_figures(seg, img, shifts=()):
    """{"frame": tile AUROC, shift name: tile AUROC on the shifted frame} (see _crossimage)."""
    import _crossimage as ci

    regions, outside = ci.reference_regions(img.shape)
    origins, truth = ci.tile_truth(np.any(list(regions.values()), axis=0), outside)
    out = {"frame": ci.auroc(truth, any_defect_tile_scores(seg, img, origins))}
    for name in shifts:
        s_img, anyreg, outs = ci.shifted_frame_truth(img, *ci.SHIFTS[name])
        o, t = ci.tile_truth(anyreg, outs)
        out[name] = ci.auroc(t, any_defect_tile_scores(seg, s_img, o))
    return out


def defaults_part(args, out):
    """DefectSegmenter() with no arguments (but threads) on all CdTe patches must single out
    the frame's faults and junction: tile AUROC >= 0.90 (64 x 64 tiles, _crossimage.tile_truth)."""
    import _crossimage as ci

    ds = stemroi.load_patch_folder(DATA / "CdTe")
    X, y = ds.patches, np.asarray(ds.class_names)[ds.labels]
    img = ci.cdte_frame()
    regions, outside = ci.reference_regions(img.shape)
    print("== 4. recipes: DefectSegmenter(recipe=...) with no other argument, trained on all CdTe patches; "
          "tile AUROC of the any-defect map (tile mean) on the 768 x 768 frame, 19 region tiles vs 111 bulk tiles")
    for recipe in args.recipes.split(","):
        seg = stemroi.DefectSegmenter(recipe=None if recipe == "default" else recipe, n_threads=args.threads)
        t0 = time.perf_counter()
        seg.fit(X, y)
        fit_s = time.perf_counter() - t0
        fig = frame_figures(seg, img)
        anyd = 1.0 - seg.predict_maps(img)[-1]
        from sklearn.metrics import roc_auc_score

        px = [roc_auc_score(np.r_[np.ones(int(m.sum())), np.zeros(int(outside.sum()))], np.r_[anyd[m], anyd[outside]])
              for m in regions.values()]
        p = seg.resolved_params_
        print(f"   recipe {recipe!r}: fit {fit_s:.0f} s (pseudo-labels {seg.pseudo_label_time_:.0f} s, U-Net "
              f"{seg.fit_time_:.0f} s); {p['pseudo_label']} pseudo-labels, base {p['base_channels']}, {p['epochs']} "
              f"epochs x {p['samples_per_epoch'] or len(y)}, batch {p['batch_size']}, lr {p['learning_rate']}, "
              f"positive weight {p['positive_weight']}, max_parts {p['max_parts']}, augment {p['augment']}")
        print(f"      frame tile AUROC {fig['frame']:.3f}; pixel AUC per region (any-defect map): "
              + ", ".join(f"{k} {a:.3f}" for k, a in zip(regions, px)))
        np.save(out / f"CdTe_frame_anydefect_recipe_{recipe}.npy", anyd)


# ---------------------------------------------------------------------------------------- 6. encoder init
def channel_contrasts(seg, img, regions, outside):
    """{channel: {region: mean inside / mean outside}} of the frame maps, and the any-defect tile AUROC."""
    maps = seg.predict_maps(img)
    out = {}
    for c, name in enumerate(seg.channel_names_[:-1]):
        base = float(maps[c][outside].mean())
        out[name] = {r: float(maps[c][m].mean()) / max(base, 1e-12) for r, m in regions.items()}
    return out, maps


def class_specific(contrast, lit=1.5, margin=1.25):
    """LC lights up on the junction (contrast >= lit) by a margin over the inclined fault, SF2 the other way."""
    lc, sf2 = contrast["LC"], contrast["SF2"]
    j, inc = "LC junction", "inclined SF"
    return lc[j] >= lit and lc[j] >= margin * lc[inc] and sf2[inc] >= lit and sf2[inc] >= margin * sf2[j]


def encoder_part(args, out):
    import _crossimage as ci

    ds = stemroi.load_patch_folder(DATA / "CdTe")
    X, y = ds.patches, np.asarray(ds.class_names)[ds.labels]
    img = ci.cdte_frame()
    regions, outside = ci.reference_regions(img.shape)
    seeds = [int(s) for s in args.encoder_seeds.split(",")]
    known = {"random8": ("random, base 8", {"encoder_weights": "random"}),
             "stem": ("stem encoder, base 16", {"encoder_weights": "stem"}),
             "random16": ("random, base 16", {"encoder_weights": "random", "base_channels": 16})}
    variants = [known[v] for v in args.encoder_variants.split(",")]
    print(f"== 6. U-Net encoder init: {len(y)} CdTe patches, default recipe, seeds {seeds}; the same CVAE-residual "
          "masks for every fit (those of the first fit)")
    masks, rows = None, {name: [] for name, _ in variants}
    for seed in seeds:
        for name, kw in variants:
            smoke = dict(epochs=2, samples_per_epoch=32, cvae_epochs=1) if args.quick else {}
            seg = stemroi.DefectSegmenter(random_state=seed, n_threads=args.threads, **kw, **smoke)
            t0 = time.perf_counter()
            seg.fit(X, y, masks=masks)
            fit_s = time.perf_counter() - t0
            if masks is None:
                masks = seg.pseudo_masks_
            contrast, maps = channel_contrasts(seg, img, regions, outside)
            fig = frame_figures(seg, img)
            spec = class_specific(contrast)
            rows[name].append((spec, fig["frame"], fit_s))
            np.save(out / f"CdTe_frame_maps_encoder_{name.split(',')[0].replace(' ', '_')}_seed{seed}.npy", maps)
            print(f"   seed {seed}, {name}: fit {fit_s:.0f} s, loss {seg.loss_history_[0]:.3f} -> "
                  f"{seg.loss_history_[-1]:.3f}; tile AUROC {fig['frame']:.3f}; class-specific {spec}", flush=True)
            for ch in ("LC", "SF1", "SF2", "Twin_Bound"):
                print(f"      {ch:11s} contrast " + ", ".join(f"{r} {v:.2f}" for r, v in contrast[ch].items()))
    print("   summary: variant | class-specific seeds | tile AUROC mean (min) | fit s mean")
    for name, r in rows.items():
        au = [a for _, a, _ in r]
        print(f"   {name:26s} | {sum(s for s, _, _ in r)}/{len(r)} | {np.mean(au):.3f} ({np.min(au):.3f}) | "
              f"{np.mean([t for _, _, t in r]):.0f}")


# ---------------------------------------------------------------------------------------- 5. augmentation ablation
def augment_part(args, out):
    """train on the CdTe spatial train side with each augmentation, measure on (a) the held-out
    patches (AUROC of the mean any-defect probability, defect vs bulk patches), (b) the held-out patches under
    acquisition shifts, (c) the 768 x 768 frame (tile AUROC) and the shifted frame."""
    import _crossimage as ci
    from sklearn.metrics import roc_auc_score

    ds = stemroi.load_patch_folder(DATA / "CdTe")
    X, y = ds.patches, np.asarray(ds.class_names)[ds.labels]
    tr, te = (np.asarray(v) for v in stemroi.spatial_train_test_split(X, y, test_size=0.2, random_state=0))
    img = ci.cdte_frame()
    shifts = list(ci.SHIFTS)
    yt = (y[te] != "Bulk").astype(int)
    shifted = {name: ci.shift_patches(X[te], *ci.SHIFTS[name], seed=1) for name in shifts}
    print(f"== 5. augmentation ablation (CdTe spatial split: {len(tr)} train, {len(te)} test patches, "
          f"{yt.sum()} defect / {len(yt) - yt.sum()} bulk in test); U-Net: default recipe but {args.ablation_epochs} "
          f"epochs; shifts: {', '.join(shifts)}")
    masks = None
    rows = []
    configs = [(aug, enc) for enc in args.ablation_encoders.split(",") for aug in args.ablation.split(",")]
    for aug, enc in configs:
        enc_kw = ({} if enc == "default" else {"encoder_weights": "random", "base_channels": 16} if enc == "random16"
                  else {"encoder_weights": enc})
        seg = stemroi.DefectSegmenter(epochs=args.ablation_epochs, augment=False if aug == "none" else aug,
                                      n_threads=args.threads, **enc_kw)
        seg.fit(X[tr], y[tr], masks=masks)
        if masks is None:  # the train side's CVAE pseudo-labels, reused by every configuration
            masks = seg.pseudo_masks_
            print(f"   pseudo-labels: bulk CVAE of the {int((y[tr] == 'Bulk').sum())} train-side bulk patches, "
                  f"{seg.pseudo_label_time_:.0f} s")

        def patch_auc(P):
            return roc_auc_score(yt, (1.0 - seg.predict_patch_maps(P)[:, -1]).mean((1, 2)))

        a = patch_auc(X[te])
        b = {name: patch_auc(P) for name, P in shifted.items()}
        c = frame_figures(seg, img, shifts)
        rows.append((aug, a, b, c))
        print(f"   encoder {enc:7s} augment {aug!r:24s} fit {seg.fit_time_:4.0f} s | (a) held-out {a:.3f} | (b) shifted mean "
              f"{np.mean(list(b.values())):.3f} min {min(b.values()):.3f} | (c) frame {c['frame']:.3f}, shifted frame "
              f"mean {np.mean([c[k] for k in shifts]):.3f} min {min(c[k] for k in shifts):.3f}", flush=True)
        print("      (b) " + ", ".join(f"{k} {v:.3f}" for k, v in b.items()))
        print("      (c) " + ", ".join(f"{k} {c[k]:.3f}" for k in shifts))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/stemroi_bench_seg")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--samples", type=int, default=256, help="composed training samples per epoch")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--base", type=int, default=8, help="U-Net base channels (study: 32)")
    ap.add_argument("--percentile", type=float, default=99.0, help="pseudo-label percentile for training (study: 98)")
    ap.add_argument("--positive-weight", type=float, default=2.0)
    ap.add_argument("--max-parts", type=int, default=1, help="patches per composed sample (study: 3)")
    ap.add_argument("--threshold", type=float, default=0.5, help="probability threshold of the maps (study: 0.5)")
    ap.add_argument("--det-thresholds", default="0.5,0.3", help="thresholds of the synthetic detection")
    ap.add_argument("--real-pseudo-labels", default="lattice,deviation,cvae",
                    help="pseudo-label methods of the U-Nets on the real patches (cvae: needs --cvae-model)")
    ap.add_argument("--cvae-model", action="append", default=[], metavar="NAME=PATH",
                    help="bulk CVAE of a set for the 'cvae' pseudo-labels, e.g. CdTe=bench_out/cvae/cdte_map.stemroi "
                         "(benchmarks/cvae.py --only map saves one)")
    ap.add_argument("--syn-kinds", default="vacancy,interstitial",
                    help="synthetic point-defect kinds (stemroi.io.synth: vacancy, interstitial, antisite, column_shift)")
    ap.add_argument("--syn-lattice", default="cubic", choices=sorted(synth.LATTICES))
    ap.add_argument("--syn-cell", type=float, default=8.0, help="synthetic lattice spacing (px)")
    ap.add_argument("--syn-sigma", type=float, default=1.3, help="synthetic column width (px)")
    ap.add_argument("--syn-per-class", type=int, default=40)
    ap.add_argument("--fields", type=int, default=4)
    ap.add_argument("--per-field", type=int, default=6, help="planted defects of each kind per field")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sets", default="CdTe,STO")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--parts", default="synthetic,real,frame",
                    help="which parts to run (comma-separated subset of synthetic,real,frame,defaults,augment,encoder)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 epochs x 64 samples, small synthetic set")
    ap.add_argument("--recipes", default="default,study", help="recipes of part 'defaults'")
    ap.add_argument("--ablation", default="none,intensity,noise,blur,scale+rotate,acquisition",
                    help="augment= values of part 'augment' (none = no augmentation)")
    ap.add_argument("--ablation-epochs", type=int, default=30)
    ap.add_argument("--ablation-encoders", default="default",
                    help="part 'augment': encoder_weights of each run (default: the recipe's; 'stem', 'random', "
                         "'random16': random at the pretrained width)")
    ap.add_argument("--encoder-seeds", default="0,1,2,3,4", help="seeds of part 'encoder'")
    ap.add_argument("--encoder-variants", default="random8,stem,random16",
                    help="part 'encoder': random8 (the earlier default), stem (pretrained encoder), random16 "
                         "(random start at the pretrained width)")
    args = ap.parse_args()
    args.det_thresholds = [float(t) for t in args.det_thresholds.split(",")]
    for spec in args.cvae_model:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--cvae-model: expected NAME=PATH, got {spec!r}")
        CVAE_MODELS[name] = stemroi.BulkCVAE.load(path).set_params(n_threads=args.threads)
    if args.quick:
        args.epochs, args.samples, args.syn_per_class, args.fields = 2, 64, 10, 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"(timings on a shared, loaded 2-core machine; threads {args.threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; outputs in {out})")
    t0 = time.perf_counter()
    parts = set(args.parts.split(","))
    unknown = parts - {"synthetic", "real", "frame", "defaults", "augment", "encoder"}
    if unknown:
        raise SystemExit(f"--parts: unknown {sorted(unknown)}; choose from synthetic, real, frame, defaults, augment, "
                         "encoder")
    if "synthetic" in parts and not args.skip_synthetic:
        synthetic_part(args, out)
    models = real_part(args, out) if "real" in parts else {}
    if "frame" in parts:
        frame_part(args, models, out)
    if "defaults" in parts:
        defaults_part(args, out)
    if "augment" in parts:
        augment_part(args, out)
    if "encoder" in parts:
        encoder_part(args, out)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
