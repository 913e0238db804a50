"""``stemroi demo``: the package's main job on a synthetic STEM frame, offline.

1. Labelled synthetic patches (``stemroi.io.synth.make_patch_dataset``: bulk and
   each planted-defect kind) train a :class:`PatchClassifier`: VGG16 with
   ImageNet weights (head mode) when the weights are in the cache, otherwise
   the best offline option, a small CNN trained from scratch at 64 x 64.
2. A fresh synthetic frame (``stemroi.io.synth.make_image``, another seed) with
   defects planted near tile centres is cut into tiles and classified
   (:func:`stemroi.detect`).
3. Written to ``out``: ``rois.png`` (overlay), ``rois.json`` / ``rois.csv``,
   ``summary.json`` (backbone and weights used, timings, tile-level precision
   and recall against the generator's ground truth) and ``model.stemroi``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["run_demo", "tile_truth", "score_tiles"]

PATCH = 64


def tile_truth(defect_mask: np.ndarray, origins: np.ndarray, patch: int, min_pixels: int = 32) -> np.ndarray:
    """Ground-truth class per tile from the generator's mask: the majority defect class
    when the tile holds at least ``min_pixels`` defect pixels, 0 (bulk) when it holds none,
    -1 (border case, excluded from scoring) in between."""
    out = np.zeros(len(origins), np.int64)
    for i, (r, c) in enumerate(origins):
        m = defect_mask[r:r + patch, c:c + patch]
        nz = m[m > 0]
        if nz.size >= min_pixels:
            out[i] = np.bincount(nz.astype(np.int64)).argmax()
        elif nz.size > 0:
            out[i] = -1
    return out


def score_tiles(result, truth: np.ndarray, class_names) -> Dict[str, Any]:
    """Tile-level detection scores: a tile is positive when it is a defect (truth > 0);
    predicted positive when flagged as ROI (defect class or unknown)."""
    keep = truth >= 0
    pos = truth[keep] > 0
    flagged = result.is_roi[keep]
    tp = int((pos & flagged).sum())
    fp = int((~pos & flagged).sum())
    fn = int((pos & ~flagged).sum())
    names = np.asarray(class_names, dtype=object)
    correct_class = int(((truth[keep] > 0) & (result.labels[keep] == names[np.maximum(truth[keep], 0)])).sum())
    return {
        "defect_tiles": int(pos.sum()),
        "bulk_tiles": int((~pos).sum()),
        "border_tiles_excluded": int((~keep).sum()),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "bulk_flagged_fraction": fp / max(int((~pos).sum()), 1),
        "defect_class_accuracy": correct_class / max(int(pos.sum()), 1),
    }


def planted_frame(size: int, seed: int, kinds, n_defects: Optional[int] = None, patch: int = PATCH):
    """A synthetic frame with defects near the centres of random tiles (at most one per tile,
    no two in neighbouring tiles), so that every tile's ground truth is unambiguous."""
    from .io import synth

    rng = np.random.default_rng(seed)
    n_tiles = (size // patch) ** 2
    n_defects = n_defects if n_defects is not None else max(len(kinds), n_tiles // 6)
    grid = size // patch
    cells = rng.permutation(grid * grid)
    chosen = []
    for cidx in cells:
        r, c = divmod(int(cidx), grid)
        if all(max(abs(r - r2), abs(c - c2)) >= 2 for r2, c2 in chosen):
            chosen.append((r, c))
        if len(chosen) >= n_defects:
            break
    jitter = patch / 8.0
    defects = []
    for j, (r, c) in enumerate(chosen):
        dr, dc = rng.uniform(-jitter, jitter, size=2)
        defects.append({"kind": kinds[j % len(kinds)], "row": r * patch + (patch - 1) / 2 + dr,
                        "col": c * patch + (patch - 1) / 2 + dc})
    return synth.make_image((size, size), defects=defects, random_state=seed + 1)


def run_demo(out="demo_out", size: int = 768, seed: int = 0, *, n_per_class: Optional[int] = None,
             max_epochs: Optional[int] = None, n_threads: Optional[int] = None, verbose: bool = True) -> Dict[str, Any]:
    """Run the demo and return the summary (also written to ``out/summary.json``)."""
    from .io import synth
    from .models.classifier import PatchClassifier, _weights_available
    from .detection._detect import detect
    from .plotting import plot_rois, save_figure
    from ._atomic import atomic_open

    if size < 2 * PATCH:
        raise ValueError(f"size must be >= {2 * PATCH} pixels, got {size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    t0 = time.perf_counter()
    small = size < 512
    n_per_class = n_per_class or (30 if small else 60)
    patches, labels, class_names = synth.make_patch_dataset(n_per_class=n_per_class, patch_size=PATCH,
                                                            random_state=seed)
    t_data = time.perf_counter() - t0
    say(f"stemroi demo: {len(patches)} synthetic training patches ({len(class_names)} classes: "
        f"{', '.join(class_names)})")

    if _weights_available("imagenet") or _weights_available("imagenet-keras"):
        model = PatchClassifier(backbone="vgg16", mode="head", weights="auto", input_size=PATCH,
                                max_epochs=max_epochs or 60, random_state=seed, n_threads=n_threads)
    else:
        # input 32 x 32 (patches downsampled 2x): 4x cheaper, enough for the synthetic columns
        model = PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, input_size=32,
                                max_epochs=max_epochs or (12 if small else 25), patience=4, random_state=seed,
                                n_threads=n_threads)
    t1 = time.perf_counter()
    model.fit(patches, labels, class_names=class_names,
              data_description=f"stemroi.synth.make_patch_dataset(n_per_class={n_per_class}, random_state={seed})")
    t_fit = time.perf_counter() - t1
    say(f"  trained {model.backbone_description_} in {t_fit:.1f} s "
        f"(validation accuracy {model.validation_accuracy_:.3f}, ECE {model.ece_before_:.3f} -> {model.ece_after_:.3f})")
    model.save(out / "model.stemroi")

    frame = planted_frame(size, seed + 1000, [c for c in class_names if c != "Bulk"])
    t2 = time.perf_counter()
    result = detect(frame.image, model, patch=PATCH, stride=PATCH, unknown_below=0.4)
    t_detect = time.perf_counter() - t2
    truth = tile_truth(frame.defect_mask, result.origins, PATCH)
    scores = score_tiles(result, truth, class_names)

    result.to_json(out / "rois.json")
    result.to_csv(out / "rois.csv")
    ax = plot_rois(frame.image, result, title=f"stemroi demo: {int(result.is_roi.sum())} of {len(result)} tiles flagged")
    save_figure(ax, out / "rois.png", dpi=150)
    import matplotlib.pyplot as plt

    plt.close(ax.figure)
    summary = {
        "image": f"synthetic {size} x {size} frame (stemroi.synth.make_image, seed {seed + 1001}) with "
                 f"{len(frame.defects)} planted defects",
        "backbone": model.backbone_description_,
        "weights": model.weights_description_,
        "training": model.model_card_,
        "detection": result.summary(),
        "scores_vs_ground_truth": scores,
        "timings_s": {"data": round(t_data, 2), "fit": round(t_fit, 2), "detect": round(t_detect, 2),
                      "total": round(time.perf_counter() - t0, 2)},
        "files": {k: str(out / v) for k, v in
                  {"overlay": "rois.png", "rois_json": "rois.json", "rois_csv": "rois.csv", "model": "model.stemroi",
                   "summary": "summary.json"}.items()},
    }
    with atomic_open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    p, r = scores["precision"], scores["recall"]
    say(f"  detected {int(result.is_roi.sum())} ROI tiles of {len(result)}: precision "
        f"{p if p is None else round(p, 3)}, recall {r if r is None else round(r, 3)} against the planted defects; "
        f"counts {result.counts()}")
    say(f"  wrote {out}/rois.png, rois.json, rois.csv, summary.json, model.stemroi "
        f"({summary['timings_s']['total']:.0f} s)")
    return summary
