"""Synthetic image -> calibrated HyperSpy Signal2D -> detect ROIs -> calibrated markers -> .hspy file.

A small patch classifier (stemroi.PatchClassifier, trained on synthetic patches)
classifies the tiles of the signal's image (stemroi.detect); the
resulting ROIResult becomes HyperSpy rectangle markers in the signal's
calibrated units, saved with the signal. Shows
stemroi.adapters.hyperspy.image_to_signal / signal_to_image / roi_markers.
Needs hyperspy (pip install "stemroi[hyperspy]").

    python examples/hyperspy_roundtrip.py [--quick] [--out DIR]
"""
import argparse
import tempfile
from pathlib import Path

import stemroi
import stemroi.io.synth
from stemroi.adapters import hyperspy as hsa
from stemroi import detect
from stemroi.io import Calibration


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="less training, 256x256 image instead of 512x512")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_hspy_"))
    out.mkdir(parents=True, exist_ok=True)
    patches, labels, names = stemroi.io.synth.make_patch_dataset(
        n_per_class=40 if args.quick else 80, classes=["Bulk", "vacancy", "stacking_fault"], random_state=0)
    model = stemroi.PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, input_size=32,
                                    max_epochs=30 if args.quick else 40, patience=6, batch_size=16,
                                    random_state=0, n_threads=1).fit(patches, labels, class_names=names)

    size = 256 if args.quick else 512
    synth = stemroi.io.synth.make_image((size, size), defects={"vacancy": 2, "stacking_fault": 1}, random_state=1)
    signal = hsa.image_to_signal(synth.image, Calibration(pixel_size=0.0245, unit="nm"), title="synthetic SrTiO3")
    image, cal = hsa.signal_to_image(signal)  # what a detector sees: float32 pixels + calibration
    result = detect(image, model, patch=64, stride=64)
    result.metadata.update(pixel_size=cal.pixel_size, unit=cal.unit)
    for marker in hsa.roi_markers(result, signal):  # = hsa.add_roi_markers, plus a workaround:
        marker.name = str(marker.name)  # numpy str_ names cannot be written to .hspy by h5py
        signal.add_marker(marker, permanent=True, plot_marker=False)

    path = out / "synthetic_rois.hspy"
    signal.save(path, overwrite=True)
    result.to_json(out / "rois.json")
    n_markers = len(signal.metadata.Markers) if signal.metadata.has_item("Markers") else 0
    print(f"{len(result)} tiles: {result.counts()}; {n_markers} marker set(s) "
          f"in {cal.unit} (pixel size {cal.pixel_size} {cal.unit})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
