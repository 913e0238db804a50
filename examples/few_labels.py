"""Classify patches from 10 labelled examples per class, with the rest left unlabelled.

Shows stemroi.FewLabelClassifier (the lattice-residual descriptor and the STEM-pretrained
features shipped with the package, 8 dihedral views, a linear head, self-training on the
unlabelled patches, then a small CNN trained on the pseudo-labels that predicts with the head)
against stemroi.PatchClassifier trained from scratch on the same labels,
scored on held-out synthetic patches, then stemroi.detect on a synthetic frame -> ROIResult,
overlay PNG + JSON + CSV. Everything offline.

    python examples/few_labels.py [--quick] [--out DIR]
"""
import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

import stemroi
import stemroi.io.synth
from stemroi.plotting import save_figure


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 classes, fewer unlabelled and test patches, 256x256 frame")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_fewlabels_"))
    out.mkdir(parents=True, exist_ok=True)
    classes = ["Bulk", "vacancy", "stacking_fault"] if args.quick else ["Bulk", "vacancy", "interstitial",
                                                                        "stacking_fault"]
    patches, y, names = stemroi.io.synth.make_patch_dataset(n_per_class=30 if args.quick else 80, classes=classes,
                                                            random_state=0, lattice="dumbbell", cell_px=12.0)
    labels = np.asarray(names)[y]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(patches))
    labelled = np.concatenate([order[labels[order] == c][:10] for c in names])  # 10 per class
    rest = np.setdiff1d(order, labelled)
    unlabelled, test = rest[: len(rest) // 2], rest[len(rest) // 2:]
    print(f"{len(labelled)} labelled, {len(unlabelled)} unlabelled, {len(test)} test patches; classes {names}")

    # one thread: results are bit-identical for a fixed thread count
    few = stemroi.FewLabelClassifier(random_state=0, n_threads=1)
    few.fit(patches[labelled], labels[labelled], unlabelled=patches[unlabelled])
    acc_few = float(np.mean(few.predict(patches[test]) == labels[test]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no validation data": 10 per class leave none to spare
        scratch = stemroi.PatchClassifier(validation_fraction=0, max_epochs=20, random_state=0, n_threads=1)
        scratch.fit(patches[labelled], labels[labelled])
    acc_scratch = float(np.mean(scratch.predict(patches[test]) == labels[test]))
    print(f"test accuracy: FewLabelClassifier {acc_few:.3f} (pseudo-labelled per round {few.n_pseudo_labelled_}), "
          f"small CNN from scratch on the same labels {acc_scratch:.3f}")

    size = 256 if args.quick else 512
    frame = stemroi.io.synth.make_image((size, size), lattice="dumbbell", cell_px=12.0,
                                        defects={k: 2 for k in names if k != "Bulk"}, random_state=1)
    result = stemroi.detect(frame.image, few, patch=64, stride=64)
    has_defect = [bool(frame.defect_mask[r:r + 64, c:c + 64].any()) for r, c in result.origins]
    hits = sum(bool(roi) and d for roi, d in zip(result.is_roi, has_defect))
    print(f"{len(result)} tiles: {result.counts()}; {hits} of {sum(has_defect)} tiles with a planted defect flagged")
    result.to_json(out / "rois.json")
    result.to_csv(out / "rois.csv")
    save_figure(stemroi.plotting.plot_rois(frame.image, result, title="FewLabelClassifier, 10 labels per class"),
                out / "rois.png")
    summary = {**result.summary(), "class_names": list(names), "n_labelled": int(len(labelled)),
               "n_unlabelled": int(len(unlabelled)), "n_test": int(len(test)), "accuracy_few_label": acc_few,
               "accuracy_scratch": acc_scratch, "n_pseudo_labelled": few.n_pseudo_labelled_,
               "defect_tiles": int(sum(has_defect)), "defect_tiles_flagged": int(hits)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'rois.png'}, rois.json, rois.csv")


if __name__ == "__main__":
    main()
