"""The ``stemroi`` command line: ``train``, ``detect``, ``cluster``, ``anomaly``,
``segment``, ``info`` and ``demo``.

Every mapping command writes to an ``--out`` folder, per image ``<stem>_rois.png``
(the figure), ``<stem>_rois.json`` and ``<stem>_rois.csv`` (one row per tile,
:class:`stemroi.ROIResult`), and a ``summary.json`` of the run; every file is
written atomically. Models are stemroi's safe model files. Bad input (a missing
file, an out-of-range option, a model of another kind) ends with exit status 2
and one line on stderr naming the bad value, never a traceback. In a batch of
images (a folder stands for its image files, a stack for its frames), one that
cannot be read or mapped is skipped with its error recorded in
``summary.json`` (rewritten after every image, so an interrupted run keeps what
it did); the run ends with exit status 1 when some images failed, 2 when all did.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

#: architecture field of each model file kind -> (estimator, the command that makes it)
MODEL_KINDS = {
    "stemroi.PatchClassifier": ("PatchClassifier (supervised patch classifier)", "stemroi train"),
    "stemroi.FewLabelClassifier": ("FewLabelClassifier (patch classifier from a few labels)",
                                   "stemroi train --few-label"),
    "cvae": ("BulkCVAE (CVAE anomaly model)", "stemroi anomaly --train"),
    "unet_multilabel": ("DefectSegmenter (U-Net per-class maps)", "stemroi segment --train"),
}
CLASSIFIER, FEW_LABEL, CVAE, UNET = "stemroi.PatchClassifier", "stemroi.FewLabelClassifier", "cvae", "unet_multilabel"

#: ``stemroi cluster --features`` names -> PatchClusterer descriptor names ("vgg16": stemroi.VGG16Features)
CLUSTER_FEATURES = {"lattice_residual": "lattice_residual",
                    "lattice_residual_invariant": "lattice_residual_invariant",
                    "lattice_residual_invariant_local": "lattice_residual_invariant_local",
                    "lattice_residual_tukey": "lattice_residual_tukey",
                    "fft": "fft", "log_fft": "log_fft", "polar": "polar_fft", "polar_fft": "polar_fft", "vgg16": "vgg16"}


class UsageError(Exception):
    """A bad command line value found after parsing (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (exit status 2)."""

    def error(self, message):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _fraction(low_open: bool = True, high_open: bool = True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = (0 < value if low_open else 0 <= value) and (value < 1 if high_open else value <= 1)
        if not ok:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"must be in {lo}0, 1{hi}, got {text}")
        return value

    parse.__name__ = "fraction"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


class _PixelSizeAction(argparse.Action):
    """``--pixel-size VALUE UNIT``, checked once as it is parsed: ``args.pixel_size`` is the
    ``_pixel_record`` ``{"pixel_size", "unit"}`` (None when not given)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .io._readers import _UNIT_METRES

        text, unit = values
        try:
            value = _positive_float(text)
        except argparse.ArgumentTypeError as e:
            parser.error(f"--pixel-size {text} {unit}: the value {e}")
        if unit.strip().lower() not in _UNIT_METRES or unit.strip().lower() in ("inch", "cm", "mm", "m"):
            parser.error(f"--pixel-size {text} {unit}: unknown unit {unit!r}; expected nm, A, pm or um")
        setattr(namespace, self.dest, {"pixel_size": value, "unit": unit.strip()})


def _add_pixel_size(parser, what: str, mapped: bool = True) -> None:
    more = (" A file's own calibration wins. When the model and an image both have one and they differ by more "
            "than 1 %%, the image is resampled to the model's pixel size and the results are reported on its own "
            "pixel grid") if mapped else ""
    parser.add_argument("--pixel-size", nargs=2, metavar=("VALUE", "UNIT"), default=None, action=_PixelSizeAction,
                        help=f"pixel size {what}, e.g. 0.02 nm (units: nm, A, pm, um).{more}")


def _add_parser(sub, name: str, help: str, example: str, writes: str = "") -> argparse.ArgumentParser:
    """A subcommand whose --help ends with example invocations (and what it writes)."""

    def block(title: str, text: str) -> str:
        return f"{title}:\n" + "\n".join(f"  {line}" if line else "" for line in text.strip().splitlines())

    epilog = block("examples" if "\n" in example.strip() else "example", example)
    if writes:
        epilog += "\n\n" + block("writes", writes)
    return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="stemroi", description="Regions of interest in atomic-resolution STEM images",
                epilog="`stemroi COMMAND --help` shows each command's options and an example.")
    p.add_argument("--version", action="version", version=f"stemroi {__import__('stemroi').__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _add_parser(sub, "demo", "run the main job on a synthetic STEM image (offline)",
                       "stemroi demo --size 512 --out demo_out")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--size", type=int, default=768, help="synthetic image size in pixels (default 768)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=_int_at_least(1), default=None, help="threads (default: all cores)")

    tr = _add_parser(sub, "train", "train a patch classifier on a folder of labelled patches",
                     "stemroi train data/CdTe --out cdte.stemroi --backbone small_cnn --epochs 20\n"
                     "stemroi train ten_per_class/ --few-label --unlabelled frame.tif --out few.stemroi")
    tr.add_argument("patch_folder", help="folder of patches named <class>_<n>.tif (the CdTe / STO layout), "
                    "or with one subfolder of patches per class (<class>/<file>.tif)")
    tr.add_argument("--out", required=True, help="model file to write")
    tr.add_argument("--backbone", default="small_cnn", choices=["small_cnn", "vgg16", "mobilenet_v2"])
    tr.add_argument("--mode", default="finetune", choices=["finetune", "head"])
    tr.add_argument("--weights", default="auto",
                    help="auto (ImageNet when cached; mobilenet_v2: else its STEM weights; small_cnn: from scratch) "
                         "| stem (pretrained on synthetic STEM, shipped) | random | imagenet | imagenet-keras | PATH")
    tr.add_argument("--input-size", type=int, default=None, help="backbone input side (default 64; 224 for VGG16 head)")
    tr.add_argument("--epochs", type=_int_at_least(1), default=None, help="max epochs per stage")
    tr.add_argument("--validation-fraction", type=float, default=0.15)
    tr.add_argument("--no-overlap-groups", action="store_true",
                    help="group only exact duplicates for the validation split (faster, leakier)")
    tr.add_argument("--few-label", action="store_true",
                    help="FewLabelClassifier, for ~10 labelled patches per class: frozen lattice_residual and "
                         "STEM features, dihedral views, a linear head (--backbone, --mode, --weights, --input-size "
                         "and the validation split do not apply)")
    tr.add_argument("--unlabelled", nargs="+", default=None, metavar="PATH",
                    help="with --few-label: unlabelled data for self-training, image files (of a stack, every "
                         "frame) or folders of them; each image is tiled at the labelled patch size (a "
                         "patch-sized file is one patch). Never the patches you will measure accuracy on")
    tr.add_argument("--student", choices=["small_cnn", "none"], default=None,
                    help="with --few-label and --unlabelled: after self-training, a small_cnn fine-tuned from the "
                         "STEM weights on the labelled and pseudo-labelled patches predicts with the linear head, "
                         "the mean of their probabilities (none: the head alone; default: FewLabelClassifier's)")
    _add_pixel_size(tr, "of the patches, recorded in the model (`stemroi detect` then resamples a calibrated "
                        "image at another pixel size to it)", mapped=False)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=_int_at_least(1), default=None, help="threads (default: all cores)")
    tr.add_argument("--quiet", action="store_true")

    de = _add_parser(sub, "detect", "classify the tiles of images and write ROI overlays, JSON and CSV",
                     "stemroi detect frame1.tif frame2.tif --model cdte.stemroi --out rois/",
                     "<stem>_rois.png (overlay), <stem>_rois.json/.csv (one row per tile), summary.json")
    de.add_argument("images", nargs="+", help="image files (TIFF, PNG, JPEG, ...) or folders of them")
    de.add_argument("--model", required=True, help="model file from `stemroi train`")
    de.add_argument("--out", required=True, help="output folder")
    de.add_argument("--patch", type=_int_at_least(16), default=None, help="tile size (default: the model's patch size)")
    de.add_argument("--stride", type=_int_at_least(1), default=None, help="tile stride (default: the tile size)")
    de.add_argument("--unknown-below", type=_fraction(False, False), default=0.4,
                    help="a tile whose top class probability is below this is called 'unknown' (default 0.4)")
    de.add_argument("--batch-size", type=_int_at_least(1), default=256, help="tiles per forward pass (default 256)")
    _add_pixel_size(de, "of every image whose file records none")
    de.add_argument("--threads", type=_int_at_least(1), default=None, help="threads (default: all cores)")
    de.add_argument("--no-plot", action="store_true", help="write no overlay PNG")
    de.add_argument("--quiet", action="store_true", help="no progress bars or per-image lines")

    cl = _add_parser(
        sub, "cluster", "label-free ROI discovery: cluster the tiles of images or a folder of patches",
        "stemroi cluster frame.tif --out clusters/ --features lattice_residual --k-min 2 --k-max 10\n"
        "stemroi cluster series/*.tif --out series_clusters/   # the tiles of all frames, one clustering\n"
        "stemroi cluster data/STO --out sto_clusters/   # a labelled folder: SrTiO3 k = 4 of 4 kinds, accuracy 0.944",
        "for an image: <stem>_rois.png (cluster map), <stem>_rois.json/.csv (one row per tile);\n"
        "for both: silhouette.png (silhouette vs k), montage.png (examples per cluster), summary.json (chosen k,\n"
        "silhouettes); for a patch folder: clusters.csv (file, class, cluster) and, in summary.json, the cluster\n"
        "accuracy against the class names of the files.")
    cl.add_argument("input", metavar="IMAGE_OR_PATCH_FOLDER", nargs="+",
                    help="image files (their tiles pooled into one clustering, a map per image), or one folder "
                         "of patches (<class>_<n>.tif, or <class>/<file>.tif)")
    cl.add_argument("--out", required=True, help="output folder")
    cl.add_argument("--features", default=None, choices=list(CLUSTER_FEATURES),
                    help="patch descriptor (default: lattice_residual for images, the descriptor of the ROI maps; "
                         "lattice_residual_tukey for a patch folder, as PatchClusterer(): lattice_residual with "
                         "Tukey windows in its spectra, so defects and interfaces at the tile's border count; "
                         "lattice_residual_invariant = lattice_residual, "
                         "rotation-invariant, for lattices at several angles; lattice_residual_invariant_local = "
                         "that, with the residual's spectrum windowed on the defect wherever it sits in the tile; "
                         "vgg16 = VGG16 block5 average-pooled features)")
    cl.add_argument("--weights", default="imagenet-keras",
                    help="VGG16 weights for --features vgg16: imagenet-keras (default) | imagenet | random | PATH")
    cl.add_argument("--input-size", type=_int_at_least(32), default=224,
                    help="side the patches are resized to for --features vgg16 (default 224)")
    cl.add_argument("--algorithm", default="kmeans", choices=["kmeans", "average_linkage"],
                    help="kmeans (default) or average_linkage (one tree cut at every k; at most 16384 tiles)")
    cl.add_argument("--k-rule", default="auto", choices=["auto", "silhouette", "silhouette_1se", "agreement"],
                    help="how k is chosen: auto (default: agreement with --features lattice_residual_tukey and "
                         "--algorithm kmeans, silhouette otherwise), silhouette (the best mean silhouette; more clusters, each "
                         "rarely mixing defect types), silhouette_1se (the fewest clusters within one standard "
                         "deviation of the best silhouette over 80 %% subsamples: the closer estimate of the "
                         "number of defect types, docs/clustering.md) or agreement (the largest k at which the "
                         "clustering agrees with that of lattice_residual_invariant_local, adjusted Rand index "
                         ">= 0.9, its mean over three K-means seeds; if that is k = 2, the silhouette decides; "
                         "with --features lattice_residual_tukey: CdTe k = 7, 0.979, SrTiO3 k = 4, 0.944); "
                         "--algorithm kmeans only")
    cl.add_argument("--roi", default="score", choices=["score", "cluster"],
                    help="which tiles of an image are flagged: score (default: distance to the image's median tile "
                         "embedding above median + --roi-threshold robust SDs) or cluster (not the bulk cluster)")
    cl.add_argument("--roi-threshold", type=_positive_float, default=2.0,
                    help="robust standard deviations above the image's median score for --roi score (default 2)")
    cl.add_argument("--k-min", type=_int_at_least(2), default=2, help="smallest number of clusters (default 2)")
    cl.add_argument("--k-max", type=_int_at_least(2), default=None,
                    help="largest number of clusters (default 10, or one less than the number of tiles or "
                         "patches when there are 10 or fewer)")
    cl.add_argument("--patch", type=_int_at_least(8), default=64, help="tile size for an image (default 64)")
    cl.add_argument("--stride", type=_int_at_least(1), default=None, help="tile stride for an image (default: --patch)")
    cl.add_argument("--pattern", default="*.tif", help="file pattern of a patch folder (default *.tif)")
    cl.add_argument("--seed", type=int, default=0)
    cl.add_argument("--threads", type=_int_at_least(1), default=None, help="threads (default: all cores)")
    cl.add_argument("--no-plot", action="store_true")
    cl.add_argument("--quiet", action="store_true")

    an = _add_parser(
        sub, "anomaly", "train a CVAE on a bulk image and map the anomalies of other images",
        "stemroi anomaly --train bulk.tif --model-out bulk_cvae.stemroi frame1.tif frame2.tif --out anomalies/\n"
        "stemroi anomaly --model bulk_cvae.stemroi frame3.tif --out anomalies/",
        "<stem>_rois.png (anomaly overlay), <stem>_rois.json/.csv (one row per crop, flagged 'Anomaly' or\n"
        "'Bulk'), summary.json; with --train the model (default <out>/model.stemroi).")
    an.add_argument("images", nargs="*", metavar="IMAGE", help="images to map (files, or folders of them)")
    src = an.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", metavar="BULK_IMAGE",
                     help="train a new model on random crops of this defect-free image")
    src.add_argument("--model", help="a model file from `stemroi anomaly --train`")
    an.add_argument("--model-out", help="where --train writes the model (default: <out>/model.stemroi)")
    an.add_argument("--out", help="output folder (needed with IMAGE)")
    an.add_argument("--epochs", type=_int_at_least(1), default=16, help="training epochs (default 16)")
    an.add_argument("--crops", type=_int_at_least(2), default=1000, help="random training crops (default 1000)")
    an.add_argument("--crop", type=_int_at_least(16), default=64, help="crop side, a multiple of 8 (default 64)")
    an.add_argument("--variant", default="dataset_repo", choices=["dataset_repo", "study"],
                    help="network (default dataset_repo: the study's variant can stay at the mean image)")
    an.add_argument("--learning-rate", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    an.add_argument("--energy-window", type=_int_at_least(1), default=9,
                    help="box of the local RMS residual in pixels (default 9)")
    an.add_argument("--energy-quantile", type=_fraction(), default=0.95,
                    help="bulk quantile of the anomaly threshold (default 0.95)")
    an.add_argument("--stride", type=_int_at_least(1), default=32, help="crop stride of the map (default 32)")
    _add_pixel_size(an, "of the training frame (recorded in the model) and of every image to map, where the file "
                        "records none")
    an.add_argument("--seed", type=int, default=0)
    an.add_argument("--threads", type=_int_at_least(1), default=None, help="threads (default: all cores)")
    an.add_argument("--no-plot", action="store_true")
    an.add_argument("--quiet", action="store_true")

    se = _add_parser(
        sub, "segment", "train a U-Net on labelled patches and map each defect class in images",
        "stemroi segment --train data/STO --model-out sto_unet.stemroi frame.tif --out maps/\n"
        "stemroi segment --model sto_unet.stemroi frame2.tif --out maps/",
        "<stem>_rois.png (one heatmap per class), <stem>_rois.json/.csv (one row per tile, the largest\n"
        "probability of each class), summary.json; with --train the model (default <out>/model.stemroi).")
    se.add_argument("images", nargs="*", metavar="IMAGE", help="images to map (files, or folders of them)")
    src = se.add_mutually_exclusive_group(required=True)
    src.add_argument("--train", metavar="PATCH_FOLDER",
                     help="train a new model on this folder of patches (<class>_<n>.tif, or <class>/<file>.tif)")
    src.add_argument("--model", help="a model file from `stemroi segment --train`")
    se.add_argument("--model-out", help="where --train writes the model (default: <out>/model.stemroi)")
    se.add_argument("--out", help="output folder (needed with IMAGE)")
    se.add_argument("--pattern", default="*.tif", help="file pattern of the patch folder (default *.tif)")
    se.add_argument("--bulk-class", default="Bulk", help="the defect-free class of the patches (default Bulk)")
    se.add_argument("--recipe", default="default", choices=["default", "study"],
                    help="training recipe: 'default' (the best measured: CVAE-residual pseudo-labels, base 8, "
                         "60 epochs, Adam 1e-3) or 'study' (the segmentation study's settings); the options "
                         "below override single values")
    se.add_argument("--pseudo-label", default=None, choices=["cvae", "lattice", "deviation"],
                    help="pixel labels of the defect patches (default: the recipe's, cvae)")
    se.add_argument("--epochs", type=_int_at_least(1), default=None, help="training epochs (default: the recipe's, 60)")
    se.add_argument("--samples-per-epoch", type=_int_at_least(1), default=None,
                    help="composed training samples per epoch (default: the recipe's, 256)")
    se.add_argument("--base-channels", type=_int_at_least(1), default=None,
                    help="U-Net width (default: the recipe's, 8)")
    se.add_argument("--learning-rate", type=_positive_float, default=None,
                    help="Adam learning rate (default: the recipe's, 1e-3)")
    se.add_argument("--patch", type=_int_at_least(8), default=None,
                    help="tile size of the rows (default: the training patch)")
    se.add_argument("--stride", type=_int_at_least(1), default=None, help="tile stride of the rows (default: --patch)")
    se.add_argument("--threshold", type=_fraction(False, False), default=0.5,
                    help="probability that makes a tile a defect of a class (default 0.5)")
    _add_pixel_size(se, "of the training patches (recorded in the model) and of every image to map, where the "
                        "file records none")
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--threads", type=_int_at_least(1), default=None, help="threads (default: all cores)")
    se.add_argument("--no-plot", action="store_true")
    se.add_argument("--quiet", action="store_true")

    inf = _add_parser(sub, "info", "print the model card of a stemroi model file",
                      "stemroi info cdte.stemroi\nstemroi info bulk_cvae.stemroi --json > card.json")
    inf.add_argument("model", metavar="MODEL", help="a stemroi model file")
    inf.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    return p


# --------------------------------------------------------------------------- shared helpers
def _load_patch_folder(folder: str, pattern: str = "*.tif"):
    from .io.patch_folders import load_patch_folder

    ds = load_patch_folder(folder, pattern)
    return ds.patches, ds.labels, list(ds.class_names)


def _groups(patches: np.ndarray, exact_only: bool):
    from .model_selection import overlap_groups
    from .models.classifier import duplicate_groups

    if exact_only:
        return duplicate_groups(patches), "exact-duplicate groups"
    return overlap_groups(patches), "overlap groups"


def _check_files(paths: Sequence[str], what: str = "image file") -> None:
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError(f"{what}{'s' if len(missing) > 1 else ''} not found: {', '.join(missing)}")


def _check_parents(p: Path, option: str) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option} {p}: {parent} is a file, not a folder")
            return


def _check_out_dir(path, option: str = "--out") -> None:
    """An output folder must be a folder or creatable (checked before any work, so training is not lost)."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {path}: exists and is not a folder; give a folder for the outputs")
    _check_parents(p, option)


def _check_out_file(path, option: str, example: str = "model.stemroi") -> None:
    """An output file must not be a folder, nor sit under a path that is a file (checked before training)."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file name, such as {p / example}")
    _check_parents(p, option)


def _check_folder(path: str, option: str) -> None:
    if not Path(path).is_dir():
        raise UsageError(f"{option} {path}: not a folder" if Path(path).exists() else f"{option} {path}: not found")


def _model_architecture(path, option: str = "--model") -> str:
    """The ``architecture`` field of a model file, read from its header only
    (the full load verifies the hashes)."""
    from .io.model_file import _decode_metadata

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{option} {path}: model file not found")
    try:
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= min(p.stat().st_size - 8, 1 << 28):
                raise ValueError
            header = json.loads(f.read(n))
        meta = _decode_metadata(header.get("__metadata__", {}))
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise UsageError(f"{option} {path}: not a stemroi model file") from None
    arch = meta.get("architecture")
    if not isinstance(arch, str):
        raise UsageError(f"{option} {path}: not a stemroi model file (no architecture recorded)")
    return arch


def _require_model(path, expected, command: str, option: str = "--model") -> str:
    """The architecture of the model file at ``path``, one of ``expected`` (a name or a tuple)."""
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    arch = _model_architecture(path, option)
    if arch not in expected:
        what = MODEL_KINDS.get(arch, (f"{arch!r}", None))[0]
        wants = " or ".join(f"a {MODEL_KINDS[e][0]} model (architecture {e!r}, from `{MODEL_KINDS[e][1]}`)"
                            for e in expected)
        raise UsageError(f"{option} {path} is a {what} model; stemroi {command} needs {wants}")
    return arch


def _output_stems(paths: Sequence[str]) -> List[str]:
    """File stems for the outputs, made unique when two inputs share a name."""
    stems = [Path(p).stem for p in paths]
    seen: Dict[str, int] = {}
    out = []
    for s in stems:
        if stems.count(s) > 1:
            seen[s] = seen.get(s, 0) + 1
            s = f"{s}_{seen[s]}"
        out.append(s)
    return out


def _progress_bar(quiet: bool, desc: str, unit: str, leave: bool = False):
    """A tqdm bar and a ``progress(done, total)`` callback that drives it."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit=unit, desc=desc, leave=leave, disable=quiet)

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


def _say(args) -> Callable[[str], None]:
    if args.quiet:
        return lambda *a: None
    from tqdm import tqdm

    return lambda msg: tqdm.write(msg, file=sys.stderr)


def _write_json(path: Path, doc: Any) -> None:
    from ._atomic import atomic_open
    from .detection.roi import _json_default

    with atomic_open(path, "w") as f:
        json.dump(doc, f, indent=2, default=_json_default)


def _save_plot(fig, path: Path, dpi: int = 150) -> None:
    import matplotlib.pyplot as plt

    from .plotting import save_figure

    save_figure(fig, path, dpi=dpi)
    plt.close(fig)


def _write_result(result, out: Path, stem: str, source: str) -> List[str]:
    result.metadata["source"] = str(source)
    result.to_json(out / f"{stem}_rois.json")
    result.to_csv(out / f"{stem}_rois.csv")
    return [f"{stem}_rois.json", f"{stem}_rois.csv"]


#: per-image errors a batch records and goes past (bad input); anything else stops the run
_IMAGE_ERRORS = (UsageError, ValueError, TypeError, OSError)


def _frames_of(path, stem: str, fallback=None):
    """``(key, stem, image, calibration)`` of each frame in ``path``: the image itself, or, for a stack
    (a series saved as one TIFF / NPY / microscope file), each frame as ``path[i]`` / ``stem_frame<i>``
    (``calibration``: the ``_pixel_record`` of the file, which a stack's frames share, else ``fallback``:
    the ``--pixel-size`` given)."""
    from .io import StackOfFramesError, iter_frames

    try:
        image, pixel = _read_calibrated(path)
    except StackOfFramesError as exc:
        width, pixel = len(str(exc.n_frames - 1)), _pixel_record(exc.calibration) or fallback
        return ((f"{path}[{i}]", f"{stem}_frame{i:0{width}d}", frame, pixel)
                for i, frame in enumerate(iter_frames(path)))
    return iter([(str(path), stem, image, pixel or fallback)])


# More than this share of an image's tiles unlike the model's training data (the models are calibrated to
# call 1 % of their own data so) says the image itself differs: another material, contrast or pixel size.
UNFAMILIAR_WARN_SHARE = 0.5


def _warn_if_unfamiliar(args, key: str, record: Dict[str, Any]) -> None:
    """Warn (stderr, also with --quiet, and in the record) when most tiles of an image are unfamiliar."""
    from tqdm import tqdm

    n, u = record.get("n_tiles"), record.get("n_unfamiliar")
    if not n or u is None or u <= UNFAMILIAR_WARN_SHARE * n:
        return
    record["warning"] = (f"{u} of {n} tiles are unfamiliar (their features are unlike the model's training data, "
                         "which it calls so for 1 % of its own): their labels are not to be trusted; is this "
                         "another material, contrast (bright- or dark-field), pixel size or noise level than the "
                         "training data? (docs/unfamiliar.md)")
    tqdm.write(f"stemroi {args.command}: warning: {key}: {record['warning']}", file=sys.stderr)


def _map_batch(args, paths: Sequence[str], stems: Sequence[str], map_one: Callable[..., Dict[str, Any]],
               write_summary: Callable[[Dict[str, Any]], None]) -> int:
    """Run ``map_one(image, key, stem, pixel)`` over every frame of the images, recording each result
    (or error) by ``key`` (the path, or ``path[i]`` for frame i of a stack); ``pixel`` is the file's
    ``_pixel_record`` (None when it records no pixel size).

    One bad image in a batch (corrupt, too small) must not lose the images after it: it is
    skipped with its error in the summary, which is rewritten after every frame so an interrupt
    or crash keeps what was done. Returns the exit status: 0, 1 when some failed, 2 when all did.
    A single 2-D image that fails raises, as any other bad input.
    """
    from tqdm import tqdm

    records: Dict[str, Any] = {}
    failed: List[str] = []

    def record_error(key: str, exc: BaseException) -> None:
        message = _one_line(exc)
        records[key] = {"error": message}
        failed.append(key)
        named = message if key in message else f"{key}: {message}"
        tqdm.write(f"stemroi {args.command}: skipped {named}", file=sys.stderr)

    bar = tqdm(paths, unit="image", desc="images", disable=args.quiet or len(paths) < 2)
    for path, stem in zip(bar, stems):
        single = len(paths) == 1
        try:
            frames = _frames_of(str(path), stem, args.pixel_size)
        except _IMAGE_ERRORS as exc:  # the file cannot be read
            if single:
                raise
            record_error(str(path), exc)
            write_summary(records)
            continue
        n_done = 0
        while True:
            try:
                key, frame_stem, image, pixel = next(frames)
            except StopIteration:
                break
            except _IMAGE_ERRORS as exc:  # a frame of a stack cannot be read: the rest of the file neither
                record_error(f"{path}[{n_done}]", exc)
                write_summary(records)
                break
            n_done += 1
            try:
                records[key] = map_one(image, key, frame_stem, pixel)
                _warn_if_unfamiliar(args, key, records[key])
            except _IMAGE_ERRORS as exc:
                if single and key == str(path):  # one 2-D image: bad input, status 2
                    raise
                record_error(key, exc)
            write_summary(records)
    bar.close()
    if failed:
        print(f"stemroi {args.command}: {len(failed)} of {len(records)} images failed and were skipped "
              f"({', '.join(Path(p).name for p in failed[:5])}{', ...' if len(failed) > 5 else ''}); "
              "their errors are in summary.json", file=sys.stderr)
        return 2 if len(failed) == len(records) else 1  # nothing mapped: as any bad input
    return 0


def _model_record(path) -> Dict[str, str]:
    from .io.model_file import file_sha256

    return {"path": str(path), "sha256": file_sha256(path)}


def _read_calibrated(path):
    from .io import read_image_with_calibration

    image, cal = read_image_with_calibration(path)
    return image, _pixel_record(cal)


def _pixel_record(cal):
    """The pixel size as recorded in summaries: ``{"pixel_size", "unit"}``, None when unknown."""
    return None if cal.pixel_size is None else {"pixel_size": float(cal.pixel_size), "unit": cal.unit}


def _image_pixel_size(model, pixel):
    """The ``pixel_size=`` to map an image with: its file's pixel size when the model records one
    (the detectors then resample the image to the model's pixel size when the two differ by more
    than 1 %), else None. A model without one (trained on a patch folder, or on an uncalibrated
    frame) uses every image as it is, without a warning per image."""
    from .preprocessing._resample import model_pixel_size

    return pixel if model_pixel_size(model).known else None


def _with_resampling(record: Dict[str, Any], result, pixel) -> Dict[str, Any]:
    """``record`` plus the image's pixel size (``calibration``: its file's, or ``--pixel-size``) and,
    when the model records one, what the detector decided (``resampling``)."""
    record["calibration"] = pixel
    meta = result.metadata
    if meta.get("model_pixel_size") is not None:
        record["resampling"] = {k: meta.get(k) for k in ("resampled", "scale", "model_pixel_size",
                                                         "image_pixel_size")}
    return record


def _note_pixel_size_unused(args, model) -> None:
    """--pixel-size with a model that records none changes nothing: say so rather than ignore it."""
    from .preprocessing._resample import model_pixel_size

    if args.pixel_size is not None and not model_pixel_size(model).known:
        print(f"stemroi {args.command}: note: the model records no pixel size, so --pixel-size "
              f"{args.pixel_size['pixel_size']:g} {args.pixel_size['unit']} changes nothing (images are used as they are); a model trained "
              "with --pixel-size or on a calibrated frame resamples images to its own", file=sys.stderr)


def _expand_images(paths: Sequence[str]) -> List[str]:
    """Image arguments with every folder replaced by its image files (sorted, not recursive)."""
    from .io._readers import SUPPORTED_SUFFIXES

    out: List[str] = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            out.append(str(p))
            continue
        files = sorted(str(f) for f in path.iterdir() if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
                       and not f.name.startswith("."))
        if not files:
            raise UsageError(f"folder {p} holds no image files ({', '.join(SUPPORTED_SUFFIXES)})")
        out.extend(files)
    return out


def _check_map_args(args, command: str) -> List[str]:
    """Checks shared by anomaly and segment (before any training); returns the output stems."""
    args.images = _expand_images(args.images)
    if args.train is not None:
        if command == "anomaly":
            _check_files([args.train], "--train bulk image")
        else:
            _check_folder(args.train, "--train")
    else:
        _require_model(args.model, CVAE if command == "anomaly" else UNET, command)
        if not args.images:
            raise UsageError("nothing to do: give IMAGE files to map with --model")
        if args.model_out:
            raise UsageError("--model-out goes with --train (a new model); --model reads an existing one")
    _check_files(args.images)
    if args.images and not args.out:
        raise UsageError("--out DIR is needed to write the maps of the images")
    if args.train is not None and not args.out and not args.model_out:
        raise UsageError("give --model-out FILE (or --out DIR) for the trained model")
    _check_out_dir(args.out)
    if args.train is not None:
        _check_out_file(args.model_out, "--model-out")
        # read every image to map now: a stack, a corrupt file or a frame smaller than the crops
        # must fail before minutes of training, not after
        _check_images_to_map(args.images, crop=args.crop if command == "anomaly" else None)
    return _output_stems(args.images)


def _check_images_to_map(paths: Sequence[str], crop: Optional[int]) -> None:
    from .io import StackOfFramesError, read_image

    for path in paths:
        try:
            shape = read_image(path).shape  # raises with the file name and what it holds
        except StackOfFramesError as exc:  # each frame is mapped
            shape = exc.frame_shape
        if crop is not None and min(shape[:2]) < crop:
            raise UsageError(f"image {path} ({shape[0]}x{shape[1]}) is smaller than the "
                             f"{crop}-pixel crops (--crop {crop}) the model would be trained on")


# --------------------------------------------------------------------------- train / detect
def _unlabelled_patches(paths: Sequence[str], patch_shape) -> np.ndarray:
    """Patches of ``patch_shape`` from image files or folders of them: a file of that shape is one
    patch, a larger one is tiled (stride = the patch size), each scaled to [0, 1] as detect does."""
    from .detection import to_unit_range
    from .preprocessing import extract_patches

    files = []
    for p in paths:
        if Path(p).is_dir():
            found = sorted(f for f in Path(p).iterdir() if f.is_file() and not f.name.startswith("."))
            if not found:
                raise UsageError(f"--unlabelled {p}: the folder holds no files")
            files += found
        elif Path(p).is_file():
            files.append(Path(p))
        else:
            raise UsageError(f"--unlabelled {p}: not found")
    h, w = (int(s) for s in patch_shape)
    parts = []
    for f in files:
        try:  # a stack (a series in one file): every frame, each scaled as detect does
            images = [to_unit_range(frame) for _, _, frame, _ in _frames_of(f, f.stem)]
        except (OSError, ValueError, TypeError) as e:
            raise UsageError(f"--unlabelled {f}: cannot be read as an image ({e})") from None
        for image in images:
            if image.shape == (h, w):
                parts.append(image[None])
            elif h != w or min(image.shape) < h:
                raise UsageError(f"--unlabelled {f}: image of {image.shape[0]} x {image.shape[1]} px, smaller "
                                 f"than (or not tileable into) the labelled patches of {h} x {w} px")
            else:
                parts.append(extract_patches(image, h)[0])
    return np.concatenate(parts).astype(np.float32, copy=False)


def _train_few_label(args, patches, labels, class_names, say) -> int:
    from .models.few_label import FewLabelClassifier

    unlabelled = _unlabelled_patches(args.unlabelled, patches.shape[1:]) if args.unlabelled else None
    say(f"  FewLabelClassifier: {len(patches)} labelled patches"
        + (f", {len(unlabelled)} unlabelled for self-training" if unlabelled is not None else ""))
    model = FewLabelClassifier(max_epochs=args.epochs, random_state=args.seed, n_threads=args.threads)
    if args.student is not None:
        model.set_params(student=None if args.student == "none" else args.student)
    model.fit(patches, labels, unlabelled=unlabelled, class_names=class_names,
              data_description=f"{args.patch_folder}: {len(patches)} labelled patches"
                               + (f", {len(unlabelled)} unlabelled tiles of {', '.join(args.unlabelled)}"
                                  if unlabelled is not None else ""))
    model.save(args.out)
    say(f"  features {', '.join(n for n, _ in model.feature_blocks_)}, {model.views} views, linear head; "
        f"pseudo-labelled per round {model.n_pseudo_labelled_ or '-'}; predicts: {model.model_card_['predicts']}; "
        f"{model.fit_time_:.1f} s")
    say(f"  wrote {args.out}")
    return 0


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def cmd_train(args) -> int:
    from .models.classifier import PatchClassifier

    _check_folder(args.patch_folder, "PATCH_FOLDER")
    _check_out_file(args.out, "--out")
    if args.unlabelled and not args.few_label:
        raise UsageError("--unlabelled goes with --few-label (self-training of a FewLabelClassifier)")
    if args.student is not None and not args.few_label:
        raise UsageError("--student goes with --few-label (a FewLabelClassifier's student network)")
    if args.few_label:
        given = [opt for opt, value, default in (("--backbone", args.backbone, "small_cnn"),
                                                 ("--mode", args.mode, "finetune"), ("--weights", args.weights, "auto"),
                                                 ("--input-size", args.input_size, None),
                                                 ("--pixel-size", args.pixel_size, None))
                 if value != default]
        if given:
            raise UsageError(f"{', '.join(given)} do{'es' if len(given) == 1 else ''} not apply with --few-label "
                             "(its features and head are fixed)")
    patches, labels, class_names = _load_patch_folder(args.patch_folder)
    say = (lambda *a: None) if args.quiet else print
    if args.few_label:  # no validation split, so no overlap groups to compute
        say(f"stemroi train: {len(patches)} patches, {len(class_names)} classes ({', '.join(class_names)})")
        return _train_few_label(args, patches, labels, class_names, say)
    groups, gdesc = _groups(patches, args.no_overlap_groups)
    say(f"stemroi train: {len(patches)} patches, {len(class_names)} classes ({', '.join(class_names)}), "
        f"{len(np.unique(groups))} {gdesc}")
    bar, progress = _progress_bar(args.quiet, "training", "epoch", leave=True)
    model = PatchClassifier(backbone=args.backbone, mode=args.mode, weights=args.weights, input_size=args.input_size,
                            max_epochs=args.epochs, validation_fraction=args.validation_fraction,
                            random_state=args.seed, n_threads=args.threads, progress=progress)
    try:
        model.fit(patches, labels, groups=groups, class_names=class_names, pixel_size=args.pixel_size,
                  data_description=f"{args.patch_folder}: {len(patches)} patches, {gdesc} for validation")
    finally:
        bar.close()
    model.save(args.out)
    va = model.validation_accuracy_
    say(f"  {model.backbone_description_}; validation accuracy (held-out groups) "
        f"{'n/a' if va is None else f'{va:.4f}'}; ECE {_fmt(model.ece_before_)} -> {_fmt(model.ece_after_)}; "
        f"{model.fit_time_:.1f} s")
    say(f"  wrote {args.out}")
    return 0


def cmd_detect(args) -> int:
    from tqdm import tqdm

    from .detection import detect
    from .models.classifier import PatchClassifier

    _check_out_dir(args.out)
    arch = _require_model(args.model, (CLASSIFIER, FEW_LABEL), "detect")
    args.images = _expand_images(args.images)
    _check_files(args.images)
    if arch == FEW_LABEL:
        from .models.few_label import FewLabelClassifier

        model = FewLabelClassifier.load(args.model)
    else:
        model = PatchClassifier.load(args.model)
    model.set_params(n_threads=args.threads)  # a model file does not carry the thread count of its maker
    _note_pixel_size_unused(args, model)
    patch = args.patch or int(model.patch_shape_[0])
    stride = args.stride or patch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batch_bar, progress = _progress_bar(args.quiet, "tiles", "tile")

    def map_one(image, path: str, stem: str, pixel) -> Dict[str, Any]:
        batch_bar.reset(total=0)
        result = detect(image, model, patch=patch, stride=stride, unknown_below=args.unknown_below,
                        batch_size=args.batch_size, progress=progress, pixel_size=_image_pixel_size(model, pixel))
        _write_result(result, out, stem, path)
        if not args.no_plot:
            from .plotting import plot_rois

            ax = plot_rois(image, result, title=f"{Path(path).name}: {int(result.is_roi.sum())} of {len(result)} tiles")
            _save_plot(ax.figure, out / f"{stem}_rois.png")
        if not args.quiet:
            tqdm.write(f"{path}: {result.counts()}")
        return _with_resampling(result.summary(), result, pixel)

    try:
        return _map_batch(args, args.images, _output_stems(args.images), map_one,
                          lambda records: _write_json(out / "summary.json", records))
    finally:
        batch_bar.close()


# --------------------------------------------------------------------------- cluster
def _cluster_features(args):
    name = CLUSTER_FEATURES[args.features]
    if name != "vgg16":
        return name
    from .features import VGG16Features

    weights = None if args.weights == "random" else args.weights
    return VGG16Features(weights=weights, input_size=args.input_size, n_threads=args.threads, random_state=args.seed)


def cmd_cluster(args) -> int:
    from .cluster import PatchClusterer
    from .cluster._patch_clusterer import DEFAULT_FEATURES, auto_k_criteria

    sources = [Path(p) for p in args.input]
    for src in sources:
        if not src.exists():
            raise UsageError(f"IMAGE_OR_PATCH_FOLDER {src}: not found")
    folders = [src for src in sources if src.is_dir()]
    if folders and len(sources) > 1:
        raise UsageError(f"{folders[0]} is a folder: a patch folder is clustered on its own; to cluster the tiles "
                         f"of the frames in a folder, give its files (stemroi cluster {folders[0]}/*.tif)")
    if args.k_max is not None and args.k_max < args.k_min:
        raise UsageError(f"--k-max must be >= --k-min ({args.k_min}), got {args.k_max}")
    if args.features is None:  # a patch folder is sorted into kinds, an image's tiles mapped
        args.features = DEFAULT_FEATURES if folders else "lattice_residual"
    if args.k_rule == "auto":
        args.k_rule = auto_k_criteria(args.features, args.algorithm)
    if args.k_rule == "agreement" and args.features == "lattice_residual_invariant_local":
        raise UsageError("--k-rule agreement compares the clustering with lattice_residual_invariant_local's: "
                         "give another --features (lattice_residual_tukey, for example)")
    if args.k_rule != "silhouette" and args.algorithm != "kmeans":
        what = "resamples K-means" if args.k_rule == "silhouette_1se" else "compares two K-means clusterings"
        raise UsageError(f"--k-rule {args.k_rule} {what}; with --algorithm {args.algorithm} only "
                         "--k-rule silhouette is offered")
    _check_out_dir(args.out)
    out = Path(args.out)
    say = _say(args)
    src = sources[0]
    data = _read_folder(args, src, say) if folders else _read_tiles(args, sources, say)
    doc: Dict[str, Any] = {"command": "cluster", "input": str(src) if len(sources) == 1 else [str(p) for p in sources],
                           "features": args.features, "algorithm": args.algorithm,
                           "k_range": [args.k_min, args.k_max], "k_rule": args.k_rule, "seed": args.seed}
    resampled = args.k_rule == "silhouette_1se"
    criteria = "agreement" if args.k_rule == "agreement" else "stability" if resampled else "silhouette"
    clusterer = PatchClusterer(_cluster_features(args), k_range=range(args.k_min, args.k_max + 1),
                               random_state=args.seed, n_threads=args.threads, algorithm=args.algorithm,
                               k_criteria=criteria, k_rule=args.k_rule if resampled else None)
    bar, step = _progress_bar(args.quiet, "cluster", "step")
    try:
        step(0, 3)
        clusterer.fit(data["samples"])
        step(1, 3)
        out.mkdir(parents=True, exist_ok=True)
        doc.update(_cluster_folder(args, data, clusterer, out) if folders
                   else _cluster_images(args, data, clusterer, out))
        step(2, 3)
        if not args.no_plot:
            from .plotting import plot_cluster_montage, plot_silhouette_curve

            k = clusterer.n_clusters_
            _save_plot(plot_silhouette_curve(clusterer.silhouette_scores_, best_k=k, label=args.features),
                       out / "silhouette.png")
            _save_plot(plot_cluster_montage(data["samples"], clusterer.labels_, random_state=args.seed),
                       out / "montage.png")
            doc["files"] += ["silhouette.png", "montage.png"]
        step(3, 3)
    finally:
        bar.close()
    doc["silhouette"] = {str(k): float(v) for k, v in sorted(clusterer.silhouette_scores_.items())}
    doc["chosen_k"] = clusterer.n_clusters_
    if clusterer.agreement_scores_ is not None:
        doc["agreement"] = {str(k): float(v) for k, v in sorted(clusterer.agreement_scores_.items())}
    doc["k_selected_by"] = clusterer.k_selected_by_
    doc["files"].append("summary.json")
    _write_json(out / "summary.json", doc)
    if args.k_rule == "agreement" and clusterer.k_selected_by_ != "agreement":
        by = ", chosen by the silhouette: the two descriptors agree only at k = 2"
    else:
        by = "" if args.k_rule == "silhouette" else f", chosen by the {args.k_rule} rule"
    maps = [doc["result"]] if doc.get("input_kind") == "image" else \
        [r["result"] for r in doc.get("images", {}).values()]
    flagged = f", {sum(m['n_roi'] for m in maps)} of {sum(m['n_tiles'] for m in maps)} tiles flagged" if maps else ""
    say(f"stemroi cluster: k = {doc['chosen_k']} (silhouette {doc['silhouette'][str(doc['chosen_k'])]:.3f}{by})"
        + (f", cluster accuracy {doc['cluster_accuracy']:.3f} (purity {doc['evaluation']['purity']:.3f})"
           if "cluster_accuracy" in doc else "") + flagged
        + f"; wrote {out}")
    return 0


DEFAULT_K_MAX = 10


def _check_k_max(args, n: int, what: str, say) -> None:
    """Resolve ``args.k_max``: a given value must fit ``n`` samples (the silhouette needs
    k <= n - 1; the 1-SE rule's 80 % subsamples need k < round(0.8 n)); the default is 10,
    or the largest k that fits for a small image or folder."""
    from .cluster._kmeans import resample_size

    def largest_k(m: int) -> int:  # of m samples
        return resample_size(m) - 1 if args.k_rule == "silhouette_1se" else m - 1

    def fits(k: int, m: int) -> bool:
        return k <= largest_k(m)

    def needs(k: int) -> str:
        m = k + 1
        while not fits(k, m):
            m += 1
        rule = "" if args.k_rule != "silhouette_1se" else f" for --k-rule {args.k_rule} (its 80 % subsamples hold k + 1)"
        return f"needs at least {m} samples{rule}; {what} has {n}"

    if args.k_max is None:
        args.k_max = min(DEFAULT_K_MAX, largest_k(n))
        if args.k_max < args.k_min:
            raise UsageError(f"--k-min {args.k_min} {needs(args.k_min)}")
        if args.k_max < DEFAULT_K_MAX:
            why = "the 1-SE rule's 80 % subsamples need k < 0.8 n" if args.k_rule == "silhouette_1se" else \
                "the silhouette needs k <= n - 1"
            say(f"stemroi cluster: {n} samples, so k = {args.k_min}..{args.k_max} ({why})")
    elif not fits(args.k_max, n):
        raise UsageError(f"--k-max {args.k_max} {needs(args.k_max)}")


def _read_tiles(args, sources: Sequence[Path], say) -> Dict[str, Any]:
    """The tiles of every image, pooled (all read and checked before any clustering)."""
    from .detection import to_unit_range
    from .preprocessing import PatchGrid

    patch = args.patch
    stride = args.stride or patch
    images = []
    for src, stem in zip(sources, _output_stems([str(p) for p in sources])):
        for key, frame_stem, raw, pixel in _frames_of(src, stem):  # a stack's frames all join the pool
            image = to_unit_range(raw)
            if patch > min(image.shape):
                raise UsageError(f"--patch {patch} is larger than the image {Path(key).name} "
                                 f"({image.shape[0]}x{image.shape[1]})")
            # the same grid as cluster_map's default: a border remainder is covered by tiles flush with it
            tiles = PatchGrid(patch_size=patch, stride=stride, edge="shift").extract(image)
            images.append({"path": key, "stem": frame_stem, "image": image, "calibration": pixel,
                           "n_tiles": len(tiles), "tiles": tiles})
    samples = images[0].pop("tiles") if len(images) == 1 else np.concatenate([im.pop("tiles") for im in images])
    what = (sources[0].name if len(images) == 1 else f"the {len(images)} images") + \
        f" cut into {patch} px tiles at stride {stride}"
    _check_k_max(args, len(samples), f"{what} (lower --k-min / --k-max, or get more tiles with a smaller --patch or "
                 "--stride)", say)
    if len(images) > 1:
        say(f"stemroi cluster: {len(samples)} tiles of {len(images)} images, clustered together")
    return {"samples": samples, "images": images, "patch": patch, "stride": stride}


def _read_folder(args, src: Path, say) -> Dict[str, Any]:
    from .io import load_patch_folder

    ds = load_patch_folder(src, args.pattern)
    _check_k_max(args, len(ds), f"{src} ({args.pattern})", say)
    say(f"stemroi cluster: {len(ds)} patches of {ds.patches.shape[1]}x{ds.patches.shape[2]}, "
        f"{len(ds.class_names)} classes ({', '.join(ds.class_names)}); the labels only score the clusters")
    if len(ds.class_names) == 1 and min(ds.patches.shape[1:]) >= 4 * args.patch:
        # a folder of frames read as patches: each whole frame would be one sample
        say(f"stemroi cluster: note: a folder is read as patches, and these are {ds.patches.shape[1]} px frames "
            f"of one name; to cluster their {args.patch} px tiles, give the files: stemroi cluster {src}/{args.pattern}")
    return {"samples": ds.patches, "dataset": ds}


def _cluster_images(args, data: Dict[str, Any], clusterer, out: Path) -> Dict[str, Any]:
    """A cluster map per image, from the one clustering of all their tiles."""
    from .plotting import plot_cluster_map

    patch, stride = data["patch"], data["stride"]
    records, all_files = {}, []
    for im in data["images"]:
        src, stem, image = Path(im["path"]), im["stem"], im["image"]
        result = clusterer.cluster_map(image, patch, stride, roi=args.roi, roi_threshold=args.roi_threshold)
        files = _write_result(result, out, stem, str(src))
        if not args.no_plot:
            title = (f"{src.name}: k = {clusterer.n_clusters_} clusters ({args.features}), "
                     f"{int(result.is_roi.sum())} of {len(result)} tiles "
                     + ("flagged by score" if args.roi == "score" else "off the bulk cluster"))
            _save_plot(plot_cluster_map(image, result, title=title), out / f"{stem}_rois.png")
            files.append(f"{stem}_rois.png")
        records[im["path"]] = {"image_shape": list(image.shape), "calibration": im["calibration"],
                               "n_tiles": len(result), "result": result.summary(), "files": files}
        all_files += files
    if len(records) == 1:  # one image: its record at the top level, as before
        (record,) = records.values()
        return dict(record, input_kind="image", patch=patch, stride=stride)
    return {"input_kind": "images", "patch": patch, "stride": stride, "n_tiles": len(data["samples"]),
            "images": records, "files": all_files}


def _cluster_folder(args, data: Dict[str, Any], clusterer, out: Path) -> Dict[str, Any]:
    from ._atomic import atomic_open
    from .metrics import evaluate_clustering

    ds = data["dataset"]

    def scored(labels) -> Dict[str, Any]:
        ev = evaluate_clustering(ds.labels, labels, ds.class_names)
        return {"accuracy": ev["accuracy"], "balanced_accuracy": ev["weighted_accuracy"], "purity": ev["purity"],
                "per_class": {str(k): float(v) for k, v in ev["per_class"].items()},
                "confusion": np.asarray(ev["confusion"]).tolist(), "n_clusters": ev["n_clusters"]}

    ev = scored(clusterer.labels_)
    n_cls = len(ds.class_names)
    at_classes = scored(clusterer.labels_for(n_cls)) if n_cls in clusterer.silhouette_scores_ else None
    with atomic_open(out / "clusters.csv", "w", newline="") as f:
        f.write("file,class,cluster\n")
        for name, lab, c in zip(ds.files, ds.labels, clusterer.labels_):
            f.write(f"{Path(name).name},{ds.class_names[int(lab)]},{int(c)}\n")
    return {"input_kind": "patch_folder", "n_patches": len(ds), "patch_shape": list(ds.patches.shape[1:]),
            "class_names": list(ds.class_names), "class_counts": ds.class_counts(),
            "cluster_accuracy": ev["accuracy"], "evaluation": ev, "evaluation_at_k_classes": at_classes,
            "note": "the class names of the files only score the clusters (Hungarian matching, in-sample)",
            "files": ["clusters.csv"]}


# --------------------------------------------------------------------------- anomaly
def cmd_anomaly(args) -> int:
    from tqdm import tqdm

    from .detection import anomaly_map
    from .models.cvae import BulkCVAE

    if args.crop % 8:
        raise UsageError(f"--crop must be a multiple of 8, got {args.crop}")
    stems = _check_map_args(args, "anomaly")
    say = _say(args)
    out = Path(args.out) if args.out else None
    doc: Dict[str, Any] = {"command": "anomaly"}
    if args.train is not None:
        bulk, pixel = _read_calibrated(args.train)
        pixel = pixel or args.pixel_size
        if args.crop > min(bulk.shape[:2]):
            raise UsageError(f"--crop {args.crop} is larger than the bulk image {args.train} "
                             f"({bulk.shape[0]}x{bulk.shape[1]})")
        model = BulkCVAE(variant=args.variant, epochs=args.epochs, learning_rate=args.learning_rate,
                         crop_size=args.crop, n_crops=args.crops, detector="energy",
                         energy_window=args.energy_window, energy_quantile=args.energy_quantile,
                         random_state=args.seed, n_threads=args.threads)
        say(f"stemroi anomaly: training a {args.variant} CVAE on {args.crops} crops of {args.train} "
            f"({args.epochs} epochs)")
        bar, progress = _progress_bar(args.quiet, "training", "epoch", leave=True)
        try:
            model.fit(bulk, progress=progress, pixel_size=pixel)  # recorded: images at other pixel sizes are resampled
        finally:
            bar.close()
        model.training_data_ = dict(model.training_data_, source=str(args.train), **(pixel or {}))
        model_path = Path(args.model_out) if args.model_out else out / "model.stemroi"
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model.save(model_path)
        say(f"  loss {model.loss_history_[0]:.1f} -> {model.loss_history_[-1]:.1f} in {model.fit_time_:.1f} s; "
            f"wrote {model_path}")
        doc["training"] = {"bulk_image": str(args.train), "epochs": args.epochs, "crops": args.crops,
                           "variant": args.variant, "learning_rate": args.learning_rate,
                           "final_loss": float(model.loss_history_[-1]), "fit_time_s": float(model.fit_time_)}
    else:
        model_path = Path(args.model)
        model = BulkCVAE.load(model_path)
        if args.threads is not None:
            model.n_threads = args.threads
    doc["model"] = _model_record(model_path)
    _note_pixel_size_unused(args, model)
    doc["detector"] = {"kind": model.detector_, "energy_window": int(model.energy_window),
                       "energy_quantile": float(model.recipe_params()["energy_quantile"]), "threshold": float(model.energy_threshold_)}

    def map_one(image, path: str, stem: str, pixel) -> Dict[str, Any]:
        if min(image.shape[:2]) < model.crop_size:
            raise UsageError(f"{path} ({image.shape[0]}x{image.shape[1]}) is smaller than the model's "
                             f"{model.crop_size}-pixel crops")
        result = anomaly_map(image, model, stride=args.stride, pixel_size=_image_pixel_size(model, pixel))
        out.mkdir(parents=True, exist_ok=True)
        files = _write_result(result, out, stem, path)
        if not args.no_plot:
            from .plotting import plot_anomaly_map

            _save_plot(plot_anomaly_map(image, result, title=Path(path).name), out / f"{stem}_rois.png", dpi=110)
            files.append(f"{stem}_rois.png")
        amap, level = result.maps["anomaly"], float(result.metadata["map_threshold"])
        if not args.quiet:
            tqdm.write(f"{path}: {int(result.is_roi.sum())} of {len(result)} crops flagged")
        return _with_resampling(dict(result.summary(), n_flagged=int(result.is_roi.sum()), map_threshold=level,
                                     map_max=float(amap.max()), map_fraction_above=float((amap > level).mean()),
                                     files=files), result, pixel)

    return _map_summary(args, doc, stems, map_one, out)


# --------------------------------------------------------------------------- segment
def cmd_segment(args) -> int:
    from tqdm import tqdm

    from .detection import segmentation_map, to_unit_range
    from .io import load_patch_folder
    from .models.unet import DefectSegmenter

    stems = _check_map_args(args, "segment")
    say = _say(args)
    out = Path(args.out) if args.out else None
    doc: Dict[str, Any] = {"command": "segment"}
    if args.train is not None:
        ds = load_patch_folder(args.train, args.pattern)
        h, w = ds.patches.shape[1:]
        if h % 4 or w % 4 or min(h, w) < 8:
            raise UsageError(f"--train {args.train}: patches are {h}x{w}; the U-Net needs sides that are "
                             "multiples of 4 and at least 8")
        if args.bulk_class not in ds.class_names:
            raise UsageError(f"--bulk-class {args.bulk_class!r} is not a class of {args.train} "
                             f"(classes: {', '.join(ds.class_names)})")
        if len(ds.class_names) < 2:
            raise UsageError(f"--train {args.train}: needs a defect class besides {args.bulk_class!r}, "
                             f"got only {ds.class_names}")
        model = DefectSegmenter(classes=ds.class_names, epochs=args.epochs, recipe=args.recipe,
                                learning_rate=args.learning_rate, random_state=args.seed, n_threads=args.threads,
                                bulk_class=args.bulk_class, base_channels=args.base_channels,
                                samples_per_epoch=args.samples_per_epoch, pseudo_label=args.pseudo_label)
        say(f"stemroi segment: training a U-Net on {len(ds)} patches of {args.train} "
            f"({', '.join(f'{c} {n}' for c, n in ds.class_counts().items())}; {args.recipe} recipe"
            f"{'' if args.pseudo_label is None else f', {args.pseudo_label} pseudo-labels'})")
        bar, progress = _progress_bar(args.quiet, "training", "epoch", leave=True)
        try:
            model.fit(ds.patches, ds.labels, progress=progress, pixel_size=args.pixel_size)
        finally:
            bar.close()
        model.training_data_ = dict(getattr(model, "training_data_", None) or {}, source=str(args.train))
        model_path = Path(args.model_out) if args.model_out else out / "model.stemroi"
        model_path.parent.mkdir(parents=True, exist_ok=True)
        model.save(model_path)
        say(f"  loss {model.loss_history_[0]:.3f} -> {model.loss_history_[-1]:.3f} in {model.fit_time_:.1f} s; "
            f"wrote {model_path}")
        doc["training"] = {"patch_folder": str(args.train), "n_patches": len(ds), "class_counts": ds.class_counts(),
                           "recipe": args.recipe, "params": {k: v if isinstance(v, (bool, int, float, str, type(None))) else str(v)
                                      for k, v in model.resolved_params_.items()},
                           "final_loss": float(model.loss_history_[-1]), "fit_time_s": float(model.fit_time_)}
    else:
        model_path = Path(args.model)
        model = DefectSegmenter.load(model_path, n_threads=args.threads)
    doc["model"] = _model_record(model_path)
    doc["channels"] = list(model.channel_names_)
    _note_pixel_size_unused(args, model)
    tile_bar, progress = _progress_bar(args.quiet, "tiles", "tile")

    def map_one(image, path: str, stem: str, pixel) -> Dict[str, Any]:
        image = to_unit_range(image)
        tile_bar.reset(total=0)
        result = segmentation_map(image, model, patch=args.patch, stride=args.stride, threshold=args.threshold,
                                  progress=progress, pixel_size=_image_pixel_size(model, pixel))
        out.mkdir(parents=True, exist_ok=True)
        files = _write_result(result, out, stem, path)
        if not args.no_plot:
            from .plotting import plot_class_heatmaps

            fig = plot_class_heatmaps(image, result, model.channel_names_, title=Path(path).name)
            _save_plot(fig, out / f"{stem}_rois.png", dpi=110)
            files.append(f"{stem}_rois.png")
        if not args.quiet:
            tqdm.write(f"{path}: {result.counts()}")
        return _with_resampling(dict(result.summary(), channel_max={c: float(m.max()) for c, m in result.maps.items()},
                                     files=files), result, pixel)

    try:
        return _map_summary(args, doc, stems, map_one, out)
    finally:
        tile_bar.close()


def _map_summary(args, doc: Dict[str, Any], stems: Sequence[str], map_one, out: Optional[Path]) -> int:
    """Map ``args.images`` into ``doc["images"]``; ``summary.json`` is written when there is an --out."""
    doc["images"] = {}

    def write_summary(records: Dict[str, Any]) -> None:
        doc["images"] = records
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "summary.json", doc)

    if not args.images:  # anomaly / segment --train without images to map: the training record alone
        write_summary({})
        return 0
    return _map_batch(args, args.images, stems, map_one, write_summary)


# --------------------------------------------------------------------------- info
def _short(value: Any, width: int = 200) -> str:
    """A metadata value on one line: long numeric lists summarised."""
    if isinstance(value, list) and len(value) > 8 and all(isinstance(v, (int, float)) for v in value):
        a = np.asarray(value, dtype=float)
        return f"{len(a)} values, first {a[0]:.4g}, last {a[-1]:.4g}, min {a.min():.4g}, max {a.max():.4g}"
    if isinstance(value, str):
        return value
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _section(lines: List[str], title: str, value: Any) -> None:
    if value in (None, {}, [], ""):
        return
    lines.append(f"{title}:")
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict) and v and all(not isinstance(x, (dict, list)) or _short(x) != json.dumps(x)
                                                 for x in v.values()):
                lines.append(f"  {k}:")
                lines.extend(f"    {kk}: {_short(vv)}" for kk, vv in v.items())
            else:
                lines.append(f"  {k}: {_short(v)}")
    else:
        lines.append(f"  {_short(value, 400)}")


def _find_key(tree: Any, key: str) -> Optional[Dict[str, Any]]:
    """The first dict in ``tree`` that holds ``key``."""
    if isinstance(tree, dict):
        if key in tree:
            return tree
        for v in tree.values():
            hit = _find_key(v, key)
            if hit is not None:
                return hit
    elif isinstance(tree, list):
        for v in tree:
            hit = _find_key(v, key)
            if hit is not None:
                return hit
    return None


def cmd_info(args) -> int:
    from .io.model_file import HASH_FIELDS, file_sha256, load_model_file

    _model_architecture(args.model, "MODEL")
    tensors, meta = load_model_file(args.model)
    if args.json:
        print(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return 0
    arch = meta.get("architecture", "?")
    card = dict(meta.get("model_card") or {})
    config = meta.get("config")
    n_params = int(sum(np.asarray(t).size for t in tensors.values()))
    size = Path(args.model).stat().st_size
    class_names = meta.get("class_names") or (config or {}).get("class_names")
    lines = [f"stemroi model file {args.model}",
             f"  architecture:  {arch}" + (f" - {MODEL_KINDS[arch][0]}, made by `{MODEL_KINDS[arch][1]}`"
                                           if arch in MODEL_KINDS else ""),
             f"  format:        {meta.get('format', '?')} version {meta.get('format_version', '?')}",
             f"  file:          {size / 1e6:.2f} MB, {len(tensors)} tensors, {n_params:,} values",
             f"  SHA-256:       {file_sha256(args.model)}",
             f"  class names:   {', '.join(map(str, class_names)) if class_names else '-'}"]
    pix = _find_key(meta, "pixel_size")
    value = pix.get("pixel_size") if pix else None
    while isinstance(value, dict):  # a model card's {"pixel_size": {"pixel_size": 0.05, "unit": "nm"}}
        pix, value = value, value.get("pixel_size")
    lines.append(f"  pixel size:    {value} {pix.get('unit') or ''}".rstrip() if value is not None
                 else "  pixel size:    not recorded")
    _section(lines, "config", config)
    _section(lines, "estimator parameters", meta.get("estimator"))
    training = card.pop("training_data", None) or card.pop("data", None)
    _section(lines, "training data", training)
    metrics = card.pop("metrics", None) or {k: card.pop(k) for k in list(card)
                                            if k in ("final_loss", "validation_accuracy", "ece_before", "ece_after")}
    _section(lines, "metrics", metrics)
    _section(lines, "preprocessing", meta.get("preprocessing"))
    _section(lines, "model card", card)
    cal = meta.get("calibration")
    _section(lines, "calibration", cal)
    shown = {"architecture", "format", "format_version", "config", "estimator", "model_card", "preprocessing",
             "calibration", "class_names", *HASH_FIELDS}
    _section(lines, "other metadata", {k: v for k, v in meta.items() if k not in shown})
    lines.append("hashes: stored tensor and header SHA-256 verified" if all(k in meta for k in HASH_FIELDS)
                 else "hashes: none stored (an old file; save it again to add them)")
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------- main
COMMANDS = {"train": cmd_train, "detect": cmd_detect, "cluster": cmd_cluster, "anomaly": cmd_anomaly,
            "segment": cmd_segment, "info": cmd_info}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"file not found: {exc.filename}"
    return text or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 some images of a batch failed,
    2 bad input or every image of a batch failed, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (already reported)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        if args.command == "demo":
            from .demo import run_demo

            _check_out_dir(args.out)
            run_demo(out=args.out, size=args.size, seed=args.seed, n_threads=args.threads)
            return 0
        return COMMANDS[args.command](args)
    except (UsageError, ValueError, TypeError, OSError) as exc:
        print(f"stemroi {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stemroi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
