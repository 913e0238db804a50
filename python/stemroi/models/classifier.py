"""PatchClassifier: the VGG16 study's patch classifier, scikit-learn style.

Two modes (the training loop is C++/LibTorch, ``stemroi._core.PatchNet``):

``mode="head"``
    Frozen backbone features + the study's softmax head (Dropout 0.4, Dense
    256 ReLU with L2 1e-4, Dropout 0.4, softmax), class-balanced weights and
    label smoothing. ``backbone="vgg16"`` extracts ``VGG16Features`` once;
    ``backbone="precomputed"`` takes (n, d) features directly; any object with
    ``transform(patches) -> (n, d)`` is used as the extractor.
``mode="finetune"``
    The study's staged recipe on a C++ ``Backbone`` ("vgg16",
    "mobilenet_v2", or the built-in "small_cnn"): stage 1 frozen backbone
    (Adam 1e-3, smoothing 0.05), stage 2 last stage unfrozen (1e-5, 0.03),
    stage 3 last two stages unfrozen (1.5e-6, 0.03), random rot90/flips,
    early stopping on validation loss (patience 7, best weights restored),
    learning rate halved on a plateau of 3. Without pretrained weights the
    whole network is trained from scratch (one stage, Adam 1e-3).

Validation data are whole overlap groups held out of the training set
(``groups`` passed to ``fit``, or computed), and a temperature fitted on them
calibrates the confidences (``ece_before_`` / ``ece_after_``).
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Callable, Optional, Sequence

import numpy as np

from .._validation import check_array, check_n_threads, check_positive_int, check_random_state_seed
from .._device import on_device, place, resolve_device
from ..base import BaseEstimator, ClassifierMixin, _load_model, _save_model
from ..models.calibration import expected_calibration_error, fit_temperature, softmax
from ..preprocessing._resample import card_pixel_size, recorded_pixel_size

__all__ = ["PatchClassifier", "grouped_validation_split", "duplicate_groups"]

MODEL_ARCHITECTURE = "stemroi.PatchClassifier"
# the network alone (a pickled PatchClassifier's core object)
_NETWORK_ARCHITECTURE = "stemroi.PatchClassifier.network"
_MODES = ("head", "finetune")
# (unfrozen trailing backbone stages, learning rate, label smoothing) of the study's recipe
STUDY_STAGES = ((0, 1e-3, 0.05), (1, 1e-5, 0.03), (2, 1.5e-6, 0.03))
# The recipes: the parameters left at None take their value from the recipe; a value given
# explicitly always wins. "default": the best measured recipe (docs/classifier.md: small CNN
# trained from scratch on contrast-standardised patches, <= 40 epochs, rot90/flip augmentation);
# "study": the VGG16 study's (VGG16 features + the softmax head, raw patches, <= 100 epochs).
RECIPES = {
    "default": dict(backbone="small_cnn", mode="finetune", patch_contrast="standardize", augment=True,
                    scratch_epochs=40),
    "study": dict(backbone="vgg16", mode="head", patch_contrast="none", augment=True, scratch_epochs=60),
}


def _lib():
    from .._lib import _core

    return _core


def duplicate_groups(X) -> np.ndarray:
    """Group ids of exact duplicates (identical rows/patches): the minimal leak-free grouping."""
    X = np.ascontiguousarray(X)
    rows = X.reshape(len(X), -1)
    _, inv = np.unique(rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))), return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def grouped_validation_split(y, groups, fraction: float, seed: int):
    """(train_idx, val_idx) with no group on both sides, stratified as far as groups
    allow: :func:`stemroi.grouped_train_test_split` with ``test_size=fraction``."""
    from ..model_selection._overlap import grouped_train_test_split

    return grouped_train_test_split(np.asarray(y), np.asarray(groups), test_size=fraction, random_state=seed)


#: below this many patches a class gets a warning in fit
MIN_PATCHES_PER_CLASS = 5


def _validation_split(y_idx, groups, Xin, fraction: float, seed: int):
    """(train, val, description) for early stopping and calibration.

    Whole groups are held out when ``groups`` are given and the split keeps
    every class on the training side and at least two classes in validation.
    On the CdTe/STO sets each class is mostly one overlap group, so a group
    split would drop whole classes from training (the cause of a Bulk recall
    of 0 seen earlier); then, and without groups, the split is stratified
    random (leaky: validation has shifted-crop twins in training, so early
    stopping and the temperature are optimistic) and the model card says so.
    """
    n_classes = int(y_idx.max()) + 1
    if groups is None:
        groups = duplicate_groups(Xin)
        kind = "groups of exact duplicates"
    else:
        groups = np.asarray(groups)
        if groups.shape != (len(y_idx),):
            raise ValueError(f"groups: expected shape ({len(y_idx)},), got {groups.shape}")
        kind = "overlap groups"
    tr, va = grouped_validation_split(y_idx, groups, fraction, seed)
    if len(np.unique(y_idx[tr])) == n_classes and len(np.unique(y_idx[va])) >= 2 and len(va) > 0:
        return tr, va, f"{len(va)} validation samples from {len(np.unique(groups[va]))} held-out {kind}"
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y_idx, minlength=n_classes)
    strat = y_idx if counts.min() >= 2 else None
    tr, va = train_test_split(np.arange(len(y_idx)), test_size=fraction, stratify=strat, random_state=seed % (2**32))
    why = (f"a split of whole {kind} would leave classes out of training or validation "
           f"({len(np.unique(groups))} groups), so")
    return (np.sort(tr), np.sort(va),
            f"{len(va)} validation samples, stratified random ({why} leaky: early stopping and "
            "temperature are optimistic; measure on an overlap-aware test split)")


def _vgg16_features_class():
    from ..features.vgg16 import VGG16Features

    return VGG16Features


def _registry():
    from ..models.weights import REGISTRY

    return REGISTRY


def _weights_available(key: str) -> bool:
    try:
        from ..models import weights as W

        return W.weights_path(key).is_file()
    except Exception:  # noqa: BLE001 - vgg16 area absent or registry differs
        return False


class PatchClassifier(ClassifierMixin, BaseEstimator):
    """Classify image patches (bulk / defect classes) with a backbone and the study's head.

    ``backbone``, ``mode``, ``patch_contrast`` and ``augment`` left at None take
    their value from ``recipe``; a value given explicitly always wins.

    Parameters
    ----------
    backbone : {"vgg16", "mobilenet_v2", "small_cnn", "precomputed"}, object or None
        An object with ``transform(patches) -> (n, d)`` is used as the
        extractor (head mode only). None: the recipe's ("small_cnn"; study: "vgg16").
    mode : {"head", "finetune"} or None
        None: the recipe's ("finetune"; study: "head"); with a backbone given and no mode,
        "finetune" for "small_cnn" and "mobilenet_v2", "head" for the others.
    recipe : "default" (None) or "study"
        "default": the best measured recipe (docs/classifier.md): ``small_cnn``
        trained from scratch (``mode="finetune"``, at most 40 epochs),
        contrast-standardised patches, rot90/flip augmentation. "study": the VGG16
        study's: VGG16 features (ImageNet when cached) + the softmax head, raw
        patches (``patch_contrast="none"``), at most 100 epochs.
    weights : "auto", None, "random", "stem", a registry key or a path
        "auto" (ImageNet if cached, else untrained; MobileNetV2: else its STEM weights; small_cnn:
        untrained), None/"random", a registry key ("imagenet", "imagenet-keras"; "stem" = the
        backbone's STEM-pretrained weights shipped with the package, "small_cnn-stem" or
        "mobilenet_v2-stem") or a file path. Pretrained
        weights enable the staged fine-tuning (STEM weights and any small_cnn: head on the frozen
        backbone, then the whole network at 0.3 x the rate; ImageNet weights: the study's staged
        unfreezing of the last stages); without them "finetune" trains the network from scratch.
    input_size : int, optional
        Backbone input side in pixels (patches are resized); default 64 for
        fine-tuning (CPU-feasible; STEM weights: the size they were pretrained at, 96 for
        MobileNetV2), the extractor's default (224) for VGG16 head features.
    pooling : {"avg", "avgmax"}, optional
        Pooling of the backbone map in finetune mode: "avg" (the study's) or "avgmax"
        (average and max concatenated); default "avgmax" for small_cnn, "avg" otherwise.
    patch_contrast : {"standardize", "none"} or None
        None: the recipe's. "standardize" (default recipe) z-scores each patch and maps it to [0, 1]
        (0.5 + 0.15 z, clamped) before the backbone's normalisation; "none" feeds the
        patches as they are (the study's). The real CdTe regions differ in brightness
        and contrast, and without it a network learns the region rather than the defect
        (small_cnn, CdTe spatial split: 0.76 -> 1.00; STO 0.97 either way).
    hidden_units : int
        Units of the head's dense layer (256 in the study). 0: a linear head
        (dropout, then the logits layer: multinomial logistic regression with the
        L2 penalty on its kernel), which suits a few labelled patches on frozen
        features better (docs/weights.md).
    dropout : float
        Dropout of the head (0.4 in the study).
    l2 : float
        L2 penalty of the head's dense layer (1e-4 in the study; the logits layer's with a linear head).
    label_smoothing : float, optional
        Stage-1 smoothing (default 0.05; later stages 0.03).
    class_weight : "balanced" or None
    augment : bool, str, dict or None
        Training augmentation of image inputs (finetune mode), applied per batch in the core with
        the training seed: True = "dihedral" (random rot90 and flips, the recipes' default);
        names joined by "+" from "dihedral", "gain", "offset", "gamma", "noise", "blur",
        "scale", "rotate", "intensity" (gain+offset+gamma), "acquisition" (all but
        dihedral), e.g. "dihedral+acquisition"; or a dict of strengths
        (:mod:`stemroi.models._augment`). False: none.
    max_epochs : int, optional
        Per stage (default 100 head, 40 per stage pretrained, from scratch 40; study recipe 60).
    batch_size : int
    learning_rate : float, optional
        Stage 1 / from scratch; default 1e-3.
    patience : int
        Early-stopping patience in epochs (7).
    plateau_patience : int
        The learning rate is halved after this many epochs without a
        better monitored loss (3). Networks trained from scratch on noisy validation
        losses need more (MobileNetV2Classifier uses 10 without ImageNet weights).
    contrastive_weight : float
        Weight of a self-supervised term added to the loss (0, off): SimCLR's
        NT-Xent (temperature 0.2) on two augmented views of every patch, through a
        projection head that exists only during the fit; both views also train the
        classifier head. Fine-tuned backbones only, with augmentation. Used by
        ``scripts/pretrain_stem.py --contrastive``; a fit costs about twice as much.
    validation_fraction : float
        Share of groups held out for early stopping and calibration
        (0 disables both; early stopping then watches the training loss).
    calibrate : bool
        Fit a temperature on the validation groups.
    views : {1, 4, 8}
        Dihedral views averaged at prediction: 1 (the patch as given), 4 (its rotations) or 8
        (rot90 x flip). A lattice patch's class does not change under them, the network's output
        does; averaging the logits of the views (the core's ``dihedral_transform``) costs ``views``
        forward passes and gained +0.04 on the SrTiO3 overlap-aware split with MobileNetV2
        (docs/weights.md). The temperature and the validation figures use the same averaging.
        Networks on patches only (not a VGG16 or precomputed feature extractor).
    random_state : int, optional
        Seeding.
    n_threads : int, optional
        Threads (None = all cores).
    device : "cpu" (default), "cuda", "cuda:N" or "auto"
        Where the network (and a VGG16 feature extractor) trains and predicts.
        "cpu" is bit-reproducible for a given ``random_state`` and thread count;
        "auto" is "cuda" when LibTorch has a usable CUDA device, else "cpu".
        A fixed ``random_state`` repeats on the same device; CUDA and CPU
        training differ (dropout draws), CUDA predictions of the same weights
        equal the CPU's within 1e-4. Checked by ``fit``: ValueError naming the
        device when it is malformed or LibTorch has no usable CUDA device.
        Model files hold CPU tensors and load onto any device (``load(device=)``).
    progress : callable, optional
        ``progress(done_epochs, total_epochs)``.
    """

    def __init__(
        self,
        backbone=None,
        mode: Optional[str] = None,
        *,
        recipe: Optional[str] = None,
        weights="auto",
        input_size: Optional[int] = None,
        pooling: Optional[str] = None,
        patch_contrast: Optional[str] = None,
        hidden_units: int = 256,
        dropout: float = 0.4,
        l2: float = 1e-4,
        label_smoothing: Optional[float] = None,
        class_weight: Optional[str] = "balanced",
        augment=None,
        max_epochs: Optional[int] = None,
        batch_size: int = 32,
        learning_rate: Optional[float] = None,
        patience: int = 7,
        plateau_patience: int = 3,
        contrastive_weight: float = 0.0,
        validation_fraction: float = 0.15,
        calibrate: bool = True,
        views: int = 1,
        random_state=None,
        n_threads: Optional[int] = None,
        device: str = "cpu",
        progress: Optional[Callable[[int, int], None]] = None,
    ):
        self.backbone = backbone
        self.mode = mode
        self.recipe = recipe
        self.weights = weights
        self.input_size = input_size
        self.pooling = pooling
        self.patch_contrast = patch_contrast
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.l2 = l2
        self.label_smoothing = label_smoothing
        self.class_weight = class_weight
        self.augment = augment
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.patience = patience
        self.plateau_patience = plateau_patience
        self.contrastive_weight = contrastive_weight
        self.validation_fraction = validation_fraction
        self.calibrate = calibrate
        self.views = views
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device
        self.progress = progress

    _fitted_attribute = "net_"
    _core_attributes = ("net_",)

    # ------------------------------------------------------------------ params
    def _p(self, name: str):
        """A parameter's value: the explicit one, else the recipe's."""
        v = getattr(self, name) if name in ("backbone", "mode", "patch_contrast", "augment") else None
        if v is not None:
            return v
        if name == "mode" and self.backbone is not None:
            # a backbone named without a mode: features + head (VGG16, the study's), except the networks
            # that are fine-tuned: the small CNN, and MobileNetV2 (its frozen STEM features + head reached
            # accuracy 0.08 on the CdTe spatial split, fine-tuned 0.90; docs/weights.md)
            return "finetune" if isinstance(self.backbone, str) and self.backbone in ("small_cnn", "mobilenet_v2") \
                else "head"
        recipe = getattr(self, "recipe", None) or "default"
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)} or None, got {recipe!r}")
        return RECIPES[recipe][name]

    def _check_params(self):
        resolve_device(self.device)
        if self._p("mode") not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self._p('mode')!r}")
        b = self._p("backbone")
        if isinstance(b, str):
            known = ("vgg16", "mobilenet_v2", "small_cnn", "precomputed")
            if b not in known:
                raise ValueError(f"backbone must be one of {known} or a feature extractor object, got {b!r}")
            if b == "precomputed" and self._p("mode") != "head":
                raise ValueError("backbone='precomputed' (features given) works only with mode='head'")
        elif not hasattr(b, "transform"):
            raise TypeError(f"backbone must be a name or an object with transform(), got {type(b).__name__}")
        elif self._p("mode") != "head":
            raise ValueError("a feature-extractor object as backbone works only with mode='head'")
        check_positive_int(self.hidden_units, "hidden_units", minimum=0)
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.patience, "patience")
        check_positive_int(self.plateau_patience, "plateau_patience")
        cw = self.contrastive_weight
        if isinstance(cw, bool) or not isinstance(cw, (int, float, np.integer, np.floating)) \
                or not np.isfinite(cw) or cw < 0:
            raise ValueError(f"contrastive_weight must be a finite number >= 0, got {cw!r}")
        if cw > 0 and self._p("mode") != "finetune":
            raise ValueError(f"contrastive_weight={cw} needs mode='finetune' (a trained backbone), "
                             f"got mode={self._p('mode')!r}")
        if self.input_size is not None:
            check_positive_int(self.input_size, "input_size", minimum=16)
        if self.max_epochs is not None:
            check_positive_int(self.max_epochs, "max_epochs")
        from ._augment import resolve_augment

        resolve_augment(self._p("augment"), true_means="dihedral")
        if self._p("patch_contrast") not in ("standardize", "none"):
            raise ValueError(f"patch_contrast must be 'standardize' or 'none', got {self._p('patch_contrast')!r}")
        if self.pooling not in (None, "avg", "avgmax"):
            raise ValueError(f"pooling must be None, 'avg' or 'avgmax', got {self.pooling!r}")
        if not (0.0 <= float(self.dropout) < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if float(self.l2) < 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")
        if self.label_smoothing is not None and not (0.0 <= float(self.label_smoothing) < 1.0):
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.learning_rate is not None and not float(self.learning_rate) > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.class_weight not in ("balanced", None):
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")
        if not (0.0 <= float(self.validation_fraction) < 1.0):
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if isinstance(self.views, bool) or self.views not in (1, 4, 8):
            raise ValueError(f"views must be 1, 4 or 8, got {self.views!r}")
        if self.views != 1 and self._uses_extractor():
            raise ValueError(f"views={self.views} needs a network on patches; backbone "
                             f"{self._p('backbone')!r} in mode {self._p('mode')!r} works on features")

    # -------------------------------------------------------------- internals
    def _uses_extractor(self) -> bool:
        """Head mode on features computed once outside the training loop."""
        b = self._p("backbone")
        return self._p("mode") == "head" and (not isinstance(b, str) or b in ("vgg16", "precomputed"))

    def _resolve_weights(self):
        """(state dict or None, preprocessing or None, description) of the backbone weights."""
        w = self.weights
        arch = self._p("backbone") if isinstance(self._p("backbone"), str) else "custom"
        if arch == "small_cnn" and isinstance(w, str) and w in _registry() and _registry()[w].architecture != arch:
            raise ValueError(f"backbone 'small_cnn' has no pretrained weights named {w!r} (those are "
                             f"{_registry()[w].architecture} weights); use weights='stem' (small_cnn pretrained "
                             "on synthetic STEM, shipped with stemroi) or None (from scratch)")
        if arch == "precomputed" or (arch == "small_cnn" and w in ("auto", None, "random")):
            if w not in ("auto", None, "random"):
                raise ValueError(f"backbone {arch!r} has no pretrained weights; use weights=None, got {w!r}")
            return None, None, "random (untrained, trained from scratch)" if arch == "small_cnn" else "precomputed"
        w = self._effective_weights()
        if w is None or w == "random":
            return None, None, "random (untrained, seeded)"
        from ..models.weights import resolve_weights

        state, pre, source = resolve_weights(w, download=False, architecture=arch)
        return state, pre, source

    def _make_extractor(self, seed: int, n_threads: int):
        b = self._p("backbone")
        if not isinstance(b, str):
            return b, getattr(b, "weights", "user extractor")
        if b == "precomputed":
            return None, "precomputed features"
        from ..features.vgg16 import VGG16Features

        w = self.weights
        if w == "auto":
            w = "imagenet" if _weights_available("imagenet") else (
                "imagenet-keras" if _weights_available("imagenet-keras") else "random")
        kw = {} if self.input_size is None else {"input_size": int(self.input_size)}
        ext = VGG16Features(weights=w, n_threads=n_threads, random_state=seed, device=self.device, **kw)
        desc = "VGG16 " + ("untrained (random, seeded) " if w in (None, "random") else f"{w} ") + "weights"
        return ext, desc

    def _features(self, X) -> np.ndarray:
        if self.extractor_ is None:
            return check_array(X, name="X", ndim=2, dtype=(np.float32,))
        X = _check_patches(X)
        if self._p("patch_contrast") == "standardize":
            X = _lib().standardize_contrast(np.ascontiguousarray(X))
        F = np.asarray(self.extractor_.transform(X), dtype=np.float32)
        return np.ascontiguousarray(F)

    def _prepare_input(self, X) -> np.ndarray:
        if self._uses_extractor():
            return self._features(X)
        X = _check_patches(X, self.patch_shape_)
        return X

    def _stages(self, pretrained: bool):
        eps0 = 0.05 if self.label_smoothing is None else float(self.label_smoothing)
        lr0 = 1e-3 if self.learning_rate is None else float(self.learning_rate)
        if self._p("mode") == "head":
            return [(0, lr0, eps0, self.max_epochs or 100)]
        if pretrained and (self._p("backbone") == "small_cnn" or self._stem_weights()):
            # STEM weights: head on the frozen backbone, then every block at 0.3 x the rate (the weights
            # come from synthetic images, so all blocks adapt, not only the last ones as for ImageNet VGG16)
            e = self.max_epochs or 40
            return [(0, lr0, eps0, e), (-1, 0.3 * lr0, eps0, e)]
        if pretrained:
            e = self.max_epochs or 40
            return [(0, lr0, eps0, e), (1, 1e-5, min(eps0, 0.03), e), (2, 1.5e-6, min(eps0, 0.03), e)]
        return [(-1, lr0, eps0, self.max_epochs or int(self._p("scratch_epochs")))]

    def _effective_weights(self):
        """``weights`` with "auto" resolved: ImageNet when cached (VGG16; MobileNetV2, else its shipped
        STEM weights), otherwise None (untrained)."""
        w = self.weights
        if not (isinstance(w, str) and w == "auto"):
            return w
        b = self._p("backbone")
        if b == "vgg16":
            return next((k for k in ("imagenet", "imagenet-keras") if _weights_available(k)), None)
        if b == "mobilenet_v2":
            from ..models import weights as W

            return "mobilenet_v2-imagenet" if W.cached_path("mobilenet_v2-imagenet") is not None else "stem"
        return None

    def _stem_weights(self) -> bool:
        """The weights are STEM-pretrained ones of the registry (``weights="stem"`` or a ``*-stem`` key)."""
        w = self._effective_weights()
        return isinstance(w, str) and (w == "stem" or (w in _registry() and w.endswith("-stem")))

    def _pooling(self) -> str:
        if self.pooling is not None:
            return self.pooling
        return "avgmax" if self._p("backbone") == "small_cnn" and not self._uses_extractor() else "avg"

    # -------------------------------------------------------------------- fit
    def fit(self, X, y, groups=None, *, class_names: Optional[Sequence[str]] = None, X_val=None, y_val=None,
            data_description: Optional[str] = None, pixel_size=None):
        """Train on patches (n, h, w) in [0, 1] (or features (n, d) with backbone='precomputed').

        ``groups``: overlap-group id per sample (``stemroi.overlap_groups``); validation
        data are whole groups. Without groups, exact duplicates are grouped.
        ``X_val``/``y_val`` override the internal validation split.
        ``pixel_size``: the training patches' pixel size, ``(value, unit)`` or a
        :class:`stemroi.io.Calibration`; recorded as ``pixel_size_`` and in the
        model card, so that :func:`stemroi.detect` can resample images of
        another pixel size. A UserWarning when no class is named "Bulk"
        (case-insensitive): ``detect`` then needs ``bulk_label=``; another when a
        class has fewer than 5 patches.
        """
        self._check_params()
        seed = check_random_state_seed(self.random_state)
        n_threads = check_n_threads(self.n_threads)
        pixel_size_ = recorded_pixel_size(pixel_size)
        y_idx = self._fit_classes(y, class_names)
        if not any(c.lower() == "bulk" for c in self.class_names_):
            warnings.warn(f"PatchClassifier.fit: no class is named 'Bulk' (classes {self.class_names_}); "
                          "detect() will need bulk_label=<the class that is not of interest>, or it flags "
                          "every tile as a region of interest", UserWarning, stacklevel=2)
        counts = np.bincount(y_idx, minlength=len(self.class_names_))
        few = [f"{name!r} ({int(n)})" for name, n in zip(self.class_names_, counts) if n < MIN_PATCHES_PER_CLASS]
        if few:
            # not refused (a rare defect may have few examples), but the figures of such a class mean little
            warnings.warn(f"PatchClassifier.fit: few patches in class{'es' if len(few) > 1 else ''} {', '.join(few)}; "
                          f"with fewer than {MIN_PATCHES_PER_CLASS} a class is barely learnt and the validation "
                          "split may hold none of it (FewLabelClassifier is built for about 10 per class)",
                          UserWarning, stacklevel=2)
        self.pixel_size_ = pixel_size_
        t0 = time.perf_counter()
        Xin, backbone_state, preprocessing, weights_description = self._fit_inputs(X, seed, n_threads)
        if len(Xin) != len(y_idx):
            raise ValueError(f"X and y have different lengths: {len(Xin)} and {len(y_idx)}")
        train, Xv, yv, split_description = self._split_validation(Xin, y_idx, groups, X_val, y_val, seed)
        architecture = self._build_network(Xin, preprocessing, backbone_state, seed)
        stages = self._stages(pretrained=backbone_state is not None)
        self.history_ = self._train(np.ascontiguousarray(Xin[train]), y_idx[train], Xv, yv, stages, seed, n_threads)
        self.n_features_in_ = int(Xin.shape[1]) if Xin.ndim == 2 else None
        self._calibrate_temperature(Xv, yv, n_threads)
        self.fit_time_ = time.perf_counter() - t0
        self._set_model_card(architecture, stages, len(y_idx), split_description, weights_description,
                             data_description)
        # unfamiliar-input score on the embeddings (stemroi.detection._novelty)
        from ..detection._novelty import fit_classifier_novelty
        self.novelty_ = fit_classifier_novelty(self, Xin[train], Xv, seed)
        return self

    def _fit_classes(self, y, class_names) -> np.ndarray:
        """Set ``classes_`` and ``class_names_``; the class index of every label."""
        y_arr = np.asarray(y)
        if y_arr.ndim != 1:
            raise ValueError(f"y: expected a 1-D array of labels, got shape {y_arr.shape}")
        self.classes_, y_idx = np.unique(y_arr, return_inverse=True)
        y_idx = y_idx.astype(np.int64)
        if len(self.classes_) < 2:
            raise ValueError(f"y: at least 2 classes are needed, got {len(self.classes_)} ({self.classes_.tolist()})")
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if y_arr.dtype.kind in "iu" and set(self.classes_.tolist()) <= set(range(len(class_names))):
                self.class_names_ = [class_names[int(c)] for c in self.classes_]
            elif len(class_names) == len(self.classes_):
                self.class_names_ = class_names
            else:
                raise ValueError(f"class_names: {len(class_names)} names for classes {self.classes_.tolist()}")
        else:
            self.class_names_ = [str(c) for c in self.classes_]
        return y_idx

    def _fit_inputs(self, X, seed: int, n_threads: int):
        """The network inputs of the training data and the backbone weights:
        ``(inputs, backbone state or None, preprocessing or None, weights description)``.

        Head mode on an extractor: features computed once (sets ``extractor_``);
        otherwise the checked patches. Sets ``patch_shape_``.
        """
        if self._uses_extractor():
            self.extractor_, description = self._make_extractor(seed, n_threads)
            if self.extractor_ is not None and hasattr(self.extractor_, "fit"):
                self.extractor_.fit(None)
            if self.extractor_ is not None:
                self.patch_shape_ = list(_check_patches(X).shape[1:])
            Xin = self._features(X)
            if self.extractor_ is None:
                self.patch_shape_ = list(Xin.shape[1:])
            return Xin, None, None, description
        self.extractor_ = None
        Xin = _check_patches(X)
        self.patch_shape_ = list(Xin.shape[1:])
        state, preprocessing, description = self._resolve_weights()
        return Xin, state, preprocessing, description

    def _split_validation(self, Xin, y_idx, groups, X_val, y_val, seed: int):
        """``(train indices, validation inputs, validation labels, description)``; whole
        groups are held out (see :func:`_validation_split`). No validation data: None, None."""
        if X_val is not None:
            return np.arange(len(y_idx)), self._prepare_input_fitting(X_val), self._encode(y_val), "user validation set"
        if float(self.validation_fraction) > 0:
            train, val, description = _validation_split(y_idx, groups, Xin, float(self.validation_fraction), seed)
            return train, Xin[val], y_idx[val], description
        return np.arange(len(y_idx)), None, None, "no validation data"

    def _make_net(self, architecture: str, n_classes: int, *, in_features: int, input_size: int, preprocessing: str,
                  seed: int, pooling: str, patch_contrast: str):
        net = _lib().PatchNet(architecture, n_classes, in_features=in_features, hidden=int(self.hidden_units),
                              dropout=float(self.dropout), input_size=input_size, preprocessing=preprocessing,
                              seed=seed, pooling=pooling, patch_contrast=patch_contrast)
        return place(net, getattr(self, "device", "cpu"))

    def _build_network(self, Xin, preprocessing, backbone_state, seed: int) -> str:
        """Set ``net_`` (seeded; pretrained backbone weights loaded); returns its architecture."""
        if self._uses_extractor():
            architecture, in_features = "none", int(Xin.shape[1])
        else:
            architecture, in_features = self._p("backbone"), 0
        self.net_ = self._make_net(architecture, len(self.classes_), in_features=in_features,
                                   input_size=self._net_input_size(), preprocessing=preprocessing or "", seed=seed,
                                   pooling=self._pooling(),
                                   patch_contrast="none" if self._uses_extractor() else self._p("patch_contrast"))
        if backbone_state is not None:
            self.net_.load_backbone_state(backbone_state, str(self.weights))
        return architecture

    def _train(self, Xtr, ytr, Xv, yv, stages, seed: int, n_threads: int) -> dict:
        """Run the training stages of ``net_``; returns the history."""
        core = _lib()
        from ._augment import augment_options, resolve_augment

        dihedral, strengths = resolve_augment(self._p("augment"), true_means="dihedral")
        options = core.TrainOptions(
            stages=[core.TrainStage(unfrozen_stages=k, learning_rate=lr, label_smoothing=eps, max_epochs=epochs)
                    for k, lr, eps, epochs in stages],
            batch_size=int(self.batch_size), l2=float(self.l2), class_balanced=self.class_weight == "balanced",
            augment=dihedral, patience=int(self.patience), plateau_patience=int(self.plateau_patience),
            plateau_factor=0.5, seed=seed % (2**63), n_threads=n_threads,
            acquisition=augment_options(strengths), contrastive_weight=float(self.contrastive_weight))
        return self.net_.fit(Xtr, ytr, X_val=Xv, y_val=yv, options=options, progress=self.progress)

    def _calibrate_temperature(self, Xv, yv, n_threads: int) -> None:
        """Set ``temperature_`` (fitted on the validation data when ``calibrate``), the
        calibration errors before and after, and ``validation_accuracy_``."""
        self.temperature_ = 1.0
        self.ece_before_ = self.ece_after_ = None
        if Xv is None or not len(Xv):
            self.validation_accuracy_ = None
            return
        logits_v = self._view_logits(np.ascontiguousarray(Xv), 128, n_threads, None)
        self.ece_before_ = expected_calibration_error(yv, softmax(logits_v))
        if self.calibrate:
            self.temperature_ = fit_temperature(logits_v, yv)
        self.ece_after_ = expected_calibration_error(yv, softmax(logits_v, self.temperature_))
        self.validation_accuracy_ = float((logits_v.argmax(1) == yv).mean())

    def _set_model_card(self, architecture: str, stages, n_samples: int, split_description: str,
                        weights_description: str, data_description: Optional[str]) -> None:
        """Set ``weights_description_``, ``backbone_description_`` and ``model_card_``."""
        self.weights_description_ = weights_description
        name = architecture if architecture != "none" else (
            self._p("backbone") if isinstance(self._p("backbone"), str) else type(self._p("backbone")).__name__)
        self.backbone_description_ = f"{name} [{self._p('mode')}] with {weights_description}"
        self.model_card_ = {
            "data": data_description or f"{n_samples} patches, classes {self.class_names_}",
            "pixel_size": card_pixel_size(self.pixel_size_),
            "split": split_description,
            "backbone": self.backbone_description_,
            "stages": [list(s) for s in stages],
            "metrics": {
                "validation_accuracy": self.validation_accuracy_,
                "ece_before_calibration": self.ece_before_,
                "ece_after_calibration": self.ece_after_,
                "temperature": self.temperature_,
                "epochs_run": len(self.history_["epochs"]),
                "fit_time_s": round(self.fit_time_, 2),
            },
        }

    def _encode(self, y) -> np.ndarray:
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        bad = self.classes_[idx] != y
        if np.any(bad):
            raise ValueError(f"y: unknown labels {np.unique(y[bad]).tolist()} (classes: {self.classes_.tolist()})")
        return idx.astype(np.int64)

    def _prepare_input_fitting(self, X):
        if self._uses_extractor():
            return self._features(X)
        return _check_patches(X)

    # ---------------------------------------------------------------- predict
    def decision_function(self, X, batch_size: int = 128, progress=None) -> np.ndarray:
        """Uncalibrated logits (n, n_classes)."""
        self._check_fitted()
        check_positive_int(batch_size, "batch_size")
        return self._view_logits(self._prepare_input(X), int(batch_size), check_n_threads(self.n_threads), progress)

    def _view_logits(self, Xin, batch_size: int, n_threads: int, progress):
        """The network's logits of prepared inputs, averaged over ``views`` dihedral views."""
        views = int(getattr(self, "views", 1))  # models pickled before the option: 1
        if views == 1:
            return self.net_.logits(Xin, batch_size=batch_size, n_threads=n_threads, progress=progress)
        from .._lib import _core

        n, total = len(Xin), None
        for k in range(views):
            step = None if progress is None else (lambda done, _n, k=k: progress(k * n + done, views * n))
            Xk = Xin if k == 0 else _core.dihedral_transform(Xin, np.full(n, k, np.int64))
            L = self.net_.logits(Xk, batch_size=batch_size, n_threads=n_threads, progress=step)
            total = L if total is None else total + L  # fixed order: the same bits every call
        return total / views

    def predict_proba(self, X, batch_size: int = 128, progress=None) -> np.ndarray:
        """Calibrated class probabilities (n, n_classes), columns in ``classes_`` order."""
        return softmax(self.decision_function(X, batch_size, progress), self.temperature_)

    def predict(self, X) -> np.ndarray:
        """Class labels (n,): the most probable class of each patch."""
        self._check_fitted()
        return self.classes_[self.decision_function(X).argmax(1)]

    def transform(self, X) -> np.ndarray:
        """Pooled backbone features (n, d) of the fitted network (head mode: the features)."""
        self._check_fitted()
        return self.net_.embed(self._prepare_input(X), n_threads=check_n_threads(self.n_threads))

    # -------------------------------------------------------------- save/load
    def save(self, path) -> None:
        """Write the model (weights, class names, preprocessing, input size, model card) in
        stemroi's safe format (no pickle), atomically."""
        tensors, config = self._saved_state()
        _save_model(
            path, tensors, architecture=MODEL_ARCHITECTURE, config=config, class_names=self.class_names_,
            preprocessing={"input": "patches on [0, 1] (uint8 / 255)", "patch_shape": self.patch_shape_,
                           "input_size": self._net_input_size(), "normalization": self.net_.preprocessing,
                           "patch_contrast": self._p("patch_contrast")},
            model_card=self.model_card_,
        )

    def _saved_state(self):
        """``(tensors, config)`` of the fitted model, as :meth:`save` writes them (and
        :meth:`_from_saved` reads them); also how a FewLabelClassifier stores its head."""
        self._check_fitted()
        if self.extractor_ is not None and not (isinstance(self._p("backbone"), str) and self._p("backbone") == "vgg16"):
            raise ValueError("only models with a named backbone can be saved (a custom extractor object cannot)")
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in ("progress",)}
        if not isinstance(params.get("random_state"), (int, type(None))):
            params["random_state"] = None
        params["weights"] = None if params["weights"] is None else str(params["weights"])
        config = {
            "params": params,
            "classes": self.classes_.tolist(),
            "class_names": self.class_names_,
            "patch_shape": self.patch_shape_,
            "net": self._net_config(),
            "temperature": self.temperature_,
            "extractor": self._extractor_config(),
        }
        from ..detection._novelty import novelty_tensors
        novelty_t, config["novelty"] = novelty_tensors(getattr(self, "novelty_", None))
        return {**self._net_tensors(), **novelty_t}, config

    def _net_tensors(self):
        return {f"net.{k}": v for k, v in self.net_.state_dict().items()}

    def _net_config(self) -> dict:
        return {"architecture": self.net_.architecture, "feature_dim": int(self.net_.feature_dim),
                "n_classes": len(self.classes_), "input_size": self._net_input_size(),
                "preprocessing": self.net_.preprocessing, "pooling": self.net_.pooling,
                "patch_contrast": self.net_.patch_contrast}

    def _restore_net(self, net: dict, tensors, origin: str):
        """The network described by ``net`` (``_net_config``) with the ``net.*`` tensors."""
        arch = net["architecture"]
        model = self._make_net(arch, int(net["n_classes"]),
                               in_features=int(net["feature_dim"]) if arch == "none" else 0,
                               input_size=int(net["input_size"]),
                               preprocessing="" if arch == "none" else net["preprocessing"], seed=0,
                               pooling=net.get("pooling", "avg"), patch_contrast=net.get("patch_contrast", "none"))
        expected = {k: v.shape for k, v in model.state_dict().items()}
        state = {}
        for k, v in tensors.items():
            if k.startswith("net."):
                name = k[len("net."):]
                # some files store num_batches_tracked as shape (1,) instead of 0-d
                if name in expected and expected[name] == () and v.shape == (1,):
                    v = v.reshape(())
                state[name] = v
        model.load_state_dict(state, origin)
        return model

    def _net_input_size(self) -> int:
        if self._uses_extractor():
            return 0
        if self.input_size is not None:
            return int(self.input_size)
        if self._stem_weights():  # the size the STEM weights were pretrained at (MobileNetV2: 96)
            w = self._effective_weights()
            from ..models.weights import stem_key

            spec = _registry()[stem_key(self._p("backbone")) if w == "stem" else w]
            return int(spec.input_size or 64)
        return 64

    def _extractor_config(self):
        if self.extractor_ is None:
            return None
        ext = self.extractor_
        keys = ("weights", "layer", "pooling", "input_size", "preprocessing", "random_state")
        return {k: (getattr(ext, k) if isinstance(getattr(ext, k, None), (str, int, float, type(None))) else str(getattr(ext, k)))
                for k in keys if hasattr(ext, k)}

    @classmethod
    def load(cls, path, *, sha256=None, device="cpu") -> "PatchClassifier":
        """The classifier saved at ``path``; ``sha256`` (hex) refuses any other file.

        ``device`` ("cpu", "cuda", "cuda:N" or "auto") is where the loaded network
        runs, whatever device it was trained on (the file holds CPU tensors)."""
        resolve_device(device)
        tensors, meta = _load_model(path, MODEL_ARCHITECTURE, what="PatchClassifier", sha256=sha256)
        return cls._from_saved(meta["config"], tensors, meta.get("model_card", {}), os.fspath(path), device)

    @classmethod
    def _from_saved(cls, cfg: dict, tensors, model_card: dict, origin: str, device="cpu") -> "PatchClassifier":
        """The fitted classifier of a ``config`` and its tensors (:meth:`_saved_state`)."""
        params = dict(cfg["params"])
        params.setdefault("patch_contrast", "none")  # a file without the option holds a model trained on raw input
        params["device"] = device
        self = cls(**params)
        self.classes_ = np.asarray(cfg["classes"])
        self.class_names_ = list(cfg["class_names"])
        self.patch_shape_ = list(cfg["patch_shape"])
        self.temperature_ = float(cfg["temperature"])
        self.net_ = self._restore_net(cfg["net"], tensors, origin)
        from ..detection._novelty import novelty_from_tensors
        self.novelty_ = novelty_from_tensors(dict(tensors), cfg.get("novelty"))
        ext = cfg.get("extractor")
        if ext is not None:
            from ..features.vgg16 import VGG16Features

            self.extractor_ = VGG16Features(**{k: v for k, v in ext.items()}, device=device)
            self.extractor_.fit(None)
        else:
            self.extractor_ = None
        self.model_card_ = dict(model_card or {})
        self.pixel_size_ = recorded_pixel_size(self.model_card_.get("pixel_size"))
        self.history_ = None
        self.backbone_description_ = self.model_card_.get("backbone", cfg["net"]["architecture"])
        self.weights_description_ = self.backbone_description_
        return self

    # -- pickling: the network travels as a model file -----------------------------
    def _write_core(self, path: str) -> None:
        _save_model(path, self._net_tensors(), architecture=_NETWORK_ARCHITECTURE, config={"net": self._net_config()})

    def _read_core(self, path: str) -> None:
        tensors, meta = _load_model(path, _NETWORK_ARCHITECTURE, what="PatchClassifier network")
        self.net_ = self._restore_net(meta["config"]["net"], tensors, "pickled PatchClassifier")
        ext = getattr(self, "extractor_", None)
        if isinstance(ext, _vgg16_features_class()) and hasattr(ext, "model_"):
            self.extractor_ = on_device(ext, getattr(self, "device", "cpu"), ext.model_.device)


def _check_patches(X, expected_shape=None) -> np.ndarray:
    """Patches (n, h, w) (or (n, 1, h, w)) float32 on [0, 1]; of ``expected_shape`` (h, w) when given
    (features of another size have the same length but other values, so they are refused)."""
    stored = getattr(X, "dtype", None)
    X = check_array(X, name="X", ndim=(3, 4), dtype=(np.float32,))
    if X.ndim == 4:
        if X.shape[1] != 1:
            raise ValueError(f"X: expected grey patches (n, h, w) or (n, 1, h, w), got shape {X.shape}")
        X = X[:, 0]
    if min(X.shape[1:]) < 16:
        raise ValueError(f"X: patches must be at least 16 x 16 pixels, got {X.shape[1:]}")
    if expected_shape is not None and X.shape[1:] != tuple(expected_shape):
        raise ValueError(f"X: patches must be {tuple(expected_shape)} like the training patches, got {X.shape[1:]}")
    lo, hi = float(X.min()), float(X.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        hint = ""
        if stored is not None and np.dtype(stored).kind in "ui":
            # not scaled silently: a 12-bit detector stored as uint16 would come out 16 times too dark
            hint = (f"; these are {np.dtype(stored).name} values: scale them with "
                    "stemroi.io.scale_to_unit(X, 'dtype') (integer range to [0, 1], as the patch folders are read) "
                    "or X / X.max()")
        raise ValueError(f"X: patch values must be in [0, 1] (uint8 / 255), got range [{lo:.4g}, {hi:.4g}]{hint}")
    return np.ascontiguousarray(X)
