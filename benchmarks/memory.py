"""Peak memory against frame size: does memory stay flat beyond the frame?

For each case and frame side (1k, 4k, 16k square float32 frames on [0, 1],
written to a np.memmap file in a temporary folder and opened read-only) a
fresh subprocess loads the model, opens the frame and runs the case once;
it reports the peak resident set (VmHWM of /proc/self/status) and the time.
"baseline" is the process's resident set just before the case (Python,
LibTorch, the model): "peak - base" is what the case itself added.

Cases:
  detect            stemroi.detect(frame, classifier, patch=64, stride=64), a small
                    trained PatchClassifier (small_cnn backbone)
  anomaly_map       BulkCVAE.anomaly_map(frame, stride=64), a small trained CVAE
                    (64-px crops, latent 4)
  anomaly_map_nonet the same with the CVAE forward pass replaced by a cheap stand-in
                    (reconstruction = 0.5 x input): everything else (crops,
                    preprocessing, energy maps, scores, blending, the map) runs
                    for real. The network's own working memory does not depend on
                    the frame (one batch of 64 crops); compare the two cases at
                    1k/4k. For 16k frames on a loaded machine, where the real
                    network would take hours.
  cluster_map       cluster_map(frame, clusterer, patch=64, stride=64), a
                    PatchClusterer on "fft" descriptors (PCA 4, k 2..3)
  segmentation_map  segmentation_map(frame, segmenter), a small DefectSegmenter
                    (U-Net, base_channels 4)
  segmentation_map_file  the same with maps_path=: the maps are written to a .npy
                    memory map strip by strip and come back mapped read-only
  patchgrid         PatchGrid(64).iter_batches(frame, 256) streaming extraction

Outputs are part of the peak: the anomaly map is a float32 frame (1 GB at
16k), the cluster map an int64 frame (2 GB at 16k), the segmentation maps one
float32 frame per channel. Mpx/s is frame pixels per second of the case.

Pages of the memory-mapped frame count towards the resident set while they
are mapped in (a frame read whole adds the frame's size even though the
kernel can drop them): a flat case shows peak - base <= about the frame's
size plus a constant.

Usage: python benchmarks/memory.py [--quick] [--cases detect anomaly_map ...] [--sizes 1024 4096 16384]
--quick: 1k and 4k only. Timings come from a shared, loaded 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = ("detect", "anomaly_map", "anomaly_map_nonet", "cluster_map", "segmentation_map", "segmentation_map_file",
         "patchgrid")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _make_frame(path: Path, side: int) -> None:
    """A lattice-like float32 frame on [0, 1], written in row bands (never whole in memory)."""
    frame = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(side, side))
    cols = np.arange(side)
    band = 512
    for r0 in range(0, side, band):
        rows = np.arange(r0, min(r0 + band, side))
        frame[r0:r0 + len(rows)] = (0.5 + 0.25 * np.cos(rows[:, None] * 0.8) * np.cos(cols[None, :] * 0.8)
                                    ).astype(np.float32)
    frame.flush()
    del frame


def _train_models(tmp: Path, cases) -> None:
    import pickle

    import stemroi

    rng = np.random.default_rng(0)
    X = rng.random((32, 64, 64), dtype=np.float32)
    y = np.arange(32) % 2
    X[y == 1, 20:40, 20:40] = 1.0
    if "detect" in cases:
        stemroi.PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=1, batch_size=16,
                                random_state=0, n_threads=1).fit(X, y).save(tmp / "classifier.stemroi")
    if "anomaly_map" in cases or "anomaly_map_nonet" in cases:
        img = (0.5 + 0.25 * np.cos(np.arange(256)[:, None] * 0.8) * np.cos(np.arange(256)[None, :] * 0.8)
               ).astype(np.float32)
        stemroi.BulkCVAE(latent_dim=4, epochs=1, batch_size=16, crop_size=64, n_crops=64, calibration_fraction=0.25,
                         detector="energy", random_state=0, n_threads=1).fit(img).save(tmp / "cvae.stemroi")
    if "cluster_map" in cases:
        clusterer = stemroi.PatchClusterer(features="fft", n_components=4, k_range=range(2, 4), n_init=2,
                                           random_state=0, n_threads=1).fit(X)
        (tmp / "clusterer.pkl").write_bytes(pickle.dumps(clusterer))
    if "segmentation_map" in cases or "segmentation_map_file" in cases:
        from stemroi.io import synth

        Xs, ys, _ = synth.make_patch_dataset(n_per_class=8, patch_size=64, classes=["Bulk", "vacancy"],
                                             random_state=0)
        seg = stemroi.DefectSegmenter(epochs=1, batch_size=8, base_channels=4, pseudo_label="lattice",
                                      random_state=0, n_threads=1).fit(Xs, ys)
        (tmp / "segmenter.pkl").write_bytes(pickle.dumps(seg))


def _child(case: str, frame_path: str, tmp: str) -> None:
    import pickle

    import stemroi

    tmp = Path(tmp)
    frame = np.load(frame_path, mmap_mode="r")
    if case == "detect":
        model = stemroi.PatchClassifier.load(tmp / "classifier.stemroi")
        run = lambda: stemroi.detect(frame, model, patch=64, stride=64)  # noqa: E731
    elif case == "anomaly_map":
        model = stemroi.BulkCVAE.load(tmp / "cvae.stemroi")
        run = lambda: model.anomaly_map(frame, stride=64)  # noqa: E731
    elif case == "anomaly_map_nonet":
        model = stemroi.BulkCVAE.load(tmp / "cvae.stemroi")

        class _StandIn:
            def __init__(self, net):
                self._net = net

            def __getattr__(self, name):
                return getattr(self._net, name)

            def reconstruct(self, crops, batch_size, n_threads):
                return crops * np.float32(0.5)

        model.model_ = _StandIn(model.model_)
        run = lambda: model.anomaly_map(frame, stride=64)  # noqa: E731
    elif case == "cluster_map":
        from stemroi.detection import cluster_map

        model = pickle.loads((tmp / "clusterer.pkl").read_bytes())
        run = lambda: cluster_map(frame, model, patch=64, stride=64)  # noqa: E731
    elif case == "segmentation_map":
        from stemroi.detection import segmentation_map

        model = pickle.loads((tmp / "segmenter.pkl").read_bytes())
        run = lambda: segmentation_map(frame, model)  # noqa: E731
    elif case == "segmentation_map_file":
        from stemroi.detection import segmentation_map

        model = pickle.loads((tmp / "segmenter.pkl").read_bytes())
        run = lambda: segmentation_map(frame, model, maps_path=tmp / "maps.npy")  # noqa: E731
    else:
        from stemroi.preprocessing import PatchGrid

        def run():
            total = 0.0
            for _, patches in PatchGrid(64).iter_batches(frame, 256):
                total += float(patches.sum(dtype=np.float64))
            return total
    base = _status_mb("VmRSS")
    t = time.perf_counter()
    result = run()
    elapsed = time.perf_counter() - t
    out_mb = sum(m.nbytes for m in getattr(result, "maps", {}).values()) / 2**20
    print(json.dumps({"base_mb": base, "peak_mb": _status_mb("VmHWM"), "time_s": elapsed, "maps_mb": out_mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1k and 4k frames only")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--sizes", nargs="+", type=int, default=None)
    ap.add_argument("--nice", type=int, default=5, help="nice level of the measured subprocesses")
    ap.add_argument("--child", nargs=3, metavar=("CASE", "FRAME", "TMP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    sizes = args.sizes or ([1024, 4096] if args.quick else [1024, 4096, 16384])
    with tempfile.TemporaryDirectory(prefix="stemroi-memory-") as tmp:
        tmp = Path(tmp)
        print("training the small models ...", flush=True)
        _train_models(tmp, args.cases)
        print(f"{'case':<16} {'side':>6} {'frame MB':>9} {'maps MB':>8} {'base MB':>8} {'peak MB':>8} {'peak-base':>9} "
              f"{'time s':>7} {'Mpx/s':>7}", flush=True)
        for side in sizes:
            frame_path = tmp / f"frame{side}.npy"
            _make_frame(frame_path, side)
            frame_mb = side * side * 4 / 2**20
            for case in args.cases:
                env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
                out = subprocess.run(["nice", "-n", str(args.nice), sys.executable, __file__, "--child", case,
                                      str(frame_path), str(tmp)], capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    print(f"{case:<16} {side:>6} {frame_mb:>9.0f}  FAILED (exit {out.returncode}): "
                          f"{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}", flush=True)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{case:<16} {side:>6} {frame_mb:>9.0f} {r['maps_mb']:>8.0f} {r['base_mb']:>8.0f} "
                      f"{r['peak_mb']:>8.0f} {r['peak_mb'] - r['base_mb']:>9.0f} {r['time_s']:>7.1f} "
                      f"{side * side / 1e6 / max(r['time_s'], 1e-9):>7.2f}", flush=True)
            frame_path.unlink()


if __name__ == "__main__":
    main()
