"""MobileNetV2 backbone (C++ core, torchvision layout) and the study's baseline
classifier of labelled STEM patches (``MobileNetV2Classifier``: a
``PatchClassifier`` on this backbone, trained by the classifier's loop).

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
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np

from ._lib import _core
from ._validation import check_array, check_n_threads, check_positive_int, check_random_state_seed

if TYPE_CHECKING:  # pragma: no cover
    from .classifier import PatchClassifier

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


def _imagenet_weights_file() -> Path:
    """The cached torchvision MobileNetV2 ImageNet file, SHA-256 checked."""
    entry = MOBILENET_WEIGHTS["imagenet"]
    path = find_imagenet_weights()
    if path is None:
        raise FileNotFoundError(
            f"ImageNet weights {entry['filename']} not found in {[str(d) for d in _cache_dirs()]}; "
            f"download {entry['url']} into one of them, or use weights=None to train from scratch"
        )
    want = entry.get("sha256") or entry["sha256_prefix"]
    digest = _sha256(path)
    if not digest.startswith(want):
        raise ValueError(f"SHA-256 of {path} is {digest}, expected {want}... for {entry['filename']} "
                         "(corrupt or different file; pass its path as weights to use it anyway)")
    return path


def _is_torch_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"  # torch.save zip / legacy pickle


def _as_backbone_file(path: Path) -> Path:
    """A torchvision MobileNetV2 ``.pth`` as the project's backbone file (cached by SHA-256).

    The project's file records the ImageNet ("torchvision") normalisation the
    weights expect, so PatchClassifier feeds them the right input, and is read
    without pickle afterwards. BatchNorm counters absent from old files are set to 0.
    """
    from .weights import save_backbone, weights_dir

    digest = _sha256(path)
    out = weights_dir() / f"mobilenet_v2-{digest[:16]}.stemroi"
    if not out.is_file():
        state = load_torchvision_state_dict(path, check_hash=False)
        for k in [k for k in state if k.endswith(".running_mean")]:
            state.setdefault(k[: -len("running_mean")] + "num_batches_tracked", np.zeros((), np.int64))
        out.parent.mkdir(parents=True, exist_ok=True)
        save_backbone(out, state, architecture="mobilenet_v2", preprocessing="torchvision",
                      model_card={"converted_from": str(path), "source_sha256": digest})
    return out


def MobileNetV2Classifier(weights=None, *, input_size: int = 96, random_state=0, n_threads=None,
                          **params) -> "PatchClassifier":
    """The study's MobileNetV2 baseline: ``stemroi.PatchClassifier`` with the
    MobileNetV2 backbone (``backbone="mobilenet_v2", mode="finetune"``).

    A factory, not a class: it returns a configured, unfitted ``PatchClassifier``
    (its training loop, early stopping, augmentation, label smoothing, class
    weights, calibration, save/load). Any other ``PatchClassifier`` parameter
    (``max_epochs``, ``batch_size``, ``learning_rate``, ``patch_contrast``,
    ``validation_fraction``, ...) is passed through ``**params``.

    weights : None / "random" (default): seeded initialisation, the whole network
        trained from scratch, inputs in [-1, 1] (the backbone's own "tf" preset;
        the study fed [0, 1]). "imagenet": torchvision's ``mobilenet_v2-b0353104.pth``
        from the caches (``find_imagenet_weights``; FileNotFoundError when absent,
        SHA-256 checked), fine-tuned with the study's staged recipe on ImageNet
        ("torchvision") normalisation. "auto": that file when cached, else from
        scratch. A path: a torchvision ``.pth`` (any MobileNetV2 state dict with
        torchvision names) or a project backbone file (``stemroi.weights.save_backbone``,
        architecture "mobilenet_v2"). ``.pth`` files are converted once into the
        project's backbone file in ``stemroi.weights.weights_dir()`` and the
        returned estimator's ``weights`` names that file.
    input_size : side of the network input in pixels (patches are resized), >= 32.
        The network downsamples 32x: at 64 px the atomic columns of a 64 px patch are
        near the resolution of its second stage and training from scratch stalls
        (STO internal validation 0.40 at 64 px, 0.95 at 128 px after 40 epochs).
    Without ImageNet weights ``plateau_patience`` defaults to 10 (PatchClassifier: 3).
    """
    from .classifier import PatchClassifier

    for fixed in ("backbone", "mode"):
        if fixed in params:
            raise TypeError(f"MobileNetV2Classifier sets {fixed} itself; use stemroi.PatchClassifier "
                            f"for another {fixed}")
    input_size = check_positive_int(input_size, "input_size", minimum=32)
    if weights is None or (isinstance(weights, str) and weights == "random"):
        w = None
    elif isinstance(weights, str) and weights == "imagenet":
        w = str(_as_backbone_file(_imagenet_weights_file()))
    elif isinstance(weights, str) and weights == "auto":
        w = str(_as_backbone_file(_imagenet_weights_file())) if find_imagenet_weights() is not None else None
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        w = str(_as_backbone_file(path)) if path.is_file() and _is_torch_file(path) else os.fspath(weights)
    else:
        raise TypeError(f"weights must be None, 'random', 'imagenet', 'auto' or a file path, "
                        f"got {type(weights).__name__}")
    if w is None:
        # from scratch the validation loss is noisy; halving the rate after 3 stale epochs had
        # it at 1e-5 by epoch 25 with the training loss still 0.8 (CdTe, docs/segmentation.md)
        params.setdefault("plateau_patience", 10)
    return PatchClassifier(backbone="mobilenet_v2", mode="finetune", weights=w, input_size=input_size,
                           random_state=random_state, n_threads=n_threads, **params)
