"""MobileNetV2 backbone (C++ core, torchvision layout) and the study's baseline
classifier of labelled STEM patches (``MobileNetV2Classifier``: a
``PatchClassifier`` on this backbone, trained by the classifier's loop).

The study (Sathish et al.) fed patches in [0, 1] to a Keras MobileNetV2 that
expects [-1, 1]; here the "tf" preset maps [0, 1] -> [-1, 1]. ImageNet weights
are torchvision's ``mobilenet_v2-b0353104.pth``, the ``"mobilenet_v2-imagenet"``
entry of :mod:`stemroi.models.weights` (cache, SHA-256 check, safe loading). The
default start is the backbone pretrained on synthetic STEM and shipped with the
package (``"mobilenet_v2-stem"``); ``weights=None`` trains from scratch.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np

from .._device import place
from .._lib import _core
from .._validation import check_array, check_n_threads, check_positive_int, check_random_state_seed
from ..base import _load_model, _ModelFilePickling, _save_model
from . import weights as _weights

if TYPE_CHECKING:  # pragma: no cover
    from ..models.classifier import PatchClassifier

__all__ = ["MobileNetV2", "MobileNetV2Classifier", "IMAGENET_WEIGHTS", "STEM_WEIGHTS"]

_NETWORK_ARCHITECTURE = "stemroi.MobileNetV2.network"

IMAGENET_WEIGHTS = "mobilenet_v2-imagenet"  # key of torchvision's ImageNet file in stemroi.models.weights.REGISTRY
STEM_WEIGHTS = "mobilenet_v2-stem"  # the shipped STEM-pretrained backbone (scripts/pretrain_stem.py)


class MobileNetV2(_ModelFilePickling):
    """Thin Python handle of the C++ MobileNetV2 (torchvision parameter names).

    ``weights``: None/"random" (seeded torchvision initialisation), "imagenet"
    (the registry's torchvision file, fetched and hash-checked by
    :func:`stemroi.models.weights.fetch`) or a path to a torchvision ``.pth`` /
    a dict of arrays. ``device``: "cpu" (default), "cuda", "cuda:N" or "auto"
    (where the network runs; ValueError naming the device when LibTorch cannot
    use it).
    """

    def __init__(self, num_classes: int = 1000, *, weights=None, dropout: float = 0.2, random_state=0, n_threads=None,
                 device: str = "cpu"):
        num_classes = check_positive_int(num_classes, "num_classes")
        if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.num_classes = num_classes
        self.dropout = float(dropout)
        self.n_threads = n_threads
        self.device = device
        self.net = place(_core.MobileNetV2(num_classes, float(dropout), check_random_state_seed(random_state)), device)
        self.weights_origin = "random"
        if weights is not None and not (isinstance(weights, str) and weights == "random"):
            self.load_weights(weights)

    def load_weights(self, weights, *, include_classifier: Optional[bool] = None) -> None:
        if isinstance(weights, dict):
            state, origin = weights, "a state dict"
        else:
            path = _weights.fetch(IMAGENET_WEIGHTS) if isinstance(weights, str) and weights == "imagenet" else Path(weights)
            state, origin = _weights.load_torchvision_state(path), str(path)
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
        return _core.network_input(np.ascontiguousarray(X), size=size, preset="tf", method="bilinear",
                                   n_threads=check_n_threads(self.n_threads))

    def forward(self, x) -> np.ndarray:
        """Logits of prepared inputs (n, 3, S, S)."""
        X = check_array(x, name="x", ndim=4, dtype=(np.float32,))
        return self.net.forward(X, check_n_threads(self.n_threads))

    def features(self, x) -> np.ndarray:
        """Feature maps (n, 1280, S/32, S/32) of prepared inputs."""
        X = check_array(x, name="x", ndim=4, dtype=(np.float32,))
        return self.net.features(X, check_n_threads(self.n_threads))

    # -- pickling: the network travels as a model file ---------------------------------
    _core_attributes = ("net",)

    def _write_core(self, path: str) -> None:
        _save_model(path, self.state_dict(), architecture=_NETWORK_ARCHITECTURE,
                    config={"num_classes": int(self.num_classes), "dropout": self.dropout})

    def _read_core(self, path: str) -> None:
        tensors, meta = _load_model(path, _NETWORK_ARCHITECTURE, what="MobileNetV2 network")
        net = _core.MobileNetV2(int(meta["config"]["num_classes"]), float(meta["config"]["dropout"]), 0)
        net.load_torchvision_state(tensors, True, "pickled MobileNetV2")
        self.net = place(net, getattr(self, "device", "cpu"))


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
    digest = _weights.sha256_file(path)
    out = _weights.weights_dir() / f"mobilenet_v2-{digest[:16]}.stemroi"
    if not out.is_file():
        state = _weights.load_torchvision_state(path)
        for k in [k for k in state if k.endswith(".running_mean")]:
            state.setdefault(k[: -len("running_mean")] + "num_batches_tracked", np.zeros((), np.float32))
        out.parent.mkdir(parents=True, exist_ok=True)
        _weights.save_backbone(out, state, architecture="mobilenet_v2",
                               preprocessing=_weights.REGISTRY[IMAGENET_WEIGHTS].preprocessing,
                               model_card={"converted_from": str(path), "source_sha256": digest})
    return out


def MobileNetV2Classifier(weights="stem", *, input_size: int = 96, random_state=0, n_threads=None,
                          **params) -> "PatchClassifier":
    """The study's MobileNetV2 baseline: ``stemroi.PatchClassifier`` with the
    MobileNetV2 backbone (``backbone="mobilenet_v2", mode="finetune"``).

    A factory, not a class: it returns a configured, unfitted ``PatchClassifier``
    (its training loop, early stopping, augmentation, label smoothing, class
    weights, calibration, save/load). Any other ``PatchClassifier`` parameter
    (``max_epochs``, ``batch_size``, ``learning_rate``, ``patch_contrast``,
    ``validation_fraction``, ``device``, ...) is passed through ``**params``.

    weights : "stem" (default), "imagenet", "auto", None / "random" or a file path
        "stem": the MobileNetV2 backbone pretrained on synthetic STEM patches only and
        shipped with the package (registry entry ``"mobilenet_v2-stem"``, made by
        ``scripts/pretrain_stem.py --backbone mobilenet_v2`` at 96 px; works offline),
        fine-tuned like the STEM small_cnn: the head on the frozen backbone, then every
        stage at 0.3 x the rate. The best measured start (docs/weights.md: SrTiO3
        overlap-aware split 0.947 over 3 seeds with the default 8 views, 0.94-0.96, and 0.957 over
        3 such splits x 3 seeds, against 0.36 from scratch). "imagenet" (the study's):
        torchvision's ``mobilenet_v2-b0353104.pth`` (registry entry
        ``"mobilenet_v2-imagenet"``: cached or downloaded by ``stemroi.models.weights.fetch``,
        SHA-256 checked), fine-tuned with the study's staged recipe on ImageNet
        ("torchvision") normalisation. "auto": that file when cached, else "stem".
        None / "random": seeded initialisation, the whole network trained from scratch,
        inputs in [-1, 1] (the backbone's own "tf" preset; the study fed [0, 1]). A path:
        a torchvision ``.pth`` (any MobileNetV2 state dict with torchvision names) or a
        project backbone file (``stemroi.models.weights.save_backbone``, architecture
        "mobilenet_v2"). ``.pth`` files are converted once into the project's backbone
        file in ``stemroi.models.weights.weights_dir()`` and the returned estimator's
        ``weights`` names that file.
    input_size : side of the network input in pixels (patches are resized), >= 32.
        The network downsamples 32x: at 64 px the atomic columns of a 64 px patch are
        near the resolution of its second stage and training from scratch stalls
        (STO internal validation 0.40 at 64 px, 0.95 at 128 px after 40 epochs).

    From scratch (``weights=None``) ``plateau_patience`` defaults to 10 (PatchClassifier: 3).
    ``views`` defaults to 8 (PatchClassifier: 1): predictions average the logits of the 8 dihedral
    views of each patch, which costs 8 forward passes and gained about +0.04 on SrTiO3 and CdTe.
    From the STEM weights ``max_epochs`` defaults to 15 per stage (PatchClassifier: 40), the
    measured best with 8 views.
    """
    from ..models.classifier import PatchClassifier

    for fixed in ("backbone", "mode"):
        if fixed in params:
            raise TypeError(f"MobileNetV2Classifier sets {fixed} itself; use stemroi.PatchClassifier "
                            f"for another {fixed}")
    input_size = check_positive_int(input_size, "input_size", minimum=32)
    if weights is None or (isinstance(weights, str) and weights == "random"):
        w = None
    elif isinstance(weights, str) and weights in ("stem", STEM_WEIGHTS):
        w = STEM_WEIGHTS  # shipped with the package, SHA-256 checked when loaded
    elif isinstance(weights, str) and weights == "imagenet":
        w = str(_as_backbone_file(_weights.fetch(IMAGENET_WEIGHTS)))
    elif isinstance(weights, str) and weights == "auto":
        cached = _weights.cached_path(IMAGENET_WEIGHTS) is not None
        w = str(_as_backbone_file(_weights.fetch(IMAGENET_WEIGHTS, download=False))) if cached else STEM_WEIGHTS
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        w = str(_as_backbone_file(path)) if path.is_file() and _is_torch_file(path) else os.fspath(weights)
    else:
        raise TypeError(f"weights must be None, 'random', 'stem', 'imagenet', 'auto' or a file path, "
                        f"got {type(weights).__name__}")
    if w is None:
        # from scratch the validation loss is noisy; halving the rate after 3 stale epochs had
        # it at 1e-5 by epoch 25 with the training loss still 0.8 (CdTe, docs/segmentation.md)
        params.setdefault("plateau_patience", 10)
    elif w == STEM_WEIGHTS:
        # from the STEM weights at most 15 epochs per stage: with 8 views, SrTiO3 0.942 against 0.918
        # after at most 40 + 40 epochs (docs/weights.md, measured with the 20-epoch pretraining), in
        # 2.5x less time
        params.setdefault("max_epochs", 15)
    # predictions averaged over the 8 dihedral views: SrTiO3 overlap-aware split 0.915 -> 0.947,
    # CdTe 0.897 -> 0.950 (docs/weights.md); views=1 is 8x faster at prediction
    params.setdefault("views", 8)
    return PatchClassifier(backbone="mobilenet_v2", mode="finetune", weights=w, input_size=input_size,
                           random_state=random_state, n_threads=n_threads, **params)
