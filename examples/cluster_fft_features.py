"""Unsupervised clustering of patches by their FFT magnitude: PCA -> k sweep -> accuracy vs labels.

The FFT magnitude does not change when the lattice shifts, so patches cluster
by what is in them, not where the columns sit. Shows stemroi.PCA,
stemroi.select_n_clusters (silhouette over k) and stemroi.cluster_accuracy
(Hungarian matching). Synthetic patches (stemroi.io.synth) by default; the real
CdTe patches with --data (<repo>/../shared/data or $STEMROI_DATA_DIR).

    python examples/cluster_fft_features.py [--quick] [--data] [--out DIR]
"""
import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

import stemroi
import stemroi.io.synth


def fft_features(patches, keep=16):
    """|FFT| of each mean-removed patch, the central keep x keep low frequencies, flattened."""
    x = patches - patches.mean(axis=(1, 2), keepdims=True)
    mag = np.abs(np.fft.fftshift(np.fft.fft2(x), axes=(1, 2)))
    c0, c1, h = mag.shape[1] // 2, mag.shape[2] // 2, keep // 2
    return np.log1p(mag[:, c0 - h:c0 + h, c1 - h:c1 + h]).reshape(len(x), -1).astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer patches, k in 2..7")
    parser.add_argument("--data", action="store_true", help="use the real CdTe patches instead of synthetic ones")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_cluster_"))
    out.mkdir(parents=True, exist_ok=True)
    if args.data:
        root = Path(os.environ.get("STEMROI_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
        ds = stemroi.load_patch_folder(root / "ayyubi-stem-defects" / "CdTe")
        patches, labels, names = ds.patches, ds.labels, ds.class_names
    else:
        patches, labels, names = stemroi.io.synth.make_patch_dataset(
            n_per_class=15 if args.quick else 60, classes=["Bulk", "vacancy", "stacking_fault"], random_state=0)

    Z = stemroi.PCA(n_components=20, random_state=0).fit_transform(fft_features(patches))
    k_range = range(2, 8 if args.quick else 11)
    sel = stemroi.select_n_clusters(Z, k_range, n_init=4, random_state=0)
    print(sel.table())
    acc_best = stemroi.cluster_accuracy(labels, sel.labels[sel.best_k])
    n_classes = len(names)
    acc_true_k = stemroi.cluster_accuracy(labels, sel.labels[n_classes]) if n_classes in sel.labels else None
    print(f"{len(patches)} patches, {n_classes} classes {names}; best k by silhouette = {sel.best_k}")
    print(f"cluster accuracy at best k: {acc_best:.3f}" + (
        f"; at k = {n_classes}: {acc_true_k:.3f}" if acc_true_k is not None else ""))
    summary = {"n_patches": len(patches), "class_names": list(names), "best_k": int(sel.best_k),
               "accuracy_best_k": acc_best, "accuracy_true_k": acc_true_k, "selection": sel.as_dict()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()
