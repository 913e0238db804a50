"""Synthetic image -> calibrated HyperSpy Signal2D -> tiles -> ROIResult -> markers -> .hspy file.

A stand-in detector flags tiles whose mean intensity deviates from the image's
typical tile (robust z-score > 3), so this runs without a trained model; any
stemroi detector returns the same ROIResult. Shows
stemroi.adapters.hyperspy.image_to_signal / signal_to_image / roi_markers.
Needs hyperspy (pip install "stemroi[hyperspy]").

    python examples/hyperspy_roundtrip.py [--quick] [--out DIR]
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np

import stemroi
import stemroi.synth
from stemroi.adapters import hyperspy as hsa
from stemroi.io import Calibration


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256x256 image instead of 512x512")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_hspy_"))
    out.mkdir(parents=True, exist_ok=True)
    size = 256 if args.quick else 512
    synth = stemroi.synth.make_image((size, size), defects={"vacancy": 2, "interstitial": 2}, random_state=0)

    signal = hsa.image_to_signal(synth.image, Calibration(pixel_size=0.0245, unit="nm"), title="synthetic SrTiO3")
    image, cal = hsa.signal_to_image(signal)  # what a detector sees: float32 pixels + calibration
    grid = stemroi.PatchGrid(patch_size=32, stride=32)
    origins, tiles = grid.origins(image.shape), grid.extract(image)
    mean = tiles.mean(axis=(1, 2))
    score = np.abs(mean - np.median(mean)) / (1.4826 * np.median(np.abs(mean - np.median(mean))) + 1e-12)
    flagged = score > 3.0
    has_defect = grid.extract(synth.defect_mask).any(axis=(1, 2))  # ground truth of the synthetic image
    result = stemroi.ROIResult(
        origins=origins, sizes=[32, 32], labels=np.where(flagged, "anomalous", "Bulk"),
        confidence=np.clip(score / 6.0, 0, 1), unknown=np.zeros(len(tiles), bool),
        class_names=["Bulk", "anomalous"], scores=score, image_shape=image.shape,
        method="tile-mean robust z-score", metadata={"pixel_size": cal.pixel_size, "unit": cal.unit,
                                                     "n_defect_tiles": int(has_defect.sum()),
                                                     "n_flagged_defect_tiles": int((flagged & has_defect).sum())})
    for marker in hsa.roi_markers(result, signal):  # = hsa.add_roi_markers, plus a workaround:
        marker.name = str(marker.name)  # numpy str_ names cannot be written to .hspy by h5py
        signal.add_marker(marker, permanent=True, plot_marker=False)

    path = out / "synthetic_rois.hspy"
    signal.save(path, overwrite=True)
    result.to_json(out / "rois.json")
    n_markers = len(signal.metadata.Markers) if signal.metadata.has_item("Markers") else 0
    print(f"{len(tiles)} tiles, {int(flagged.sum())} flagged ({int((flagged & has_defect).sum())} of the "
          f"{int(has_defect.sum())} tiles with a planted defect), {n_markers} marker set(s); "
          f"pixel size {cal.pixel_size} {cal.unit}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
