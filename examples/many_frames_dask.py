"""Detect ROIs in many frames with dask.distributed, with every kind of detector (a 2-worker LocalCluster).

A small classifier is trained on synthetic patches and saved as a model file;
stemroi.adapters.dask.detect_frames sends frame *paths* to the workers (each
reads its frame and loads the model once), and the results come back in input
order. The same call then runs a BulkCVAE anomaly map, a PatchClusterer
cluster map and a DefectSegmenter U-Net map (fitted models, shipped to the
workers). With --quick the two workers are threads of this process (they start at
once); without, two worker processes. On a real cluster pass
Client("scheduler:8786") instead. Each
detector's first frame is also run locally to show the results are the same.
Needs dask.distributed (pip install "stemroi[dask]").

    python examples/many_frames_dask.py [--quick] [--frames N] [--out DIR]
"""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from dask.distributed import Client, LocalCluster

import stemroi
import stemroi.io.synth
from stemroi import detect
from stemroi.adapters import dask as stemroi_dask
from stemroi.detection import make_detector


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 frames of 256x256 instead of 8 of 512x512")
    parser.add_argument("--frames", type=int, default=None, help="number of frames (default 3, or 8)")
    parser.add_argument("--out", type=Path, help="output folder (default: a new temp dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="stemroi_dask_"))
    out.mkdir(parents=True, exist_ok=True)
    patches, labels, names = stemroi.io.synth.make_patch_dataset(
        n_per_class=40 if args.quick else 80, classes=["Bulk", "vacancy", "stacking_fault"], random_state=0)
    model = stemroi.PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, input_size=32,
                                    max_epochs=15 if args.quick else 40, patience=6, batch_size=16,
                                    random_state=0, n_threads=1)
    model.fit(patches, labels, class_names=names)
    model.save(out / "model.stemroi")

    size, n_frames = (256, 3) if args.quick else (512, 8)
    paths = []
    for i in range(args.frames or n_frames):
        frame = stemroi.io.synth.make_image((size, size), defects={"vacancy": 2, "stacking_fault": 1}, random_state=10 + i)
        paths.append(out / f"frame_{i:03d}.npy")
        np.save(paths[-1], frame.image)

    # the other detector kinds: tiny models, fitted here and shipped to the workers with the tasks
    bulk = stemroi.io.synth.make_image((128, 128), random_state=1).image
    others = {
        "cvae": (stemroi.BulkCVAE(latent_dim=4, epochs=3 if args.quick else 20, crop_size=32, n_crops=64,
                                  blur_sigma=0.5, random_state=0, n_threads=1).fit(bulk), {"stride": 32}),
        "clusterer": (stemroi.PatchClusterer("fft", n_components=3, k_range=range(2, 4), random_state=0,
                                             n_threads=1).fit(patches), {"patch": 64, "stride": 64}),
        "segmenter": (stemroi.DefectSegmenter(epochs=1 if args.quick else 10, batch_size=8, base_channels=4,
                                              random_state=0, n_threads=1).fit(patches, [names[i] for i in labels]),
                      {}),
    }
    images = [np.load(p) for p in paths]
    kinds = {}
    # --quick: in-process workers (threads), which start at once; else two worker processes
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=not args.quick, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        results = stemroi_dask.detect_frames([str(p) for p in paths], out / "model.stemroi", client=client)
        for kind, (fitted, kwargs) in others.items():
            got = stemroi_dask.detect_frames(images, fitted, client=client, **kwargs)
            ref = make_detector(fitted, **kwargs)(images[0])
            # equal up to float summation order (worker processes run their libraries on one thread)
            same_kind = bool(np.array_equal(got[0].labels, ref.labels) and np.allclose(got[0].scores, ref.scores, atol=1e-6))
            kinds[kind] = {"method": got[0].method, "n_tiles": [len(r) for r in got],
                           "n_roi": [int(r.is_roi.sum()) for r in got], "first_frame_matches_local": same_kind}
            print(f"{kind}: {got[0].method}, ROI tiles per frame {kinds[kind]['n_roi']}, "
                  f"maps {sorted(got[0].maps)}, first frame == local: {same_kind}")
    local = detect(stemroi.read_image(paths[0]), model)
    same = bool(np.allclose(local.probabilities, results[0].probabilities, rtol=0, atol=1e-6))
    for path, result in zip(paths, results):
        result.to_csv(out / f"{path.stem}_rois.csv")
        print(f"{path.name}: {len(result)} tiles, {int(result.is_roi.sum())} ROI, {result.counts()}")
    print(f"first frame on the cluster == run locally: {same}")
    summary = {"frames": [p.name for p in paths], "n_tiles": [len(r) for r in results],
               "n_roi": [int(r.is_roi.sum()) for r in results], "first_frame_matches_local": same,
               "workers": 2, "kinds": kinds}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
