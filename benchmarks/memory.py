"""Peak memory against frame size: does memory stay flat beyond the frame?

For each case and frame side (1k, 4k, 16k square float32 frames on [0, 1],
written to a np.memmap file in a temporary folder and opened read-only) a
fresh subprocess loads the model, opens the frame and runs the case once;
it reports the peak resident set (VmHWM of /proc/self/status) and the time.
"baseline" is the process's resident set just before the case (Python,
LibTorch, the model): "peak - base" is what the case itself added.

Cases:
  detect       stemroi.detect(frame, classifier, patch=64, stride=64), a small
               trained PatchClassifier (small_cnn backbone)
  anomaly_map  BulkCVAE.anomaly_map(frame, stride=64), a small trained CVAE
  patchgrid    PatchGrid(64).iter_batches(frame, 256) streaming extraction

Pages of the memory-mapped frame count towards the resident set while they
are mapped in (a frame read whole adds the frame's size even though the
kernel can drop them): a flat case shows peak - base <= about the frame's
size plus a constant.

Usage: python benchmarks/memory.py [--quick] [--cases detect anomaly_map patchgrid] [--sizes 1024 4096 16384]
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

CASES = ("detect", "anomaly_map", "patchgrid")


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
    import stemroi

    if "detect" not in cases and "anomaly_map" not in cases:
        return
    rng = np.random.default_rng(0)
    X = rng.random((32, 64, 64), dtype=np.float32)
    y = np.arange(32) % 2
    X[y == 1, 20:40, 20:40] = 1.0
    if "detect" in cases:
        stemroi.PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=1, batch_size=16,
                                random_state=0, n_threads=1).fit(X, y).save(tmp / "classifier.stemroi")
    if "anomaly_map" not in cases:
        return
    img = (0.5 + 0.25 * np.cos(np.arange(256)[:, None] * 0.8) * np.cos(np.arange(256)[None, :] * 0.8)).astype(np.float32)
    stemroi.BulkCVAE(latent_dim=4, epochs=1, batch_size=16, crop_size=64, n_crops=64, calibration_fraction=0.25,
                     detector="energy", random_state=0, n_threads=1).fit(img).save(tmp / "cvae.stemroi")


def _child(case: str, frame_path: str, tmp: str) -> None:
    import stemroi

    tmp = Path(tmp)
    frame = np.load(frame_path, mmap_mode="r")
    if case == "detect":
        model = stemroi.PatchClassifier.load(tmp / "classifier.stemroi")
        run = lambda: stemroi.detect(frame, model, patch=64, stride=64)  # noqa: E731
    elif case == "anomaly_map":
        model = stemroi.BulkCVAE.load(tmp / "cvae.stemroi")
        run = lambda: model.anomaly_map(frame, stride=64)  # noqa: E731
    else:
        from stemroi.preprocessing import PatchGrid

        def run():
            total = 0.0
            for _, patches in PatchGrid(64).iter_batches(frame, 256):
                total += float(patches.sum(dtype=np.float64))
            return total
    base = _status_mb("VmRSS")
    t = time.perf_counter()
    run()
    elapsed = time.perf_counter() - t
    print(json.dumps({"base_mb": base, "peak_mb": _status_mb("VmHWM"), "time_s": elapsed}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1k and 4k frames only")
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--sizes", nargs="+", type=int, default=None)
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
        print(f"{'case':<12} {'side':>6} {'frame MB':>9} {'base MB':>8} {'peak MB':>8} {'peak-base':>9} {'time s':>7}")
        for side in sizes:
            frame_path = tmp / f"frame{side}.npy"
            _make_frame(frame_path, side)
            frame_mb = side * side * 4 / 2**20
            for case in args.cases:
                env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
                out = subprocess.run([sys.executable, __file__, "--child", case, str(frame_path), str(tmp)],
                                     capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    print(f"{case:<12} {side:>6} {frame_mb:>9.0f}  FAILED (exit {out.returncode}): "
                          f"{out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ''}", flush=True)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{case:<12} {side:>6} {frame_mb:>9.0f} {r['base_mb']:>8.0f} {r['peak_mb']:>8.0f} "
                      f"{r['peak_mb'] - r['base_mb']:>9.0f} {r['time_s']:>7.1f}", flush=True)
            frame_path.unlink()


if __name__ == "__main__":
    main()
