"""Train a small patch classifier on synthetic patches and detect ROIs on a synthetic frame.

Shows stemroi.PatchClassifier (small CNN trained from scratch, offline),
stemroi.detect -> ROIResult (tiles, calibrated probabilities, "unknown" below
a confidence threshold), stemroi.plotting.plot_rois, and ROIResult.to_json / to_csv.
Tiles are scored against the generator's defect mask.

    python examples/detect_rois.py [--quick] [--out DIR]
"""
import argparse
import json
import tempfile
from pathlib import Path

import stemroi
import stemroi.io.synth
from stemroi import detect
from stemroi.plotting import save_figure


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 classes, few patches and epochs, 256x256 frame")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_detect_"))
    out.mkdir(parents=True, exist_ok=True)
    classes = ["Bulk", "vacancy", "stacking_fault"] if args.quick else None  # None: all synthetic classes
    patches, labels, names = stemroi.io.synth.make_patch_dataset(n_per_class=40 if args.quick else 80,
                                                              classes=classes, random_state=0)
    # one thread: LibTorch results are bit-identical only for a fixed thread count
    model = stemroi.PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, input_size=32,
                                    max_epochs=30 if args.quick else 40, patience=6, batch_size=16,
                                    random_state=0, n_threads=1)
    model.fit(patches, labels, class_names=names)
    print(f"trained on {len(patches)} patches {names}: validation accuracy {model.validation_accuracy_:.3f}")

    size = 256 if args.quick else 768
    frame = stemroi.io.synth.make_image((size, size), defects={k: 2 for k in names if k != "Bulk"}, random_state=1)
    result = detect(frame.image, model, patch=64, stride=64, unknown_below=0.4)
    has_defect = [bool(frame.defect_mask[r:r + 64, c:c + 64].any()) for r, c in result.origins]
    hits = sum(bool(roi) and d for roi, d in zip(result.is_roi, has_defect))
    print(f"{len(result)} tiles: {result.counts()}; {hits} of {sum(has_defect)} tiles with a planted defect flagged")

    result.to_json(out / "rois.json")
    result.to_csv(out / "rois.csv")
    save_figure(stemroi.plotting.plot_rois(frame.image, result, title="synthetic frame"), out / "rois.png")
    summary = {**result.summary(), "validation_accuracy": model.validation_accuracy_,
               "defect_tiles": int(sum(has_defect)), "defect_tiles_flagged": int(hits)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'rois.png'}, rois.json, rois.csv")


if __name__ == "__main__":
    main()
