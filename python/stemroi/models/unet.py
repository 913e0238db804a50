"""Weakly supervised multi-defect segmentation (Sathish, Sosa Espada, Karagiannis).

Patches carry one class label each; pixel pseudo-labels come from local
intensity deviations (:func:`pseudo_label_masks`); a small U-Net (C++ core,
LibTorch) is trained on synthetic multi-defect samples (pixel-wise maximum of
1-3 patches of different classes, one sigmoid channel per defect class plus
background) and predicts per-class probability maps of images of any size
(tiled with overlap and a smooth blending window, so there are no seams).
"""
from __future__ import annotations

import numbers
import os
import time
import warnings
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .._device import place, resolve_device
from .._lib import _core
from .._validation import check_array, check_n_threads, check_positive_int, check_random_state_seed
from ..base import BaseEstimator, _load_model, _save_model
from ..preprocessing._resample import card_pixel_size, recorded_pixel_size

__all__ = [
    "DefectSegmenter",
    "pseudo_label_masks",
    "residual_pseudo_labels",
    "pseudo_label_scores",
    "local_deviation",
    "make_multi_defect_samples",
    "unet_encoder_state",
]

# The recipes: the parameters left at None take their value from the recipe.
# "default": the best measured recipe (docs/segmentation.md: CVAE-residual pseudo-labels,
# the encoder from the STEM-pretrained small_cnn (width 16; base 8 when started at random),
# 60 epochs x 256 single-patch samples, Adam 1e-3, positive weight 2, each input tile z-scored);
# "study": the weakly supervised segmentation study's settings (local-deviation
# pseudo-labels at p98, base 32, composed samples of up to 3 patches, plain BCE).
RECIPES = {
    "default": dict(epochs=60, batch_size=16, learning_rate=1e-3, base_channels=8, pseudo_label="cvae",
                    percentile=99.0, samples_per_epoch=256, max_parts=1, positive_weight=2.0, augment=False,
                    cvae_epochs=20, input_contrast="standardize", encoder_weights="stem"),
    "study": dict(epochs=20, batch_size=32, learning_rate=1e-3, base_channels=32, pseudo_label="deviation",
                  percentile=98.0, samples_per_epoch=0, max_parts=3, positive_weight=1.0, augment=False,
                  cvae_epochs=20, input_contrast="none", encoder_weights="random"),
}
_PSEUDO_LABELS = ("cvae", "deviation", "lattice")
_INPUT_CONTRASTS = ("standardize", "none")

_ARCHITECTURE = "unet_multilabel"
_FORMAT_KIND = "stemroi.DefectSegmenter"
# the network alone (a pickled DefectSegmenter's core object)
_NETWORK_ARCHITECTURE = "stemroi.DefectSegmenter.network"


def _check_patches(patches, name="patches") -> np.ndarray:
    arr = check_array(patches, name=name, ndim=3, dtype=(np.float32,))
    return arr


def _check_filter_options(sigma, size, percentile):
    if not isinstance(sigma, numbers.Real) or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    size = check_positive_int(size, "size")
    if not isinstance(percentile, numbers.Real) or not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
    return float(sigma), size, float(percentile)


def local_deviation(patches, *, sigma: float = 1.0, size: int = 7, n_threads=None) -> np.ndarray:
    """``|G_sigma(p) - uniform_size(G_sigma(p))|`` for each patch of a (n, h, w) stack
    (scipy.ndimage reflect mode)."""
    arr = _check_patches(patches)
    sigma, size, _ = _check_filter_options(sigma, size, 50.0)
    return _core.local_deviation(arr, sigma, size, check_n_threads(n_threads))


_METHODS = ("deviation", "lattice")


def _check_method(method):
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    return method


def pseudo_label_scores(patches, *, method: str = "deviation", sigma: float = 1.0, size: int = 7, n_threads=None) -> np.ndarray:
    """Score maps the pseudo-labels threshold: ``"deviation"`` (the study's
    ``|G - uniform(G)|``) or ``"lattice"`` (``|G(x) - median_k G(x + t_k)|`` over
    the 8 lattice translations found from the patch's autocorrelation)."""
    arr = _check_patches(patches)
    sigma, size, _ = _check_filter_options(sigma, size, 50.0)
    return _core.pseudo_label_scores(arr, sigma, size, _check_method(method), check_n_threads(n_threads))


def residual_pseudo_labels(patches, is_bulk, model, *, quantile: float = 0.99, sigma: float = 2.0,
                           n_threads=None) -> np.ndarray:
    """Pseudo-labels from a bulk model: pixels whose local reconstruction error
    under ``model`` (a fitted :class:`stemroi.BulkCVAE`, trained on bulk of the
    same material) exceeds the ``quantile`` of that error over the ``is_bulk``
    patches. The error is the residual squared, Gaussian-smoothed (``sigma``)
    and square-rooted. Unlike the local-deviation rules, which mark the
    brightest specks of every patch, this marks what is *not* bulk, including
    extended defects (stacking faults, junctions) that fill a patch, and marks
    nothing in a defect patch that looks like bulk. Bulk patches get empty masks.
    Returns (n, h, w) uint8 in {0, 1}."""
    arr = _check_patches(patches)
    bulk = np.asarray(is_bulk).astype(bool)
    if bulk.shape != (arr.shape[0],):
        raise ValueError(f"is_bulk must have shape ({arr.shape[0]},), got {bulk.shape}")
    if not bulk.any():
        raise ValueError("is_bulk: at least one bulk patch is needed to set the threshold, got none")
    if not (0 < float(quantile) < 1):
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    if not hasattr(model, "difference"):
        raise TypeError(f"model must be a fitted stemroi.BulkCVAE, got {type(model).__name__}")
    from ..preprocessing.filters import gaussian_filter

    crop = int(model.crop_size)
    if arr.shape[1:] != (crop, crop):
        raise ValueError(f"patches must be {crop} x {crop} like the model's crops, got {arr.shape[1:]}")
    err = np.sqrt(gaussian_filter(model.difference(arr) ** 2, float(sigma), n_threads=n_threads))
    t = float(np.quantile(err[bulk], float(quantile)))
    masks = (err > t).astype(np.uint8)
    masks[bulk] = 0
    return masks


def pseudo_label_masks(
    patches, is_bulk=None, *, sigma: float = 1.0, size: int = 7, percentile: float = 98.0,
    method: str = "deviation", n_threads=None,
) -> np.ndarray:
    """Pseudo-labels: pixels whose score (:func:`pseudo_label_scores`; the
    study's local deviation by default) is strictly above the ``percentile`` of
    that patch's scores; patches flagged ``is_bulk`` get empty masks. Returns
    (n, h, w) uint8 in {0, 1}."""
    arr = _check_patches(patches)
    sigma, size, percentile = _check_filter_options(sigma, size, percentile)
    _check_method(method)
    if is_bulk is None:
        bulk = np.zeros(arr.shape[0], np.uint8)
    else:
        bulk = np.ascontiguousarray(np.asarray(is_bulk).astype(bool).astype(np.uint8))
        if bulk.shape != (arr.shape[0],):
            raise ValueError(f"is_bulk must have shape ({arr.shape[0]},), got {bulk.shape}")
    return _core.pseudo_label_masks(arr, bulk, sigma, size, percentile, method, check_n_threads(n_threads))


def make_multi_defect_samples(
    patches, masks, labels, n_classes: int, n_samples: int, *, max_parts: int = 3, random_state=0
) -> Tuple[np.ndarray, np.ndarray]:
    """Synthetic multi-defect samples: each is the pixel-wise maximum of 1..max_parts
    patches with distinct labels. ``labels`` in [-1, n_classes) (-1 = bulk).
    Returns images (m, 1, h, w) and targets (m, n_classes + 1, h, w) whose last
    channel is background = 1 - max(defect masks)."""
    arr = _check_patches(patches)
    m = np.ascontiguousarray(np.asarray(masks, dtype=np.uint8))
    lab = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    n_classes = check_positive_int(n_classes, "n_classes")
    n_samples = check_positive_int(n_samples, "n_samples", minimum=0)
    max_parts = check_positive_int(max_parts, "max_parts")
    seed = check_random_state_seed(random_state)
    return _core.compose_multi_defect(arr, m, lab, n_classes, n_samples, max_parts, seed)


def unet_encoder_state(backbone_state, eps: float = 1e-5) -> dict:
    """U-Net encoder weights (``enc1``, ``enc2``, ``bottleneck``) from a ``small_cnn``
    backbone state: its blocks 1-3 are the same layers (two 3 x 3 convolutions of
    widths w, 2w, 4w, each followed by ReLU, then 2 x 2 max pooling), with batch
    norm (running statistics, ``eps``) folded into each convolution's weight and
    bias. The backbone saw the grey patch copied into 3 channels, so the first
    convolution's 3 input channels are summed into the U-Net's one. The U-Net pads
    by reflection where the backbone padded with zeros: away from the tile border
    the encoder computes the backbone's features of the same input exactly."""
    state = {k: np.asarray(v, np.float64) for k, v in backbone_state.items()}
    out = {}
    for level, block in (("enc1", "block1"), ("enc2", "block2"), ("bottleneck", "block3")):
        for conv, bn, target in ((0, 1, 0), (3, 4, 2)):
            try:
                w = state[f"{block}.{conv}.weight"]
                gamma, beta = state[f"{block}.{bn}.weight"], state[f"{block}.{bn}.bias"]
                mean, var = state[f"{block}.{bn}.running_mean"], state[f"{block}.{bn}.running_var"]
            except KeyError as exc:
                raise ValueError(f"encoder weights: not a small_cnn backbone state, {exc.args[0]!r} is missing "
                                 f"(keys: {sorted(state)[:6]}...)") from None
            scale = gamma / np.sqrt(var + eps)
            w = w * scale[:, None, None, None]
            if level == "enc1" and conv == 0:
                w = w.sum(axis=1, keepdims=True)
            out[f"{level}.{target}.weight"] = w.astype(np.float32)
            out[f"{level}.{target}.bias"] = (beta - mean * scale).astype(np.float32)
    return out


def _encoder_init(encoder_weights, base_channels, explicit: bool = True) -> Tuple[Optional[dict], str]:
    """(U-Net encoder state or None, a description) of an ``encoder_weights`` argument.
    A recipe's encoder (``explicit=False``) gives way to an explicit ``base_channels`` of another
    width: the network is then initialised at random."""
    if encoder_weights is None or (isinstance(encoder_weights, str) and encoder_weights == "random"):
        return None, "random"
    if not isinstance(encoder_weights, (str, os.PathLike)):
        raise TypeError(f"encoder_weights must be 'random', 'stem' or the path of a small_cnn backbone file, "
                        f"got {type(encoder_weights).__name__}")
    from .weights import resolve_weights

    state, _, source = resolve_weights(encoder_weights, architecture="small_cnn")
    encoder = unet_encoder_state(state)
    width = int(encoder["enc1.0.weight"].shape[0])
    if base_channels is not None and int(base_channels) != width:
        if not explicit:
            return None, f"random (the recipe's {encoder_weights!r} encoder has width {width}, not {base_channels})"
        raise ValueError(f"encoder_weights={os.fspath(encoder_weights)!r} has width {width}, but base_channels="
                         f"{base_channels} was given; leave base_channels=None or pass {width}")
    return encoder, (encoder_weights if isinstance(encoder_weights, str) and encoder_weights == "stem"
                     else source)


class DefectSegmenter(BaseEstimator):
    """Weakly supervised U-Net producing one probability map per defect class.

    Parameters left at ``None`` take their value from ``recipe`` (``RECIPES``);
    a value given explicitly always wins. ``resolved_params_`` (after ``fit``)
    holds the values used.

    Parameters
    ----------
    classes : sequence of str or None
        All class names of the labelled patches (bulk included). ``None``: the
        sorted unique labels seen by ``fit``. Integer labels index this list.
    recipe : "default" (None) or "study"
        "default": the best measured recipe (CVAE-residual pseudo-labels, the STEM-pretrained encoder at width 16,
        60 epochs x 256 samples, batch 16, Adam 1e-3, positive weight 2, one patch
        per sample, every input tile z-scored); "study": the study's (local-deviation pseudo-labels at p98,
        base 32, 20 epochs x n patches, batch 32, Adam 1e-3, plain BCE, up to 3
        patches per sample).
    epochs, batch_size, learning_rate : training settings (Adam, BCE).
    random_state : int, seeds the network initialisation and the sample composition.
    n_threads : LibTorch threads (None = all available cores).
    bulk_class : name of the defect-free class (its patches get empty masks).
    base_channels : U-Net width (levels base, 2*base; bottleneck 4*base).
    pseudo_label : "cvae" (default recipe: pixels a bulk CVAE trained on the bulk
        patches cannot reconstruct, :func:`residual_pseudo_labels`), "deviation"
        (the study's) or "lattice" (lattice-translation residual).
    cvae : a fitted :class:`stemroi.BulkCVAE` of the same material for
        ``pseudo_label="cvae"``; None: one is trained on the bulk patches
        (``cvae_epochs`` epochs, the "dataset_repo" variant, Adam 1e-3), kept as ``cvae_``.
    cvae_epochs : epochs of that CVAE (default recipe: 20).
    residual_quantile, residual_sigma : the "cvae" pseudo-label threshold (bulk
        quantile of the smoothed residual) and smoothing (0.99, 2 px).
    input_contrast : "standardize" (default recipe) z-scores every input tile
        of the network, in training and prediction alike, and maps it to [0, 1]
        as 0.5 + 0.15 z (the classifier's ``patch_contrast``): the maps follow
        the lattice, not the slowly varying brightness of a frame, which
        differs between where the labelled patches were cut and the rest of a
        new frame (docs/segmentation.md); "none" (study): tiles as they are.
    augment : acquisition-like augmentation of the training samples (see
        :mod:`stemroi.models._augment`): False, True (= "acquisition": gain,
        offset, gamma, noise, blur, scale, rotation at preset strengths), names
        joined by "+" or a dict of strengths. Masks follow the geometric changes.
    sigma, filter_size, percentile : pseudo-label settings (study: 1, 7, 98).
    samples_per_epoch : synthetic samples per epoch (None: number of patches).
    max_parts : patches combined per synthetic sample (study: 3).
    tile_stride : stride of the prediction tiles as a fraction of the tile (0.5).
    positive_weight : BCE weight of defect pixels (the masks cover ~2 % of a
        patch; 1 = the study's plain BCE, larger values make the maps reach 0.5).
    encoder_weights : "stem" (default recipe: the ``small_cnn`` backbone pretrained
        on synthetic STEM and shipped with the package, docs/weights.md), "random"
        (study recipe: seeded initialisation) or the path of a ``small_cnn`` backbone file
        (:func:`stemroi.models.weights.save_backbone`). The encoder's three levels
        start from the backbone's first three blocks, batch norm folded into the
        convolutions (:func:`unet_encoder_state`); the decoder starts at random.
        The U-Net width then is the backbone's (16 for "stem"); an explicit
        ``base_channels`` of another width is refused when ``encoder_weights`` is
        given too, and starts the network at random when it comes from the recipe.
        On the CdTe frame (5 seeds, docs/segmentation.md) the channels were
        class-specific in 5 of 5 seeds with the pretrained encoder and with a random
        start at the same width 16 (random at base 8: 1 of 5): the width does most
        of it. The pretrained encoder separates the channels more sharply (SF1 on
        the vertical fault 227 against <= 0.3 elsewhere; random 16: 12 against up to
        5.6) and gives tile AUROC 0.985 (min 0.978) against 0.976 (min 0.949).
    device : "cpu" (default), "cuda", "cuda:N" or "auto": where the U-Net trains
        and predicts ("auto": "cuda" when LibTorch has a usable CUDA device, else
        "cpu"). A fixed ``random_state`` repeats bit for bit on the CPU; on CUDA,
        LibTorch's backward passes of bilinear upsampling and reflect padding
        accumulate with atomics, so trained weights may differ in the last bits
        between runs. CUDA maps of the same weights equal the CPU's within 1e-4.
        Checked by ``fit``: ValueError naming the device when it is malformed or
        LibTorch has no usable CUDA device. Model files hold CPU tensors and load
        onto any device (``load(device=)``).
    """

    def __init__(
        self,
        classes: Optional[Sequence[str]] = None,
        epochs: Optional[int] = None,
        batch_size: Optional[int] = None,
        learning_rate: Optional[float] = None,
        random_state=0,
        n_threads=None,
        *,
        recipe: Optional[str] = None,
        bulk_class: Optional[str] = "Bulk",
        base_channels: Optional[int] = None,
        sigma: float = 1.0,
        filter_size: int = 7,
        percentile: Optional[float] = None,
        samples_per_epoch: Optional[int] = None,
        max_parts: Optional[int] = None,
        tile_stride: float = 0.5,
        pseudo_label: Optional[str] = None,
        positive_weight: Optional[float] = None,
        augment=None,
        input_contrast: Optional[str] = None,
        cvae=None,
        cvae_epochs: Optional[int] = None,
        residual_quantile: float = 0.99,
        residual_sigma: float = 2.0,
        encoder_weights=None,
        device: str = "cpu",
    ):
        self.classes = classes
        self.recipe = recipe
        self.augment = augment
        self.input_contrast = input_contrast
        self.cvae = cvae
        self.cvae_epochs = cvae_epochs
        self.residual_quantile = residual_quantile
        self.residual_sigma = residual_sigma
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state
        self.n_threads = n_threads
        self.bulk_class = bulk_class
        self.base_channels = base_channels
        self.sigma = sigma
        self.filter_size = filter_size
        self.percentile = percentile
        self.samples_per_epoch = samples_per_epoch
        self.max_parts = max_parts
        self.tile_stride = tile_stride
        self.pseudo_label = pseudo_label
        self.positive_weight = positive_weight
        self.encoder_weights = encoder_weights
        self.device = device

    _fitted_attribute = "net_"
    _core_attributes = ("net_",)

    # ---- helpers ---------------------------------------------------------
    def _encode_labels(self, labels, n: int) -> Tuple[List[str], np.ndarray]:
        lab = np.asarray(labels)
        if lab.ndim != 1 or lab.shape[0] != n:
            raise ValueError(f"labels must have shape ({n},), got {lab.shape}")
        if self.classes is not None:
            classes = [str(c) for c in self.classes]
            if len(set(classes)) != len(classes):
                raise ValueError(f"classes must be unique, got {classes}")
        elif lab.dtype.kind in "US":
            classes = sorted({str(v) for v in lab})
        elif lab.dtype.kind in "iu":
            classes = [str(v) for v in sorted({int(v) for v in lab})]
            lab = lab.astype(str)
        else:
            raise TypeError(f"labels must be strings or integers, got dtype {lab.dtype}")
        if lab.dtype.kind in "US":
            lookup = {c: i for i, c in enumerate(classes)}
            unknown = sorted({str(v) for v in lab} - set(lookup))
            if unknown:
                raise ValueError(f"labels {unknown} are not in classes {classes}")
            idx = np.array([lookup[str(v)] for v in lab], np.int64)
        elif lab.dtype.kind in "iu":
            idx = lab.astype(np.int64)
            if idx.min() < 0 or idx.max() >= len(classes):
                raise ValueError(f"integer labels must be in [0, {len(classes)}), got range [{idx.min()}, {idx.max()}]")
        else:
            raise TypeError(f"labels must be strings or integers, got dtype {lab.dtype}")
        return classes, idx

    def _resolved(self) -> dict:
        """The parameters of the recipe with the explicitly given ones on top."""
        recipe = "default" if self.recipe is None else self.recipe
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)} or None, got {self.recipe!r}")
        out = dict(RECIPES[recipe])
        for k in out:
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out

    def _check_settings(self) -> dict:
        resolve_device(self.device)
        p = self._resolved()
        check_positive_int(p["epochs"], "epochs")
        check_positive_int(p["batch_size"], "batch_size")
        check_positive_int(p["base_channels"], "base_channels")
        check_positive_int(p["max_parts"], "max_parts")
        check_positive_int(p["cvae_epochs"], "cvae_epochs")
        if not isinstance(p["learning_rate"], numbers.Real) or not p["learning_rate"] > 0:
            raise ValueError(f"learning_rate must be > 0, got {p['learning_rate']!r}")
        if not isinstance(self.tile_stride, numbers.Real) or not 0 < self.tile_stride <= 1:
            raise ValueError(f"tile_stride must be in (0, 1], got {self.tile_stride!r}")
        if not isinstance(p["positive_weight"], numbers.Real) or not p["positive_weight"] > 0:
            raise ValueError(f"positive_weight must be > 0, got {p['positive_weight']!r}")
        if self.samples_per_epoch is not None:
            check_positive_int(self.samples_per_epoch, "samples_per_epoch")
        _check_filter_options(self.sigma, self.filter_size, p["percentile"])
        if p["input_contrast"] not in _INPUT_CONTRASTS:
            raise ValueError(f"input_contrast must be one of {_INPUT_CONTRASTS}, got {p['input_contrast']!r}")
        if p["pseudo_label"] not in _PSEUDO_LABELS:
            raise ValueError(f"pseudo_label must be one of {_PSEUDO_LABELS}, got {p['pseudo_label']!r}")
        if not isinstance(self.residual_quantile, numbers.Real) or not 0 < self.residual_quantile < 1:
            raise ValueError(f"residual_quantile must be in (0, 1), got {self.residual_quantile!r}")
        if not isinstance(self.residual_sigma, numbers.Real) or not 0 <= self.residual_sigma < np.inf:
            raise ValueError(f"residual_sigma must be a finite number >= 0, got {self.residual_sigma!r}")
        if self.cvae is not None and not hasattr(self.cvae, "difference"):
            raise TypeError(f"cvae must be a fitted stemroi.BulkCVAE or None, got {type(self.cvae).__name__}")
        from ._augment import resolve_augment

        p["augment_strengths"] = resolve_augment(p["augment"], true_means="acquisition")[1]
        return p

    def _cvae_unusable(self, X, is_bulk) -> Optional[str]:
        """Why the "cvae" pseudo-labels cannot be made for these patches (None: they can)."""
        if not is_bulk.any():
            return (f"pseudo_label='cvae' needs bulk patches (bulk_class={self.bulk_class!r}) to train and threshold "
                    "the bulk model; none are in the labels. Pass bulk_class= or use pseudo_label='lattice'")
        if self.cvae is None:
            if X.shape[1] != X.shape[2] or X.shape[1] % 8 or X.shape[1] < 16:
                return (f"pseudo_label='cvae' trains a bulk CVAE on the patches, which must be square, a multiple "
                        f"of 8 and >= 16 px; got {X.shape[1:]}. Pass cvae= or use pseudo_label='lattice'")
            if int(is_bulk.sum()) < 2:
                return f"pseudo_label='cvae' needs at least 2 bulk patches, got {int(is_bulk.sum())}"
        return None

    def _cvae_masks(self, X, is_bulk, seed: int, n_threads: int, epochs: int) -> np.ndarray:
        """The "cvae" pseudo-labels: a bulk CVAE (given, or trained here on the bulk patches)."""
        model = self.cvae
        if model is None:
            from .cvae import BulkCVAE

            model = BulkCVAE(latent_dim=20, variant="dataset_repo", epochs=int(epochs), learning_rate=1e-3,
                             blur_sigma=2.0, crop_size=int(X.shape[1]), detector="energy", energy_quantile=0.99,
                             augment=False, random_state=seed, n_threads=n_threads, device=self.device,
                             calibration_mode="fixed")  # its bulk and the labelled patches: one image
            model.fit(X[is_bulk])
        self.cvae_ = model
        return residual_pseudo_labels(X, is_bulk, model, quantile=float(self.residual_quantile),
                                      sigma=float(self.residual_sigma), n_threads=n_threads)

    # ---- fitting ---------------------------------------------------------
    def fit(self, patches, labels, *, masks=None,
            progress: Optional[Callable[[int, int], None]] = None, pixel_size=None) -> "DefectSegmenter":
        """Train on labelled patches (n, h, w) in [0, 1] (h, w multiples of 4, >= 8).

        ``masks``: pseudo-labels (n, h, w) computed elsewhere (e.g.
        :func:`residual_pseudo_labels`) instead of the ``pseudo_label`` rule;
        bulk patches' masks are ignored (their targets are background).
        ``pixel_size``: the patches' pixel size, ``(value, unit)`` or a
        :class:`stemroi.io.Calibration`, recorded as ``pixel_size_`` and in the
        saved model card (:func:`segmentation_map` resamples images of another
        pixel size)."""
        X = _check_patches(patches)
        pixel_size_ = recorded_pixel_size(pixel_size)
        if X.shape[1] % 4 or X.shape[2] % 4 or min(X.shape[1:]) < 8:
            raise ValueError(f"patch height and width must be multiples of 4 and >= 8, got {X.shape[1:]}")
        params = self._check_settings()
        # before any training: a missing or mismatched weights file fails fast
        encoder, params["encoder_weights"] = _encoder_init(params["encoder_weights"], self.base_channels,
                                                           explicit=self.encoder_weights is not None)
        if encoder is not None:
            params["base_channels"] = int(encoder["enc1.0.weight"].shape[0])
        classes, idx = self._encode_labels(labels, X.shape[0])
        bulk_index = classes.index(self.bulk_class) if self.bulk_class in classes else None
        defect_classes = [c for i, c in enumerate(classes) if i != bulk_index]
        if not defect_classes:
            raise ValueError(f"at least one defect class (other than bulk_class={self.bulk_class!r}) is needed, got classes {classes}")
        # class index -> defect channel (-1 for bulk)
        channel_of = np.array([-1 if i == bulk_index else defect_classes.index(c) for i, c in enumerate(classes)], np.int64)
        chan = channel_of[idx]
        n_threads = check_n_threads(self.n_threads)
        seed = check_random_state_seed(self.random_state)
        given_masks = masks
        t_labels = time.perf_counter()
        if masks is None and params["pseudo_label"] == "cvae":
            why = self._cvae_unusable(X, chan < 0)
            if why and self.pseudo_label is None and self.cvae is None:
                # the recipe's choice, not the caller's: fall back to the label-free lattice rule
                warnings.warn(f"DefectSegmenter: {why}; the recipe's 'cvae' pseudo-labels fall back to 'lattice' "
                              "(pass pseudo_label= to choose)", UserWarning, stacklevel=2)
                params["pseudo_label"] = "lattice"
            elif why:
                raise ValueError(why)
        if masks is None and params["pseudo_label"] == "cvae":
            masks = self._cvae_masks(X, chan < 0, seed, n_threads, params["cvae_epochs"])
        elif masks is None:
            masks = pseudo_label_masks(
                X, chan < 0, sigma=self.sigma, size=self.filter_size, percentile=params["percentile"],
                method=params["pseudo_label"], n_threads=n_threads,
            )
        else:
            masks = np.asarray(masks)
            if masks.shape != X.shape:
                raise ValueError(f"masks must have the patches' shape {X.shape}, got {masks.shape}")
            if masks.dtype.kind not in "biu":
                raise TypeError(f"masks must be boolean or integer 0/1, got dtype {masks.dtype}")
            masks = np.ascontiguousarray(masks != 0, dtype=np.uint8)
            masks[chan < 0] = 0
        self.pseudo_masks_ = masks
        counts = np.bincount(idx, minlength=len(classes))
        self.training_data_ = {"n_patches": int(X.shape[0]), "patch_size": [int(X.shape[1]), int(X.shape[2])],
                               "class_counts": {c: int(n) for c, n in zip(classes, counts)},
                               "pseudo_labels": params["pseudo_label"] if given_masks is None else "given masks",
                               "recipe": "default" if self.recipe is None else self.recipe,
                               "augment": params["augment_strengths"]}
        self.pseudo_label_time_ = time.perf_counter() - t_labels
        self.resolved_params_ = {k: v for k, v in params.items() if k != "augment_strengths"}
        self.pixel_size_ = pixel_size_
        net = _core.UNet(len(defect_classes) + 1, base_channels=int(params["base_channels"]), in_channels=1,
                         seed=seed, standardize_input=params["input_contrast"] == "standardize")
        if encoder is not None:
            state = net.state_dict()
            state.update(encoder)
            net.load_state_dict(state, f"encoder_weights={params['encoder_weights']}")
        net = place(net, self.device)
        from ._augment import augment_options
        t0 = time.perf_counter()
        history = _core.train_unet(
            net, X, masks, chan, epochs=int(params["epochs"]), batch_size=int(params["batch_size"]),
            learning_rate=float(params["learning_rate"]), samples_per_epoch=int(params["samples_per_epoch"] or 0),
            max_parts=int(params["max_parts"]), seed=seed, n_threads=n_threads, progress=progress,
            positive_weight=float(params["positive_weight"]), augment=augment_options(params["augment_strengths"]),
        )
        self.fit_time_ = time.perf_counter() - t0
        self.classes_ = classes
        self.defect_classes_ = defect_classes
        self.channel_names_ = defect_classes + ["background"]
        self.patch_size_ = (int(X.shape[1]), int(X.shape[2]))
        self.loss_history_ = np.asarray(history, np.float64)
        self.net_ = net
        from ..detection._novelty import fit_segmenter_novelty
        self.novelty_ = fit_segmenter_novelty(self, X, seed)
        return self

    # ---- prediction ------------------------------------------------------
    def predict_patch_maps(self, patches, *, batch_size: int = 64) -> np.ndarray:
        """Probability maps (n, n_channels, h, w) of patches (h, w multiples of 4)."""
        self._check_fitted()
        X = _check_patches(patches)
        if X.shape[1] % 4 or X.shape[2] % 4 or min(X.shape[1:]) < 8:
            raise ValueError(f"patch height and width must be multiples of 4 and >= 8, got {X.shape[1:]}")
        batch_size = check_positive_int(batch_size, "batch_size")
        n_threads = check_n_threads(self.n_threads)
        out = []
        for lo in range(0, X.shape[0], batch_size):
            out.append(self.net_.probabilities(np.ascontiguousarray(X[lo : lo + batch_size, None]), n_threads))
        return np.concatenate(out)

    def predict_maps(
        self, image, *, tile: Optional[int] = None, stride: Optional[int] = None, batch_size: int = 16,
        progress: Optional[Callable[[int, int], None]] = None,
    ) -> np.ndarray:
        """Per-channel probability maps (n_channels, H, W) of one image (H, W) in [0, 1]
        (channels: ``channel_names_``). Predicted on overlapping tiles (default:
        the training patch size, stride tile_stride * tile) blended with a smooth
        window; images smaller than a tile are reflect-padded."""
        self._check_fitted()
        img = check_array(image, name="image", ndim=2, dtype=(np.float32,))
        tile = self.patch_size_[0] if tile is None else check_positive_int(tile, "tile", minimum=8)
        if tile % 4:
            raise ValueError(f"tile must be a multiple of 4, got {tile}")
        if stride is None:
            stride = max(1, int(round(tile * float(self.tile_stride))))
        stride = check_positive_int(stride, "stride")
        if stride > tile:
            raise ValueError(f"stride must be <= tile ({tile}), got {stride}")
        batch_size = check_positive_int(batch_size, "batch_size")
        return _core.unet_predict_tiled(self.net_, img, tile, stride, batch_size, check_n_threads(self.n_threads), progress)

    def segmentation_map(self, image, patch: Optional[int] = None, stride: Optional[int] = None,
                         threshold: float = 0.5, **kwargs):
        """:func:`stemroi.detection.segmentation_map` of ``image`` under this model (an ROIResult)."""
        from ..detection._segmentation_map import segmentation_map

        return segmentation_map(image, self, patch, stride, threshold, **kwargs)

    # ---- persistence -----------------------------------------------------
    def save(self, path) -> None:
        """Write the fitted model to the project's safe model file (no pickle)."""
        self._check_fitted()
        config = {k: v for k, v in self.get_params(deep=False).items() if k not in ("n_threads", "cvae")}
        if config.get("encoder_weights") is not None:
            config["encoder_weights"] = os.fspath(config["encoder_weights"])  # a record: the weights are in the file
        config["classes"] = list(self.classes_)
        config["base_channels"] = int(self.net_.base_channels)  # the width built, e.g. an encoder's
        config["patch_size"] = list(self.patch_size_)
        # what the network was built with, not the recipe's current default
        config["input_contrast"] = "standardize" if self.net_.standardize_input else "none"
        tensors = self.net_.state_dict()
        tensors["__loss_history__"] = np.asarray(self.loss_history_, np.float64)
        from ..detection._novelty import novelty_tensors
        novelty_t, novelty_config = novelty_tensors(getattr(self, "novelty_", None))
        tensors.update(novelty_t)
        _save_model(
            path, tensors, architecture=_ARCHITECTURE, config=config, kind=_FORMAT_KIND, novelty=novelty_config,
            class_names=self.channel_names_,
            preprocessing={"input": "grey image scaled to [0, 1]", "channels": 1},
            model_card={
                "model": "U-Net (2 levels, bilinear upsampling + skip concatenation, reflect padding)",
                "training": f"weakly supervised: {self._resolved()['pseudo_label']} pseudo-labels on labelled "
                "patches, synthetic multi-defect samples, BCE, Adam",
                "epochs": int(self._resolved()["epochs"]),
                "final_loss": float(self.loss_history_[-1]) if len(self.loss_history_) else None,
                "training_data": getattr(self, "training_data_", None),
                "pixel_size": card_pixel_size(getattr(self, "pixel_size_", None)),
                "reference": "Sathish, Sosa Espada, Karagiannis (weakly supervised multi-defect segmentation)",
            },
        )

    @classmethod
    def load(cls, path, *, n_threads=None, sha256=None, device="cpu") -> "DefectSegmenter":
        """The segmenter saved at ``path``; ``sha256`` (hex) refuses any other file."""
        tensors, meta = _load_model(path, _ARCHITECTURE, what="DefectSegmenter", sha256=sha256)
        config = dict(meta["config"])
        classes = config.pop("classes")
        patch_size = tuple(config.pop("patch_size"))
        history = tensors.pop("__loss_history__", np.zeros(0))
        from ..detection._novelty import novelty_from_tensors
        novelty = novelty_from_tensors(tensors, meta.get("novelty"))
        config["classes"] = classes
        config.setdefault("input_contrast", "none")  # files written before the option: tiles as they are
        seg = cls(**config)
        seg.n_threads = n_threads
        seg.device = device
        names = list(meta["class_names"])
        base = int(seg._resolved()["base_channels"])
        net = place(_core.UNet(len(names), base_channels=base, in_channels=1, seed=0,
                               standardize_input=seg._resolved()["input_contrast"] == "standardize"), device)
        net.load_state_dict(tensors, os.fspath(path))
        seg.classes_ = list(classes)
        seg.defect_classes_ = names[:-1]
        seg.channel_names_ = names
        seg.patch_size_ = patch_size
        seg.loss_history_ = np.asarray(history, np.float64)
        seg.training_data_ = meta.get("model_card", {}).get("training_data")
        seg.pixel_size_ = recorded_pixel_size(meta.get("model_card", {}).get("pixel_size"))
        seg.net_ = net
        seg.novelty_ = novelty
        return seg

    # -- pickling: the network travels as a model file ---------------------------------
    def _write_core(self, path: str) -> None:
        _save_model(path, self.net_.state_dict(), architecture=_NETWORK_ARCHITECTURE,
                    config={"n_outputs": int(self.net_.n_outputs), "base_channels": int(self.net_.base_channels),
                            "standardize_input": bool(self.net_.standardize_input)})

    def _read_core(self, path: str) -> None:
        tensors, meta = _load_model(path, _NETWORK_ARCHITECTURE, what="DefectSegmenter network")
        net = _core.UNet(int(meta["config"]["n_outputs"]), base_channels=int(meta["config"]["base_channels"]),
                         in_channels=1, seed=0, standardize_input=bool(meta["config"].get("standardize_input", False)))
        net.load_state_dict(tensors, "pickled DefectSegmenter")
        self.net_ = place(net, getattr(self, "device", "cpu"))
