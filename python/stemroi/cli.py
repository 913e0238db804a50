"""The ``stemroi`` command line: ``train``, ``detect``, ``demo``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stemroi", description="Regions of interest in atomic-resolution STEM images")
    p.add_argument("--version", action="version", version=f"stemroi {__import__('stemroi').__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the main job on a synthetic STEM image (offline)")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--size", type=int, default=768, help="synthetic image size in pixels (default 768)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")

    tr = sub.add_parser("train", help="train a patch classifier on a folder of labelled patches")
    tr.add_argument("patch_folder", help="folder of patches named <class>_<n>.tif (the CdTe / STO layout)")
    tr.add_argument("--out", required=True, help="model file to write")
    tr.add_argument("--backbone", default="small_cnn", choices=["small_cnn", "vgg16", "mobilenet_v2"])
    tr.add_argument("--mode", default="finetune", choices=["finetune", "head"])
    tr.add_argument("--weights", default="auto", help="auto | random | imagenet | imagenet-keras | PATH")
    tr.add_argument("--input-size", type=int, default=None, help="backbone input side (default 64; 224 for VGG16 head)")
    tr.add_argument("--epochs", type=int, default=None, help="max epochs per stage")
    tr.add_argument("--validation-fraction", type=float, default=0.15)
    tr.add_argument("--no-overlap-groups", action="store_true",
                    help="group only exact duplicates for the validation split (faster, leakier)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--quiet", action="store_true")

    de = sub.add_parser("detect", help="classify the tiles of images and write ROI overlays, JSON and CSV")
    de.add_argument("images", nargs="+", help="image files (TIFF, PNG, JPEG, ...)")
    de.add_argument("--model", required=True, help="model file from `stemroi train`")
    de.add_argument("--out", required=True, help="output folder")
    de.add_argument("--patch", type=int, default=None, help="tile size (default: the model's patch size)")
    de.add_argument("--stride", type=int, default=None, help="tile stride (default: the tile size)")
    de.add_argument("--unknown-below", type=float, default=0.4)
    de.add_argument("--batch-size", type=int, default=256)
    de.add_argument("--no-plot", action="store_true")
    de.add_argument("--quiet", action="store_true")
    return p


def _read_image(path: str) -> np.ndarray:
    try:
        from .io import read_image  # data area
    except ImportError:
        read_image = None
    if read_image is not None:
        return read_image(path)
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32).mean(-1)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


def _load_patch_folder(folder: str):
    from .datasets import load_patch_folder

    ds = load_patch_folder(folder)
    return ds.patches, ds.labels, list(ds.class_names)


def _groups(patches: np.ndarray, exact_only: bool):
    from .classifier import duplicate_groups

    if not exact_only:
        try:
            from .grouping import overlap_groups  # data area
        except ImportError:
            overlap_groups = None
        if overlap_groups is not None:
            return overlap_groups(patches), "overlap groups"
    return duplicate_groups(patches), "exact-duplicate groups"


def cmd_train(args) -> int:
    from .classifier import PatchClassifier

    patches, labels, class_names = _load_patch_folder(args.patch_folder)
    groups, gdesc = _groups(patches, args.no_overlap_groups)
    say = (lambda *a: None) if args.quiet else print
    say(f"stemroi train: {len(patches)} patches, {len(class_names)} classes ({', '.join(class_names)}), "
        f"{len(np.unique(groups))} {gdesc}")
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=0, unit="epoch", desc="training", leave=True)

    def progress(done, total):
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    model = PatchClassifier(backbone=args.backbone, mode=args.mode, weights=args.weights, input_size=args.input_size,
                            max_epochs=args.epochs, validation_fraction=args.validation_fraction,
                            random_state=args.seed, n_threads=args.threads, progress=progress)
    model.fit(patches, labels, groups=groups, class_names=class_names,
              data_description=f"{args.patch_folder}: {len(patches)} patches, {gdesc} for validation")
    if bar is not None:
        bar.close()
    model.save(args.out)
    va = model.validation_accuracy_
    say(f"  {model.backbone_description_}; validation accuracy (held-out groups) "
        f"{'n/a' if va is None else f'{va:.4f}'}; ECE {model.ece_before_} -> {model.ece_after_}; "
        f"{model.fit_time_:.1f} s")
    say(f"  wrote {args.out}")
    return 0


def cmd_detect(args) -> int:
    from .classifier import PatchClassifier
    from .detection import detect

    model = PatchClassifier.load(args.model)
    patch = args.patch or int(model.patch_shape_[0])
    stride = args.stride or patch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) not found: {', '.join(missing)}")
    from tqdm import tqdm

    files_bar = tqdm(args.images, unit="image", desc="images", disable=args.quiet or len(args.images) < 2)
    batch_bar = tqdm(total=0, unit="tile", desc="tiles", leave=False, disable=args.quiet)
    summaries = {}
    for path in files_bar:
        image = _read_image(path)
        batch_bar.reset(total=0)

        def progress(done, total):
            batch_bar.total = total
            batch_bar.n = done
            batch_bar.refresh()

        result = detect(image, model, patch=patch, stride=stride, unknown_below=args.unknown_below,
                        batch_size=args.batch_size, progress=progress)
        stem = Path(path).stem
        result.metadata["source"] = str(path)
        result.to_json(out / f"{stem}_rois.json")
        result.to_csv(out / f"{stem}_rois.csv")
        if not args.no_plot:
            import matplotlib.pyplot as plt

            from .plots import plot_rois, save_figure

            ax = plot_rois(image, result, title=f"{Path(path).name}: {int(result.is_roi.sum())} of {len(result)} tiles")
            save_figure(ax, out / f"{stem}_rois.png")
            plt.close(ax.figure)
        summaries[str(path)] = result.summary()
        if not args.quiet:
            tqdm.write(f"{path}: {result.counts()}")
    batch_bar.close()
    from ._atomic import atomic_open

    with atomic_open(out / "summary.json", "w") as f:
        json.dump(summaries, f, indent=2)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            run_demo(out=args.out, size=args.size, seed=args.seed, n_threads=args.threads)
            return 0
        if args.command == "train":
            return cmd_train(args)
        if args.command == "detect":
            return cmd_detect(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"stemroi {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stemroi {args.command}: interrupted", file=sys.stderr)
        return 130
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
