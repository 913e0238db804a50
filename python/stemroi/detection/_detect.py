"""Supervised ROI detection: classify every tile of a large image.

``detect(image, model)`` cuts the image into ``patch`` x ``patch`` tiles every
``stride`` pixels, classifies them with a fitted :class:`PatchClassifier` and
returns a :class:`stemroi.ROIResult`: per tile the class, the probability
vector, the confidence (max probability), its (row, col, height, width) and an
``unknown`` flag where no class is convincing (max probability below
``unknown_below``, 0.4 in the VGG16 study), so new defect types are not forced
into old boxes. When the model carries a fitted novelty score (``novelty_``,
set by ``PatchClassifier.fit``), tiles whose penultimate-layer embedding lies
outside the training distribution are marked ``unfamiliar`` as well, however
confident the softmax is (see :class:`stemroi.detection.FeatureNovelty`).
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import numpy as np

from .._device import on_device
from .._validation import check_array, check_positive_int
from ..detection.roi import UNKNOWN, ROIResult, check_tile_edge
from ..io._readers import scale_to_unit, to_grey
from ..preprocessing.grid import PatchGrid, _finite_range

__all__ = ["detect", "to_unit_range"]


def to_unit_range(image, scale: str = "auto") -> np.ndarray:
    """Grey image as float32 on [0, 1], like the training patches (uint8 / 255).

    Colour is made grey by :func:`stemroi.io.to_grey`; the scaling is
    :func:`stemroi.io.scale_to_unit`. ``scale="auto"``: integer images by
    their dtype's range; float images already on [0, 1] are kept; float
    images on [0, 255] (8-bit data read as float, the readers' convention) as
    uint8; other floats min-max. ``"minmax"`` always min-max scales;
    ``"none"`` requires [0, 1].
    """
    if scale not in ("auto", "minmax", "none"):
        raise ValueError(f"scale must be 'auto', 'minmax' or 'none', got {scale!r}")
    stored = np.asarray(image)
    grey = to_grey(stored)
    if stored.dtype.kind in "iu" and scale == "auto":
        return scale_to_unit(check_array(grey, name="image", ndim=2, dtype=None), "dtype", source_dtype=stored.dtype)
    x = check_array(grey, name="image", ndim=2, dtype=(np.float32, np.float64), finite=False)
    x = x.astype(np.float32, copy=False)
    # finiteness, min and max in row strips: a memory-mapped frame is neither copied nor resident whole
    lo, hi = _finite_range(x, "image")
    if scale == "none":
        if lo < 0 or hi > 1:
            raise ValueError(f"image: values must be in [0, 1] with scale='none', got range [{lo:.4g}, {hi:.4g}]")
        return x
    if scale == "auto":
        if lo >= 0 and hi <= 1:
            return x
        if lo >= 0 and hi <= 255:
            return scale_to_unit(x, "dtype", source_dtype=np.uint8)
    return scale_to_unit(x, "minmax")


def detect(
    image,
    model,
    patch: Optional[int] = None,
    stride: Optional[int] = None,
    unknown_below: float = 0.4,
    *,
    batch_size: int = 256,
    scale: str = "auto",
    bulk_label: Optional[str] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    device: Optional[str] = None,
    pixel_size=None,
    unfamiliar: bool = True,
    edge: str = "shift",
) -> ROIResult:
    """Classify the tiles of ``image`` (2-D; colour is made grey by ``stemroi.io.to_grey``) with ``model``.

    ``model``: a fitted :class:`PatchClassifier` (or a model file path).
    ``patch``: the tile side, by default (None) the side of the model's
    training patches (64 when the model does not record it); another size is
    refused. ``stride``: None = ``patch`` (tiles side by side).
    ``edge``: ``"shift"`` (default) adds a last row and column of tiles
    flush with the bottom and right borders when the grid leaves a remainder,
    so every pixel is classified (those tiles overlap their neighbours);
    ``"drop"`` leaves the remainder unexamined, as the study's grid did (before
    2026-12-06 the only behaviour). See :class:`stemroi.PatchGrid`.
    ``unknown_below``: tiles whose calibrated max probability is below this are
    labelled ``"unknown"`` (0 disables). ``bulk_label``: the class that is not a
    region of interest (default: the class named "Bulk", case-insensitive, if any;
    a UserWarning says so when there is none, as every tile is then a region of
    interest). The result's ``bulk_label`` and ``metadata["bulk_label"]`` name it.
    ``pixel_size``: the image's pixel size, ``(value, unit)`` or a
    :class:`stemroi.io.Calibration`. When the model records its training pixel
    size too and the two differ by more than 1 %, the image is resampled to the
    model's pixel size (:func:`stemroi.preprocessing.resample`), classified,
    and the tiles are reported on the original pixel grid (``metadata``:
    ``resampled``, ``scale``, ``model_pixel_size``, ``image_pixel_size``). A
    UserWarning when only one of the two is known.
    ``progress(done, total)`` is called per batch of tiles.
    ``unfamiliar``: when the model has a fitted ``novelty_``
    (:class:`~stemroi.detection.FeatureNovelty` on its embeddings), the
    result's ``unfamiliar`` marks tiles whose embedding lies outside the
    training distribution and ``novelty`` holds the score;
    ``metadata["novelty"]`` states the threshold and the in-distribution rate
    it was calibrated to. Labels are unchanged ("unknown" stays the
    low-confidence rule). False skips it (one embedding pass less).
    ``device``: None runs on the model's device (a model file: the CPU);
    "cpu", "cuda", "cuda:N" or "auto" run there, on a copy of the network
    (the model itself is unchanged). ValueError naming the device when
    LibTorch cannot use it.

    Thread safety: a fitted model may be shared by any number of threads for
    inference. ``detect``, :func:`~stemroi.detection.anomaly_map`,
    :func:`~stemroi.detection.cluster_map`,
    :func:`~stemroi.detection.segmentation_map` and the predicting methods of
    :class:`PatchClassifier`, :class:`BulkCVAE` (``score*``, ``predict``,
    ``reconstruct``, ``transform``), :class:`DefectSegmenter`
    (``predict_maps``) and :class:`PatchClusterer` (``predict``,
    ``transform``) read the model and change nothing that another call reads,
    so concurrent calls give exactly the serial results (tests/test_concurrency.py).
    The compiled core releases the GIL while it computes, so threads run in
    parallel; each call uses ``model.n_threads`` threads of its own. Not safe
    to share: ``fit``, ``calibrate``, ``set_params`` and ``load`` into an object
    that other threads are using (they replace the fitted state), and a
    ``progress`` callable that is not itself thread-safe.
    """
    from ..models.classifier import PatchClassifier

    if isinstance(model, (str,)) or hasattr(model, "__fspath__"):
        model = PatchClassifier.load(model, device="cpu" if device is None else device)
    if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
        raise TypeError(f"model must be a fitted PatchClassifier or a model file path, got {type(model).__name__}")
    if device is not None:
        if not hasattr(model, "net_"):
            raise TypeError(f"device= needs a fitted PatchClassifier, got {type(model).__name__}")
        model = on_device(model, device, model.net_.device)
    shape = getattr(model, "patch_shape_", None)
    if patch is None:
        patch = int(shape[0]) if shape is not None and len(shape) == 2 and shape[0] == shape[1] else 64
    patch = check_positive_int(patch, "patch", minimum=16)
    stride = patch if stride is None else check_positive_int(stride, "stride")
    if not (0.0 <= float(unknown_below) <= 1.0):
        raise ValueError(f"unknown_below must be in [0, 1], got {unknown_below}")
    from ..preprocessing._resample import plan_resampling, resample, to_original_grid

    img = to_unit_range(image, scale)
    resample_scale, pixel_info = plan_resampling(model, pixel_size, "detect")
    original_shape = img.shape
    if resample_scale is not None:
        img = resample(img, resample_scale, n_threads=getattr(model, "n_threads", None))
    if patch > img.shape[0] or patch > img.shape[1]:
        raise ValueError(f"patch must be <= image size {img.shape}, got {patch}")
    if shape is not None and len(shape) == 2 and tuple(shape) != (patch, patch):
        raise ValueError(f"patch must equal the model's training patch size {tuple(shape)}, got {patch}")
    grid = PatchGrid(patch_size=patch, stride=stride, edge=check_tile_edge(edge))
    origins = grid.origins(img.shape)
    # Tiles are cut and classified one batch at a time: memory holds one batch of
    # tiles, not all of them (the same batches as one predict_proba call would
    # form, so the probabilities are identical).
    batch_size = check_positive_int(batch_size, "batch_size")
    n = len(origins)
    novelty = getattr(model, "novelty_", None) if unfamiliar else None
    chunks, novelty_chunks, done = [], [], 0
    for _, tiles in grid.iter_batches(img, batch_size):
        report = None if progress is None else (lambda d, t, done=done: progress(done + d, n))
        chunks.append(model.predict_proba(tiles, batch_size=batch_size, progress=report))
        if novelty is not None:
            novelty_chunks.append(novelty.score(model.transform(tiles)))
        done += len(tiles)
    probs = np.ascontiguousarray(np.concatenate(chunks, axis=0))
    novelty_scores = np.concatenate(novelty_chunks) if novelty is not None else None
    names = list(getattr(model, "class_names_", [str(c) for c in model.classes_]))
    conf = probs.max(axis=1)
    labels = np.asarray(names, dtype=object)[probs.argmax(axis=1)]
    unknown = conf < float(unknown_below)
    labels = np.where(unknown, UNKNOWN, labels).astype(object)
    if bulk_label is None:
        bulk_label = next((c for c in names if c.lower() == "bulk"), None)
        if bulk_label is None:
            warnings.warn(f"detect: no class is known to be bulk (classes {names}), so every tile is a region "
                          "of interest; pass bulk_label=<the class that is not of interest>", UserWarning,
                          stacklevel=2)
    result = ROIResult(
        origins=origins,
        sizes=np.array([[patch, patch]]),
        labels=labels,
        confidence=conf,
        unknown=unknown,
        class_names=names,
        bulk_label=bulk_label,
        probabilities=probs,
        image_shape=img.shape,
        method=f"patch-classifier ({getattr(model, 'backbone_description_', type(model).__name__)})",
        metadata={"patch": patch, "stride": stride, "edge": edge, "unknown_below": float(unknown_below),
                  "temperature": float(getattr(model, "temperature_", 1.0)),
                  "model": getattr(model, "backbone_description_", ""), "bulk_label": bulk_label},
        unfamiliar=None if novelty is None else novelty_scores > novelty.threshold_,
        novelty=novelty_scores,
    )
    if novelty is not None:
        result.metadata["novelty"] = dict(novelty.summary(), features="penultimate-layer embedding (transform)")
    if resample_scale is not None:
        return to_original_grid(result, original_shape, pixel_info)
    result.metadata.update(pixel_info)
    return result
