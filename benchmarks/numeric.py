"""Numeric engine vs scikit-learn (OpenBLAS), same thread count, one run.

    python benchmarks/numeric.py [--quick] [--threads 2] [--repeat 1]

Tasks (full sizes; --quick shrinks them):
  PCA       n=1119 and n=100000, d=512, n_components=50, svd_solver='full'
  KMeans    n=10000, d=50, k=7, n_init=10
  sweep     k=2..10 K-means (n_init=10) + mean silhouette of each, n=10000, d=50
            (scikit-learn: loop KMeans + silhouette_score; stemroi: select_n_clusters)
Prints seconds for each side and the speed-up (scikit-learn time / stemroi time);
--cpu-time adds the sweep's single-threaded process CPU time on both sides.
Synthetic data only (no data set needed). Timings on a shared machine are noisy:
compare the ratios of one run.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np


def timed(fn, repeat: int):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def pca_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = 1.0 / np.sqrt(1.0 + np.arange(d))  # decaying spectrum, like CNN features
    mix = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return np.ascontiguousarray((rng.standard_normal((n, d)) * scales) @ mix + 1.0, dtype=np.float32)


def blob_data(n: int, d: int, k: int = 7, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=4.0, random_state=seed)
    return np.ascontiguousarray(X, dtype=np.float64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per task (default 1)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="also time the sweep single-threaded in process CPU time, K-means and silhouette apart "
                         "(steadier than wall time on a loaded machine)")
    args = ap.parse_args(argv)
    try:
        import sklearn
        from sklearn.cluster import KMeans as SKKMeans
        from sklearn.decomposition import PCA as SKPCA
        from sklearn.metrics import silhouette_score as sk_silhouette
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError as exc:
        print(f"scikit-learn and threadpoolctl are needed for the comparison: {exc}", file=sys.stderr)
        return 2
    import stemroi

    warnings.filterwarnings("ignore", category=FutureWarning)
    t = args.threads
    big_n, km_n, sweep_n = (20000, 5000, 3000) if args.quick else (100000, 10000, 10000)
    blas = sorted({f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info() if i.get("user_api") == "blas"})
    print(f"stemroi {stemroi.__version__} vs scikit-learn {sklearn.__version__} ({', '.join(blas) or 'BLAS ?'}), "
          f"{t} thread(s){', quick sizes' if args.quick else ''}")
    rows = []

    def report(task, ours_s, ref_s, note=""):
        rows.append((task, ours_s, ref_s))
        print(f"{task:<34} stemroi {ours_s:8.3f} s   scikit-learn {ref_s:8.3f} s   speed-up {ref_s / ours_s:6.1f}x  {note}",
              flush=True)

    with threadpool_limits(t):
        # warm-up (thread pools, lazy imports, first-touch pages), untimed, both sides
        W = pca_data(300, 64)
        stemroi.PCA(8, n_threads=t).fit(W), SKPCA(8, svd_solver="full").fit(W)
        stemroi.KMeans(3, n_init=1, random_state=0, n_threads=t).fit(W), SKKMeans(3, n_init=1).fit(W)
        stemroi.silhouette_score(W, np.arange(300) % 3), sk_silhouette(W, np.arange(300) % 3)
        for n in (1119, big_n):
            X = pca_data(n, 512)
            ours_s, ours = timed(lambda: stemroi.PCA(50, n_threads=t).fit(X), args.repeat)
            ref_s, ref = timed(lambda: SKPCA(50, svd_solver="full").fit(X), args.repeat)
            err = np.max(np.abs(ours.explained_variance_ - ref.explained_variance_) / ref.explained_variance_)
            report(f"PCA n={n} d=512 k=50 float32", ours_s, ref_s, f"(max rel. diff. of variances {err:.1e})")

        X = blob_data(km_n, 50)
        ours_s, ours = timed(lambda: stemroi.KMeans(7, n_init=10, random_state=0, n_threads=t).fit(X), args.repeat)
        ref_s, ref = timed(lambda: SKKMeans(7, n_init=10, random_state=0).fit(X), args.repeat)
        report(f"KMeans n={km_n} d=50 k=7 n_init=10", ours_s, ref_s,
               f"(inertia {ours.inertia_:.6g} vs {ref.inertia_:.6g})")

        X = blob_data(sweep_n, 50)
        ks = range(2, 11)
        ours_s, sel = timed(lambda: stemroi.select_n_clusters(X, ks, n_init=10, random_state=0, n_threads=t),
                            args.repeat)

        def sk_sweep():
            scores = []
            for k in ks:
                labels = SKKMeans(k, n_init=10, random_state=0).fit(X).labels_
                scores.append(sk_silhouette(X, labels))
            return scores

        ref_s, sk_scores = timed(sk_sweep, args.repeat)
        report(f"sweep k=2..10 n={sweep_n} d=50", ours_s, ref_s,
               f"(best k {sel.best_k} vs {2 + int(np.argmax(sk_scores))})")
        # silhouette alone on identical labels (the part computed in one pass)
        labels = [sel.labels[k] for k in ks]
        ours_s, _ = timed(lambda: [stemroi.silhouette_score(X, lab, n_threads=t) for lab in labels], 1)
        ref_s, _ = timed(lambda: [sk_silhouette(X, lab) for lab in labels], 1)
        report(f"  silhouette x9 separately", ours_s, ref_s)
    if args.cpu_time:
        from stemroi._lib import _core

        pt = time.process_time
        with threadpool_limits(1):
            t0 = pt()
            sel = stemroi.select_n_clusters(X, ks, n_init=10, random_state=0, n_threads=1)
            ours_sweep = pt() - t0
            codes = [np.ascontiguousarray(sel.labels[k], np.int32) for k in ks]
            t0 = pt()
            _core.silhouette_samples_multi(X, codes, list(ks), 1)
            ours_sil = pt() - t0
            t0 = pt()
            labs = [SKKMeans(k, n_init=10, random_state=0).fit(X).labels_ for k in ks]
            ref_km = pt() - t0
            t0 = pt()
            [sk_silhouette(X, lab) for lab in labs]
            ref_sil = pt() - t0
        print(f"CPU time, 1 thread: stemroi sweep {ours_sweep:.3f} s (silhouette of all k in one pass {ours_sil:.3f} s)"
              f"   scikit-learn {ref_km + ref_sil:.3f} s (KMeans {ref_km:.3f} s, silhouette_score x{len(ks)} "
              f"{ref_sil:.3f} s)   ratio {(ref_km + ref_sil) / ours_sweep:.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
