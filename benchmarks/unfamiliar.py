"""Unfamiliar-input flags: are tiles of a material or lattice
absent from training flagged, and in-distribution tiles not?

Protocol, for training material M in {CdTe, STO} (the other one is foreign):

* in-distribution: ``stemroi.spatial_train_test_split(test_size=0.2,
  random_state=0)`` of M's patches; every detector is fitted on the train
  side only and its ``novelty_`` flag rate is measured on the test side
  (held-out blocks, no pixel shared with training);
* foreign: all patches of the other material; 64 x 64 tiles of
  ``stemroi.io.synth`` frames of the three built-in lattices (perovskite,
  cubic, dumbbell: cell 10-20 px, random orientation); hexagonal and
  honeycomb lattices of Gaussian columns (cell 9-16 px, rendered here);
  uniform noise, blank (constant) and linear-gradient tiles.

Detectors: PatchClassifier (small_cnn from scratch, finetune), PatchClusterer
("lattice_residual" features), BulkCVAE (energy detector, trained on M's
train-side patches of every class, so that "familiar" means the material,
defects included), DefectSegmenter (deviation pseudo-labels). Beside the
classifier's rates, the softmax "unknown" rate (max probability < 0.4).

    python benchmarks/unfamiliar.py [--epochs 10] [--cvae-epochs 6] [--seg-epochs 8] [--only CdTe]
                                    [--detectors clf,cluster,cvae,seg] [--json out.json]

Timings are on the shared, loaded development machine.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from _common import data_dir


def gaussian_lattice(shape, a1, a2, basis, sigma, rng, noise=0.03):
    h, w = shape
    ph = rng.uniform(0, 1, 2)
    a1, a2 = np.asarray(a1, float), np.asarray(a2, float)
    n = int(2 * max(h, w) / min(np.linalg.norm(a1), np.linalg.norm(a2))) + 4
    ii, jj = np.meshgrid(np.arange(-n, n), np.arange(-n, n), indexing="ij")
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros(shape)
    for f1, f2, amp in basis:
        p = ((ii[..., None] + f1 + ph[0]) * a1 + (jj[..., None] + f2 + ph[1]) * a2).reshape(-1, 2)
        keep = (p[:, 0] > -4 * sigma) & (p[:, 0] < w + 4 * sigma) & (p[:, 1] > -4 * sigma) & (p[:, 1] < h + 4 * sigma)
        for x, y in p[keep]:
            img += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    img = img / max(img.max(), 1e-9) * 0.8 + 0.1 + rng.normal(0, noise, shape)
    return np.clip(img, 0, 1).astype(np.float32)


def hexagonal_tiles(n, honeycomb=False, seed=1, size=64):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, th = rng.uniform(9, 16), rng.uniform(0, np.pi)
        R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        basis = [(0, 0, 1.0)] + ([(1 / 3, 1 / 3, 0.7)] if honeycomb else [])
        out.append(gaussian_lattice((size, size), R @ [a, 0], R @ [a / 2, a * np.sqrt(3) / 2], basis, 0.1 * a, rng))
    return np.stack(out)


def synth_tiles(lattice, n, seed=0, size=64):
    from stemroi.io import synth

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        img = synth.make_image((256, 256), lattice=lattice, cell_px=float(rng.uniform(10, 20)),
                               orientation_deg=float(rng.uniform(0, 90)), random_state=int(rng.integers(1 << 30))).image
        out += [img[r:r + size, c:c + size] for r in range(0, 256 - size + 1, size) for c in range(0, 256 - size + 1, size)]
    return np.stack(out[:n]).astype(np.float32)


def nonlattice_tiles(kind, n, seed=0, size=64):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.uniform(0, 1, (n, size, size)).astype(np.float32)
    if kind == "blank":
        return np.broadcast_to(rng.uniform(0.05, 0.95, (n, 1, 1)), (n, size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    th = rng.uniform(0, 2 * np.pi, n)
    g = np.cos(th)[:, None, None] * xx + np.sin(th)[:, None, None] * yy
    g = (g - g.min(axis=(1, 2), keepdims=True)) / np.ptp(g, axis=(1, 2), keepdims=True)
    return np.clip(0.1 + 0.8 * g + rng.normal(0, 0.01, g.shape), 0, 1).astype(np.float32)


def foreign_sources(other_name, other_patches, n=150):
    return {other_name + " (real)": other_patches,
            "synth perovskite": synth_tiles("perovskite", n), "synth cubic": synth_tiles("cubic", n),
            "synth dumbbell": synth_tiles("dumbbell", n), "hexagonal": hexagonal_tiles(n, seed=1),
            "honeycomb": hexagonal_tiles(n, honeycomb=True, seed=2), "noise": nonlattice_tiles("noise", 60),
            "blank": nonlattice_tiles("blank", 60), "gradient": nonlattice_tiles("gradient", 60)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--cvae-epochs", type=int, default=6)
    ap.add_argument("--only", default="CdTe,STO")
    ap.add_argument("--seg-epochs", type=int, default=8)
    ap.add_argument("--detectors", default="clf,cluster,cvae,seg")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from stemroi.io.patch_folders import load_patch_folder
    from stemroi.model_selection import spatial_train_test_split

    root = data_dir("ayyubi-stem-defects")
    rows = []
    for home in args.only.split(","):
        other = "STO" if home == "CdTe" else "CdTe"
        ds, ods = load_patch_folder(root / home), load_patch_folder(root / other)
        X, y = ds.patches.astype(np.float32), np.asarray(ds.labels)
        tr, te = spatial_train_test_split(X, y, test_size=0.2, random_state=0)
        sources = {"in-distribution (held-out test)": X[te], **foreign_sources(other, ods.patches.astype(np.float32))}
        for det in args.detectors.split(","):
            t0 = time.perf_counter()
            if det == "clf":
                from stemroi.models.classifier import PatchClassifier

                m = PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=args.epochs,
                                    random_state=0, n_threads=2).fit(X[tr], y[tr], class_names=ds.class_names)
                feats = m.transform
                extra = {k: float((m.predict_proba(v).max(1) < 0.4).mean()) for k, v in sources.items()}
            elif det == "cluster":
                from stemroi.cluster import PatchClusterer

                m = PatchClusterer("lattice_residual", random_state=0, n_threads=2).fit(X[tr])
                feats, extra = m.transform, None
            elif det == "cvae":
                from stemroi.detection._novelty import cvae_features
                from stemroi.models.cvae import BulkCVAE, preprocess_crops

                m = BulkCVAE(epochs=args.cvae_epochs, learning_rate=1e-3, detector="energy", random_state=0,
                             n_threads=2).fit(X[tr])
                feats = lambda Z, m=m: cvae_features(m, preprocess_crops(Z, float(m.blur_sigma)))  # noqa: E731
                extra = None
            elif det == "seg":
                from stemroi.detection._novelty import segmenter_features
                from stemroi.models.unet import DefectSegmenter

                m = DefectSegmenter(epochs=args.seg_epochs, samples_per_epoch=512, pseudo_label="deviation",
                                    random_state=0, n_threads=2).fit(X[tr], [ds.class_names[i] for i in y[tr]])
                feats = lambda Z, m=m: segmenter_features(m, Z)  # noqa: E731
                extra = None
            else:
                raise SystemExit(f"unknown detector {det!r}")
            fit_s = time.perf_counter() - t0
            nov = m.novelty_
            rates = {k: float(nov.flag(feats(v)).mean()) for k, v in sources.items()}
            row = {"train": home, "detector": det, "method": nov.method, "quantile": nov.quantile,
                   "fit_s": round(fit_s, 1), "unfamiliar": rates, "softmax_unknown": extra,
                   "n": {k: len(v) for k, v in sources.items()}}
            rows.append(row)
            foreign = [v for k, v in rates.items() if not k.startswith("in-distribution")]
            print(f"\n{home} {det} ({nov.method}, q={nov.quantile}, fit {fit_s:.0f} s): in-distribution "
                  f"{rates['in-distribution (held-out test)']:.3f}, foreign min {min(foreign):.3f}", flush=True)
            for k, v in rates.items():
                u = "" if extra is None else f"   softmax unknown {extra[k]:.3f}"
                print(f"  {k:34s} n={len(sources[k]):4d} unfamiliar {v:.3f}{u}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
