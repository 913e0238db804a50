"""CVAE cross-image protocol (c): synthetic frames with known defects.

The Prifti protocol (`benchmarks/cvae.py --only cross`) has one real image, so
its "other sessions" are transformed crops of it. Here every frame is rendered
by `stemroi.io.synth` with its own seed (another region of the material: other
lattice phase, other defect sites, other noise), and the ground truth is the
generator's defect mask:

* training image: a bulk-only perovskite frame (1024 x 1024, cell 16 px,
  dose 500, noise 0.02, seed 0); `BulkCVAE.fit(image, pixel_size=(0.02, "nm"))`
  draws its `n_crops` random crops and holds out 20 % to calibrate;
* target images: frames with 8 vacancies, 8 interstitials and 8 antisites
  (seeds 1, 2, 3 per condition), mapped with `anomaly_map(stride=32)`:

  - same: the training acquisition;
  - noise: dose 100, noise 0.05;
  - gain/offset: intensities x 0.7 + 0.15;
  - drift: slow horizontal scan drift of 4 px amplitude;
  - pixel 0.8x / 1.25x: the lattice at 20 / 12.8 px per cell, the image's pixel
    size given to `anomaly_map(pixel_size=)` (resampled to the model's);
  - session: dose 200, noise 0.04, drift 3 px, x 0.8 + 0.1 together.

A crop "holds a defect" when the defect mask has a pixel within its central
half (where the blend weight of the map is highest); crops touching a defect
only in their border are left out of both rates. Reported per recipe: crop
recall (defect crops flagged) and bulk kept (defect-free crops not flagged),
summed over the three target seeds.

Usage: python benchmarks/cvae_synth.py [--quick] [--recipes default no_augment]
--quick: 4 epochs, 300 crops, one seed per condition (a smoke run).
Timings come from a shared, loaded 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PIXEL_NM = 0.02
DEFECTS = {"vacancy": 8, "interstitial": 8, "antisite": 8}
BASE = dict(lattice="perovskite", cell_px=16.0, dose=500.0, noise=0.02, drift=0.0)
CONDITIONS = {
    "same": dict(),
    "noise": dict(dose=100.0, noise=0.05),
    "gain/offset": dict(gain=0.7, offset=0.15),
    "drift": dict(drift=4.0),
    "pixel 0.8x": dict(cell_px=20.0, pixel=0.8),
    "pixel 1.25x": dict(cell_px=12.8, pixel=1.25),
    "session": dict(dose=200.0, noise=0.04, drift=3.0, gain=0.8, offset=0.1),
}
RECIPES = {
    "default": dict(),                   # BulkCVAE() as shipped: shear augmentation
    "no_augment": dict(augment=False),   # the same recipe trained on the crops as they are
}


def render(cond, seed, shape, defects):
    import stemroi

    kw = {**BASE, **{k: v for k, v in cond.items() if k in BASE}}
    f = stemroi.io.synth.make_image(shape, defects=defects, random_state=seed, **kw)
    img = f.image * cond.get("gain", 1.0) + cond.get("offset", 0.0)
    return img.astype(np.float32), f.defect_mask, PIXEL_NM * cond.get("pixel", 1.0)


def crop_truth(mask, result):
    """+1 defect crop, 0 bulk crop, -1 defect only in the border (left out)."""
    out = []
    for (r, c), (h, w) in zip(result.origins, result.sizes):
        m = mask[r:r + h, c:c + w] > 0
        if not m.any():
            out.append(0)
            continue
        q0, q1 = h // 4, w // 4
        out.append(1 if m[q0:h - q0, q1:w - q1].any() else -1)
    return np.asarray(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's, 16)")
    ap.add_argument("--n-crops", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1024, help="frame side in pixels")
    ap.add_argument("--n-threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args(argv)
    import stemroi

    epochs = 4 if args.quick else args.epochs
    n_crops = 300 if args.quick else args.n_crops
    seeds = (1,) if args.quick else (1, 2, 3)
    shape = (args.size, args.size)
    train, _, px = render({}, 0, shape, None)
    rows = []
    t_all = time.perf_counter()
    for name in args.recipes:
        kw = dict(RECIPES[name], random_state=0, n_threads=args.n_threads, n_crops=n_crops)
        if epochs:
            kw["epochs"] = epochs
        model = stemroi.BulkCVAE(**kw)
        t0 = time.perf_counter()
        model.fit(train, pixel_size=(px, "nm"))
        fit_s = time.perf_counter() - t0
        print(f"{name}: {len(model.loss_history_)} epochs on {n_crops} crops, loss {model.loss_history_[-1]:.1f}, "
              f"fit {fit_s:.0f} s, augment {model.training_data_['augment']}", flush=True)
        for cname, cond in CONDITIONS.items():
            hit = n_def = kept = n_bulk = 0
            for seed in seeds:
                img, mask, px_t = render(cond, 100 * seed + len(cname), shape, DEFECTS)
                res = stemroi.anomaly_map(img, model, stride=32, pixel_size=(px_t, "nm"))
                truth = crop_truth(mask, res)
                flag = np.asarray(res.is_roi, bool)
                hit += int((flag & (truth == 1)).sum())
                n_def += int((truth == 1).sum())
                kept += int((~flag & (truth == 0)).sum())
                n_bulk += int((truth == 0).sum())
            rows.append(dict(recipe=name, condition=cname, recall=100 * hit / max(n_def, 1),
                             bulk_kept=100 * kept / max(n_bulk, 1), n_defect_crops=n_def, n_bulk_crops=n_bulk,
                             fit_s=fit_s))
            r = rows[-1]
            print(f"  {cname:<12} defect crops flagged {r['recall']:5.1f} % of {n_def:4d}, "
                  f"bulk kept {r['bulk_kept']:5.1f} % of {n_bulk:5d}", flush=True)
    print(f"\n{'condition':<13}" + "".join(f"{n + ' recall / bulk kept':>34}" for n in args.recipes))
    for cname in CONDITIONS:
        cells = [next(r for r in rows if r["recipe"] == n and r["condition"] == cname) for n in args.recipes]
        print(f"{cname:<13}" + "".join(f"{c['recall']:>25.1f} / {c['bulk_kept']:5.1f}" for c in cells))
    for n in args.recipes:
        same = next(r for r in rows if r["recipe"] == n and r["condition"] == "same")
        other = [r for r in rows if r["recipe"] == n and r["condition"] != "same"]
        print(f"{n}: worst vs same image: recall {min(r['recall'] for r in other) - same['recall']:+.1f}, "
              f"bulk kept {min(r['bulk_kept'] for r in other) - same['bulk_kept']:+.1f} points")
    print(f"total {time.perf_counter() - t_all:.0f} s (shared 2-core machine)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
