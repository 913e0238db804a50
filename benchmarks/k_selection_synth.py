"""Which rule for k, judged on synthetic patch sets only.

The rules for choosing the number of clusters (docs/clustering.md, "Choosing
k") were compared on the two labelled real sets, which are also where the
label-free figures are reported: a rule picked there is picked on the test
data. This benchmark judges them on data that never touches the real sets:
synthetic patch sets from ``stemroi.io.synth`` with a known number of
classes, built like the real ones (a few regions per class, each cut into
many shifted crops, classes of unequal size), with lattice, cell size,
orientation, dose and noise drawn per set.

    .venv/bin/python benchmarks/k_selection_synth.py [--sets 40] [--seed 0] [--json out.json]

For each set and each route (PatchClusterer defaults with K-means and the
four rules, and average linkage with the silhouette) it records the chosen k,
whether it is within 1 of the class count, the Hungarian cluster accuracy
at the chosen k and at the true k, and the purity at the chosen k (each
cluster to its majority class: near 1 when extra clusters only split
classes). Labels are used to score only.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import stemroi
from stemroi.io import synth

ROUTES = (
    ("kmeans", "silhouette"),
    ("kmeans", "silhouette_1se"),
    ("kmeans", "stability"),
    ("kmeans", "gap"),
    ("average_linkage", "silhouette"),
)
PATCH = 64
SHIFT = 8  # crops of one region are shifted by up to this many pixels, as in the real sets


def make_region_crop_set(seed: int):
    """(patches, labels, groups, description) of one synthetic set.

    Each class has 3-10 regions; each region is one rendered (PATCH + 2 SHIFT)^2
    image (a defect of the class near its centre, none for Bulk) cut into 4-30
    crops at random offsets, so crops of one region overlap, like the shifted
    crops of the real CdTe and SrTiO3 sets.
    """
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(3, len(synth.CLASS_NAMES) + 1))
    kinds = list(rng.choice(synth.DEFECT_KINDS, size=n_classes - 1, replace=False))
    classes = ["Bulk"] + sorted(kinds)
    lattice = str(rng.choice(sorted(synth.LATTICES)))
    cell_px = float(rng.uniform(9.0, 16.0))
    orientation = float(rng.uniform(0.0, 90.0))
    dose = [None, 200.0, 500.0, 2000.0][int(rng.integers(4))]
    noise = float(rng.uniform(0.005, 0.04))
    side = PATCH + 2 * SHIFT
    patches, labels, groups = [], [], []
    group = 0
    for label, name in enumerate(classes):
        for _ in range(int(rng.integers(3, 11))):
            defects = None
            if name != "Bulk":
                r, c = (side - 1) / 2.0 + rng.uniform(-4, 4, size=2)
                defects = [{"kind": name, "row": r, "col": c}]
            img = synth.make_image((side, side), lattice=lattice, cell_px=cell_px, orientation_deg=orientation,
                                   defects=defects, dose=dose, noise=noise,
                                   random_state=int(rng.integers(2**31))).image
            for _ in range(int(rng.integers(4, 31))):
                dy, dx = rng.integers(0, 2 * SHIFT + 1, size=2)
                patches.append(img[dy:dy + PATCH, dx:dx + PATCH])
                labels.append(label)
                groups.append(group)
            group += 1
    desc = {"seed": seed, "classes": classes, "lattice": lattice, "cell_px": round(cell_px, 2),
            "orientation_deg": round(orientation, 1), "dose": dose, "noise": round(noise, 4),
            "n_patches": len(patches), "n_regions": group}
    return (np.stack(patches).astype(np.float32), np.asarray(labels), np.asarray(groups), desc)


def run_set(seed: int, n_threads=None):
    X, y, groups, desc = make_region_crop_set(seed)
    n_true = len(desc["classes"])
    out = {"set": desc, "routes": {}}
    # one K-means fit computes every criterion; each rule is read from the same selection
    km = stemroi.PatchClusterer(k_criteria="all", random_state=0, n_threads=n_threads).fit(X)
    sel = km.selection_
    for algorithm, rule in ROUTES:
        if algorithm == "kmeans":
            k = int(sel.choices[rule])
            labels_k = km.labels_for(k)
            labels_true = km.labels_for(n_true) if n_true in sel.k_values else None
        else:
            al = stemroi.PatchClusterer(algorithm="average_linkage", random_state=0, n_threads=n_threads).fit(X)
            k = int(al.n_clusters_)
            labels_k = al.labels_
            labels_true = al.labels_for(n_true)
        out["routes"][f"{algorithm}/{rule}"] = {
            "k": k,
            "within_1": abs(k - n_true) <= 1,
            "exact": k == n_true,
            "acc": float(stemroi.cluster_accuracy(y, labels_k)),
            "purity": float(stemroi.metrics.cluster_purity(y, labels_k)),
            "acc_true_k": float(stemroi.cluster_accuracy(y, labels_true)) if labels_true is not None else None,
        }
    return out


def summarise(results):
    rows = []
    for name in [f"{a}/{r}" for a, r in ROUTES]:
        rs = [r["routes"][name] for r in results]
        rows.append({
            "route": name,
            "within_1": float(np.mean([r["within_1"] for r in rs])),
            "exact": float(np.mean([r["exact"] for r in rs])),
            "acc_mean": float(np.mean([r["acc"] for r in rs])),
            "acc_median": float(np.median([r["acc"] for r in rs])),
            "purity_mean": float(np.mean([r["purity"] for r in rs])),
            "acc_true_k_mean": float(np.mean([r["acc_true_k"] for r in rs])),
            "k_minus_true_mean": float(np.mean([r["k"] - len(res["set"]["classes"])
                                                for r, res in zip(rs, results)])),
        })
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", type=int, default=40, help="number of synthetic sets (seeds seed .. seed+sets-1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write every per-set result here")
    args = ap.parse_args(argv)
    results = []
    t0 = time.perf_counter()
    for s in range(args.seed, args.seed + args.sets):
        t = time.perf_counter()
        res = run_set(s, args.threads)
        results.append(res)
        d = res["set"]
        ks = " ".join(f"{n.split('/')[1][:6] if n.startswith('kmeans') else 'avglnk'}={r['k']}({r['acc']:.2f})"
                      for n, r in res["routes"].items())
        print(f"set {s:3d} {d['lattice']:10s} K={len(d['classes'])} n={d['n_patches']:4d} "
              f"regions={d['n_regions']:2d}: {ks}  [{time.perf_counter() - t:.1f} s]", flush=True)
    print(f"\n{len(results)} sets, {time.perf_counter() - t0:.0f} s")
    print(f"{'route':34s} {'k within 1':>10s} {'k exact':>8s} {'acc@k mean':>10s} {'median':>7s} "
          f"{'purity':>6s} {'acc@K':>6s} {'k - K':>6s}")
    for row in summarise(results):
        print(f"{row['route']:34s} {row['within_1']:10.3f} {row['exact']:8.3f} {row['acc_mean']:10.3f} "
              f"{row['acc_median']:7.3f} {row['purity_mean']:6.3f} {row['acc_true_k_mean']:6.3f} {row['k_minus_true_mean']:+6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": summarise(results)}, f, indent=1)


if __name__ == "__main__":
    main()
