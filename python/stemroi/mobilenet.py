"""MobileNetV2 backbone (C++ core, torchvision layout) and the study's baseline
classifier of labelled STEM patches.

The study (Sathish et al.) fed patches in [0, 1] to a Keras MobileNetV2 that
expects [-1, 1]; here the "tf" preset maps [0, 1] -> [-1, 1]. ImageNet weights
come from torchvision's ``mobilenet_v2-b0353104.pth`` when present (SHA-256
checked against the registry below); otherwise the network trains from scratch.
"""
from __future__ import annotations

import hashlib
import numbers
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ._lib import _core
from ._validation import check_array, check_n_threads, check_positive_int, check_random_state_seed

__all__ = ["MobileNetV2", "MobileNetV2Classifier", "load_torchvision_state_dict", "MOBILENET_WEIGHTS"]

# torchvision's file name carries the first 8 hex digits of the file's SHA-256
# (torchvision.hub's check_hash convention); a full digest may be added here.
MOBILENET_WEIGHTS = {
    "imagenet": {
        "filename": "mobilenet_v2-b0353104.pth",
        "url": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
        "sha256_prefix": "b0353104",
    }
}


def _cache_dirs() -> List[Path]:
    dirs = []
    if os.environ.get("STEMROI_HOME"):
        dirs.append(Path(os.environ["STEMROI_HOME"]) / "weights")
    dirs.append(Path.home() / ".cache" / "stemroi" / "weights")
    dirs.append(Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints")
    return dirs


def find_imagenet_weights() -> Optional[Path]:
    """Path of the torchvision MobileNetV2 ImageNet file in the caches, or None."""
    name = MOBILENET_WEIGHTS["imagenet"]["filename"]
    for d in _cache_dirs():
        if (d / name).is_file():
            return d / name
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_torchvision_state_dict(path, *, check_hash: bool = True) -> Dict[str, np.ndarray]:
    """Read a torchvision MobileNetV2 ``.pth`` safely (``torch.load(weights_only=True)``)
    into NumPy arrays, after checking its SHA-256 against the registry."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MobileNetV2 weights file not found: {path}")
    if check_hash:
        entry = MOBILENET_WEIGHTS["imagenet"]
        digest = _sha256(path)
        want = entry.get("sha256") or entry["sha256_prefix"]
        if not digest.startswith(want):
            raise ValueError(
                f"SHA-256 of {path} is {digest}, expected {want}... for {entry['filename']} "
                "(corrupt or different file; pass check_hash=False to load it anyway)"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise OSError(f"cannot read MobileNetV2 weights from {path}: {exc}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return {str(k): v.detach().cpu().numpy() for k, v in state.items()}


class MobileNetV2:
    """Thin Python handle of the C++ MobileNetV2 (torchvision parameter names).

    ``weights``: None/"random" (seeded torchvision initialisation), "imagenet"
    (the cached torchvision file, hash-checked) or a path to a torchvision
    ``.pth`` / a dict of arrays.
    """

    def __init__(self, num_classes: int = 1000, *, weights=None, dropout: float = 0.2, random_state=0, n_threads=None):
        num_classes = check_positive_int(num_classes, "num_classes")
        if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_classes = num_classes
        self.n_threads = n_threads
        self.net = _core.MobileNetV2(num_classes, float(dropout), check_random_state_seed(random_state))
        self.weights_origin = "random"
        if weights is not None and not (isinstance(weights, str) and weights == "random"):
            self.load_weights(weights)

    def load_weights(self, weights, *, include_classifier: Optional[bool] = None) -> None:
        if isinstance(weights, dict):
            state, origin = weights, "a state dict"
        else:
            if isinstance(weights, str) and weights == "imagenet":
                path = find_imagenet_weights()
                if path is None:
                    raise FileNotFoundError(
                        f"ImageNet weights {MOBILENET_WEIGHTS['imagenet']['filename']} not found in "
                        f"{[str(d) for d in _cache_dirs()]}; download {MOBILENET_WEIGHTS['imagenet']['url']} "
                        "into one of them, or use weights=None to train from scratch"
                    )
            else:
                path = Path(weights)
            state, origin = load_torchvision_state_dict(path), str(path)
        if include_classifier is None:
            w = state.get("classifier.1.weight")
            include_classifier = w is not None and tuple(np.shape(w)) == (self.num_classes, 1280)
        self.net.load_torchvision_state(
            {k: np.asarray(v, order="C") for k, v in state.items()}, bool(include_classifier), origin
        )
        self.weights_origin = origin

    @property
    def stages(self) -> List[str]:
        return list(self.net.stages())

    def state_dict(self) -> Dict[str, np.ndarray]:
        return dict(self.net.state_dict())

    def prepare(self, patches, size: int = 224) -> np.ndarray:
        """Patches (n, h, w) or (n, 3, h, w) in [0, 1] -> (n, 3, size, size) in [-1, 1]."""
        X = check_array(patches, name="patches", ndim=(3, 4), dtype=(np.float32,))
        size = check_positive_int(size, "size", minimum=32)
        return _core.prepare_backbone_input(X, size, "tf")

    def forward(self, x) -> np.ndarray:
        """Logits of prepared inputs (n, 3, S, S)."""
        X = check_array(x, name="x", ndim=4, dtype=(np.float32,))
        return self.net.forward(X, check_n_threads(self.n_threads))

    def features(self, x) -> np.ndarray:
        """Feature maps (n, 1280, S/32, S/32) of prepared inputs."""
        X = check_array(x, name="x", ndim=4, dtype=(np.float32,))
        return self.net.features(X, check_n_threads(self.n_threads))


class MobileNetV2Classifier:
    """The study's MobileNetV2 transfer baseline, done right: [-1, 1] inputs,
    seeded, fine-tuning of the last stages (``trainable_stages``) plus a new
    linear head; all stages are trained when no ImageNet weights are given.

    A simple loop of the mobilenet area (``train_backbone_classifier`` in the
    core); the classifier area's PatchClassifier supersedes it when merged.
    """

    def __init__(
        self,
        weights=None,
        input_size: int = 96,
        epochs: int = 15,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        trainable_stages: Optional[Sequence[str]] = None,
        dropout: float = 0.2,
        random_state=0,
        n_threads=None,
    ):
        self.weights = weights
        self.input_size = input_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.trainable_stages = trainable_stages
        self.dropout = dropout
        self.random_state = random_state
        self.n_threads = n_threads

    def fit(self, patches, labels, *, progress: Optional[Callable[[int, int], None]] = None) -> "MobileNetV2Classifier":
        lab = np.asarray(labels)
        if lab.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {lab.shape}")
        self.classes_, y = np.unique(lab, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"at least 2 classes are needed, got {list(self.classes_)}")
        seed = check_random_state_seed(self.random_state)
        self.model_ = MobileNetV2(len(self.classes_), weights=None, dropout=self.dropout, random_state=seed,
                                  n_threads=self.n_threads)
        if self.weights is not None:
            self.model_.load_weights(self.weights, include_classifier=False)
        X = self.model_.prepare(patches, self.input_size)
        if X.shape[0] != y.shape[0]:
            raise ValueError(f"patches and labels differ in length: {X.shape[0]} and {y.shape[0]}")
        if self.trainable_stages is None:
            stages = self.model_.stages if self.weights is None else ["stage5", "head"]
        else:
            stages = list(self.trainable_stages)
        self.loss_history_ = np.asarray(
            _core.train_backbone_classifier(
                self.model_.net, X, y.astype(np.int64), check_positive_int(self.epochs, "epochs"),
                check_positive_int(self.batch_size, "batch_size"), float(self.learning_rate),
                float(self.weight_decay), stages, float(self.dropout), seed, check_n_threads(self.n_threads), progress,
            )
        )
        return self

    def decision_function(self, patches) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise RuntimeError("this MobileNetV2Classifier is not fitted yet; call fit first")
        X = self.model_.prepare(patches, self.input_size)
        return _core.backbone_classifier_logits(self.model_.net, X, 64, check_n_threads(self.n_threads))

    def predict(self, patches) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(patches), axis=1)]

    def score(self, patches, labels) -> float:
        return float(np.mean(self.predict(patches) == np.asarray(labels)))
