"""Many frames: throughput against dask workers, and the per-frame overhead.

Frames are float32 ``.npy`` files on [0, 1] (a lattice with a bright defect),
classified with a small trained :class:`stemroi.PatchClassifier` (small_cnn
backbone, 64-px tiles, stride 64, one thread per process) saved as a model
file. Two frame sizes separate overhead from compute:

  tiny     128 x 128 (4 tiles): the time is almost all per-frame overhead
  compute  1024 x 1024 (256 tiles): the time is almost all compute

Each is run by

  reference  the plain loop ``[stemroi.detect(np.load(f), model) for f in files]``
             in this process: no files written, no scheduler (the baseline)
  local      ``stemroi.detection.run_batch(files, model_file, out_dir)``: resumable
             (atomic result file + manifest line with fsync per frame), in this process
  dask-1     ``stemroi.adapters.dask.detect_frames(files, model_file, client, out_dir=...)``
             on a ``LocalCluster(n_workers=1, threads_per_worker=1)``
  dask-2     the same on 2 workers

Per-frame overhead = (wall time per frame) - (compute per frame of the
reference loop), i.e. what reading the file, the scheduler, shipping the
result and writing it atomically add. Cluster start-up and the first task
on each worker (model load) are timed separately and not in the throughput.
All results are checked identical to the reference (labels and probabilities).

Usage: python benchmarks/many_frames.py [--tiny N] [--compute N] [--workers 1 2]
Timings come from a shared, loaded 2-core machine: ratios, not absolute speed, matter.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402


def _frame(side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:side, 0:side]
    img = 0.5 + 0.25 * np.cos(r * 0.8) * np.cos(c * 0.8) + 0.02 * rng.standard_normal((side, side))
    a, b = rng.integers(0, side - 24, 2)
    img[a:a + 20, b:b + 20] = 1.0
    return np.clip(img, 0, 1).astype(np.float32)


def _train(path: Path) -> None:
    import stemroi

    rng = np.random.default_rng(0)
    X = (0.5 + 0.1 * rng.standard_normal((32, 64, 64))).clip(0, 1).astype(np.float32)
    y = np.arange(32) % 2
    X[y == 1, 20:40, 20:40] = 1.0
    stemroi.PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=1, batch_size=16,
                            random_state=0, n_threads=1).fit(X, y, class_names=["Bulk", "Defect"]).save(path)


def _same(a, b) -> bool:
    return (list(a.labels) == list(b.labels) and np.array_equal(a.origins, b.origins)
            and np.allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-6))


def _row(name, n, side, wall, compute_per_frame, ref_results, results):
    per = wall / n
    mpx = n * side * side / 1e6 / wall
    same = all(_same(a, b) for a, b in zip(ref_results, results)) if results is not None else None
    print(f"{name:<10} {side:>6} {n:>5} {wall:>8.2f} {n / wall:>9.1f} {mpx:>8.2f} {1e3 * per:>9.1f} "
          f"{1e3 * (per - compute_per_frame):>10.1f}  {'' if same is None else ('identical' if same else 'DIFFER')}",
          flush=True)
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", type=int, default=48, help="number of 128 x 128 frames")
    ap.add_argument("--compute", type=int, default=8, help="number of 1024 x 1024 frames")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import stemroi
    from stemroi.adapters.dask import detect_frames
    from stemroi.detection import run_batch

    with tempfile.TemporaryDirectory(prefix="stemroi-frames-") as tmp:
        tmp = Path(tmp)
        model_path = tmp / "classifier.stemroi"
        _train(model_path)
        model = stemroi.PatchClassifier.load(model_path)
        sets = {}
        for kind, side, n in (("tiny", 128, args.tiny), ("compute", 1024, args.compute)):
            files = []
            for i in range(n):
                f = tmp / f"{kind}_{i:05d}.npy"
                np.save(f, _frame(side, i))
                files.append(str(f))
            sets[kind] = (side, files)

        clusters = {}
        from dask.distributed import Client, LocalCluster

        for k in args.workers:
            t = time.perf_counter()
            cluster = LocalCluster(n_workers=k, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=logging.ERROR)
            client = Client(cluster)
            start = time.perf_counter() - t
            # the first task on each worker imports stemroi and loads the model: timed, then excluded
            t = time.perf_counter()
            warm = [str(tmp / "warm.npy")] * (4 * k)
            np.save(warm[0], _frame(128, 999))
            detect_frames(warm, str(model_path), client=client, patch=64, stride=64)
            clusters[k] = (cluster, client, start, time.perf_counter() - t)
        for k, (_, _, start, warm_s) in clusters.items():
            print(f"dask-{k}: LocalCluster start {start:.1f} s, first tasks (import + model load) {warm_s:.1f} s")

        print(f"\n{'mode':<10} {'side':>6} {'n':>5} {'wall s':>8} {'frames/s':>9} {'Mpx/s':>8} {'ms/frame':>9} "
              f"{'overhead':>10}  check")
        summary = {}
        for kind, (side, files) in sets.items():
            stemroi.detect(np.load(files[0]), model, patch=64, stride=64)  # warm caches
            t = time.perf_counter()
            ref = [stemroi.detect(np.load(f), model, patch=64, stride=64) for f in files]
            wall = time.perf_counter() - t
            compute = wall / len(files)
            _row("reference", len(files), side, wall, compute, ref, None)
            out = tmp / f"out_local_{kind}"
            t = time.perf_counter()
            res = run_batch(files, str(model_path), out, patch=64, stride=64, reader=np.load)
            per_local = _row("local", len(files), side, time.perf_counter() - t, compute, ref, list(res))
            summary[(kind, "reference")] = compute
            summary[(kind, "local")] = per_local
            for k, (_, client, _, _) in clusters.items():
                out = tmp / f"out_dask{k}_{kind}"
                t = time.perf_counter()
                res = detect_frames(files, str(model_path), client=client, out_dir=out, patch=64, stride=64)
                summary[(kind, f"dask-{k}")] = _row(f"dask-{k}", len(files), side, time.perf_counter() - t,
                                                    compute, ref, list(res))
        for _, (cluster, client, _, _) in clusters.items():
            client.close()
            cluster.close()

        print("\nspeed-up against the reference loop (same frames, same run):")
        for kind in sets:
            base = summary[(kind, "reference")]
            modes = ["local"] + [f"dask-{k}" for k in args.workers]
            cols = "  ".join(f"{m} {base / summary[(kind, m)]:.2f}x" for m in modes)
            print(f"  {kind:<8} {cols}")
        if 1 in args.workers and 2 in args.workers:
            print("dask-2 / dask-1 throughput: " + "  ".join(
                f"{kind} {summary[(kind, 'dask-1')] / summary[(kind, 'dask-2')]:.2f}x" for kind in sets))


if __name__ == "__main__":
    main()
