"""Leakage of a random train/test split vs the overlap-aware spatial split on the CdTe patches.

Many labelled patches are shifted crops of each other; a random split tests on
near-copies of training patches. Shows stemroi.load_patch_folder,
overlap_groups, mosaic_positions, leakage_report and spatial_train_test_split
(see docs/data.md). Needs the reference data (<repo>/../shared/data or $STEMROI_DATA_DIR).

    python examples/grouped_split.py [--quick] [--set CdTe|STO] [--out DIR]
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import stemroi


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one random-split seed instead of five")
    parser.add_argument("--set", default="CdTe", choices=["CdTe", "STO"], help="labelled patch folder")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    data = Path(os.environ.get("STEMROI_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    folder = data / "ayyubi-stem-defects" / args.set
    if not folder.is_dir():
        sys.exit(f"patch folder not found: {folder} (set STEMROI_DATA_DIR to the shared/data folder)")
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_split_"))
    out.mkdir(parents=True, exist_ok=True)

    ds = stemroi.load_patch_folder(folder)
    groups, edges, _ = stemroi.overlap_groups(ds.patches, return_edges=True)
    positions = stemroi.model_selection.mosaic_positions(groups, edges)  # where each patch sits in its group's mosaic
    print(f"{args.set}: {len(ds)} patches, {len(ds.class_names)} classes, {len(np.unique(groups))} overlap groups")

    random_leak = []
    for seed in range(1 if args.quick else 5):
        perm = np.random.default_rng(seed).permutation(len(ds))
        test, train = perm[: len(ds) // 5], perm[len(ds) // 5:]
        rep = stemroi.leakage_report(groups, train, test, positions=positions)
        random_leak.append(rep["twin_leakage"])
    print(f"random 80/20 split: {100 * np.mean(random_leak):.1f} % of test patches overlap a train patch")

    train, test = stemroi.spatial_train_test_split(ds.patches, ds.labels, test_size=0.2, random_state=0)
    rep = stemroi.leakage_report(groups, train, test, positions=positions)
    tested = sorted({ds.class_names[k] for k in ds.labels[test]})
    untested = [c for c in ds.class_names if c not in tested]
    print(f"spatial split: train {rep['n_train']}, test {rep['n_test']}, "
          f"{100 * rep['twin_leakage']:.1f} % of test patches overlap a train patch")
    print(f"classes the spatial test set cannot measure: {untested or 'none'}")
    summary = {"set": args.set, "n_patches": len(ds), "n_groups": len(np.unique(groups)),
               "random_twin_leakage": float(np.mean(random_leak)), "spatial": rep, "untested_classes": untested}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
