"""Clustering benchmark: silhouette-chosen k and cluster accuracy on
the labelled CdTe and SrTiO3 patch sets, for the label-informed protocol (a)
and every label-free route, plus the cluster map of the 768x768 CdTe image.

    .venv/bin/python benchmarks/cluster.py [--quick] [--out DIR] [--datasets CdTe STO]
    .venv/bin/python benchmarks/cluster.py --k-selection     # every criterion for k; cross-image map
    .venv/bin/python benchmarks/cluster.py --orientation     # resolved vs invariant orientation bins
    .venv/bin/python benchmarks/cluster.py --splits          # where a class split over clusters has its defect
    .venv/bin/python benchmarks/cluster.py --synthetic-maps  # ROI maps of synthetic frames, two descriptors

Protocol (a), label-informed (the study's): the embedding comes from a model
trained on the evaluated labels. Two variants: "in-sample" (trained on every
patch, as the study did) and "out-of-fold" (each patch embedded by a model
that never saw it nor any shifted crop of it, grouped by
stemroi.overlap_groups). Protocol (b), label-free: descriptors and untrained
VGG16 features; no label is used anywhere before the accuracy is computed.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import data_dir

import stemroi
from stemroi.cluster._patch_clusterer import evaluate_clustering



def load_patches(folder: Path):
    """(patches in [0,1], labels, class_names) via stemroi.load_patch_folder."""
    ds = stemroi.load_patch_folder(folder)
    return np.asarray(ds.patches, np.float32), np.asarray(ds.labels), list(ds.class_names)


def read_large_image(path: Path) -> np.ndarray:
    img = np.asarray(stemroi.read_image(path), np.float32)
    return (img - img.min()) / max(float(img.max() - img.min()), 1e-12)


def _exact_crop_groups(patches, segment=16, max_share=64):
    """Benchmark-local stand-in for stemroi.overlap_groups: patches sharing an exact
    ``segment``-pixel row segment (uint8 values) are joined (union-find)."""
    from numpy.lib.stride_tricks import sliding_window_view

    q = np.ascontiguousarray(np.round(np.asarray(patches) * 255).astype(np.uint8))
    n = len(q)
    win = np.ascontiguousarray(sliding_window_view(q, segment, axis=2)[:, ::2, ::2])  # (n, rows, offs, seg)
    keys = win.reshape(-1, segment).view(np.dtype((np.void, segment))).ravel()
    owner = np.repeat(np.arange(n), win.shape[1] * win.shape[2])
    flat = win.reshape(-1, segment)
    informative = flat.std(axis=1) > 2.0  # flat segments say nothing about identity
    keys, owner = keys[informative], owner[informative]
    _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    order = np.argsort(inv, kind="stable")
    inv_s, own_s = inv[order], owner[order]
    starts = np.flatnonzero(np.r_[True, inv_s[1:] != inv_s[:-1]])
    ends = np.r_[starts[1:], len(inv_s)]
    for a, b in zip(starts, ends):
        if 1 < b - a <= max_share:
            members = np.unique(own_s[a:b])
            r0 = find(members[0])
            for m in members[1:]:
                parent[find(m)] = r0
    roots = np.array([find(i) for i in range(n)])
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def groups_for(patches):
    return np.asarray(stemroi.overlap_groups(patches)), "stemroi.overlap_groups"


def group_weighted_accuracy(y, labels, groups):
    """Accuracy under the usual Hungarian matching, each overlap group weighing 1 (not its crop count)."""
    if groups is None:
        return float("nan")
    mapping = stemroi.cluster._patch_clusterer._engine().cluster_confusion_matrix(y, labels).mapping
    correct = np.array([mapping.get(int(l), None) == int(t) for l, t in zip(labels, y)], dtype=float)
    w = 1.0 / np.bincount(groups)[groups]
    return float((w * correct).sum() / w.sum())


def run_route(name, features, X, y, k_true, *, n_components, n_init, seed, results, dataset, groups=None):
    t0 = time.perf_counter()
    cl = stemroi.PatchClusterer(features, n_components=n_components, n_init=n_init, random_state=seed,
                                k_range=range(2, 11)).fit(X)
    dt = time.perf_counter() - t0
    at_k = evaluate_clustering(y, cl.labels_)
    at_true = evaluate_clustering(y, cl.labels_for(k_true))
    row = dict(dataset=dataset, route=name, k=cl.n_clusters_, sil=cl.silhouette_scores_[cl.n_clusters_],
               acc_k=at_k["accuracy"], wacc_k=at_k["weighted_accuracy"], acc_true=at_true["accuracy"],
               wacc_true=at_true["weighted_accuracy"], dims=cl.embedding_.shape[1], seconds=dt,
               gacc_k=group_weighted_accuracy(y, cl.labels_, groups))
    results.append(row)
    print(f"  {name:44s} k={row['k']:2d} sil={row['sil']:.3f}  acc@k={row['acc_k']:.3f} "
          f"(bal {row['wacc_k']:.3f}, group-wt {row['gacc_k']:.3f})  acc@{k_true}={row['acc_true']:.3f} "
          f"(bal {row['wacc_true']:.3f})  dims={row['dims']:3d}  {dt:7.1f} s", flush=True)
    return cl


def supervised_embedding(F, y, groups, seed, out_of_fold: bool):
    """Protocol (a) stand-in: hidden layer of an MLP head trained on the labels (scikit-learn, benchmark only)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    def fit_embed(tr, te):
        sc = StandardScaler().fit(F[tr])
        mlp = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=600, random_state=seed)
        mlp.fit(sc.transform(F[tr]), y[tr])
        return np.maximum(sc.transform(F[te]) @ mlp.coefs_[0] + mlp.intercepts_[0], 0.0)

    if not out_of_fold:
        return fit_embed(np.arange(len(y)), np.arange(len(y)))
    emb = np.zeros((len(y), 64))
    folds = (GroupKFold(min(5, len(np.unique(groups)))).split(F, y, groups)
             if groups is not None and len(np.unique(groups)) >= 2
             else StratifiedKFold(5, shuffle=True, random_state=seed).split(F, y))
    for tr, te in folds:
        emb[te] = fit_embed(tr, te)
    return emb


def k_selection(datasets, d, seed, n_init, results_ks):
    """Choosing k on the real patch sets: every criterion of stemroi.select_n_clusters on the
    lattice-residual embedding (PatchClusterer("lattice_residual"): standardise, PCA 0.95), the k each picks and
    the Hungarian cluster accuracy there."""
    from stemroi.features.descriptors import Precomputed

    print("\n=== choosing k: silhouette, stability (ARI over 10 subsamples of 80 %), gap (10 uniform references "
          "in the PCA-aligned box, 1-SE), silhouette 1-SE over the subsamples; PatchClusterer('lattice_residual')")
    for ds in datasets:
        X, y, classes = load_patches(d / ds)
        k_true = len(classes)
        t0 = time.perf_counter()
        cl = stemroi.PatchClusterer("lattice_residual", random_state=seed, n_init=n_init, k_criteria="all").fit(X)
        sel = cl.selection_
        print(f"  {ds} ({len(X)} patches, {k_true} classes; {time.perf_counter() - t0:.1f} s incl. features)")
        print("   " + sel.table().replace("\n", "\n   "))
        acc = {k: evaluate_clustering(y, sel.labels[k])["accuracy"] for k in sel.k_values}
        print("   acc@k " + " ".join(f"{k}:{acc[k]:.3f}" for k in sel.k_values))
        for crit, k in sel.choices.items():
            print(f"   {crit:15s} -> k={k:2d} (|k - {k_true}| = {abs(k - k_true)})  acc@k={acc[k]:.3f}")
            results_ks.append({"dataset": ds, "criterion": crit, "k": int(k), "k_true": k_true,
                               "acc": float(acc[k])})
        # other K-means seeds, same features: how steady each choice is
        for s2 in range(1, 5):
            sel2 = stemroi.select_n_clusters(cl.embedding_, cl.k_range, n_init=n_init, random_state=s2,
                                             criteria="all")
            print(f"   seed {s2}: " + ", ".join(f"{c} {k}" for c, k in sel2.choices.items()))
            for crit, k in sel2.choices.items():
                results_ks.append({"dataset": ds, "criterion": crit, "k": int(k), "k_true": k_true,
                                   "acc": float(evaluate_clustering(y, sel2.labels[k])["accuracy"]), "seed": s2})
        # average linkage on the same embedding: one tree, cut at every k, silhouette choosing k
        from stemroi.cluster._linkage import linkage_selection

        t0 = time.perf_counter()
        lsel, _ = linkage_selection(cl.embedding_, cl.k_range)
        lacc = {k: evaluate_clustering(y, lsel.labels[k])["accuracy"] for k in lsel.k_values}
        print(f"   average linkage ({time.perf_counter() - t0:.2f} s): silhouette "
              + " ".join(f"{k}:{v:.3f}" for k, v in zip(lsel.k_values, lsel.scores)))
        print("   average linkage acc@k " + " ".join(f"{k}:{lacc[k]:.3f}" for k in lsel.k_values))
        print(f"   average linkage -> k={lsel.best_k:2d} (|k - {k_true}| = {abs(lsel.best_k - k_true)})  "
              f"acc@k={lacc[lsel.best_k]:.3f}")
        results_ks.append({"dataset": ds, "criterion": "average_linkage silhouette", "k": int(lsel.best_k),
                           "k_true": k_true, "acc": float(lacc[lsel.best_k])})
        # how much the linkage choice depends on the PCA setting (the default is 0.95)
        for nc in (0.9, 0.99, 20, 10):
            c2 = stemroi.PatchClusterer(Precomputed(feature_groups=cl.extractor_.feature_groups), n_components=nc,
                                        algorithm="average_linkage").fit(cl.features_)
            a2 = evaluate_clustering(y, c2.labels_)["accuracy"]
            print(f"   average linkage, PCA {nc}: k={c2.n_clusters_} acc@k={a2:.3f} "
                  f"acc@{k_true}={evaluate_clustering(y, c2.labels_for(k_true))['accuracy']:.3f}")
            results_ks.append({"dataset": ds, "criterion": f"average_linkage silhouette, PCA {nc}",
                               "k": int(c2.n_clusters_), "k_true": k_true, "acc": float(a2)})


def linkage_speed(rows, n=8000, dim=50, seed=0):
    """Average linkage + cuts at k = 2..10 + silhouette of every cut: stemroi's core against SciPy's
    linkage / cut_tree and scikit-learn's silhouette_score, on n random rows (one run each, interleaved)."""
    from scipy.cluster.hierarchy import cut_tree, linkage
    from sklearn.metrics import silhouette_score
    from stemroi.cluster._linkage import linkage_selection

    X = np.random.default_rng(seed).normal(size=(n, dim))
    ks = list(range(2, 11))
    linkage_selection(X[:50], ks)  # warm-up: module loads, thread pools
    silhouette_score(X[:50], cut_tree(linkage(X[:50], "average"), n_clusters=3).ravel())
    t0 = time.perf_counter()
    sel, Z = linkage_selection(X, ks)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    R = linkage(X, "average")
    cuts = cut_tree(R, n_clusters=ks)
    ref = [silhouette_score(X, cuts[:, j]) for j in range(len(ks))]
    t_ref = time.perf_counter() - t0
    same = bool(np.array_equal(Z[:, [0, 1, 3]], R[:, [0, 1, 3]]))
    dev = float(np.max(np.abs(np.asarray(ref) - sel.scores)))
    print(f"\n=== average linkage + cuts k=2..10 + silhouettes, n={n}, d={dim}: stemroi {t_ours:.2f} s, SciPy + "
          f"scikit-learn {t_ref:.2f} s ({t_ref / t_ours:.1f}x); same merges {same}, "
          f"max silhouette difference {dev:.1e}")
    rows.append({"n": n, "d": dim, "stemroi_s": t_ours, "reference_s": t_ref, "same_merges": same,
                 "max_silhouette_diff": dev})


def orientation_check(datasets, d, seed, n_init, rows):
    """Lattice orientation: LatticeResidual with resolved orientation bins (the default) against
    orientation="invariant", fitted on the patches as they are (labels unused), then asked to label the
    same patches rotated by 90 degrees and by 30 degrees (a reflect-padded patch rotated with cubic
    interpolation, centre crop): the share of patches that keep their cluster, and the cluster accuracy
    of the rotated patches against the labels."""
    from scipy import ndimage as ndi

    print("\n=== lattice orientation: resolved vs invariant orientation bins; PatchClusterer defaults otherwise "
          "(k_criteria='all'); rotated copies labelled by the fitted clusterer")
    for ds in datasets:
        X, y, classes = load_patches(d / ds)
        k_true = len(classes)
        m = X.shape[1] // 4
        padded = np.pad(X, ((0, 0), (m, m), (m, m)), mode="reflect")
        rotated = {"rot90": np.ascontiguousarray(np.rot90(X, 1, axes=(1, 2))),
                   "rot30": np.ascontiguousarray(ndi.rotate(padded, 30, axes=(2, 1), reshape=False,
                                                            order=3)[:, m:-m, m:-m])}
        for feat in ("lattice_residual", "lattice_residual_invariant"):
            cl = stemroi.PatchClusterer(feat, random_state=seed, n_init=n_init, k_criteria="all").fit(X)
            sel = cl.selection_
            acc = {k: evaluate_clustering(y, sel.labels[k])["accuracy"] for k in sel.k_values}
            own = cl.predict(X)
            row = dict(dataset=ds, features=feat, k_true=k_true, acc_true=float(acc[k_true]),
                       choices={c: (int(k), float(acc[k])) for c, k in sel.choices.items()})
            for name, R in rotated.items():
                lab = cl.predict(R)
                row[f"kept_{name}"] = float((lab == own).mean())
                row[f"acc_{name}"] = float(evaluate_clustering(y, lab)["accuracy"])
            rows.append(row)
            print(f"  {ds:5s} {feat:27s} " + " ".join(f"{c} k={k} acc {a:.3f};" for c, (k, a) in row["choices"].items())
                  + f" acc@{k_true}={row['acc_true']:.3f} | cluster kept: rot90 {row['kept_rot90']:.3f}, rot30 "
                  f"{row['kept_rot30']:.3f}; acc of rotated: {row['acc_rot90']:.3f} / {row['acc_rot30']:.3f}",
                  flush=True)


def _cdte_frames_with_truth():
    """[(name, frame, tile origins, tile truth)] for the 768 x 768 CdTe frame, plain and under the six
    acquisition shifts of benchmarks/_crossimage.py (the reference regions zoomed with the frame); 64-px
    tiles at stride 64, the grid cluster_map uses."""
    from _crossimage import SHIFTS, cdte_frame, reference_regions, shifted_frame_truth, tile_truth

    img = cdte_frame()
    regions, outside = reference_regions(img.shape)
    frames = [("plain", img, np.any(list(regions.values()), axis=0), outside)]
    frames += [(name, *shifted_frame_truth(img, kind, value)) for name, (kind, value) in SHIFTS.items()]
    return [(name, frame, *tile_truth(anyreg, outs)) for name, frame, anyreg, outs in frames]


def _flag_figures(flags, truth) -> dict:
    """Tiles flagged, precision and recall of boolean tile flags against tile truth (1 region, 0 bulk,
    -1 left out: not counted)."""
    tp = int((flags & (truth == 1)).sum())
    return {"flagged": int(flags.sum()), "precision": tp / max(int((flags & (truth >= 0)).sum()), 1),
            "recall": tp / max(int((truth == 1).sum()), 1)}


def cluster_cross_image(d, seed, n_init, rules=("silhouette", "silhouette_1se", "average_linkage", "agreement")):
    """Cross-image protocol for label-free clustering: PatchClusterer fitted on the 1119 labelled CdTe
    patches (labels unused), applied to the 768 x 768 CdTe frame with cluster_map (64 px tiles, stride 64,
    144 tiles), plain and under the six acquisition shifts of benchmarks/_crossimage.py (gain, noise, blur,
    pixel size; the reference regions are zoomed with the frame). Truth: the reference regions of
    docs/segmentation.md (benchmarks/_crossimage.py: region tile >= 5 % of its pixels in a region, bulk
    tile > 30 px from every region, others left out). Reported: precision / recall of the tiles flagged by
    each rule (cluster: not the frame's most frequent cluster; score: cluster_map's default; "agreement":
    PatchClusterer("lattice_residual_tukey", k_criteria="agreement")), and two tile
    AUROCs: of cluster_map's scores (distance to the frame's median tile embedding) and of the distance
    to the centre of the bulk cluster fitted on the training patches."""
    from _crossimage import auroc

    X, _, _ = load_patches(d / "CdTe")
    frames = _cdte_frames_with_truth()
    print(f"\n=== cross-image: fit on the CdTe patches, map the 768 x 768 frame, plain and under {len(frames) - 1} "
          "acquisition shifts (tiles of 64 px, stride 64)")
    rows = []
    for rule in rules:
        if rule == "average_linkage":
            cl = stemroi.PatchClusterer("lattice_residual", algorithm="average_linkage").fit(X)
        elif rule == "agreement":  # PatchClusterer()'s rule and descriptor (the default since 2026-12-07)
            cl = stemroi.PatchClusterer("lattice_residual_tukey", k_criteria="agreement", random_state=seed,
                                        n_init=n_init).fit(X)
        else:
            cl = stemroi.PatchClusterer("lattice_residual", random_state=seed, n_init=n_init,
                                        k_criteria="silhouette" if rule == "silhouette" else "all", k_rule=rule).fit(X)
        per_frame = []
        for name, frame, origins, truth in frames:
            # roi="score", the default; edge="drop", the protocol's grid (tile_truth's): the default "shift"
            # would add a row and a column of border tiles on the 614 px frame of the 0.8x pixel-size shift
            res = cl.cluster_map(frame, patch=64, stride=64, edge="drop")
            np.testing.assert_array_equal(np.asarray(res.origins), origins)
            by_cluster = _flag_figures(res.labels != res.bulk_label, truth)
            by_score = _flag_figures(res.is_roi, truth)
            tiles = np.stack([frame[r:r + 64, c:c + 64] for r, c in origins])
            bulk_c = int(str(res.bulk_label).split()[-1])
            dist = np.linalg.norm(cl.transform(tiles) - cl.cluster_centers_[bulk_c], axis=1)
            per_frame.append({"frame": name, "tiles": len(origins), "region_tiles": int((truth == 1).sum()),
                              "bulk_tiles": int((truth == 0).sum()), **by_cluster,
                              "auroc": auroc(truth, dist), "auroc_frame_median": auroc(truth, res.scores),
                              **{f"{k}_score": v for k, v in by_score.items()}})
        p0, sh = per_frame[0], per_frame[1:]
        print(f"  rule {rule:15s} k={cl.n_clusters_}: plain frame ({p0['region_tiles']} region, {p0['bulk_tiles']} "
              f"bulk tiles scored): flagged {p0['flagged']}/{p0['tiles']}; precision {p0['precision']:.3f} recall "
              f"{p0['recall']:.3f}; roi='score': flagged {p0['flagged_score']} precision {p0['precision_score']:.3f} "
              f"recall {p0['recall_score']:.3f}; AUROC: scores (frame median) {p0['auroc_frame_median']:.3f}, "
              f"distance to the training bulk centre {p0['auroc']:.3f}")
        for r in sh:
            print(f"    {r['frame']:12s} flagged {r['flagged']:3d}/{r['tiles']:3d}  precision {r['precision']:.3f} "
                  f"recall {r['recall']:.3f}; roi='score' flagged {r['flagged_score']:3d} precision "
                  f"{r['precision_score']:.3f} recall {r['recall_score']:.3f}  AUROC scores "
                  f"{r['auroc_frame_median']:.3f}, training bulk centre {r['auroc']:.3f}")
        print(f"    shifted frames: AUROC of scores mean {np.mean([r['auroc_frame_median'] for r in sh]):.3f} (worst "
              f"{min(r['auroc_frame_median'] for r in sh):.3f}); training bulk centre mean "
              f"{np.mean([r['auroc'] for r in sh]):.3f} (worst {min(r['auroc'] for r in sh):.3f}); precision mean "
              f"{np.mean([r['precision'] for r in sh]):.3f}, recall mean {np.mean([r['recall'] for r in sh]):.3f}")
        rows.append({"rule": rule, "k": cl.n_clusters_, **{k: v for k, v in p0.items() if k != "frame"},
                     "shifted": sh})
    return rows


def cluster_self_fit(seed):
    """What `stemroi cluster IMAGE` does: PatchClusterer fitted on the 64-px tiles of the CdTe frame itself
    (plain and under the six acquisition shifts), then cluster_map of the same frame; precision / recall of
    the ROI flags under roi="cluster" and roi="score" (thresholds 2 and 3), truth as in cluster_cross_image."""
    from _crossimage import auroc
    from stemroi.preprocessing import PatchGrid

    print("\n=== each frame clustered on its own tiles (what `stemroi cluster IMAGE` does): ROI flags by rule")
    rows = []
    for algorithm in ("kmeans", "average_linkage"):
        for name, frame, origins, truth in _cdte_frames_with_truth():
            tiles = PatchGrid(patch_size=64, stride=64, edge="drop").extract(frame)
            cl = stemroi.PatchClusterer("lattice_residual", algorithm=algorithm, random_state=seed).fit(tiles)
            row = {"algorithm": algorithm, "frame": name, "k": cl.n_clusters_}
            text = []
            for rule, c in (("cluster", 2.0), ("score", 2.0), ("score", 3.0)):
                res = cl.cluster_map(frame, 64, 64, roi=rule, roi_threshold=c, edge="drop")  # the protocol's grid
                np.testing.assert_array_equal(np.asarray(res.origins), origins)
                key = rule if rule == "cluster" else f"score {c:g}"
                row[key] = _flag_figures(res.is_roi, truth)
                text.append(f"{key}: {row[key]['flagged']:3d} flagged, P {row[key]['precision']:.2f} "
                            f"R {row[key]['recall']:.2f}")
            row["auroc"] = auroc(truth, res.scores)
            print(f"  {algorithm:15s} {name:12s} k={cl.n_clusters_:2d} AUROC {row['auroc']:.3f} | " + " | ".join(text),
                  flush=True)
            rows.append(row)
    return rows


SYNTH_MAP_DEFECTS = {"vacancy": 5, "interstitial": 5, "antisite": 5, "column_shift": 5, "stacking_fault": 1}


def synthetic_maps(seeds, rows, features=("lattice_residual", "lattice_residual_tukey")):
    """ROI maps of synthetic frames, what `stemroi cluster IMAGE` does: 768 x 768 frames of the three
    lattices (``SYNTH_MAP_DEFECTS`` at random columns, random_state = seed), PatchClusterer fitted on the
    frame's own 64-px tiles (random_state 0), cluster_map with the default flags (roi="score"). Truth:
    stemroi.demo.tile_truth (a defect tile holds >= 32 defect pixels; tiles with fewer but some are left
    out). Per descriptor, stride 64: precision, recall and tile AUROC of the scores; for the default
    descriptor also stride 32 (tile truth then counts many tiles with a defect near their border). Per
    defect, which does not depend on the stride: the share of the point defects whose centre lies in a
    flagged tile, and how many of the tiles that hold the stacking fault in their middle half (rows /
    columns 16-47) are flagged (the fault runs along a row or a column)."""
    from _crossimage import auroc
    from stemroi.demo import tile_truth
    from stemroi.io import synth
    from stemroi.preprocessing import PatchGrid

    print(f"\n=== ROI maps of synthetic frames ({len(seeds)} seeds x 3 lattices), fitted on their own tiles")
    runs = [(f, 64) for f in features] + [(features[0], 32)]
    for lattice in ("cubic", "perovskite", "dumbbell"):
        for seed in seeds:
            im = synth.make_image((768, 768), lattice=lattice, defects=SYNTH_MAP_DEFECTS, random_state=seed)
            frame = np.asarray(im.image, np.float32)
            fault = next(d for d in im.defects if d["kind"] == "stacking_fault")
            axis = {0: 0, 90: 1}.get(int(round(float(fault.get("angle_deg", 0.0)))) % 180)
            line = fault["row"] if axis == 0 else fault["col"]
            points = [(d["row"], d["col"]) for d in im.defects if d["kind"] != "stacking_fault"]
            row = {"lattice": lattice, "seed": seed}
            text = []
            for feats, stride in runs:
                tiles = PatchGrid(patch_size=64, stride=stride, edge="drop").extract(frame)
                cl = stemroi.PatchClusterer(feats, random_state=0).fit(tiles)
                res = cl.cluster_map(frame, 64, stride, edge="drop")
                origins = np.asarray(res.origins)
                kind = tile_truth(im.defect_mask, origins, 64)
                truth = np.sign(kind)  # 1 defect, 0 bulk, -1 left out: the truth _flag_figures and auroc take
                flags = np.asarray(res.is_roi)
                r = {"k": int(cl.n_clusters_), "tiles": len(origins), **_flag_figures(flags, truth),
                     "auroc": auroc(truth, np.asarray(res.scores))}
                fo = origins[flags]
                r["points_found"] = float(np.mean([bool(np.any((fo[:, 0] <= pr) & (pr < fo[:, 0] + 64) & (fo[:, 1] <= pc)
                                                                & (pc < fo[:, 1] + 64))) for pr, pc in points]))
                if axis is not None:
                    mid = (origins[:, axis] + 16 <= line) & (line < origins[:, axis] + 48)
                    r["fault_mid_tiles"], r["fault_mid_flagged"] = int(mid.sum()), int((mid & flags).sum())
                row[f"{feats}/{stride}"] = r
                text.append(f"{feats}/{stride}: P {r['precision']:.2f} R {r['recall']:.2f} AUROC {r['auroc']:.3f} "
                            f"points {r['points_found']:.2f}"
                            + (f" fault {r['fault_mid_flagged']}/{r['fault_mid_tiles']}" if axis is not None else ""))
            rows.append(row)
            print(f"  {lattice:10s} {seed:2d} | " + " | ".join(text), flush=True)
    for feats, stride in runs:
        key = f"{feats}/{stride}"
        m = {q: np.mean([r[key][q] for r in rows]) for q in ("precision", "recall", "auroc", "points_found")}
        f = [r[key] for r in rows if "fault_mid_tiles" in r[key]]
        print(f"  {key:28s} mean precision {m['precision']:.3f} recall {m['recall']:.3f} tile AUROC {m['auroc']:.3f}; "
              f"point defects in a flagged tile {m['points_found']:.3f}; "
              f"fault tiles (fault in the middle half) flagged {sum(x['fault_mid_flagged'] for x in f)} of "
              f"{sum(x['fault_mid_tiles'] for x in f)}")


def split_check(datasets, d, seed, n_init, rows):
    """Where the silhouette's extra clusters come from: PatchClusterer("lattice_residual") (labels unused) and, for
    every class whose patches fall in two or more clusters (each holding >= 10 % of the class), where
    the defect sits in the patches of each cluster: the peak of the lattice-fit residual after Gaussian
    smoothing (sigma 2 px), as its median row and column and its median distance from the patch
    centre."""
    from stemroi.features.descriptors import lattice_fit_residual, _residual_peaks, zscore_patches

    print("\n=== split classes: PatchClusterer('lattice_residual'); the residual's peak in each part of a class "
          "split over clusters")
    for ds in datasets:
        X, y, classes = load_patches(d / ds)
        cl = stemroi.PatchClusterer("lattice_residual", random_state=seed, n_init=n_init).fit(X)
        residual, _ = lattice_fit_residual(zscore_patches(X))
        h, w = residual.shape[1:]
        rr, cc = _residual_peaks(residual, 2.0)
        dist = np.hypot(rr - (h - 1) / 2, cc - (w - 1) / 2)
        print(f"  {ds}: k = {cl.n_clusters_}")
        for c, name in enumerate(classes):
            counts = np.bincount(cl.labels_[y == c], minlength=cl.n_clusters_)
            parts = np.flatnonzero(counts >= 0.1 * counts.sum())
            if len(parts) < 2:
                continue
            for j in parts:
                m = (y == c) & (cl.labels_ == j)
                row = dict(dataset=ds, cls=name, cluster=int(j), n=int(m.sum()), others=int((cl.labels_[y != c] == j).sum()),
                           peak_row=float(np.median(rr[m])), peak_col=float(np.median(cc[m])),
                           peak_distance=float(np.median(dist[m])))
                rows.append(row)
                print(f"    {name:14s} cluster {j}: {row['n']:4d} patches (+{row['others']} of other classes); "
                      f"residual peak at row {row['peak_row']:.0f}, col {row['peak_col']:.0f}, "
                      f"{row['peak_distance']:.1f} px from the centre (medians)", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer K-means restarts, skip VGG16 routes")
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "stemroi_bench" / "cluster"),
                    help="figures and results.json (default: <tmp>/stemroi_bench/cluster, outside the repository)")
    ap.add_argument("--datasets", nargs="+", default=["CdTe", "STO"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vgg-input-size", type=int, default=64,
                    help="VGG16 input side for the untrained-VGG16 routes (224 as in the study is slow on CPU)")
    ap.add_argument("--k-selection", action="store_true",
                    help="only the choice of k (every criterion) and the cross-image cluster map")
    ap.add_argument("--orientation", action="store_true",
                    help="only resolved vs invariant orientation bins, on the patches and on rotated copies")
    ap.add_argument("--splits", action="store_true",
                    help="only where the defect sits in each part of a class the default clustering splits")
    ap.add_argument("--synthetic-maps", type=int, default=0, metavar="N",
                    help="only ROI maps of synthetic frames (seeds 0..N-1 of each of three lattices; 8 in "
                         "docs/clustering.md), the default and the Tukey descriptor")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_init = 3 if args.quick else 10
    seed = args.seed
    d = data_dir("ayyubi-stem-defects")
    print("Machine note: timings on a shared, loaded 2-core machine; compare within one run only.")
    if args.synthetic_maps:
        import json

        rows = []
        synthetic_maps(range(args.synthetic_maps), rows)
        with open(out / "synthetic_maps.json", "w") as f:
            json.dump(rows, f, indent=1)
        return
    for wanted, check, name in ((args.splits, split_check, "splits.json"),
                                (args.orientation, orientation_check, "orientation.json")):
        if wanted:
            import json

            rows = []
            check(args.datasets, d, seed, n_init, rows)
            with open(out / name, "w") as f:
                json.dump(rows, f, indent=1)
            return
    if args.k_selection:
        import json

        ks_rows = []
        k_selection(args.datasets, d, seed, n_init, ks_rows)
        cross = cluster_cross_image(d, seed, n_init) if "CdTe" in args.datasets else []
        self_fit = cluster_self_fit(seed) if "CdTe" in args.datasets else []
        speed = []
        linkage_speed(speed)
        with open(out / "k_selection.json", "w") as f:
            json.dump({"choices": ks_rows, "cross_image": cross, "self_fit": self_fit, "linkage_speed": speed}, f,
                      indent=1, default=float)
        return
    results = []
    fitted = {}
    for ds in args.datasets:
        X, y, classes = load_patches(d / ds)
        k_true = len(classes)
        groups, gsrc = groups_for(X)
        print(f"\n=== {ds}: {len(X)} patches, {k_true} classes {classes}; overlap groups: {gsrc}"
              + (f" ({len(np.unique(groups))} groups)" if groups is not None else ""))

        print(" (b) label-free routes")
        routes = [
            ("fft magnitude, PCA 0.95", "fft", 0.95),
            ("polar power spectrum, PCA 0.95", "polar_fft", 0.95),
            ("lattice residual, PCA 0.95", "lattice_residual", 0.95),
            ("lattice residual, PCA 8", "lattice_residual", 8),
            # PatchClusterer()'s descriptor; k by the agreement rule (k_criteria="auto")
            ("Tukey lattice residual, agreement (default)", "lattice_residual_tukey", 0.95),
        ]
        for name, feat, nc in routes:
            cl = run_route(name, feat, X, y, k_true, n_components=nc, n_init=n_init, seed=seed, results=results,
                           dataset=ds, groups=groups)
            fitted[(ds, name)] = cl
        # the study's grid over PCA dimensions (label-free choice of k per setting), top 5 by silhouette
        lr = fitted[(ds, "lattice residual, PCA 0.95")]
        t0 = time.perf_counter()
        grid = stemroi.cluster.pca_k_grid(lr.features_, n_components=(2, 3, 5, 8, 10, 20, 0.8, 0.9, 0.95),
                                  n_init=n_init, random_state=seed, feature_groups=lr.extractor_.feature_groups)
        print(f"  -- PCA x k grid on the lattice-residual features ({time.perf_counter() - t0:.1f} s), top 5:")
        for r in grid[:5]:
            print(f"     n_components={r['n_components']!s:>5} dims={r['n_dims']:3d}  k={r['best_k']:2d}  "
                  f"sil={r['silhouette']:.3f}  acc@k={evaluate_clustering(y, r['labels'])['accuracy']:.3f}")
        # stability of the silhouette choice over K-means seeds (same features)
        from stemroi.features.descriptors import Precomputed

        print("  -- lattice residual, PCA 0.95, other K-means seeds (same features):")
        for s2 in range(1, 5):
            c2 = stemroi.PatchClusterer(Precomputed(feature_groups=lr.extractor_.feature_groups), n_init=n_init,
                                        random_state=s2).fit(lr.features_)
            curve = " ".join(f"{k}:{v:.3f}" for k, v in c2.silhouette_scores_.items())
            print(f"     seed {s2}: k={c2.n_clusters_} acc@k={evaluate_clustering(y, c2.labels_)['accuracy']:.3f} "
                  f"acc@{k_true}={evaluate_clustering(y, c2.labels_for(k_true))['accuracy']:.3f}  silhouettes {curve}")
        print("     seed 0 silhouettes " + " ".join(f"{k}:{v:.3f}" for k, v in lr.silhouette_scores_.items()))
        # near-duplicate check: one patch per exact-crop group (the first), clustered on its own. The
        # project's overlap_groups chain crops into very few groups (CdTe: ~12), too few to cluster, so this
        # check uses the stricter benchmark-local exact shared-segment grouping.
        fine = _exact_crop_groups(X)
        reps = np.unique(fine, return_index=True)[1]
        print(f"  -- one representative per exact-crop group ({len(reps)} patches):")
        for name, feat, nc in routes[2:]:
            run_route(name + " [1 per group]", feat, X[reps], y[reps], k_true, n_components=nc, n_init=n_init,
                      seed=seed, results=results, dataset=ds)
        if not args.quick:
            for layer in ("block3_pool", "block5_pool"):
                ext = stemroi.VGG16Features(weights="random", layer=layer, pooling="avg",
                                            input_size=args.vgg_input_size, random_state=seed)
                run_route(f"untrained VGG16 {layer} avg {args.vgg_input_size}px, PCA 0.95", ext, X, y, k_true,
                          n_components=0.95,
                          n_init=n_init, seed=seed, results=results, dataset=ds, groups=groups)
        else:
            print("  (VGG16 routes skipped: --quick)")

        print(" (a) label-informed (embedding trained on these labels; MLP head on lattice-residual features,"
              " scikit-learn, benchmark-only stand-in for the study's fine-tuned VGG16)")
        base = stemroi.features.LatticeResidual().transform(X)
        for oof, tag in ((False, "in-sample (study-like, leaky)"),
                         (True, "out-of-fold, grouped 5-fold")):
            t0 = time.perf_counter()
            emb = supervised_embedding(base, y, groups, seed, oof)
            t_train = time.perf_counter() - t0
            run_route(f"supervised {tag}", "precomputed", emb, y, k_true, n_components=0.95, n_init=n_init,
                      seed=seed, results=results, dataset=ds, groups=groups)
            print(f"    (head training {t_train:.1f} s)")
        if not args.quick:
            # the project's classifier (fine-tuned small CNN; the study fine-tuned ImageNet VGG16, not available
            # here): penultimate (pooled backbone) features of a network trained on the labels
            from sklearn.model_selection import GroupKFold

            for oof in (False, True):
                try:
                    t0 = time.perf_counter()
                    emb = None
                    splits = (list(GroupKFold(2).split(X, y, groups)) if oof
                              else [(np.arange(len(y)), np.arange(len(y)))])
                    for tr, te in splits:
                        clf = stemroi.PatchClassifier("small_cnn", mode="finetune", random_state=seed)
                        clf.fit(X[tr], y[tr], groups=groups[tr])
                        e = np.asarray(clf.transform(X[te]), np.float64)
                        emb = np.zeros((len(y), e.shape[1])) if emb is None else emb
                        emb[te] = e
                    print(f"    (PatchClassifier training {time.perf_counter() - t0:.1f} s)")
                    tag = "out-of-fold, grouped 2-fold" if oof else "in-sample (study-like, leaky)"
                    run_route(f"PatchClassifier small_cnn {tag}", "precomputed", emb, y, k_true, n_components=0.95,
                              n_init=n_init, seed=seed, results=results, dataset=ds, groups=groups)
                except Exception as exc:  # report and go on: the other routes stay valid
                    print(f"  PatchClassifier route failed: {type(exc).__name__}: {exc}")

    # the project's synthetic generator: known classes, no near-duplicates
    if hasattr(stemroi, "synth") or "synth" in getattr(stemroi, "_SUBMODULES", ()):
        P, ys, names = stemroi.io.synth.make_patch_dataset(n_per_class=60, random_state=seed)
        print(f"\n=== synthetic (stemroi.io.synth.make_patch_dataset): {len(P)} patches, {len(names)} classes {names}")
        for name, feat in (("polar power spectrum, PCA 0.95", "polar_fft"), ("lattice residual, PCA 0.95",
                                                                            "lattice_residual")):
            run_route(name, feat, P, ys, len(names), n_components=0.95, n_init=n_init, seed=seed, results=results,
                      dataset="synth")

    # cluster map of the large CdTe image with the best label-free route
    if "CdTe" in args.datasets:
        from stemroi import plotting as pc

        img = read_large_image(d / "CdTe_Training_Image.tif")
        cl = fitted[("CdTe", "lattice residual, PCA 0.95")]
        res = cl.cluster_map(img, patch=64, stride=64)
        X, y, classes = load_patches(d / "CdTe")
        # which labelled class dominates each cluster (only to read the map; the clustering never saw labels)
        conf = evaluate_clustering(y, cl.labels_)["confusion"]
        dominant = {}
        for c in range(cl.n_clusters_):
            col = conf[:, c] if c < conf.shape[1] else np.zeros(len(classes))
            dominant[f"cluster {c}"] = ", ".join(f"{classes[i]} {int(col[i])}" for i in np.argsort(-col)[:2]
                                                 if col[i] > 0)
        legend = {k: f"{k}: {v.split(',')[0].rsplit(' ', 1)[0] if v else '-'}" for k, v in dominant.items()}
        pc.plot_cluster_map(img, res, path=out / "cdte_cluster_map.png", legend_names=legend,
                            title=f"CdTe 768x768, label-free lattice residual, k={cl.n_clusters_}")
        res.to_json(out / "cdte_cluster_map.json")
        pc.plot_cluster_montage(X, cl.labels_, path=out / "cdte_cluster_montage.png")
        pc.plot_silhouette_curve(cl.silhouette_scores_, path=out / "cdte_silhouette.png")
        print(f"\nCdTe cluster map: {out / 'cdte_cluster_map.png'}; bulk (most frequent) = {res.bulk_label}")
        counts = res.counts()
        for c in range(cl.n_clusters_):
            name = f"cluster {c}"
            print(f"  {name}: {counts.get(name, 0):3d} tiles; labelled patches in it: {dominant[name] or '-'}")

    print("\nSummary")
    print("acc@k: at the silhouette-chosen k; acc@K: at the true class count; grp: acc@k with each overlap group"
          " weighing 1")
    print(f"{'dataset':7s} {'route':58s} {'k':>2s} {'sil':>6s} {'acc@k':>6s} {'grp':>6s} {'acc@K':>6s} {'sec':>7s}")
    for r in results:
        print(f"{r['dataset']:7s} {r['route']:58s} {r['k']:2d} {r['sil']:6.3f} {r['acc_k']:6.3f} "
              f"{r['gacc_k']:6.3f} {r['acc_true']:6.3f} {r['seconds']:7.1f}")
    import json

    with open(out / "results.json", "w") as f:
        json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
