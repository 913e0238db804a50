"""A classifier for a few labelled patches per class: frozen features, dihedral views, a linear head
and, when unlabelled patches are given, self-training on them.

With 10 labelled patches per class a network trained from scratch, or an MLP head on one feature
set, overfits (docs/weights.md: CdTe 0.65 / 0.85, SrTiO3 0.32 / 0.86 on the overlap-aware split).
What works better, measured on the same split:

* two complementary frozen feature sets side by side: the hand-made ``lattice_residual``
  descriptor (the better one on CdTe) and the STEM-pretrained small_cnn (the better one on SrTiO3),
  each block standardised and weighted to the same total variance;
* the 8 dihedral views (rot90 x flip, the core's ``dihedral_transform``) of every labelled patch as
  training rows, and the view-averaged features at prediction (an atomic lattice's class does not
  change under these, the features do);
* a linear head (multinomial logistic regression, ``PatchClassifier(backbone="precomputed",
  hidden_units=0)``, trained in the core);
* optionally, rounds of self-training on unlabelled patches of the same data (a microscopist has
  many more patches than labels): the most confident share of pseudo-labels joins the training
  rows, a larger share each round;
* then (by default, when unlabelled patches are given) a student network (``student="small_cnn"``)
  fine-tuned from the STEM weights on the labelled and pseudo-labelled patches, which predicts with
  the head (the mean of their probabilities): with hundreds of examples per class it learns what
  the frozen features miss (CdTe's two planar faults), and the head keeps the ranking of defect
  tiles in a new frame.

Measured (docs/weights.md, ``benchmarks/pretrained.py --parts b``; 10 labelled patches per class, 3
draws, 3 overlap-aware splits): CdTe 0.926, SrTiO3 0.912 from the labelled patches alone; 0.940 and
0.950 with the rest of the train side as unlabelled patches and the head alone
(``student=None``); 0.993 and 0.961 with the student (the default).

Nothing here re-implements the core: the features, the views and the head are the core's.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Optional, Sequence

import numpy as np

from .._validation import check_n_threads, check_positive_int, check_random_state_seed
from ..base import BaseEstimator, ClassifierMixin, _load_model, _save_model

__all__ = ["FewLabelClassifier"]

MODEL_ARCHITECTURE = "stemroi.FewLabelClassifier"

# share of the unlabelled patches (the most confident) pseudo-labelled in self-training round r
_SELF_TRAINING_SHARES = (0.5, 0.65, 0.8, 0.9, 0.95)
_VIEWS = (1, 4, 8)
_STUDENTS = ("small_cnn",)


def _feature_block(spec, n_threads):
    """One feature extractor from its name ("stem_cnn" or a descriptor name) or an object."""
    if not isinstance(spec, str):
        if not hasattr(spec, "transform"):
            raise TypeError(f"features: each entry must be a name or an object with transform(), got "
                            f"{type(spec).__name__}")
        return spec
    if spec == "stem_cnn":
        from ._pretrained import StemCNNFeatures

        return StemCNNFeatures("stem", n_threads=n_threads)
    from ..features.descriptors import DESCRIPTORS, make_descriptor

    if spec not in DESCRIPTORS:
        raise ValueError(f"features: unknown feature set {spec!r}; expected 'stem_cnn', one of "
                         f"{sorted(DESCRIPTORS)}, or an object with transform()")
    return make_descriptor(spec)


class FewLabelClassifier(ClassifierMixin, BaseEstimator):
    """Classify patches from a few labelled examples per class (10 is the measured case).

    ``predict_proba(patches, batch_size=, progress=)`` has the signature :func:`stemroi.detect` calls,
    so a fitted FewLabelClassifier maps a frame like a :class:`PatchClassifier`.

    Parameters
    ----------
    features : sequence of str or objects
        Frozen feature sets used side by side: "stem_cnn" (the STEM-pretrained small_cnn shipped with
        the package), a descriptor name of :mod:`stemroi.features.descriptors` ("lattice_residual",
        ...), or objects with ``transform(patches) -> (n, d)``. Default
        ``("lattice_residual", "stem_cnn")``.
    views : {8, 4, 1}
        Dihedral views per patch: 8 (rot90 x flip), 4 (the rotations) or 1 (the patch only).
    self_training : int
        Rounds of self-training on the ``unlabelled`` patches given to ``fit`` (0: none; ignored when
        none are given). Round r adds the most confident 50 %, 65 %, 80 %, 90 %, 95 % of them with their
        predicted labels.
    student : {"small_cnn", None}
        After self-training, train this network (fine-tuned from the shipped STEM weights, the
        :class:`PatchClassifier` default recipe) on the labelled patches and the pseudo-labelled
        share of the last round, and predict with it and the head (``student_weight``): the
        pseudo-labels give it hundreds of examples where the head had ten. Needs ``unlabelled``
        patches and ``self_training`` > 0; without them the head predicts (``student_`` is None).
        None: the head always predicts (the default until 2026-12-06; twice as fast to fit).
    student_weight : float
        With a student, the predicted probabilities are ``student_weight`` x the student's plus
        (1 - ``student_weight``) x the head's. 0.5 (default): their mean, which keeps the student's
        accuracy and most of the head's ranking of defect tiles in a new frame (docs/weights.md);
        1: the student alone. In (0, 1].
    hidden_units, dropout, l2, label_smoothing, class_weight, max_epochs, learning_rate
        The head's, as in :class:`PatchClassifier` (``hidden_units=0``: linear head).
    random_state : int, optional
    n_threads : int, optional
        Threads (None = all cores).

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted.
    class_names_ : list of str
        Their names.
    head_ : PatchClassifier
        The fitted head on the standardised features.
    feature_mean_, feature_scale_ : ndarray
        Per feature, the standardisation (block weights included).
    feature_blocks_ : list of (str, int)
        Name and width of every feature set.
    n_pseudo_labelled_ : list of int
        Pseudo-labelled patches per self-training round.
    student_ : PatchClassifier or None
        The network trained on the pseudo-labels, when ``student`` is set and self-training ran; it
        predicts with the head (``student_weight``).
    patch_shape_ : tuple
        (h, w) of the training patches.
    n_labelled_ : int
        Labelled patches given to ``fit``.
    fit_time_ : float
        Seconds.
    model_card_ : dict
        What the model was trained on and how (written by :meth:`save`, shown by ``stemroi info``).
    """

    _fitted_attribute = "head_"

    def __init__(self, features: Sequence = ("lattice_residual", "stem_cnn"), *, views: int = 8,
                 self_training: int = 5, student: Optional[str] = "small_cnn", student_weight: float = 0.5,
                 hidden_units: int = 0,
                 dropout: float = 0.4, l2: float = 1e-4,
                 label_smoothing: Optional[float] = None, class_weight: Optional[str] = "balanced",
                 max_epochs: Optional[int] = None, learning_rate: Optional[float] = None,
                 random_state=None, n_threads: Optional[int] = None):
        self.features = features
        self.views = views
        self.self_training = self_training
        self.student = student
        self.student_weight = student_weight
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.l2 = l2
        self.label_smoothing = label_smoothing
        self.class_weight = class_weight
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.n_threads = n_threads

    # ------------------------------------------------------------------ checks
    def _check_params(self):
        feats = self.features
        if isinstance(feats, str) or not isinstance(feats, (list, tuple)) or len(feats) == 0:
            raise ValueError(f"features must be a non-empty list or tuple of feature sets, got {feats!r}")
        if isinstance(self.views, bool) or self.views not in _VIEWS:
            raise ValueError(f"views must be one of {_VIEWS}, got {self.views!r}")
        check_positive_int(self.self_training, "self_training", minimum=0)
        if self.self_training > len(_SELF_TRAINING_SHARES):
            raise ValueError(f"self_training must be at most {len(_SELF_TRAINING_SHARES)} rounds, "
                             f"got {self.self_training}")
        check_positive_int(self.hidden_units, "hidden_units", minimum=0)
        if self.student is not None and not (isinstance(self.student, str) and self.student in _STUDENTS):
            raise ValueError(f"student must be None or one of {_STUDENTS}, got {self.student!r}")
        self._checked_student_weight()

    def _checked_student_weight(self) -> float:
        w = getattr(self, "student_weight", 1.0)  # models pickled before the option predicted with the student
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not 0.0 < w <= 1.0:
            raise ValueError(f"student_weight must be a number in (0, 1], got {w!r}")
        return float(w)

    # ---------------------------------------------------------------- features
    def _extractors(self, n_threads):
        # built per fit / transform / predict call (cheap next to the features: the STEM weights load
        # and hash-check in ~0.1 s), so that the estimator holds no compiled objects and pickles as plain data
        return [_feature_block(f, n_threads) for f in self.features]

    def _raw_views(self, X, extractors):
        """Features of every view, (views, n, d) float64, the blocks side by side (unstandardised)."""
        from .._lib import _core

        out = []
        for k in range(int(self.views)):
            Xv = X if k == 0 else _core.dihedral_transform(X, np.full(len(X), k, np.int64))
            blocks = []
            for ext in extractors:
                F = np.asarray(ext.transform(Xv), np.float64)
                if F.ndim != 2 or F.shape[0] != len(X):
                    raise ValueError(f"features: {ext!r} returned shape {F.shape}, expected ({len(X)}, d)")
                blocks.append(F)
            out.append(np.concatenate(blocks, 1))
            if k == 0:
                widths = [B.shape[1] for B in blocks]
        return np.stack(out), widths

    def _standardise(self, F):
        return ((F - self.feature_mean_) / self.feature_scale_).astype(np.float32)

    def _batches(self, X, batch_size):
        """(checked patches, batch_size, a function mapping a slice of them to the head's features)."""
        self._check_fitted()
        from .classifier import _check_patches

        X = _check_patches(X, self.patch_shape_)
        batch_size = check_positive_int(batch_size, "batch_size")
        extractors = self._extractors(check_n_threads(self.n_threads))
        return X, batch_size, lambda part: self._standardise(self._raw_views(part, extractors)[0].mean(0))

    def transform(self, X, batch_size: int = 256) -> np.ndarray:
        """The view-averaged, standardised features the head sees: (n, d) float32."""
        X, batch_size, features = self._batches(X, batch_size)
        parts = [features(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, int(self.feature_mean_.shape[0])), np.float32)

    # --------------------------------------------------------------------- fit
    def _head(self, seed):
        from .classifier import PatchClassifier

        return PatchClassifier(backbone="precomputed", mode="head", hidden_units=self.hidden_units,
                               dropout=self.dropout, l2=self.l2, label_smoothing=self.label_smoothing,
                               class_weight=self.class_weight, max_epochs=self.max_epochs,
                               learning_rate=self.learning_rate, validation_fraction=0, calibrate=False,
                               random_state=seed, n_threads=self.n_threads)

    def _fit_head(self, Z, y, class_names, seed):
        """The head on the views of the rows: Z (views, n, d), y (n,)."""
        with warnings.catch_warnings():
            # the Bulk-class warning is the estimator's to give, once, in fit
            warnings.filterwarnings("ignore", message="PatchClassifier.fit: no class is named 'Bulk'")
            return self._head(seed).fit(Z.reshape(-1, Z.shape[-1]), np.tile(y, Z.shape[0]),
                                        class_names=class_names)

    def _fit_student(self, X, y, class_names, seed, description):
        from .classifier import PatchClassifier

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="PatchClassifier.fit: no class is named 'Bulk'")
            return PatchClassifier(backbone=self.student, mode="finetune", weights="stem", random_state=seed,
                                   n_threads=self.n_threads).fit(X, y, class_names=class_names,
                                                                 data_description=description)

    def fit(self, X, y, *, unlabelled=None, class_names: Optional[Sequence[str]] = None,
            data_description: Optional[str] = None):
        """Train on labelled patches (n, h, w) in [0, 1] with labels ``y``.

        ``unlabelled``: further patches of the same kind (m, h, w) without labels, e.g. every other
        tile of the image; they set the feature standardisation and, with ``self_training`` > 0,
        are pseudo-labelled. Never pass the patches you will measure accuracy on.
        ``data_description``: recorded in the model card (default: patch counts and classes).
        """
        from .classifier import _check_patches

        self._check_params()
        seed = check_random_state_seed(self.random_state)
        n_threads = check_n_threads(self.n_threads)
        t0 = time.perf_counter()
        X = _check_patches(X)
        y_arr = np.asarray(y)
        if y_arr.ndim != 1 or len(y_arr) != len(X):
            raise ValueError(f"y: expected one label per patch ({len(X)}), got shape {y_arr.shape}")
        classes = np.unique(y_arr)
        if len(classes) < 2:
            raise ValueError(f"y: at least 2 classes are needed, got {len(classes)} ({classes.tolist()})")
        U = None
        if unlabelled is not None:
            U = _check_patches(unlabelled)
            if U.shape[1:] != X.shape[1:]:
                raise ValueError(f"unlabelled: patches of {U.shape[1:]} pixels, the labelled ones are {X.shape[1:]}")
            if len(U) == 0:
                U = None
        extractors = self._extractors(n_threads)
        FX, widths = self._raw_views(X, extractors)
        FU = self._raw_views(U, extractors)[0] if U is not None else None
        # each block standardised on every view of every patch given, and scaled so that every block
        # carries the same total variance whatever its width
        F_all = FX.reshape(-1, FX.shape[-1]) if FU is None else np.concatenate(
            [FX.reshape(-1, FX.shape[-1]), FU.reshape(-1, FU.shape[-1])])
        mean, sd = F_all.mean(0), F_all.std(0)
        sd = np.where(sd > 1e-12 * max(1.0, float(np.abs(mean).max())), sd, 1.0)
        widths = np.asarray(widths)
        block_weight = np.repeat(np.sqrt(widths.sum() / (len(widths) * widths)), widths)
        self.feature_mean_ = mean
        self.feature_scale_ = sd / block_weight
        self.feature_blocks_ = [(f if isinstance(f, str) else repr(f), int(w)) for f, w in zip(self.features, widths)]
        ZX = self._standardise(FX)
        head = self._fit_head(ZX, y_arr, class_names, seed)
        self.n_pseudo_labelled_ = []
        if FU is not None and self.self_training > 0:
            ZU = self._standardise(FU)
            ZU_mean = ZU.mean(0)
            for r in range(int(self.self_training)):
                P = head.predict_proba(ZU_mean)
                conf = P.max(1)
                keep = conf >= np.quantile(conf, 1.0 - _SELF_TRAINING_SHARES[r])
                pseudo = head.classes_[P.argmax(1)][keep]
                head = self._fit_head(np.concatenate([ZX, ZU[:, keep]], 1), np.concatenate([y_arr, pseudo]),
                                      class_names, seed)
                self.n_pseudo_labelled_.append(int(keep.sum()))
        self.student_ = None
        if self.student is not None and self.n_pseudo_labelled_:
            # the final head's labels for the share of the last round (its most confident ones)
            P = head.predict_proba(ZU_mean)
            conf = P.max(1)
            keep = conf >= np.quantile(conf, 1.0 - _SELF_TRAINING_SHARES[len(self.n_pseudo_labelled_) - 1])
            self.student_ = self._fit_student(np.concatenate([X, U[keep]]),
                                              np.concatenate([y_arr, head.classes_[P.argmax(1)][keep]]),
                                              class_names, seed, f"{len(X)} labelled and {int(keep.sum())} "
                                              "pseudo-labelled patches (FewLabelClassifier self-training)")
        self.head_ = head
        self.classes_ = head.classes_
        self.class_names_ = list(head.class_names_)
        self.patch_shape_ = tuple(int(s) for s in X.shape[1:])
        self.n_labelled_ = int(len(X))
        self.fit_time_ = time.perf_counter() - t0
        self.model_card_ = {
            "data": data_description or (f"{len(X)} labelled patches of {self.patch_shape_[0]} x "
                                         f"{self.patch_shape_[1]} px, classes {self.class_names_}"
                                         + (f", {len(U)} unlabelled" if U is not None else "")),
            "features": [f"{name} ({width} values)" for name, width in self.feature_blocks_],
            "views": int(self.views),
            "head": "linear" if self.hidden_units == 0 else f"MLP, {self.hidden_units} hidden units",
            "self_training": {"rounds": len(self.n_pseudo_labelled_), "pseudo_labelled": self.n_pseudo_labelled_},
            "predicts": self._predicts(),
            "metrics": {"fit_time_s": round(self.fit_time_, 2)},
        }
        if not any(c.lower() == "bulk" for c in self.class_names_):
            warnings.warn(f"FewLabelClassifier.fit: no class is named 'Bulk' (classes {self.class_names_}); "
                          "detect() will need bulk_label=<the class that is not of interest>", UserWarning,
                          stacklevel=2)
        return self

    def _predicts(self) -> str:
        if self.student_ is None:
            return "the head"
        student = (f"a {self.student} student fine-tuned from the STEM weights on the labelled and "
                   f"{self.n_pseudo_labelled_[-1]} pseudo-labelled patches")
        w = self._checked_student_weight()
        return student if w == 1.0 else f"{w:g} x {student}, plus {1.0 - w:g} x the head (probabilities)"

    # ----------------------------------------------------------------- predict
    def predict_proba(self, X, batch_size: int = 256, progress=None) -> np.ndarray:
        """Class probabilities (n, n_classes), columns in ``classes_`` order: the head's on the
        view-averaged features, mixed with the student's (``student_weight``) when there is one."""
        student = getattr(self, "student_", None)  # models pickled before the option have none
        w = 0.0 if student is None else self._checked_student_weight()
        X, batch_size, features = self._batches(X, batch_size)
        out = []
        for i in range(0, len(X), batch_size):
            part = X[i:i + batch_size]
            if w == 1.0:  # the student alone: the head's features are not needed
                P = student.predict_proba(part, batch_size=batch_size)
            else:
                P = self.head_.predict_proba(features(part))
                if w > 0.0:
                    P = w * student.predict_proba(part, batch_size=batch_size) + (1.0 - w) * P
            out.append(P)
            if progress is not None:
                progress(min(i + batch_size, len(X)), len(X))
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), np.float64)

    def predict(self, X) -> np.ndarray:
        """Labels, in the type of the ``y`` given to ``fit``."""
        P = self.predict_proba(X)  # checks the fit first
        return self.classes_[P.argmax(1)]

    # --------------------------------------------------------------- save/load
    def save(self, path) -> None:
        """Write the fitted model to ``path`` in stemroi's safe format (no pickle), atomically: the
        head, the feature standardisation, the names of the feature sets and the hash of the STEM
        weights they used. Only named feature sets (strings) can be saved."""
        self._check_fitted()
        unnamed = [f for f in self.features if not isinstance(f, str)]
        if unnamed:
            raise ValueError(f"only named feature sets can be saved (strings such as 'stem_cnn'), got "
                             f"{', '.join(type(f).__name__ for f in unnamed)} objects")
        head_tensors, head_config = self.head_._saved_state()
        student_tensors, student_config = ({}, None) if getattr(self, "student_", None) is None else \
            self.student_._saved_state()
        params = self.get_params(deep=False)
        params["features"] = list(params["features"])
        if not isinstance(params.get("random_state"), (int, type(None))):
            params["random_state"] = None
        config = {
            "params": params,
            "classes": self.classes_.tolist(),
            "class_names": self.class_names_,
            "patch_shape": list(self.patch_shape_),
            "features": [{"name": name, "width": width, **_feature_provenance(name)}
                         for name, width in self.feature_blocks_],
            "n_labelled": self.n_labelled_,
            "n_pseudo_labelled": self.n_pseudo_labelled_,
            "head": head_config,
            "student": student_config,
        }
        tensors = {**{f"head.{k}": v for k, v in head_tensors.items()},
                   **{f"student.{k}": v for k, v in student_tensors.items()},
                   "feature_mean": np.asarray(self.feature_mean_, np.float64),
                   "feature_scale": np.asarray(self.feature_scale_, np.float64)}
        _save_model(path, tensors, architecture=MODEL_ARCHITECTURE, config=config, class_names=self.class_names_,
                    preprocessing={"input": "patches on [0, 1] (uint8 / 255)", "patch_shape": list(self.patch_shape_),
                                   "features": [name for name, _ in self.feature_blocks_], "views": int(self.views)},
                    model_card=self.model_card_)

    @classmethod
    def load(cls, path, *, sha256=None, n_threads: Optional[int] = None) -> "FewLabelClassifier":
        """The classifier saved at ``path``; ``sha256`` (hex) refuses any other file. ``n_threads``
        overrides the saved thread count (None: keep it)."""
        from .classifier import PatchClassifier

        tensors, meta = _load_model(path, MODEL_ARCHITECTURE, what="FewLabelClassifier", sha256=sha256)
        origin = os.fspath(path)
        cfg = meta["config"]
        params = dict(cfg["params"])
        params["features"] = tuple(params["features"])
        # files written before these options: no student, or one that predicted alone
        params.setdefault("student", None)
        params.setdefault("student_weight", 1.0)
        if n_threads is not None:
            params["n_threads"] = n_threads
        self = cls(**params)
        for entry in cfg["features"]:
            saved, now = entry.get("weights_sha256"), _feature_provenance(entry["name"]).get("weights_sha256")
            if saved != now:
                raise ValueError(f"{origin}: the model was trained on {entry['name']!r} features of weights "
                                 f"{saved}, this stemroi ships {now}; train it again with this version")
        head = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        self.head_ = PatchClassifier._from_saved(cfg["head"], head, {}, origin)
        self.student_ = None  # files written before the option have no "student" entry
        if cfg.get("student") is not None:
            student = {k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")}
            self.student_ = PatchClassifier._from_saved(cfg["student"], student, {}, origin)
        self.classes_ = self.head_.classes_
        self.class_names_ = list(cfg["class_names"])
        self.patch_shape_ = tuple(int(s) for s in cfg["patch_shape"])
        self.feature_blocks_ = [(e["name"], int(e["width"])) for e in cfg["features"]]
        d = sum(w for _, w in self.feature_blocks_)
        self.feature_mean_ = np.asarray(tensors["feature_mean"], np.float64)
        self.feature_scale_ = np.asarray(tensors["feature_scale"], np.float64)
        if self.feature_mean_.shape != (d,) or self.feature_scale_.shape != (d,):
            raise ValueError(f"{origin}: feature standardisation of shapes {self.feature_mean_.shape} / "
                             f"{self.feature_scale_.shape}, expected ({d},) for the feature sets "
                             f"{self.feature_blocks_}")
        self.n_labelled_ = int(cfg["n_labelled"])
        self.n_pseudo_labelled_ = [int(n) for n in cfg["n_pseudo_labelled"]]
        self.model_card_ = dict(meta.get("model_card") or {})
        self.fit_time_ = float(self.model_card_.get("metrics", {}).get("fit_time_s", 0.0))
        return self


def _feature_provenance(name: str) -> dict:
    """What a saved model records of a named feature set beyond its name: the SHA-256 of the
    shipped STEM weights behind "stem_cnn" (the descriptors are fixed code)."""
    if name != "stem_cnn":
        return {}
    from .weights import REGISTRY, stem_key

    return {"weights_sha256": REGISTRY[stem_key("small_cnn")].sha256}
