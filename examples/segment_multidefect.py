"""Weakly supervised segmentation: a U-Net trained on patch-level labels gives one map per defect class.

Each labelled patch gets a pixel mask derived from its own content (pseudo-labels:
here the lattice-translation residual, pseudo_label="lattice"), and the U-Net
(stemroi.DefectSegmenter) learns per-class probability maps that are then
predicted over a whole frame on overlapping tiles. Shows
stemroi.detection.segmentation_map (an ROIResult: one row per tile, the maps in result.maps),
stemroi.plotting.plot_class_heatmaps and stemroi.detection.map_descriptors. The maps are scored
against the generator's defect mask. Synthetic data (stemroi.io.synth).

    python examples/segment_multidefect.py [--quick] [--out DIR]
"""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import stemroi
import stemroi.io.synth


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few patches and epochs, 128x128 frame")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_segment_"))
    out.mkdir(parents=True, exist_ok=True)
    patches, labels, names = stemroi.io.synth.make_patch_dataset(
        n_per_class=16 if args.quick else 60, patch_size=32, cell_px=8, classes=["Bulk", "vacancy", "interstitial"],
        random_state=0)
    # max_parts=1: the pixel-wise maximum of two registered lattices would fill a vacancy with a column
    seg = stemroi.DefectSegmenter(epochs=12 if args.quick else 60, samples_per_epoch=256, batch_size=16,
                                  learning_rate=5e-3, base_channels=8, pseudo_label="lattice", percentile=99.0,
                                  positive_weight=30.0,  # masks cover ~1 % of a patch: weigh them up
                                  max_parts=1, random_state=0, n_threads=1,  # one thread: bit-identical runs
                                  # tiles as they are: the synthetic frame has the patches' brightness, and
                                  # z-scored tiles (the default, for real frames) learn the interstitial channel
                                  # slower here (1.3x contrast after 20 quick epochs, > 2x without)
                                  input_contrast="none")
    seg.fit(patches, np.asarray(names)[labels])

    size = 128 if args.quick else 512
    frame = stemroi.io.synth.make_image((size, size), cell_px=8, defects={"vacancy": 2, "interstitial": 2},
                                     random_state=1)
    result = stemroi.detection.segmentation_map(frame.image, seg)  # one row per 32 x 32 tile
    maps = np.stack([result.maps[c] for c in seg.channel_names_])  # (n_defect_classes + 1, H, W)
    contrast = {}
    for c, name in enumerate(seg.channel_names_[:-1]):  # last channel: background
        inside = frame.defect_mask == frame.class_names.index(name)
        contrast[name] = [float(maps[c][inside].mean()), float(maps[c][frame.defect_mask == 0].mean())]
        print(f"{name}: mean probability on its planted defects {contrast[name][0]:.3f}, on bulk {contrast[name][1]:.3f}")
    feats, feat_names = stemroi.detection.map_descriptors(maps, seg.channel_names_)
    print(f"map descriptors: {dict(zip(feat_names[:3], np.round(feats[0, :3], 3)))} ...")

    print(f"{len(result)} tiles: {result.counts()}")
    stemroi.plotting.plot_class_heatmaps(frame.image, result, path=out / "heatmaps.png")
    result.to_json(out / "rois.json")
    np.savez_compressed(out / "maps.npz", maps=maps, channel_names=seg.channel_names_)
    summary = {"channel_names": seg.channel_names_, "maps_shape": list(maps.shape), "contrast": contrast,
               "n_tiles": len(result), "n_roi": int(result.is_roi.sum()),
               "loss_first_last": [float(seg.loss_history_[0]), float(seg.loss_history_[-1])]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'heatmaps.png'}")


if __name__ == "__main__":
    main()
