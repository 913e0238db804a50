"""VGG16 patch embeddings (the VGG16 study's features) from the C++ core.

:class:`VGG16Features` is a scikit-learn style transformer: patches (n, h, w)
on [0, 1] -> (n, d) float32. The default reproduces Keras
``VGG16(include_top=False, pooling="avg")`` on 224x224 inputs: the 512-d
global average of block5_pool. The input pipeline (bilinear resize with
``align_corners=False``, grey -> 3 channels, normalisation preset) is the
core's one network-input function and equals
``stemroi.preprocessing.prepare_patches(patches, input_size, preset, "bilinear")``
exactly.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .._validation import check_n_threads, check_positive_int, check_random_state_seed
from .._device import place, resolve_device
from ..base import BaseEstimator, TransformerMixin, _load_model, _save_model

__all__ = ["VGG16Features", "extract_image_features"]

_POOLINGS = ("avg", "max", "flatten")
_CORE_ARCHITECTURE = "stemroi.VGG16Features.network"
_LAZY_FIT_LOCK = threading.Lock()
_DTYPES = ("float32", "bfloat16")


def _check_patches(X, name: str = "patches") -> np.ndarray:
    """(n, h, w) or (n, 1|3, h, w) -> float32 C-contiguous on [0, 1] (uint8 by ``stemroi.io.scale_to_unit``)."""
    if not isinstance(X, np.ndarray):
        X = np.asarray(X)
    if X.dtype.kind in "OUSVcMmb":
        raise TypeError(f"{name}: unsupported dtype {X.dtype} (expected float32, float64 or uint8 on [0, 1])")
    if X.ndim == 2:
        raise ValueError(
            f"{name}: expected a 3-D (n, h, w) stack of patches, got a 2-D array of shape {X.shape} "
            "(use patches[None] for a single patch)"
        )
    if X.ndim not in (3, 4):
        raise ValueError(f"{name}: expected (n, h, w) or (n, c, h, w), got shape {X.shape}")
    if X.ndim == 4 and X.shape[1] not in (1, 3):
        raise ValueError(f"{name}: expected 1 or 3 channels in (n, c, h, w), got shape {X.shape}")
    if X.size == 0:
        raise ValueError(f"{name}: empty array of shape {X.shape}")
    if X.dtype == np.uint8:
        from ..io._readers import scale_to_unit

        return np.ascontiguousarray(scale_to_unit(X, "dtype"))
    if X.dtype.kind in "iu":
        raise TypeError(f"{name}: integer dtype {X.dtype} is ambiguous; pass float on [0, 1] or uint8")
    X = np.ascontiguousarray(X, dtype=np.float32)
    lo, hi = float(X.min()), float(X.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name}: contains NaN or infinity; clean the data first")
    if lo < -0.01 or hi > 1.01:
        raise ValueError(
            f"{name}: values must lie in [0, 1], got range [{lo:g}, {hi:g}] "
            "(scale images first, e.g. stemroi.io.scale_to_unit)"
        )
    return X


class VGG16Features(TransformerMixin, BaseEstimator):
    """VGG16 embedding of image patches.

    Parameters
    ----------
    weights : None, "random", "imagenet", "imagenet-keras" or a path
        ``None``/"random": seeded *untrained* weights (torchvision init from
        ``random_state``), for tests and baselines. "imagenet-keras" is the
        VGG16 study's Keras file, "imagenet" torchvision's; both are fetched
        through :mod:`stemroi.models.weights` (cache ``$STEMROI_HOME``). A path may
        be a Keras ``.h5``, a torchvision ``.pth`` or a stemroi model file.
    layer : str or sequence of str
        "block{b}_pool" (alias "block{b}") or "block{b}_conv{i}"; several are
        concatenated.
    pooling : "avg", "max" or "flatten"
        Per layer: global average / max, or the flattened map (torch (C, H, W)
        order).
    input_size : int or None
        Patches are resized to ``input_size`` x ``input_size`` (bilinear,
        align_corners=False); None keeps their size (>= 32).
    preprocessing : None, "caffe", "torchvision", "tf" or "unit"
        None: what the weights expect (caffe for Keras, torchvision for
        torchvision and random weights).
    device : "cpu" (default), "cuda", "cuda:N" or "auto"
        Where the network runs. "cpu" gives bit-reproducible features; "auto"
        is "cuda" when LibTorch has a usable CUDA device, else "cpu"; CUDA
        features equal the CPU's within 1e-4. Checked by ``fit`` (which the
        first ``transform`` calls): ValueError naming the device when it is
        malformed or LibTorch has no usable CUDA device.
    batch_size : int
    n_threads : int or None
        Threads of the core (None: all available cores).
    random_state : int
        Seed of the random weights.
    dtype : "float32" or "bfloat16"
        bfloat16 runs oneDNN's bf16 kernels (AVX512-BF16 when the CPU has it);
        features stay float32 (cosine to float32 > 0.999 measured, see
        docs/weights.md).
    dense : bool
        Used by :func:`extract_image_features`: overlapping windows are pooled
        from one fully convolutional pass of the network over the whole
        (resized) image, in strips (see there for the per-patch equivalence).
    backend : "auto", "mkldnn", "channels_last" or "eager"
        CPU kernels layout; "auto" picks oneDNN blocked tensors with
        pre-reordered weights (the fastest measured).

    Attributes
    ----------
    model_ : stemroi._core.VGG16
    preprocessing_ : str
    weights_source_ : str
    n_features_out_ : int
    """

    def __init__(
        self,
        weights=None,
        layer="block5_pool",
        pooling="avg",
        input_size=224,
        preprocessing=None,
        device="cpu",
        batch_size=16,
        n_threads=None,
        random_state=0,
        dtype="float32",
        dense=False,
        backend="auto",
    ):
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.input_size = input_size
        self.preprocessing = preprocessing
        self.device = device
        self.batch_size = batch_size
        self.n_threads = n_threads
        self.random_state = random_state
        self.dtype = dtype
        self.dense = dense
        self.backend = backend

    # -- parameters -------------------------------------------------------
    def _layers(self) -> List[str]:
        from .._lib import _core

        layers = [self.layer] if isinstance(self.layer, str) else list(self.layer)
        if not layers or not all(isinstance(l, str) for l in layers):
            raise ValueError(f"layer must be a layer name or a non-empty list of names, got {self.layer!r}")
        return [_core.vgg16_tap(l)[0] for l in layers]  # validates, canonical names

    def _check_params(self):
        if self.pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {_POOLINGS}, got {self.pooling!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.input_size is not None:
            check_positive_int(self.input_size, "input_size", minimum=32)
        check_positive_int(self.batch_size, "batch_size")
        if self.preprocessing is not None and self.preprocessing not in ("caffe", "torchvision", "tf", "mobilenet", "unit"):
            raise ValueError(
                f"preprocessing must be None, 'caffe', 'torchvision', 'tf' or 'unit', got {self.preprocessing!r}"
            )
        resolve_device(self.device)
        return self._layers()

    # -- estimator API ----------------------------------------------------
    def fit(self, X=None, y=None):
        """Build the network and load the weights (no learning); returns self."""
        from .._lib import _core
        from ..models.weights import resolve_weights

        layers = self._check_params()
        seed = check_random_state_seed(self.random_state)
        state, expected, source = resolve_weights(self.weights)
        preprocessing = self.preprocessing or expected or "torchvision"
        has_top = state is not None and any(k.startswith("classifier.") for k in state)
        model = _core.VGG16(include_top=False, preprocessing=expected or "torchvision", seed=seed % 2**64)
        if state is not None:
            features_only = {k: v for k, v in state.items() if k.startswith("features.")}
            model.load_state_dict(features_only, strict=True, origin=source)
        self.model_ = place(model, self.device)
        self.layers_ = layers
        self.preprocessing_ = preprocessing
        self.weights_source_ = source
        self.has_classifier_weights_ = has_top
        size = self.input_size or 64
        self.n_features_out_ = int(model.feature_dim(layers, self.pooling, self.input_size or 0, size, size))
        return self

    def _ensure_fitted(self):
        # stateless transformer: weights are loaded on first use; the lock keeps a
        # concurrent first transform from loading them twice or seeing model_ before layers_
        with _LAZY_FIT_LOCK:
            if not hasattr(self, "model_"):
                self.fit()

    def transform(self, X, progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        """Patches (n, h, w) [or (n, 1|3, h, w)] on [0, 1] -> (n, d) float32.

        float64 is converted to float32, uint8 divided by 255.
        ``progress(done, total)`` is called after every batch; Ctrl-C stops
        between batches (KeyboardInterrupt).
        """
        self._ensure_fitted()
        X = _check_patches(X)
        out = self.model_.extract(
            X,
            self.layers_,
            pooling=self.pooling,
            input_size=self.input_size or 0,
            preprocessing=self.preprocessing_,
            batch_size=int(self.batch_size),
            n_threads=check_n_threads(self.n_threads),
            dtype=self.dtype,
            backend=self.backend,
            device=self.device,
            progress=progress,
        )
        self.n_features_out_ = int(out.shape[1])
        self.input_shape_ = tuple(int(v) for v in X.shape[-2:])
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        self._ensure_fitted()
        names = []
        h, w = getattr(self, "input_shape_", (64, 64))  # matters only for flatten without resizing
        for layer in self.layers_:
            d = self.model_.feature_dim([layer], self.pooling, self.input_size or 0, h, w)
            names.extend(f"vgg16_{layer}_{self.pooling}{i}" for i in range(d))
        return np.asarray(names, dtype=object)

    def _more_tags(self):
        return {"stateless": True, "requires_fit": False, "X_types": ["3darray"]}

    # -- pickling: the compiled network travels as a model file ----------------
    _core_attributes = ("model_",)

    def _write_core(self, path: str) -> None:
        _save_model(path, self.model_.state_dict(), architecture=_CORE_ARCHITECTURE,
                    config={"include_top": False, "preprocessing": self.model_.preprocessing})

    def _read_core(self, path: str) -> None:
        from .._lib import _core

        tensors, meta = _load_model(path, _CORE_ARCHITECTURE, what="VGG16Features network")
        model = _core.VGG16(include_top=False, preprocessing=meta["config"]["preprocessing"])
        model.load_state_dict(tensors, strict=True, origin="pickled VGG16Features")
        self.model_ = place(model, getattr(self, "device", "cpu"))


def extract_image_features(
    image,
    extractor: VGG16Features,
    patch_size: int = 64,
    stride: int = 64,
    *,
    chunk: int = 512,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Features of every ``patch_size`` window of a 2-D image on [0, 1].

    Returns ``(features (n, d) float32, origins (n, 2) int64)`` with windows
    every ``stride`` pixels, row-major, edge windows that do not fit dropped
    (as ``PatchGrid(patch_size, stride, edge="drop")``).

    With ``extractor.dense`` and ``stride < patch_size`` the network runs once
    over the resized image and each window's features are the area-weighted
    average of the block maps under it (only ``pooling="avg"``); otherwise
    every window is a patch of its own (processed ``chunk`` at a time).

    Dense mode, exactly: the image is resized by ``input_size / patch_size``
    (bilinear, as one image), the network runs over it as one fully
    convolutional pass (computed in strips of whole 32-pixel cell rows with a
    96-pixel halo, more than block5's 90-pixel reach, so the strips give the
    one-pass result to float rounding; the halo rows, about 7 % at the
    224-equivalent scale of a 768 frame, are the only repeated work), and
    window k gets the mean of the map cells its resized footprint covers,
    partly covered cells weighted by their overlap. Windows whose resized
    origin lies on the 32-pixel cell grid (native scale: origins multiple of
    32; 64 -> 224: multiple of 64) are plain means of whole cells. A window
    equals its per-patch features when it has no context (the window is the
    whole image); elsewhere the two differ only by context: per patch the
    convolutions zero-pad at the window border and the resize clamps there,
    while dense mode sees the neighbouring pixels (tests/test_vgg16.py checks
    both statements; benchmarks/vgg16.py reports the per-patch cosine).
    """
    if not isinstance(extractor, VGG16Features):
        raise TypeError(f"extractor must be a VGG16Features, got {type(extractor).__name__}")
    patch_size = check_positive_int(patch_size, "patch_size")
    stride = check_positive_int(stride, "stride")
    img = _check_patches(np.asarray(image)[None] if np.ndim(image) == 2 else image, name="image")
    if img.ndim != 3 or img.shape[0] != 1:
        raise ValueError(f"image: expected a 2-D (H, W) array, got shape {np.shape(image)}")
    img = img[0]
    H, W = img.shape
    if patch_size > min(H, W):
        raise ValueError(f"patch_size must be <= image size ({H}, {W}), got {patch_size}")
    extractor._ensure_fitted()
    if extractor.dense and stride < patch_size:
        if extractor.pooling != "avg":
            raise ValueError(f"dense mode pools windows by averaging; pooling must be 'avg', got {extractor.pooling!r}")
        feats, origins = extractor.model_.dense(
            np.ascontiguousarray(img),
            patch_size,
            stride,
            extractor.layers_,
            input_size=extractor.input_size or 0,
            preprocessing=extractor.preprocessing_,
            n_threads=check_n_threads(extractor.n_threads),
            dtype=extractor.dtype,
            backend=extractor.backend,
            device=extractor.device,
            progress=progress,
        )
        return feats, origins
    from ..preprocessing.grid import PatchGrid

    grid = PatchGrid(patch_size=patch_size, stride=stride, edge="drop", n_threads=extractor.n_threads)
    n = grid.n_patches(img.shape)
    parts, origins = [], []
    for o, patches in grid.iter_batches(img, batch_size=chunk):
        parts.append(extractor.transform(patches))
        origins.append(o)
        if progress is not None:
            progress(sum(len(b) for b in origins), n)
    return np.concatenate(parts, axis=0), np.concatenate(origins, axis=0)
