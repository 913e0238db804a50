"""Patch classification on the real CdTe (7 classes) and STO (4 classes) patches.

For each data set and backbone: accuracy on the overlap-aware spatial split
(stemroi.spatial_train_test_split: blocks of each overlap group's mosaic, no
test patch shares a pixel with a train patch; whole overlap groups cannot be
used here, each is nearly a whole class) and, beside it, on a random
stratified split (leaky: shifted-crop twins on both sides), per-class recall, confusion matrix,
ECE before/after temperature scaling (on the test side), training time, and
which backbone/weights were used. Then the ROI map of the 768 x 768 CdTe
image with a model trained on all CdTe patches (overlay PNG + counts in --out).

No ImageNet weights exist on this machine (no internet), so the honest
options are a network trained from scratch at 64 x 64 ("small_cnn", or VGG16
itself) and untrained VGG16 features + the head.

    python benchmarks/classify.py [--out bench_out] [--quick] [--backbones small_cnn,vgg16-random-head]

--ablation none,acquisition,... runs only the augmentation ablation on the cross-image protocol
(benchmarks/_crossimage.py: train on the CdTe spatial train side; held-out patches, held-out patches under
acquisition shifts, the 768 x 768 frame's tile AUROC and the shifted frame's; docs/classifier.md).
--ablation none --ablation-weights none,stem compares from scratch with the STEM-pretrained small_cnn on it
(--ablation-backbone mobilenet_v2: the same for MobileNetV2 at 96 px).

Patches are contrast-standardised per patch (PatchClassifier's default
patch_contrast="standardize"); --patch-contrast none gives the study's raw input.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import data_dir



def load(folder: Path):
    from stemroi.cli import _load_patch_folder

    return _load_patch_folder(str(folder))


def groups_of(patches):
    from stemroi import overlap_groups

    return overlap_groups(patches), "overlap groups (stemroi.overlap_groups)"


def splits(patches, labels, groups, seed):
    from stemroi import grouped_train_test_split

    g_tr, g_te = grouped_train_test_split(labels, groups, test_size=0.2, random_state=seed)
    from sklearn.model_selection import train_test_split

    r_tr, r_te = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=seed)
    out = {"grouped": (g_tr, g_te), "random": (np.sort(r_tr), np.sort(r_te))}
    # spatial blocks of each overlap group's mosaic, touching train patches purged (docs/data.md)
    from stemroi import spatial_train_test_split

    out["spatial"] = spatial_train_test_split(patches, labels, test_size=0.2, random_state=seed)
    return out


ARGS = None


def make_model(kind: str, quick: bool, seed: int, progress=None):
    from stemroi import PatchClassifier

    ep = 8 if quick else None
    if kind == "small_cnn":
        return PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=ep or ARGS.epochs,
                               input_size=ARGS.input_size, patience=7,
                               patch_contrast=ARGS.patch_contrast, random_state=seed, progress=progress,
                               n_threads=ARGS.threads)
    if kind == "vgg16-scratch":
        return PatchClassifier(backbone="vgg16", mode="finetune", weights=None, input_size=64,
                               max_epochs=ep or 30, learning_rate=1e-4, random_state=seed, patch_contrast=ARGS.patch_contrast, progress=progress, n_threads=ARGS.threads)
    if kind == "vgg16-random-head":
        return PatchClassifier(backbone="vgg16", mode="head", weights="random", input_size=64,
                               max_epochs=ep or 100, random_state=seed, patch_contrast=ARGS.patch_contrast, progress=progress, n_threads=ARGS.threads)
    raise SystemExit(f"unknown backbone config {kind!r}")


def evaluate(model, X, y, names):
    from sklearn.metrics import confusion_matrix

    from stemroi.models.calibration import expected_calibration_error, softmax

    logits = model.decision_function(X)
    pred = logits.argmax(1)
    yi = np.searchsorted(model.classes_, y)
    cm = confusion_matrix(yi, pred, labels=np.arange(len(names)))
    recall = cm.diagonal() / np.maximum(cm.sum(1), 1)
    return {
        "accuracy": float((pred == yi).mean()),
        "per_class_recall": {n: round(float(r), 4) for n, r in zip(names, recall)},
        "confusion_matrix": cm.tolist(),
        "ece_uncalibrated": expected_calibration_error(yi, softmax(logits)),
        "ece_calibrated": expected_calibration_error(yi, softmax(logits, model.temperature_)),
        "temperature": model.temperature_,
    }


def ablation(args):
    """cross-image protocol: PatchClassifier() (the default recipe; --ablation-epochs) trained on
    the CdTe spatial train side with each augment= value, measured on (a) the held-out patches (accuracy; AUROC of
    1 - P(Bulk), defect vs bulk), (b) the held-out patches under acquisition shifts (the same figures), (c) the
    768 x 768 frame (tile AUROC of 1 - P(Bulk), 19 region tiles vs 111 bulk tiles) and the shifted frame."""
    import _crossimage as ci
    from sklearn.metrics import roc_auc_score

    import stemroi

    X, y, names = load(ci.DATA / "CdTe")
    tr, te = (np.asarray(v) for v in stemroi.spatial_train_test_split(X, y, test_size=0.2, random_state=0))
    img = ci.cdte_frame()
    shifts = list(ci.SHIFTS)
    yte = np.asarray(y)[te]
    shifted = {name: ci.shift_patches(X[te], *ci.SHIFTS[name], seed=1) for name in shifts}
    print(f"== augmentation ablation, CdTe spatial split ({len(tr)} train, {len(te)} test); PatchClassifier() default "
          f"recipe, <= {args.ablation_epochs} epochs; shifts: {', '.join(shifts)}", flush=True)

    def figures(model, P, yy):
        proba = model.predict_proba(P)
        bulk = list(model.classes_).index(names.index("Bulk")) if np.asarray(y).dtype.kind in "iu" else list(
            model.classes_).index("Bulk")
        acc = float((model.classes_[proba.argmax(1)] == yy).mean())
        is_def = (yy != model.classes_[bulk]).astype(int)
        return acc, float(roc_auc_score(is_def, 1 - proba[:, bulk])), bulk

    def frame_auc(model, bulk, frame, anyreg, outside):
        origins, truth = ci.tile_truth(anyreg, outside)
        tiles = np.stack([frame[r:r + 64, c:c + 64] for r, c in origins])
        return ci.auroc(truth, 1 - model.predict_proba(tiles)[:, bulk])

    regions, outside = ci.reference_regions(img.shape)
    anyreg = np.any(list(regions.values()), axis=0)
    frames = {name: ci.shifted_frame_truth(img, *ci.SHIFTS[name]) for name in shifts}
    rows = []
    for wname, aug in ((w, a) for w in args.ablation_weights.split(",") for a in args.ablation.split(",")):
        value = "dihedral" if aug == "none" else "dihedral+" + aug
        # weights "stem": the shipped STEM-pretrained small_cnn, fine-tuned (head, then all blocks); the
        # epoch budget is per stage, so it gets at most twice the epochs of the from-scratch route
        kw = {} if args.ablation_backbone == "small_cnn" else dict(backbone="mobilenet_v2", mode="finetune", input_size=96)
        model = stemroi.PatchClassifier(augment=value, weights=None if wname == "none" else wname,
                                        max_epochs=args.ablation_epochs, random_state=args.seed,
                                        n_threads=args.threads, views=args.ablation_views, **kw)
        t0 = time.perf_counter()
        model.fit(X[tr], y[tr], class_names=names)
        fit_s = time.perf_counter() - t0
        acc, auc, bulk = figures(model, X[te], yte)
        b = {name: figures(model, P, yte)[:2] for name, P in shifted.items()}
        c = {"frame": frame_auc(model, bulk, img, anyreg, outside)}
        c.update({name: frame_auc(model, bulk, *frames[name]) for name in shifts})
        rows.append((value, acc, auc, b, c))
        print(f"   {args.ablation_backbone} weights {wname!r:6s} augment {value!r:28s} fit {fit_s:4.0f} s, {len(model.history_['epochs'])} epochs | (a) acc {acc:.3f} "
              f"AUROC {auc:.3f} | (b) shifted acc mean {np.mean([v[0] for v in b.values()]):.3f} min "
              f"{min(v[0] for v in b.values()):.3f}, AUROC mean {np.mean([v[1] for v in b.values()]):.3f} | (c) frame "
              f"{c['frame']:.3f}, shifted frame mean {np.mean([c[k] for k in shifts]):.3f} min "
              f"{min(c[k] for k in shifts):.3f}", flush=True)
        print("      (b) acc/AUROC " + ", ".join(f"{k} {v[0]:.3f}/{v[1]:.3f}" for k, v in b.items()))
        print("      (c) " + ", ".join(f"{k} {c[k]:.3f}" for k in shifts))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_out/classify")
    ap.add_argument("--quick", action="store_true", help="few epochs (smoke run)")
    ap.add_argument("--backbones", default="small_cnn", help="comma list: small_cnn, vgg16-random-head, vgg16-scratch")
    ap.add_argument("--datasets", default="CdTe,STO")
    ap.add_argument("--splits", default="spatial,random",
                    help="comma list: spatial (overlap-aware blocks, the honest one), random (leaky), "
                         "grouped (whole overlap groups: holds whole classes out on these sets)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--input-size", type=int, default=64, help="network input side (patches resized)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--patch-contrast", default="standardize", choices=("standardize", "none"))
    ap.add_argument("--roi-model", default=None, help="model file for the CdTe ROI map (default: train on all CdTe)")
    ap.add_argument("--ablation", default=None,
                    help="run only the augmentation ablation (cross-image protocol) with these augment= additions to "
                         "'dihedral', e.g. none,intensity,noise,blur,scale+rotate,acquisition")
    ap.add_argument("--ablation-epochs", type=int, default=15)
    ap.add_argument("--ablation-weights", default="none",
                    help="comma list of backbone starts for the ablation: none (from scratch), stem (pretrained)")
    ap.add_argument("--ablation-backbone", choices=("small_cnn", "mobilenet_v2"), default="small_cnn",
                    help="backbone of the ablation's PatchClassifier (mobilenet_v2 at 96 px)")
    ap.add_argument("--ablation-views", type=int, choices=(1, 4, 8), default=1,
                    help="PatchClassifier(views=): dihedral views averaged at prediction (MobileNetV2Classifier: 8)")
    args = ap.parse_args()
    if args.ablation:
        ablation(args)
        return
    global ARGS
    ARGS = args
    import matplotlib

    matplotlib.use("Agg")
    import stemroi
    from stemroi.plotting import plot_confusion_matrix, plot_rois, save_figure

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = data_dir("ayyubi-stem-defects")
    report = {"machine_note": "2-core machine; timings indicative only", "patch_contrast": args.patch_contrast, "results": []}
    cdte_models = {}
    for ds in args.datasets.split(","):
        X, y, names = load(d / ds)
        groups, gdesc = groups_of(X)
        print(f"\n=== {ds}: {len(X)} patches, {len(names)} classes {names}; {len(np.unique(groups))} {gdesc}")
        sp = splits(X, y, groups, args.seed)
        for kind in args.backbones.split(","):
            for split in [s for s in args.splits.split(",") if s]:
                tr, te = sp[split]
                shared = len(set(groups[tr]) & set(groups[te]))
                model = make_model(kind, args.quick, args.seed)
                t0 = time.perf_counter()
                # no overlap groups for the internal validation split: on these sets they are
                # whole classes (PatchClassifier would fall back to a stratified split anyway)
                model.fit(X[tr], y[tr], class_names=names,
                          data_description=f"{ds} patches, {split} split train side")
                fit_s = time.perf_counter() - t0
                r = evaluate(model, X[te], y[te], names)
                r.update({"dataset": ds, "split": split, "backbone": model.backbone_description_, "fit_time_s": round(fit_s, 1),
                          "n_train": int(len(tr)), "n_test": int(len(te)), "groups_on_both_sides": shared,
                          "epochs_run": len(model.history_["epochs"])})
                report["results"].append(r)
                print(f"--- {ds} | {kind} | {split} split (train {len(tr)}, test {len(te)}, groups shared {shared})")
                print(f"    backbone: {r['backbone']}")
                print(f"    accuracy {r['accuracy']:.4f}; ECE {r['ece_uncalibrated']:.4f} -> {r['ece_calibrated']:.4f} "
                      f"(T={r['temperature']:.2f}); fit {fit_s:.1f} s, {r['epochs_run']} epochs")
                print(f"    per-class recall: {r['per_class_recall']}")
                print("    confusion matrix (rows true, cols predicted):")
                for n, row in zip(names, r["confusion_matrix"]):
                    print(f"      {n:>14s} {row}")
                ax = plot_confusion_matrix(np.array(r["confusion_matrix"]), class_names=names,
                                           title=f"{ds} {kind} {split}: acc {r['accuracy']:.3f}")
                save_figure(ax, out / f"cm_{ds}_{kind}_{split}.png", dpi=150)
                import matplotlib.pyplot as plt

                plt.close("all")
                if ds == "CdTe" and split == "spatial":
                    cdte_models[kind] = model
        with open(out / "report.json", "w") as f:
            json.dump(report, f, indent=2)

    if "CdTe" in args.datasets:
        # ROI map of the large CdTe image with a model trained on all CdTe patches
        X, y, names = load(d / "CdTe")
        groups, _ = groups_of(X)
        kind = args.backbones.split(",")[0]
        if args.roi_model:
            model = stemroi.PatchClassifier.load(args.roi_model)
        else:
            model = make_model(kind, args.quick, args.seed)
            model.fit(X, y, class_names=names, data_description="all CdTe patches")
            model.save(out / f"cdte_{kind}.stemroi")
        from stemroi import read_image

        img = read_image(str(d / "CdTe_Training_Image.tif"))
        res = stemroi.detect(img, model, patch=64, stride=64, unknown_below=0.4)
        res.to_json(out / "cdte_768_rois.json")
        res.to_csv(out / "cdte_768_rois.csv")
        ax = plot_rois(img, res, title=f"CdTe 768x768 ({kind}): {int(res.is_roi.sum())} of {len(res)} tiles flagged")
        save_figure(ax, out / "cdte_768_rois.png", dpi=150)
        print(f"\n=== CdTe 768 x 768 image, {kind} trained on all CdTe patches: counts {res.counts()}, "
              f"{int(res.is_roi.sum())} of {len(res)} tiles flagged; overlay {out / 'cdte_768_rois.png'}")
        report["cdte_768"] = {"counts": res.counts(), "n_roi": int(res.is_roi.sum()), "n_tiles": len(res),
                              "overlay": str(out / "cdte_768_rois.png"), "backbone": model.backbone_description_}
        with open(out / "report.json", "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
