"""A lazy HyperSpy time series through a detector, one frame at a time -> markers + a tile-score signal.

Frames of a synthetic time series are written to an .hspy file and loaded
lazily (dask-backed, one chunk per frame); stemroi.adapters.hyperspy.detect_stack
runs a small trained PatchClassifier on each frame as it is computed (the stack
is never loaded whole), passing the stack's pixel size to the detector. The
ROIs come back as one ragged Rectangles marker set per class (saved with the
stack) and as a Signal2D of per-tile scores, (time | tile rows, tile cols) in
the stack's calibrated units, saved as .hspy. Needs hyperspy.

    python examples/hyperspy_lazy_stack.py [--quick] [--out DIR]
"""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import stemroi
import stemroi.io.synth
from stemroi.adapters import hyperspy as hsa


def main(argv=None):
    import hyperspy.api as hs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 frames of 128x128 and less training")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_stack_"))
    out.mkdir(parents=True, exist_ok=True)
    patches, labels, names = stemroi.io.synth.make_patch_dataset(
        n_per_class=30 if args.quick else 60, classes=["Bulk", "vacancy"], random_state=0)
    model = stemroi.PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, input_size=32,
                                    max_epochs=15 if args.quick else 30, patience=4, batch_size=16,
                                    random_state=0, n_threads=1)
    model.fit(patches, labels, class_names=names, pixel_size=(0.0245, "nm"))

    n, size = (4, 128) if args.quick else (12, 256)
    frames = np.stack([stemroi.io.synth.make_image((size, size), defects={"vacancy": 2}, drift=0.5 * i,
                                                   random_state=100 + i).image for i in range(n)])
    series = hs.signals.Signal2D(frames)
    time_axis = series.axes_manager.navigation_axes[0]
    time_axis.name, time_axis.scale, time_axis.units = "time", 0.5, "s"
    for ax, name in zip(series.axes_manager.signal_axes, ("x", "y")):
        ax.name, ax.scale, ax.units = name, 0.0245, "nm"
    series.save(out / "series.hspy", overwrite=True, chunks=(1, size, size))

    stack = hs.load(out / "series.hspy", lazy=True)  # nothing read yet
    found = hsa.detect_stack(stack, model, patch=64, stride=32,
                             progress=lambda done, total: print(f"frame {done}/{total}", end="\r"))
    print()
    scores = found.scores
    scores.save(out / "tile_scores.hspy", overwrite=True)
    back = hs.load(out / "tile_scores.hspy")
    hsa.add_stack_markers(series, found.markers)
    series.save(out / "series_with_rois.hspy", overwrite=True)

    ax_t, ax_x = scores.axes_manager.navigation_axes[0], scores.axes_manager.signal_axes[0]
    print(f"tile scores {scores.data.shape} ({scores.metadata.Signal.quantity}): {ax_t.name} step {ax_t.scale} "
          f"{ax_t.units}; tile step {ax_x.scale:.4f} {ax_x.units}, first tile centre {ax_x.offset:.4f} {ax_x.units}")
    for m in found.markers:
        print(f"markers '{m.name}': {[len(o) for o in m.kwargs['offsets']]} tiles per frame")
    summary = {"n_frames": n, "scores_shape": list(scores.data.shape), "tile_scale": ax_x.scale,
               "tile_offset": ax_x.offset, "units": ax_x.units, "time_scale": ax_t.scale,
               "round_trip_equal": bool(np.array_equal(back.data, scores.data)),
               "markers": {m.name: [len(o) for o in m.kwargs["offsets"]] for m in found.markers},
               "n_roi": [int(r.is_roi.sum()) for r in found.results]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
