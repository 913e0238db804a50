"""Which rule for k, judged on synthetic patch sets only.

The rules for choosing the number of clusters (docs/clustering.md, "Choosing
k") were compared on the two labelled real sets, which are also where the
label-free figures are reported: a rule picked there is picked on the test
data. This benchmark judges them on data that never touches the real sets:
synthetic patch sets from ``stemroi.io.synth`` with a known number of
classes, built like the real ones (classes of unequal size, each cut into
many shifted crops of a few regions: ``--layout regions``, small regions,
or ``--layout strips``, long strips whose crops chain into one or two
overlap groups a class, as in the real sets), with lattice, cell size,
orientation, dose and noise drawn per set.

    .venv/bin/python benchmarks/k_selection_synth.py [--sets 40] [--seed 0] [--layout regions|strips]
        [--n-components 0.95] [--features lattice_residual] [--shift 8] [--rules-only] [--agreement]
        [--json out.json] [--real]

The figures of docs/clustering.md: ``--sets 80`` with each layout; the PCA
table with ``--rules-only --n-components N``.

For each set and each route (PatchClusterer with the ``--features`` descriptor, K-means and the
four rules, average linkage with the silhouette, and two benchmark-only
variants of the resampled rules whose subsamples draw whole overlap groups
instead of patches, groups from ``stemroi.overlap_groups``) it records the chosen k,
whether it is within 1 of the class count, the Hungarian cluster accuracy
at the chosen k and at the true k, and the purity at the chosen k (each
cluster to its majority class: near 1 when extra clusters only split
classes). Labels are used to score only. ``--real`` runs the same routes on
the labelled CdTe and SrTiO3 patch sets afterwards, and on a third labelled set
no choice was made on: 150 crops per class of the Prifti SrTiO3 sets (bulk, and
bulk with one planted point defect of 6 kinds), when the data is there; on
the real sets it also scores defect against bulk (the share of defect patches
outside the cluster that holds most Bulk patches, and of Bulk patches inside it).

The generator draws more than one look for some kinds (a fault runs along a1
or a2; an anti-site dims a bright column or brightens a dim one), and the
chosen k is also compared with that number of looks ("k - V"). ``--features
lattice_residual_invariant`` runs every route on the orientation-invariant
descriptor instead of the default (``lattice_residual_invariant_local``: that,
with the residual's spectrum windowed on the defect; ``lattice_residual_tukey``:
the default with Tukey windows in its spectra). ``--shift 20`` shifts the
crops of a region by up to 20 px instead of 8, so defects reach the crops' edges
(the wide layout of docs/clustering.md). ``--agreement`` adds the route
``PatchClusterer(features, k_criteria="agreement")``: k from the agreement of
the ``--features`` clustering with the ``lattice_residual_invariant_local`` one,
the silhouette's k where they agree only at k = 2 (with ``--features
lattice_residual_tukey`` that is ``PatchClusterer()``, the default since
2026-12-07: docs/clustering.md, "The default": ``--features lattice_residual_tukey
--rules-only --agreement --sets 80``, each layout).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import stemroi
from stemroi._validation import check_n_threads
from stemroi.cluster import _kmeans
from stemroi.io import synth

ROUTES = (
    ("kmeans", "silhouette"),
    ("kmeans", "silhouette_1se"),
    ("kmeans", "stability"),
    ("kmeans", "gap"),
    ("average_linkage", "silhouette"),
    ("kmeans", "stability_grouped"),
    ("kmeans", "silhouette_1se_grouped"),
)
PATCH = 64
SHIFT = 8  # crops of one region are shifted by up to this many pixels, as in the real sets


def _draw_set(rng):
    """The classes (Bulk and 2-5 defect kinds) and the rendering of one set: lattice, cell,
    orientation, dose and noise, as ``synth.make_image`` keywords."""
    n_classes = int(rng.integers(3, len(synth.CLASS_NAMES) + 1))
    kinds = list(rng.choice(synth.DEFECT_KINDS, size=n_classes - 1, replace=False))
    render = {"lattice": str(rng.choice(sorted(synth.LATTICES))), "cell_px": float(rng.uniform(9.0, 16.0)),
              "orientation_deg": float(rng.uniform(0.0, 90.0)),
              "dose": [None, 200.0, 500.0, 2000.0][int(rng.integers(4))], "noise": float(rng.uniform(0.005, 0.04))}
    return ["Bulk"] + sorted(kinds), render


def _variant(record) -> str:
    """Which look of its kind a planted defect has: the generator draws a fault's direction (along
    a1 or a2), an anti-site's change (a brighter column dimmed, or a dimmer one brightened) and a
    column shift's direction (any angle: one variant here, so the count is a lower bound)."""
    kind = record["kind"]
    if kind == "stacking_fault":
        return f"{kind} {round(record['angle_deg']) % 180}"
    if kind == "antisite":
        return f"{kind} {'dimmed' if record['intensity_to'] < record['intensity_from'] else 'brightened'}"
    return kind


def _set(patches, labels, groups, desc, variants):
    desc.update(n_patches=len(patches), n_regions=int(len(set(groups))), n_variants=len(set(variants)))
    return np.stack(patches).astype(np.float32), np.asarray(labels), np.asarray(groups), desc


def make_region_crop_set(seed: int):
    """(patches, labels, groups, description) of one synthetic set.

    Each class has 3-10 regions; each region is one rendered (PATCH + 2 SHIFT)^2
    image (a defect of the class near its centre, none for Bulk) cut into 4-30
    crops at random offsets, so crops of one region overlap, like the shifted
    crops of the real CdTe and SrTiO3 sets.
    """
    rng = np.random.default_rng(seed)
    classes, render = _draw_set(rng)
    side = PATCH + 2 * SHIFT
    patches, labels, groups, variants = [], [], [], []
    group = 0
    for label, name in enumerate(classes):
        for _ in range(int(rng.integers(3, 11))):
            defects = None
            if name != "Bulk":
                r, c = (side - 1) / 2.0 + rng.uniform(-4, 4, size=2)
                defects = [{"kind": name, "row": r, "col": c}]
            s = synth.make_image((side, side), defects=defects, random_state=int(rng.integers(2**31)), **render)
            img, variant = s.image, _variant(s.defects[0]) if s.defects else name
            for _ in range(int(rng.integers(4, 31))):
                dy, dx = rng.integers(0, 2 * SHIFT + 1, size=2)
                patches.append(img[dy:dy + PATCH, dx:dx + PATCH])
                labels.append(label)
                groups.append(group)
                variants.append(variant)
            group += 1
    return _set(patches, labels, groups, dict(seed=seed, layout="regions", classes=classes, **render), variants)


def make_strip_crop_set(seed: int):
    """(patches, labels, groups, description) of one synthetic set laid out as the real sets are.

    Each class is cut from 1-2 long rendered strips, (PATCH + 2 SHIFT) x (PATCH + 2 SHIFT + L)
    pixels with L = 128-320: a strip holds several defects of its class (a planar fault runs
    across it) and each crop is centred on one of them within SHIFT pixels, so the crops of a
    class chain into one or two overlap groups, as most classes of the real CdTe and SrTiO3
    sets do (docs/clustering.md). 60-200 crops per class.
    """
    rng = np.random.default_rng([seed, 0x5791])
    classes, render = _draw_set(rng)
    h = PATCH + 2 * SHIFT
    patches, labels, groups, variants = [], [], [], []
    strip_id = 0
    for label, name in enumerate(classes):
        n_strips = int(rng.integers(1, 3))
        n_crops = int(rng.integers(60, 201))
        for st in range(n_strips):
            w = h + int(rng.integers(128, 321))
            if name == "Bulk":
                defects = None
            elif name == "stacking_fault":
                defects = [{"kind": name, "row": (h - 1) / 2.0, "col": (w - 1) / 2.0}]
            else:
                defects = {name: max(2, (w - h) // 40)}
            s = synth.make_image((h, w), defects=defects, random_state=int(rng.integers(2**31)), **render)
            points = [d for d in s.defects if name not in ("Bulk", "stacking_fault")]
            strip_variant = _variant(s.defects[0]) if s.defects else name  # Bulk, or the strip's one fault
            for _ in range(n_crops // n_strips):
                variant = strip_variant
                if points:  # centred on one of the strip's defects, within SHIFT pixels
                    d = points[int(rng.integers(len(points)))]
                    r, c, variant = d["row"], d["col"], _variant(d)
                    top = int(round(r - PATCH / 2 + rng.uniform(-SHIFT, SHIFT)))
                    left = int(round(c - PATCH / 2 + rng.uniform(-SHIFT, SHIFT)))
                else:  # bulk, or along the fault: anywhere on the strip
                    top, left = int(rng.integers(0, h - PATCH + 1)), int(rng.integers(0, w - PATCH + 1))
                top, left = min(max(top, 0), h - PATCH), min(max(left, 0), w - PATCH)
                patches.append(s.image[top:top + PATCH, left:left + PATCH])
                labels.append(label)
                groups.append(strip_id)
                variants.append(variant)
            strip_id += 1
    return _set(patches, labels, groups, dict(seed=seed, layout="strips", classes=classes, **render), variants)


def grouped_resampling_choices(embedding, selection, groups, n_init=10, seed=0, n_threads=None):
    """The stability and silhouette 1-SE choices of ``select_n_clusters`` (its default 10
    subsamples of 80 %) with one change: each subsample keeps 80 % of the overlap GROUPS, whole,
    instead of 80 % of the patches, so shifted crops of one region are never split between kept
    and dropped. Benchmark-only: no estimator offers it (see docs/clustering.md for why)."""
    ks = selection.k_values
    ari, _, sil, sil_sd = _kmeans._stability(np.ascontiguousarray(embedding), ks, selection.labels, 10,
                                             _kmeans.RESAMPLE_FRACTION, n_init, 300, 1e-4, seed,
                                             check_n_threads(n_threads), "cpu", groups=groups)
    return {"stability_grouped": _kmeans._stability_choice(ks, ari, 0.9),
            "silhouette_1se_grouped": _kmeans._silhouette_1se_choice(ks, sil, sil_sd)}


def run_set(seed: int, n_threads=None, layout: str = "regions", n_components=0.95, routes=ROUTES,
            features="lattice_residual"):
    make = make_region_crop_set if layout == "regions" else make_strip_crop_set
    X, y, _, desc = make(seed)
    return run_routes(X, y, len(desc["classes"]), desc, n_threads, n_components, routes, features=features)


def run_routes(X, y, n_true, desc, n_threads=None, n_components=0.95, routes=ROUTES, bulk=None,
               features="lattice_residual"):
    """Every route on one labelled set. ``bulk``: the label of the set's Bulk class, to also score
    defect against bulk (the cluster holding most Bulk patches is the bulk cluster)."""
    out = {"set": desc, "routes": {}}
    # one K-means fit computes every criterion; each rule is read from the same selection
    criteria = "all" if any(rule == "gap" for _, rule in routes) else "stability"
    km = stemroi.PatchClusterer(features, k_criteria=criteria, random_state=0, n_threads=n_threads,
                                n_components=n_components).fit(X)
    sel = km.selection_
    # label-free groups, as a user would have them (on these sets they equal the regions exactly)
    choices = dict(sel.choices)
    if any(r.endswith("_grouped") for _, r in routes):
        groups = stemroi.overlap_groups(X, n_threads=n_threads)
        desc["n_overlap_groups"] = int(len(np.unique(groups)))
        choices.update(grouped_resampling_choices(km.embedding_, sel, groups, n_threads=n_threads))
    for algorithm, rule in routes:
        if rule == "agreement":  # a second descriptor's K-means: its own fit
            ag = stemroi.PatchClusterer(features, k_criteria="agreement", random_state=0, n_threads=n_threads,
                                        n_components=n_components).fit(X)
            k = int(ag.n_clusters_)
            labels_k = ag.labels_
            labels_true = ag.labels_for(n_true) if n_true in ag.labels_per_k_ else None
        elif algorithm == "kmeans":
            k = int(choices[rule])
            labels_k = km.labels_for(k)
            labels_true = km.labels_for(n_true) if n_true in sel.k_values else None
        else:
            al = stemroi.PatchClusterer(features, algorithm="average_linkage", random_state=0, n_threads=n_threads,
                                        n_components=n_components).fit(X)
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
        if bulk is not None:
            in_bulk = labels_k == np.bincount(labels_k[y == bulk]).argmax()
            out["routes"][f"{algorithm}/{rule}"].update(
                bulk_kept=float(in_bulk[y == bulk].mean()), defect_recall=float((~in_bulk[y != bulk]).mean()))
    return out


def summarise(results):
    rows = []
    for name in (results[0]["routes"] if results else ()):
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
            # the same against the number of looks the generator drew (see _variant)
            "within_1_variants": float(np.mean([abs(r["k"] - res["set"]["n_variants"]) <= 1
                                                for r, res in zip(rs, results)])),
            "k_minus_variants_mean": float(np.mean([r["k"] - res["set"]["n_variants"]
                                                    for r, res in zip(rs, results)])),
        })
    return rows


def _short(route: str) -> str:
    algorithm, rule = route.split("/")
    if algorithm != "kmeans":
        return "avglnk"
    return {"silhouette": "sil", "silhouette_1se": "1se", "stability": "stab", "gap": "gap",
            "stability_grouped": "gstab", "silhouette_1se_grouped": "g1se", "agreement": "agree"}[rule]


def main(argv=None):
    global SHIFT  # --shift: the crop shift every set of this run uses
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", type=int, default=40, help="number of synthetic sets (seeds seed .. seed+sets-1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write every per-set result here")
    ap.add_argument("--layout", choices=("regions", "strips"), default="regions",
                    help="regions: 3-10 small regions per class (default); strips: 1-2 long strips per class, "
                         "crops chained into one or two overlap groups, as in the real sets")
    ap.add_argument("--n-components", default="0.95",
                    help="PatchClusterer's n_components: a variance fraction in (0, 1) or a number of components "
                         "(default 0.95, the estimator's default)")
    ap.add_argument("--features", choices=("lattice_residual", "lattice_residual_invariant",
                                           "lattice_residual_invariant_local", "lattice_residual_tukey"),
                    default="lattice_residual",
                    help="the descriptor every route clusters (default lattice_residual, the estimator's default)")
    ap.add_argument("--shift", type=int, default=SHIFT,
                    help=f"crops of a region are shifted by up to this many pixels (default {SHIFT}, as in the real "
                         "sets; 20 = the wide layout of docs/clustering.md, where defects reach the crop's edges)")
    ap.add_argument("--rules-only", action="store_true",
                    help="only the K-means silhouette and silhouette 1-SE rules (faster: no gap, average linkage "
                         "or group resampling)")
    ap.add_argument("--real", action="store_true", help="also run the routes on the labelled real patch sets")
    ap.add_argument("--agreement", action="store_true",
                    help="also the agreement rule: k_criteria='agreement', the --features clustering against "
                         "lattice_residual_invariant_local's (use another --features)")
    args = ap.parse_args(argv)
    if args.agreement and args.features == "lattice_residual_invariant_local":
        ap.error("--agreement compares --features with lattice_residual_invariant_local: give another --features")
    if args.shift < 0:
        ap.error(f"--shift must be >= 0, got {args.shift}")
    SHIFT = args.shift
    n_components = float(args.n_components) if "." in args.n_components else int(args.n_components)
    routes = ROUTES[:2] if args.rules_only else ROUTES
    if args.agreement:
        routes = routes + (("kmeans", "agreement"),)
    results = []
    t0 = time.perf_counter()
    for s in range(args.seed, args.seed + args.sets):
        t = time.perf_counter()
        res = run_set(s, args.threads, args.layout, n_components, routes, args.features)
        results.append(res)
        d = res["set"]
        ks = " ".join(f"{_short(n)}={r['k']}({r['acc']:.2f})" for n, r in res["routes"].items())
        print(f"set {s:3d} {d['lattice']:10s} K={len(d['classes'])} n={d['n_patches']:4d} "
              f"regions={d['n_regions']:2d}: {ks}  [{time.perf_counter() - t:.1f} s]", flush=True)
    print(f"\n{len(results)} sets, {time.perf_counter() - t0:.0f} s")
    print_summary(results)
    real = real_sets(args.threads, n_components, routes, args.features) if args.real else []
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": summarise(results), "real": real}, f, indent=1)


def real_sets(n_threads, n_components=0.95, routes=ROUTES, features="lattice_residual"):
    """The same routes on the labelled real patch sets (skipped with a note when absent)."""
    import os
    from pathlib import Path

    from _common import ROOT

    data = Path(os.environ.get("STEMROI_DATA_DIR", ROOT.parent / "shared" / "data"))
    sets = []
    base = data / "ayyubi-stem-defects"
    if base.is_dir():
        for name in ("CdTe", "STO"):
            ds = stemroi.load_patch_folder(base / name)
            sets.append((name, np.asarray(ds.patches, np.float32), np.asarray(ds.labels), list(ds.class_names)))
    else:
        print(f"--real: reference data not found at {base}; skipped")
    if (data / "prifti-sto-cvae").is_dir():
        from _common import planted_point_defect_set

        sets.append(("STO-planted",) + planted_point_defect_set(data / "prifti-sto-cvae"))
    else:
        print(f"--real: reference data not found at {data / 'prifti-sto-cvae'}; skipped")
    out = []
    for name, X, y, class_names in sets:
        res = run_routes(X, y, len(class_names), {"name": name, "n_patches": len(X)}, n_threads, n_components,
                         routes, bulk=class_names.index("Bulk") if "Bulk" in class_names else None,
                         features=features)
        out.append(res)
        groups = res["set"].get("n_overlap_groups")
        print(f"\n{name}: {len(X)} patches, {len(class_names)} classes"
              + (f", {groups} overlap groups" if groups is not None else ""))
        for route, r in res["routes"].items():
            print(f"  {route:34s} k = {r['k']:2d}  acc@k {r['acc']:.3f}  purity {r['purity']:.3f}"
                  + (f"  defect recall {r['defect_recall']:.3f}  bulk kept {r['bulk_kept']:.3f}"
                     if "bulk_kept" in r else ""))
    return out


def print_summary(results):
    print(f"{'route':34s} {'k within 1':>10s} {'k exact':>8s} {'acc@k mean':>10s} {'median':>7s} "
          f"{'purity':>6s} {'acc@K':>6s} {'k - K':>6s} {'k - V':>6s} {'V within 1':>10s}")
    for row in summarise(results):
        print(f"{row['route']:34s} {row['within_1']:10.3f} {row['exact']:8.3f} {row['acc_mean']:10.3f} "
              f"{row['acc_median']:7.3f} {row['purity_mean']:6.3f} {row['acc_true_k_mean']:6.3f} "
              f"{row['k_minus_true_mean']:+6.2f} {row['k_minus_variants_mean']:+6.2f} {row['within_1_variants']:10.3f}")
    if results:
        print(f"K: classes ({np.mean([len(r['set']['classes']) for r in results]):.2f} a set); V: the looks the "
              f"generator drew for them ({np.mean([r['set']['n_variants'] for r in results]):.2f} a set: a fault's "
              "direction, an anti-site's change), a lower bound")


if __name__ == "__main__":
    main()
