"""Pretrain the built-in ``small_cnn`` backbone (or MobileNetV2) on synthetic STEM patches only.

Produces the weights shipped as ``weights="stem"`` (registry key
``"small_cnn-stem"``): ``python/stemroi/models/_pretrained/small_cnn_stem.stemroi``
and, next to it, ``small_cnn_stem.json`` (seeds, data recipe, training log,
SHA-256 of the weights file). No real image is used.

Data: 64 x 64 patches from :func:`stemroi.io.synth.make_patch_dataset`, drawn in
small chunks that each get their own acquisition: every lattice of
``synth.LATTICES``, cell size 7-22 px (log-uniform), any orientation (half near
the image axes), column width 0.07-0.13 cell, B-column brightness x0.7-1.2,
background 0-0.3, dose 30-5000 e/px at peak (or noise-free), Gaussian noise
0-0.08, scan drift up to 4 px, and, in half the chunks, scan distortion (a
smooth random horizontal line displacement plus per-line jitter). Labels:
defect kind (Bulk and every ``synth.DEFECT_KINDS``) x lattice, 18 classes.

Training: ``stemroi.PatchClassifier`` with the default recipe's input
(``backbone="small_cnn"``, ``mode="finetune"``, from scratch, contrast-standardised
patches, avg+max pooling, rot90/flip augmentation), early stopping on 10 % held
out. The backbone part of the trained network is saved with
:func:`stemroi.models.weights.save_backbone`.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python scripts/pretrain_stem.py [--quick]

Default size (about 20 min on one thread of the 2-core development machine):
600 patches per class (10,800), at most 14 epochs. ``--quick`` is a smoke test.
``--labels kind`` (6 classes), ``--faults all`` (the partial and twin faults of ``synth.FAULT_TYPES``
as classes of their own: 22 classes) and ``--augment`` (e.g. "dihedral+acquisition") are
variants; the shipped file was made with the defaults.
After a run, put the printed SHA-256 and size into ``REGISTRY["small_cnn-stem"]``
(python/stemroi/models/weights.py).

``--backbone mobilenet_v2`` pretrains MobileNetV2 at 96 px instead (``REGISTRY["mobilenet_v2-stem"]``);
the shipped file came from

    nice -n 10 env OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/pretrain_stem.py --backbone mobilenet_v2 \
        --n-per-class 300 --epochs 20 --threads 2

(2121 s on the 2-core machine). ``--init FILE`` continues from a file this script wrote.

``--contrastive W`` adds a self-supervised objective to the synthetic labels: SimCLR's
NT-Xent on two views of every patch (their own dihedral transform and, with
``--augment dihedral+acquisition``, their own intensity / noise / blur / scale / rotation
changes), weight W (``PatchClassifier(contrastive_weight=W)``, implemented in the C++ training
loop). One epoch costs about twice a supervised one.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "python" / "stemroi" / "models" / "_pretrained"
PATCH = 64

RECIPE = {
    "patch_size": PATCH,
    "chunk": 4,  # patches sharing one acquisition draw
    "cell_px": [7.0, 22.0],  # log-uniform
    "orientation_deg": "uniform [0, 180) in half the chunks, else 0 or 90 +- 4",
    "column_sigma_per_cell": [0.07, 0.13],
    "B_intensity_factor": [0.7, 1.2],
    "background": [0.0, 0.3],
    "dose": "None (no Poisson noise) in 20 % of chunks, else log-uniform [30, 5000]",
    "noise": [0.0, 0.08],
    "drift_px": [-4.0, 4.0],
    "scan_distortion": "half the chunks: smooth line displacement (random walk, sd 0-0.6 px per line, "
                       "smoothed over 6 lines) + independent line jitter (sd 0-0.3 px)",
    "labels": "defect kind (Bulk + synth.DEFECT_KINDS) x lattice (synth.LATTICES)",
}


def _scan_distort(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal line displacement of a raster scan: a smooth random walk plus per-line jitter."""
    from scipy.ndimage import gaussian_filter1d, map_coordinates

    h, w = p.shape
    walk = np.cumsum(rng.normal(0.0, rng.uniform(0.0, 0.6), size=h))
    walk = gaussian_filter1d(walk - walk.mean(), 6.0)
    shift = walk + rng.normal(0.0, rng.uniform(0.0, 0.3), size=h)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    out = map_coordinates(p.astype(np.float64), [rows, cols + shift[:, None]], order=1, mode="reflect")
    lo, hi = float(out.min()), float(out.max())
    return ((out - lo) / (hi - lo) if hi > lo else out).astype(np.float32)


def _draw_acquisition(rng: np.random.Generator, lattice: str) -> dict:
    from stemroi.io import synth

    cell = float(math.exp(rng.uniform(*np.log(RECIPE["cell_px"]))))
    if rng.random() < 0.5:
        orientation = float(rng.uniform(0.0, 180.0))
    else:
        orientation = float(rng.choice([0.0, 90.0]) + rng.uniform(-4.0, 4.0))
    b_default = {b[2]: b[3] for b in synth.LATTICES[lattice]["basis"]}.get("B")
    kw = dict(
        lattice=lattice,
        cell_px=cell,
        orientation_deg=orientation,
        column_sigma=max(0.6, cell * float(rng.uniform(*RECIPE["column_sigma_per_cell"]))),
        background=float(rng.uniform(*RECIPE["background"])),
        dose=None if rng.random() < 0.2 else float(math.exp(rng.uniform(math.log(30.0), math.log(5000.0)))),
        noise=float(rng.uniform(*RECIPE["noise"])),
        drift=float(rng.uniform(*RECIPE["drift_px"])),
    )
    if b_default is not None:
        kw["column_intensities"] = {"B": b_default * float(rng.uniform(*RECIPE["B_intensity_factor"]))}
    return kw


def class_pairs(faults: str = "slide"):
    """(defect class, lattice) pairs in drawing order. ``faults`` "slide" is the shipped recipe
    (Bulk and every ``synth.DEFECT_KINDS`` x every lattice, 18 classes); "all" appends the other planar
    fault types of ``synth.FAULT_TYPES`` as classes of their own ("stacking_fault:partial" on every
    lattice, "stacking_fault:twin" on the dumbbell lattice only: square lattices have no twin), so
    the first 18 classes draw the same patches as the shipped recipe."""
    from stemroi.io import synth

    lattices = sorted(synth.LATTICES)
    pairs = [(k, lat) for k in ["Bulk", *synth.DEFECT_KINDS] for lat in lattices]
    if faults == "all":
        for fault in synth.FAULT_TYPES[1:]:
            pairs += [(f"stacking_fault:{fault}", lat) for lat in lattices if fault in synth.fault_types(lat)]
    return pairs


def make_dataset(n_per_class: int, seed: int, labels: str = "kind_lattice", faults: str = "slide"):
    """(patches (n, 64, 64) float32, labels (n,), class names, n chunks redrawn).

    The patches do not depend on ``labels``: "kind_lattice" (one class per :func:`class_pairs` entry) or
    "kind" (the lattices of one defect class share a class)."""
    from stemroi.io import synth

    pairs = class_pairs(faults)
    names = [f"{k}/{lat}" for k, lat in pairs]
    rng = np.random.default_rng(seed)
    X, y = [], []
    redrawn = 0
    chunk = RECIPE["chunk"]
    for ci, (k, lat) in enumerate(pairs):
        kind, _, fault = k.partition(":")
        done = 0
        while done < n_per_class:
            m = min(chunk, n_per_class - done)
            kw = _draw_acquisition(rng, lat)
            if fault:
                kw["fault"] = fault
            try:
                P, _, _ = synth.make_patch_dataset(m, PATCH, classes=[kind], random_state=int(rng.integers(2**31)), **kw)
            except ValueError:  # no room for the defect at this cell size / drift: draw again
                redrawn += 1
                continue
            if rng.random() < 0.5:
                P = np.stack([_scan_distort(p, rng) for p in P])
            X.append(P)
            y.extend([ci] * m)
            done += m
    y = np.asarray(y, np.int64)
    if labels == "kind":
        kinds = list(dict.fromkeys(k for k, _ in pairs))
        y = np.asarray([kinds.index(pairs[i][0]) for i in y], np.int64)
        names = kinds
    return np.concatenate(X).astype(np.float32), y, names, redrawn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-per-class", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--labels", choices=("kind_lattice", "kind"), default="kind_lattice")
    ap.add_argument("--faults", choices=("slide", "all"), default="slide",
                    help="planar faults: 'slide' (the shipped recipe) or 'all' (also the Shockley-partial and "
                         "twin faults of synth.FAULT_TYPES, each its own class)")
    ap.add_argument("--augment", default="dihedral", help="PatchClassifier augment= during pretraining")
    ap.add_argument("--backbone", choices=("small_cnn", "mobilenet_v2"), default="small_cnn")
    ap.add_argument("--input-size", type=int, default=None,
                    help="network input side (patches resized); default 64 for small_cnn, 96 for mobilenet_v2")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: python/stemroi/models/_pretrained/<backbone>_stem.stemroi")
    ap.add_argument("--init", type=Path, default=None,
                    help="continue from a backbone file this script wrote (same backbone): one stage, every "
                         "block at the full rate, as from scratch")
    ap.add_argument("--contrastive", type=float, default=0.0,
                    help="weight of the NT-Xent self-supervised term (0: labels only)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 20 patches per class, 2 epochs, into /tmp")
    args = ap.parse_args(argv)
    if args.input_size is None:
        args.input_size = PATCH if args.backbone == "small_cnn" else 96
    if args.quick:
        args.n_per_class, args.epochs = 20, 2
        if args.out is None:
            args.out = Path(f"/tmp/{args.backbone}_stem_quick.stemroi")
    if args.out is None:
        args.out = OUT_DIR / f"{args.backbone}_stem.stemroi"
    small = args.backbone == "small_cnn"

    import stemroi
    from stemroi.models.weights import save_backbone, sha256_file

    t0 = time.perf_counter()
    X, y, names, redrawn = make_dataset(args.n_per_class, args.seed, args.labels, args.faults)
    gen_s = time.perf_counter() - t0
    print(f"data: {len(X)} patches, {len(names)} classes, {redrawn} chunks redrawn, {gen_s:.0f} s", flush=True)

    def progress(done, total):
        print(f"  epoch {done}/{total}  {time.perf_counter() - t0:.0f} s", flush=True)

    # MobileNetV2 keeps its own pooling ("avg") and input preset ("tf", [-1, 1]); its validation loss is
    # noisier early on, so the rate is halved after 3 stale epochs rather than 2
    cls = stemroi.PatchClassifier
    if args.init is not None:
        class _Continue(stemroi.PatchClassifier):
            def _stages(self, pretrained):  # not the fine-tuning stages: the from-scratch recipe, continued
                return [(-1, 1e-3, 0.05, self.max_epochs)]
        cls = _Continue
    clf = cls(backbone=args.backbone, mode="finetune", weights=None if args.init is None else str(args.init),
                                  patch_contrast="standardize",
                                  augment=args.augment, pooling="avgmax" if small else None,
                                  input_size=args.input_size, max_epochs=args.epochs,
                                  patience=4, plateau_patience=2 if small else 3, validation_fraction=0.1,
                                  contrastive_weight=args.contrastive,
                                  calibrate=False,
                                  random_state=args.seed, n_threads=args.threads, progress=progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no class is named "Bulk" (labels are kind/lattice)
        clf.fit(X, y, class_names=names)
    fit_s = time.perf_counter() - t0 - gen_s
    # MobileNetV2's ImageNet classifier (1280 x 1000) is never trained here and never used: not saved
    state = {k[len("backbone."):]: np.asarray(v) for k, v in clf.net_.state_dict().items()
             if k.startswith("backbone.") and not k.startswith("backbone.classifier.")}
    epochs = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in e.items()}
              for e in clf.history_["epochs"]]
    final_val = clf.validation_accuracy_
    card = {
        "what": ("small_cnn backbone (4 blocks, widths 16-128)" if small else
                 "MobileNetV2 backbone (torchvision layout, features only)")
                + " pretrained on synthetic HAADF-STEM patches (stemroi.io.synth) only; never trained on a real image",
        "objective": f"supervised: {len(names)} classes = " + ("defect kind x lattice" if args.labels == "kind_lattice"
                                                                else "defect kind")
                     + (f"; plus self-supervised NT-Xent (two augmented views, temperature 0.2) at weight "
                        f"{args.contrastive}" if args.contrastive > 0 else ""),
        "input": f"64 x 64 patches on [0, 1], contrast-standardised per patch, resized to {args.input_size}, grey to "
                 + ("3 channels ('unit')" if small else "3 channels on [-1, 1] ('tf')"),
        "pooling_used_in_training": "avgmax" if small else "avg",
        "n_patches": int(len(X)),
        "seed": args.seed,
        "validation_accuracy": final_val,
        "script": "scripts/pretrain_stem.py",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if small:
        save_backbone(args.out, state, architecture="small_cnn", preprocessing="unit",
                      config={"width": 16, "n_blocks": 4, "input_size": args.input_size,
                              "patch_contrast": "standardize", "pooling": "avgmax"}, model_card=card)
    else:
        save_backbone(args.out, state, architecture="mobilenet_v2", preprocessing="tf",
                      config={"input_size": args.input_size, "patch_contrast": "standardize", "pooling": "avg"},
                      model_card=card)
    digest, size = sha256_file(args.out), args.out.stat().st_size
    log = {
        "weights_file": args.out.name,
        "sha256": digest,
        "size": size,
        "command": f"nice -n 10 env OMP_NUM_THREADS={args.threads} .venv/bin/python scripts/pretrain_stem.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "continued_from": None if args.init is None else {
            "file": args.init.name, "sha256": sha256_file(args.init),
            "log": (json.loads(args.init.with_suffix(".json").read_text())
                    if args.init.with_suffix(".json").is_file() else None)},
        "n_per_class": args.n_per_class,
        "max_epochs": args.epochs,
        "threads": args.threads,
        "classes": names,
        "data_recipe": RECIPE,
        "chunks_redrawn": redrawn,
        "training": {"backbone": args.backbone, "input_size": args.input_size, "mode": "finetune (from scratch)",
                     "patch_contrast": "standardize", "augment": args.augment, "labels": args.labels, "faults": args.faults,
                     "contrastive_weight": args.contrastive,
                     "pooling": "avgmax" if small else "avg",
                     "optimizer": f"Adam 1e-3, halved on a plateau of {2 if small else 3}",
                     "label_smoothing": 0.05, "batch_size": 32, "early_stopping_patience": 4,
                     "validation": clf.model_card_["split"]},
        "log": epochs,
        "best_epoch": clf.history_["best_epoch"],
        "validation_accuracy": final_val,
        "data_seconds": round(gen_s, 1),
        "train_seconds": round(fit_s, 1),
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "torch": __import__("torch").__version__, "machine": platform.machine()},
    }
    args.out.with_suffix(".json").write_text(json.dumps(log, indent=1) + "\n")
    print(f"wrote {args.out} ({size} bytes)\nsha256 {digest}\nvalidation accuracy {final_val:.4f}; "
          f"data {gen_s:.0f} s, training {fit_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
