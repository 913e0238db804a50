"""VGG16 patch embeddings (the VGG16 study's features) from the C++ core.

:class:`VGG16Features` is a scikit-learn style transformer: patches (n, h, w)
on [0, 1] -> (n, d) float32. The default reproduces Keras
``VGG16(include_top=False, pooling="avg")`` on 224x224 inputs: the 512-d
global average of block5_pool. The input pipeline (bilinear resize with
``align_corners=False``, grey -> 3 channels, normalisation preset) runs in
LibTorch inside the core and equals
``stemroi.preprocess.prepare_patches(patches, input_size, preset, "bilinear")``.
"""
from __future__ import annotations

import inspect
import os
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ._validation import check_n_threads, check_positive_int, check_random_state_seed

__all__ = ["VGG16Features", "extract_image_features"]

try:  # sklearn gives clone()/Pipeline/repr support; the class works without it
    from sklearn.base import BaseEstimator as _Base
    from sklearn.base import TransformerMixin as _Mixin
except ImportError:  # pragma: no cover - sklearn is a test dependency

    class _Base:  # minimal get_params/set_params
        def get_params(self, deep=True):
            return {k: getattr(self, k) for k in inspect.signature(self.__init__).parameters}

        def set_params(self, **params):
            for k, v in params.items():
                setattr(self, k, v)
            return self

    class _Mixin:
        def fit_transform(self, X, y=None, **fit_params):
            return self.fit(X, y, **fit_params).transform(X)


_POOLINGS = ("avg", "max", "flatten")
_DTYPES = ("float32", "bfloat16")


def _check_patches(X, name: str = "patches") -> np.ndarray:
    """(n, h, w) or (n, 1|3, h, w) -> float32 C-contiguous on [0, 1] (uint8 / 255)."""
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
        return np.ascontiguousarray(X, dtype=np.float32) / np.float32(255.0)
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


class VGG16Features(_Mixin, _Base):
    """VGG16 embedding of image patches.

    Parameters
    ----------
    weights : None, "random", "imagenet", "imagenet-keras" or a path
        ``None``/"random": seeded *untrained* weights (torchvision init from
        ``random_state``), for tests and baselines. "imagenet-keras" is the
        VGG16 study's Keras file, "imagenet" torchvision's; both are fetched
        through :mod:`stemroi.weights` (cache ``$STEMROI_HOME``). A path may
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
    device : "cpu" or "cuda[:i]"
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
        from one pass of the network over the whole image.
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
        from ._lib import _core

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
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {self.device!r}")
        return self._layers()

    # -- estimator API ----------------------------------------------------
    def fit(self, X=None, y=None):
        """Build the network and load the weights (no learning); returns self."""
        from ._lib import _core
        from .weights import resolve_weights

        layers = self._check_params()
        seed = check_random_state_seed(self.random_state)
        state, expected, source = resolve_weights(self.weights)
        preprocessing = self.preprocessing or expected or "torchvision"
        has_top = state is not None and any(k.startswith("classifier.") for k in state)
        model = _core.VGG16(include_top=False, preprocessing=expected or "torchvision", seed=seed % 2**64)
        if state is not None:
            features_only = {k: v for k, v in state.items() if k.startswith("features.")}
            model.load_state_dict(features_only, strict=True, origin=source)
        self.model_ = model
        self.layers_ = layers
        self.preprocessing_ = preprocessing
        self.weights_source_ = source
        self.has_classifier_weights_ = has_top
        size = self.input_size or 64
        self.n_features_out_ = int(model.feature_dim(layers, self.pooling, self.input_size or 0, size, size))
        return self

    def _ensure_fitted(self):
        if not hasattr(self, "model_"):
            self.fit()  # stateless transformer: weights are loaded on first use

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

    def __getstate__(self):  # the compiled model is rebuilt on unpickling
        state = self.__dict__.copy()
        if "model_" in state:
            state["_vgg16_state"] = state.pop("model_").state_dict()
        return state

    def __setstate__(self, state):
        saved = state.pop("_vgg16_state", None)
        self.__dict__.update(state)
        if saved is not None:
            from ._lib import _core

            model = _core.VGG16(include_top=False, preprocessing=self.preprocessing_)
            model.load_state_dict(saved, strict=True, origin="pickled VGG16Features")
            self.model_ = model


def _window_origins(shape: Tuple[int, int], patch_size: int, stride: int) -> np.ndarray:
    """Top-left corners of the windows that fit, row-major (PatchGrid edge='drop')."""
    try:
        from .patches import PatchGrid  # type: ignore[import-not-found]
    except ImportError:
        PatchGrid = None
    if PatchGrid is not None:
        try:
            return np.asarray(PatchGrid(patch_size=patch_size, stride=stride, edge="drop").origins(shape), dtype=np.int64)
        except Exception:
            pass  # fall back to the same grid computed here
    rows = np.arange(0, shape[0] - patch_size + 1, stride, dtype=np.int64)
    cols = np.arange(0, shape[1] - patch_size + 1, stride, dtype=np.int64)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


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
    origins = _window_origins((H, W), patch_size, stride)
    windows = np.lib.stride_tricks.sliding_window_view(img, (patch_size, patch_size))
    parts = []
    for start in range(0, len(origins), chunk):
        o = origins[start : start + chunk]
        patches = np.ascontiguousarray(windows[o[:, 0], o[:, 1]])
        parts.append(extractor.transform(patches))
        if progress is not None:
            progress(min(start + chunk, len(origins)), len(origins))
    return np.concatenate(parts, axis=0), origins
