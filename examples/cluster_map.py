"""Unsupervised ROI discovery: cluster patches by their lattice residual, then map clusters over a frame.

stemroi.PatchClusterer fits descriptor -> standardise -> PCA -> K-means with k
chosen by silhouette; no labels are used (they only score the result, with
stemroi.metrics.evaluate_clustering). cluster_map tiles a new image and assigns each
tile to its nearest cluster (the most frequent cluster is taken as bulk).
Shows stemroi.plotting.plot_cluster_map. Synthetic data (stemroi.io.synth).

    python examples/cluster_map.py [--quick] [--out DIR]
"""
import argparse
import json
import tempfile
from pathlib import Path

import stemroi
import stemroi.io.synth
from stemroi import plotting as plots_cluster


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 patches per class, k in 2..6, 256x256 frame")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_clusters_"))
    out.mkdir(parents=True, exist_ok=True)
    classes = ["Bulk", "vacancy", "interstitial", "stacking_fault"]
    patches, labels, names = stemroi.io.synth.make_patch_dataset(
        n_per_class=15 if args.quick else 50, classes=classes, random_state=0)

    clusterer = stemroi.PatchClusterer("lattice_residual", n_components=0.95,
                                       k_range=range(2, 7 if args.quick else 11), n_init=4, random_state=0)
    clusterer.fit(patches)
    ev = stemroi.metrics.evaluate_clustering(labels, clusterer.labels_, names)
    print(f"{len(patches)} patches: k = {clusterer.n_clusters_} by silhouette; accuracy vs the hidden labels "
          f"{ev['accuracy']:.3f} (class-balanced {ev['weighted_accuracy']:.3f})")
    print("per class:", {k: round(float(v), 3) for k, v in ev["per_class"].items()})

    size = 256 if args.quick else 768
    frame = stemroi.io.synth.make_image((size, size), defects={"vacancy": 2, "interstitial": 2, "stacking_fault": 1},
                                     random_state=1)
    result = clusterer.cluster_map(frame.image, patch=64, stride=64)
    print(f"frame {frame.image.shape}: {len(result)} tiles, {result.counts()} (bulk = {result.bulk_label!r})")
    plots_cluster.plot_cluster_map(frame.image, result, title="clusters", path=out / "cluster_map.png")
    result.to_json(out / "cluster_map.json")
    summary = {"n_patches": len(patches), "n_clusters": int(clusterer.n_clusters_), "accuracy": ev["accuracy"],
               "weighted_accuracy": ev["weighted_accuracy"], **result.summary()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'cluster_map.png'}")


if __name__ == "__main__":
    main()
