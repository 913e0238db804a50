"""Overlap groups on the labelled CdTe and STO patch sets: leakage of random vs grouped splits.

For each set: the number of overlap groups, the leakage of a random stratified
80/20 split (share of test patches with an overlapping twin in train; mean over
5 seeds), the leakage of the grouped split (0 by construction), the number of
label-mixing groups, and the time of ``overlap_groups``. A brute-force NumPy
reference (FFT sum of squared differences over every shift of every pair) on
a random subset checks that the hashed search finds the same groups and gives
a speed ratio measured in the same run.

Usage: python benchmarks/grouping.py [--subset 150]
Data: <repo>/../shared/data or $STEMROI_DATA_DIR.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import data_dir

import stemroi
from stemroi.model_selection._overlap import (
    grouped_train_test_split,
    label_audit,
    leakage_report,
    mosaic_positions,
    overlap_groups,
    purge_overlapping,
    spatial_blocks,
)


def bruteforce_groups(patches: np.ndarray, min_overlap: float) -> np.ndarray:
    """Reference: exact match at any shift, by FFT cross-correlation of every pair (NumPy only)."""
    n, p, _ = patches.shape
    s = 2 * p
    x = patches.astype(np.float64)
    ones = np.ones((p, p))
    fa = np.fft.rfft2(x, s=(s, s))
    fa2 = np.fft.rfft2(x**2, s=(s, s))
    f1 = np.fft.rfft2(ones, s=(s, s))
    # overlap area per shift (dy, dx) (circular index), and the shifts that overlap enough
    area = np.rint(np.fft.irfft2(f1 * np.conj(f1), s=(s, s)))
    enough = area >= min_overlap * p * p - 1e-9
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i in range(n - 1):
        j = np.arange(i + 1, n)
        # sum over the overlap of (a(x + d) - b(x))^2 = A2 + B2 - 2 C
        # (linear, so one inverse transform per pair)
        spectrum = fa2[i][None] * np.conj(f1)[None] + f1[None] * np.conj(fa2[j]) - 2 * fa[i][None] * np.conj(fa[j])
        ssd = np.fft.irfft2(spectrum, s=(s, s))
        hit = ((np.abs(ssd) < 1e-7) & enough[None]).any(axis=(1, 2))
        for jj in j[hit]:
            ri, rj = find(i), find(jj)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(a) for a in range(n)])
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(x, y) for x, y in zip(a.tolist(), b.tolist())}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def main() -> None:
    from sklearn.model_selection import train_test_split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", type=int, default=150, help="patches for the brute-force reference check")
    ap.add_argument("--min-overlap", type=float, default=0.25)
    ap.add_argument("--block", type=int, default=128, help="mosaic block size of the spatial split")
    args = ap.parse_args()
    root = data_dir("ayyubi-stem-defects")
    print("Timings on a shared, loaded machine; ratios are from this run.")
    for name in ("CdTe", "STO"):
        t = time.perf_counter()
        ds = stemroi.load_patch_folder(root / name)
        t_load = time.perf_counter() - t
        n = len(ds)
        t = time.perf_counter()
        groups, edges, _ = overlap_groups(ds.patches, min_overlap=args.min_overlap, return_edges=True)
        t_first = time.perf_counter() - t
        t = time.perf_counter()
        overlap_groups(ds.patches, min_overlap=args.min_overlap)
        t_group = time.perf_counter() - t
        pos = mosaic_positions(groups, edges)
        sizes = np.bincount(groups)

        def describe(tr, te):
            r = leakage_report(groups, tr, te, positions=pos, min_overlap=args.min_overlap)
            counts = np.bincount(ds.labels[te], minlength=len(ds.class_names))
            return (f"group leakage {r['leakage']:.3f}, twin leakage {r['twin_leakage']:.3f}; "
                    f"train {tr.size}, test {te.size} ({te.size / n:.2f}); test per class "
                    + " ".join(f"{c}:{k}" for c, k in zip(ds.class_names, counts)))

        leaks = []
        for seed in range(5):
            tr, te = train_test_split(np.arange(n), test_size=0.2, stratify=ds.labels, random_state=seed)
            r = leakage_report(groups, tr, te, positions=pos, min_overlap=args.min_overlap)
            leaks.append((r["leakage"], r["twin_leakage"]))
        leaks = np.array(leaks)
        audit = label_audit(groups, ds.labels, ds.class_names)
        print(f"\n== {name}: {n} patches, {len(ds.class_names)} classes (load {t_load:.2f} s)")
        print(f"overlap_groups: {t_group:.3f} s (first call, incl. importing the compiled core: {t_first:.3f} s), {sizes.size} groups (largest {sizes.max()}, "
              f"{int((sizes == 1).sum())} singletons), {len(edges)} spanning edges, min_overlap={args.min_overlap}")
        print("group sizes and mosaic extents (rows x cols px) of groups > 20 patches:")
        for grp in np.flatnonzero(sizes > 20):
            m = groups == grp
            ext = pos[m].max(axis=0) - pos[m].min(axis=0) + 64
            lab = np.bincount(ds.labels[m], minlength=len(ds.class_names))
            print(f"   group {grp}: {sizes[grp]} patches, {ext[0]} x {ext[1]} px, "
                  + " ".join(f"{c}:{k}" for c, k in zip(ds.class_names, lab) if k))
        print(f"random stratified 80/20 split (5 seeds): group leakage {leaks[:, 0].mean():.3f}, "
              f"twin leakage {leaks[:, 1].mean():.3f} (min {leaks[:, 1].min():.3f}) "
              "[share of test patches with a twin in train]")
        tr, te = train_test_split(np.arange(n), test_size=0.2, stratify=ds.labels, random_state=0)
        print("   seed 0: " + describe(tr, te))
        tr, te = grouped_train_test_split(ds.labels, groups, test_size=0.2, random_state=0)
        print("grouped split (overlap groups): " + describe(tr, te))
        blocks = spatial_blocks(groups, pos, block_size=args.block)
        tr, te = grouped_train_test_split(ds.labels, blocks, test_size=0.2, random_state=0)
        tr = purge_overlapping(tr, te, groups, pos)
        print(f"spatial-block split ({args.block} px blocks of the mosaics, {np.unique(blocks).size} blocks, "
              "train patches overlapping test purged): " + describe(tr, te))
        print(f"label-mixing groups: {len(audit)} (holding {sum(a['size'] for a in audit)} patches)")
        for a in audit[:5]:
            print(f"   group {a['group']}: {a['size']} patches, labels {a['labels']}")

        # brute-force reference on a random subset
        rng = np.random.default_rng(0)
        sub = np.sort(rng.choice(n, size=min(args.subset, n), replace=False))
        t = time.perf_counter()
        ref = bruteforce_groups(ds.patches[sub], args.min_overlap)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        got = overlap_groups(ds.patches[sub], min_overlap=args.min_overlap)
        t_got = time.perf_counter() - t
        print(f"brute-force NumPy reference on {sub.size} patches: {np.unique(ref).size} groups vs "
              f"{np.unique(got).size}; same partition: {same_partition(ref, got)}; "
              f"time {t_ref:.2f} s vs {t_got:.4f} s (x{t_ref / max(t_got, 1e-9):.0f})")


if __name__ == "__main__":
    main()
