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
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from ._validation import check_array, check_n_threads, check_positive_int, check_random_state_seed
from .calibration import expected_calibration_error, fit_temperature, softmax

__all__ = ["PatchClassifier", "grouped_validation_split", "duplicate_groups"]

MODEL_ARCHITECTURE = "stemroi.PatchClassifier"
_MODES = ("head", "finetune")
# (unfrozen trailing backbone stages, learning rate, label smoothing) of the study's recipe
STUDY_STAGES = ((0, 1e-3, 0.05), (1, 1e-5, 0.03), (2, 1.5e-6, 0.03))


def _lib():
    from ._lib import _core

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
    from .grouping import grouped_train_test_split

    return grouped_train_test_split(np.asarray(y), np.asarray(groups), test_size=fraction, random_state=seed)


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


def _weights_available(key: str) -> bool:
    try:
        from . import weights as W

        return W.weights_path(key).is_file()
    except Exception:  # noqa: BLE001 - vgg16 area absent or registry differs
        return False


class PatchClassifier:
    """Classify image patches (bulk / defect classes) with a backbone and the study's head.

    Parameters
    ----------
    backbone : "vgg16", "mobilenet_v2", "small_cnn", "precomputed" or an object with
        ``transform(patches) -> (n, d)`` (head mode only).
    mode : "head" or "finetune".
    weights : "auto" (ImageNet if cached, else untrained), None/"random", a registry key
        ("imagenet", "imagenet-keras") or a file path. Only ImageNet-like weights enable the
        staged fine-tuning; without them "finetune" trains the network from scratch.
    input_size : backbone input side in pixels (patches are resized); default 64 for
        fine-tuning (CPU-feasible), the extractor's default (224) for VGG16 head features.
    pooling : pooling of the backbone map in finetune mode: "avg" (the study's) or "avgmax"
        (average and max concatenated); default "avgmax" for small_cnn, "avg" otherwise.
    patch_contrast : "standardize" (default) z-scores each patch and maps it to [0, 1]
        (0.5 + 0.15 z, clamped) before the backbone's normalisation; "none" feeds the
        patches as they are (the study's). The real CdTe regions differ in brightness
        and contrast, and without it a network learns the region rather than the defect
        (small_cnn, CdTe spatial split: 0.76 -> 1.00; STO 0.97 either way).
    hidden_units, dropout, l2 : the head (256, 0.4, 1e-4 in the study).
    label_smoothing : stage-1 smoothing (default 0.05; later stages 0.03).
    class_weight : "balanced" or None.
    augment : random rot90 and flips (image inputs in finetune mode).
    max_epochs : per stage (default 100 head, 40 per stage pretrained, 60 from scratch).
    batch_size, learning_rate (stage 1 / from scratch; default 1e-3), patience (7).
    plateau_patience : the learning rate is halved after this many epochs without a
        better monitored loss (3). Networks trained from scratch on noisy validation
        losses need more (MobileNetV2Classifier uses 10 without ImageNet weights).
    validation_fraction : share of groups held out for early stopping and calibration
        (0 disables both; early stopping then watches the training loss).
    calibrate : fit a temperature on the validation groups.
    random_state, n_threads : seeding and threads (None = all cores).
    progress : optional callable(done_epochs, total_epochs).
    """

    def __init__(
        self,
        backbone="vgg16",
        mode: str = "head",
        *,
        weights="auto",
        input_size: Optional[int] = None,
        pooling: Optional[str] = None,
        patch_contrast: str = "standardize",
        hidden_units: int = 256,
        dropout: float = 0.4,
        l2: float = 1e-4,
        label_smoothing: Optional[float] = None,
        class_weight: Optional[str] = "balanced",
        augment: bool = True,
        max_epochs: Optional[int] = None,
        batch_size: int = 32,
        learning_rate: Optional[float] = None,
        patience: int = 7,
        plateau_patience: int = 3,
        validation_fraction: float = 0.15,
        calibrate: bool = True,
        random_state=None,
        n_threads: Optional[int] = None,
        progress: Optional[Callable[[int, int], None]] = None,
    ):
        self.backbone = backbone
        self.mode = mode
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
        self.validation_fraction = validation_fraction
        self.calibrate = calibrate
        self.random_state = random_state
        self.n_threads = n_threads
        self.progress = progress

    # ------------------------------------------------------------------ params
    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params):
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"invalid parameter {k!r} for PatchClassifier (valid: {sorted(valid)})")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        return f"PatchClassifier(backbone={self.backbone!r}, mode={self.mode!r}, weights={self.weights!r})"

    def _check_params(self):
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        b = self.backbone
        if isinstance(b, str):
            known = ("vgg16", "mobilenet_v2", "small_cnn", "precomputed")
            if b not in known:
                raise ValueError(f"backbone must be one of {known} or a feature extractor object, got {b!r}")
            if b == "precomputed" and self.mode != "head":
                raise ValueError("backbone='precomputed' (features given) works only with mode='head'")
        elif not hasattr(b, "transform"):
            raise TypeError(f"backbone must be a name or an object with transform(), got {type(b).__name__}")
        elif self.mode != "head":
            raise ValueError("a feature-extractor object as backbone works only with mode='head'")
        check_positive_int(self.hidden_units, "hidden_units")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.patience, "patience")
        check_positive_int(self.plateau_patience, "plateau_patience")
        if self.input_size is not None:
            check_positive_int(self.input_size, "input_size", minimum=16)
        if self.max_epochs is not None:
            check_positive_int(self.max_epochs, "max_epochs")
        if self.patch_contrast not in ("standardize", "none"):
            raise ValueError(f"patch_contrast must be 'standardize' or 'none', got {self.patch_contrast!r}")
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

    # -------------------------------------------------------------- internals
    def _uses_extractor(self) -> bool:
        """Head mode on features computed once outside the training loop."""
        b = self.backbone
        return self.mode == "head" and (not isinstance(b, str) or b in ("vgg16", "precomputed"))

    def _resolve_weights(self):
        """(state dict or None, preprocessing or None, description) of the backbone weights."""
        w = self.weights
        arch = self.backbone if isinstance(self.backbone, str) else "custom"
        if arch == "small_cnn" or arch == "precomputed":
            if w not in ("auto", None, "random"):
                raise ValueError(f"backbone {arch!r} has no pretrained weights; use weights=None, got {w!r}")
            return None, None, "random (untrained, trained from scratch)" if arch == "small_cnn" else "precomputed"
        if w == "auto":
            w = "imagenet" if arch == "vgg16" and _weights_available("imagenet") else None
            if w is None and arch == "vgg16" and _weights_available("imagenet-keras"):
                w = "imagenet-keras"
        if w is None or w == "random":
            return None, None, "random (untrained, seeded)"
        from .weights import resolve_weights

        state, pre, source = resolve_weights(w, download=False, architecture=arch)
        return state, pre, source

    def _make_extractor(self, seed: int, n_threads: int):
        b = self.backbone
        if not isinstance(b, str):
            return b, getattr(b, "weights", "user extractor")
        if b == "precomputed":
            return None, "precomputed features"
        from .features import VGG16Features

        w = self.weights
        if w == "auto":
            w = "imagenet" if _weights_available("imagenet") else (
                "imagenet-keras" if _weights_available("imagenet-keras") else "random")
        kw = {} if self.input_size is None else {"input_size": int(self.input_size)}
        ext = VGG16Features(weights=w, n_threads=n_threads, random_state=seed, **kw)
        desc = "VGG16 " + ("untrained (random, seeded) " if w in (None, "random") else f"{w} ") + "weights"
        return ext, desc

    def _features(self, X) -> np.ndarray:
        if self.extractor_ is None:
            return check_array(X, name="X", ndim=2, dtype=(np.float32,))
        X = _check_patches(X)
        if self.patch_contrast == "standardize":
            X = _lib().standardize_patches(np.ascontiguousarray(X))
        F = np.asarray(self.extractor_.transform(X), dtype=np.float32)
        return np.ascontiguousarray(F)

    def _prepare_input(self, X) -> np.ndarray:
        if self._uses_extractor():
            return self._features(X)
        X = _check_patches(X)
        if X.shape[1:] != tuple(self.patch_shape_):
            raise ValueError(f"X: patches must be {tuple(self.patch_shape_)} like the training patches, got {X.shape[1:]}")
        return X

    def _stages(self, pretrained: bool):
        eps0 = 0.05 if self.label_smoothing is None else float(self.label_smoothing)
        lr0 = 1e-3 if self.learning_rate is None else float(self.learning_rate)
        if self.mode == "head":
            return [(0, lr0, eps0, self.max_epochs or 100)]
        if pretrained:
            e = self.max_epochs or 40
            return [(0, lr0, eps0, e), (1, 1e-5, min(eps0, 0.03), e), (2, 1.5e-6, min(eps0, 0.03), e)]
        return [(-1, lr0, eps0, self.max_epochs or 60)]

    def _pooling(self) -> str:
        if self.pooling is not None:
            return self.pooling
        return "avgmax" if self.backbone == "small_cnn" and not self._uses_extractor() else "avg"

    # -------------------------------------------------------------------- fit
    def fit(self, X, y, groups=None, *, class_names: Optional[Sequence[str]] = None, X_val=None, y_val=None,
            data_description: Optional[str] = None):
        """Train on patches (n, h, w) in [0, 1] (or features (n, d) with backbone='precomputed').

        ``groups``: overlap-group id per sample (``stemroi.overlap_groups``); validation
        data are whole groups. Without groups, exact duplicates are grouped.
        ``X_val``/``y_val`` override the internal validation split.
        """
        self._check_params()
        seed = check_random_state_seed(self.random_state)
        n_threads = check_n_threads(self.n_threads)
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

        t0 = time.perf_counter()
        state, pre, wdesc = (None, None, "n/a")
        if self._uses_extractor():
            self.extractor_, wdesc = self._make_extractor(seed, n_threads)
            if self.extractor_ is not None and hasattr(self.extractor_, "fit"):
                self.extractor_.fit(None)
            if self.extractor_ is not None:
                Xp0 = _check_patches(X)
                self.patch_shape_ = list(Xp0.shape[1:])
            Xin = self._features(X)
        else:
            self.extractor_ = None
            Xin = _check_patches(X)
            self.patch_shape_ = list(Xin.shape[1:])
            state, pre, wdesc = self._resolve_weights()
        if not hasattr(self, "patch_shape_") or self.extractor_ is None and self._uses_extractor():
            self.patch_shape_ = list(Xin.shape[1:])
        if len(Xin) != len(y_idx):
            raise ValueError(f"X and y have different lengths: {len(Xin)} and {len(y_idx)}")

        # validation split on whole groups
        if X_val is not None:
            tr = np.arange(len(y_idx))
            Xv = self._prepare_input_fitting(X_val)
            yv = self._encode(y_val)
            split_desc = "user validation set"
        elif float(self.validation_fraction) > 0:
            tr, va, split_desc = _validation_split(y_idx, groups, Xin, float(self.validation_fraction), seed)
            Xv, yv = Xin[va], y_idx[va]
        else:
            tr = np.arange(len(y_idx))
            Xv = yv = None
            split_desc = "no validation data"
        Xtr, ytr = np.ascontiguousarray(Xin[tr]), y_idx[tr]

        core = _lib()
        if self._uses_extractor():
            arch, in_features, input_size = "none", int(Xin.shape[1]), 0
        else:
            arch, in_features = self.backbone, 0
            input_size = int(self.input_size) if self.input_size is not None else 64
        preprocessing = pre or ""
        self.net_ = core.PatchNet(arch, len(self.classes_), in_features=in_features, hidden=int(self.hidden_units),
                                  dropout=float(self.dropout), input_size=input_size, preprocessing=preprocessing,
                                  seed=seed, pooling=self._pooling(),
                                  patch_contrast="none" if self._uses_extractor() else self.patch_contrast)
        if state is not None:
            self.net_.load_backbone_state(state, str(self.weights))
        stages = self._stages(pretrained=state is not None)
        hist = self.net_.fit(
            Xtr, ytr, Xv, yv, stages, batch_size=int(self.batch_size), l2=float(self.l2),
            class_balanced=self.class_weight == "balanced", augment=bool(self.augment),
            patience=int(self.patience), plateau_patience=int(self.plateau_patience), plateau_factor=0.5, seed=seed % (2**63),
            n_threads=n_threads, progress=self.progress)
        self.history_ = hist
        self.n_features_in_ = int(Xin.shape[1]) if Xin.ndim == 2 else None
        self.temperature_ = 1.0
        self.ece_before_ = self.ece_after_ = None
        if Xv is not None and len(Xv):
            logits_v = self.net_.logits(np.ascontiguousarray(Xv), n_threads=n_threads)
            self.ece_before_ = expected_calibration_error(yv, softmax(logits_v))
            if self.calibrate:
                self.temperature_ = fit_temperature(logits_v, yv)
            self.ece_after_ = expected_calibration_error(yv, softmax(logits_v, self.temperature_))
            self.validation_accuracy_ = float((logits_v.argmax(1) == yv).mean())
        else:
            self.validation_accuracy_ = None
        self.fit_time_ = time.perf_counter() - t0
        self.weights_description_ = wdesc
        self.backbone_description_ = (
            f"{arch if arch != 'none' else (self.backbone if isinstance(self.backbone, str) else type(self.backbone).__name__)}"
            f" [{self.mode}] with {wdesc}")
        self.model_card_ = {
            "data": data_description or f"{len(y_idx)} patches, classes {self.class_names_}",
            "split": split_desc,
            "backbone": self.backbone_description_,
            "stages": [list(s) for s in stages],
            "metrics": {
                "validation_accuracy": self.validation_accuracy_,
                "ece_before_calibration": self.ece_before_,
                "ece_after_calibration": self.ece_after_,
                "temperature": self.temperature_,
                "epochs_run": len(hist["epochs"]),
                "fit_time_s": round(self.fit_time_, 2),
            },
        }
        return self

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
    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise RuntimeError("this PatchClassifier is not fitted yet; call fit() or PatchClassifier.load()")

    def decision_function(self, X, batch_size: int = 128, progress=None) -> np.ndarray:
        """Uncalibrated logits (n, n_classes)."""
        self._check_fitted()
        check_positive_int(batch_size, "batch_size")
        Xin = self._prepare_input(X)
        return self.net_.logits(Xin, batch_size=int(batch_size), n_threads=check_n_threads(self.n_threads),
                                progress=progress)

    def predict_proba(self, X, batch_size: int = 128, progress=None) -> np.ndarray:
        """Calibrated class probabilities (n, n_classes), columns in ``classes_`` order."""
        return softmax(self.decision_function(X, batch_size, progress), self.temperature_)

    def predict(self, X) -> np.ndarray:
        self._check_fitted()
        return self.classes_[self.decision_function(X).argmax(1)]

    def score(self, X, y) -> float:
        """Accuracy."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def transform(self, X) -> np.ndarray:
        """Pooled backbone features (n, d) of the fitted network (head mode: the features)."""
        self._check_fitted()
        return self.net_.embed(self._prepare_input(X), n_threads=check_n_threads(self.n_threads))

    # -------------------------------------------------------------- save/load
    def save(self, path) -> None:
        """Write the model (weights, class names, preprocessing, input size, model card) in
        stemroi's safe format (no pickle), atomically."""
        self._check_fitted()
        from .model_file import save_model_file

        if self.extractor_ is not None and not (isinstance(self.backbone, str) and self.backbone == "vgg16"):
            raise ValueError("only models with a named backbone can be saved (a custom extractor object cannot)")
        tensors = {f"net.{k}": v for k, v in self.net_.state_dict().items()}
        params = {k: v for k, v in self.get_params().items() if k not in ("progress",)}
        if not isinstance(params.get("random_state"), (int, type(None))):
            params["random_state"] = None
        params["weights"] = None if params["weights"] is None else str(params["weights"])
        classes = self.classes_.tolist()
        config = {
            "params": params,
            "classes": classes,
            "class_names": self.class_names_,
            "patch_shape": self.patch_shape_,
            "net": {"architecture": self.net_.architecture, "feature_dim": int(self.net_.feature_dim),
                    "n_classes": len(classes), "input_size": self._net_input_size(),
                    "preprocessing": self.net_.preprocessing, "pooling": self.net_.pooling,
                    "patch_contrast": self.net_.patch_contrast},
            "temperature": self.temperature_,
            "extractor": self._extractor_config(),
        }
        save_model_file(path, tensors, {
            "architecture": MODEL_ARCHITECTURE,
            "config": config,
            "class_names": self.class_names_,
            "preprocessing": {"input": "patches on [0, 1] (uint8 / 255)", "patch_shape": self.patch_shape_,
                              "input_size": self._net_input_size(), "normalization": self.net_.preprocessing,
                              "patch_contrast": self.patch_contrast},
            "model_card": self.model_card_,
        })

    def _net_input_size(self) -> int:
        if self._uses_extractor():
            return 0
        return int(self.input_size) if self.input_size is not None else 64

    def _extractor_config(self):
        if self.extractor_ is None:
            return None
        ext = self.extractor_
        keys = ("weights", "layer", "pooling", "input_size", "preprocessing", "random_state")
        return {k: (getattr(ext, k) if isinstance(getattr(ext, k, None), (str, int, float, type(None))) else str(getattr(ext, k)))
                for k in keys if hasattr(ext, k)}

    @classmethod
    def load(cls, path) -> "PatchClassifier":
        from .model_file import load_model_file

        tensors, meta = load_model_file(path)
        if meta.get("architecture") != MODEL_ARCHITECTURE:
            raise ValueError(f"{os.fspath(path)}: not a PatchClassifier model file "
                             f"(architecture {meta.get('architecture')!r}, expected {MODEL_ARCHITECTURE!r})")
        cfg = meta["config"]
        params = dict(cfg["params"])
        params.setdefault("patch_contrast", "none")  # files written before the option existed
        self = cls(**params)
        self.classes_ = np.asarray(cfg["classes"])
        self.class_names_ = list(cfg["class_names"])
        self.patch_shape_ = list(cfg["patch_shape"])
        self.temperature_ = float(cfg["temperature"])
        net = cfg["net"]
        core = _lib()
        arch = net["architecture"]
        self.net_ = core.PatchNet(arch, int(net["n_classes"]),
                                  in_features=int(net["feature_dim"]) if arch == "none" else 0,
                                  hidden=int(params["hidden_units"]), dropout=float(params["dropout"]),
                                  input_size=int(net["input_size"]),
                                  preprocessing="" if arch == "none" else net["preprocessing"], seed=0,
                                  pooling=net.get("pooling", "avg"),
                                  patch_contrast=net.get("patch_contrast", "none"))
        expected = {k: v.shape for k, v in self.net_.state_dict().items()}
        state = {}
        for k, v in tensors.items():
            if k.startswith("net."):
                name = k[len("net."):]
                # files written before 0-d arrays were kept 0-d store num_batches_tracked as (1,)
                if name in expected and expected[name] == () and v.shape == (1,):
                    v = v.reshape(())
                state[name] = v
        self.net_.load_state_dict(state, os.fspath(path))
        ext = cfg.get("extractor")
        if ext is not None:
            from .features import VGG16Features

            self.extractor_ = VGG16Features(**{k: v for k, v in ext.items()})
            self.extractor_.fit(None)
        else:
            self.extractor_ = None
        self.model_card_ = meta.get("model_card", {})
        self.history_ = None
        self.backbone_description_ = self.model_card_.get("backbone", arch)
        self.weights_description_ = self.backbone_description_
        return self


def _check_patches(X) -> np.ndarray:
    """Patches (n, h, w) (or (n, 1, h, w)) float32 on [0, 1]."""
    X = check_array(X, name="X", ndim=(3, 4), dtype=(np.float32,))
    if X.ndim == 4:
        if X.shape[1] != 1:
            raise ValueError(f"X: expected grey patches (n, h, w) or (n, 1, h, w), got shape {X.shape}")
        X = X[:, 0]
    if min(X.shape[1:]) < 16:
        raise ValueError(f"X: patches must be at least 16 x 16 pixels, got {X.shape[1:]}")
    lo, hi = float(X.min()), float(X.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ValueError(f"X: patch values must be in [0, 1] (uint8 / 255), got range [{lo:.4g}, {hi:.4g}]")
    return np.ascontiguousarray(X)
