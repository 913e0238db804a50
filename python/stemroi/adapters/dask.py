"""dask.distributed adapter: run any detector over many frames on a cluster.

    >>> from dask.distributed import Client
    >>> client = Client()                                   # or a remote scheduler
    >>> results = stemroi.adapters.dask.detect_frames(files, "model.stemroi", client=client)

Frames may be file paths (read on the worker: nothing large is shipped) or
arrays. The detector is any fitted model (classifier, CVAE, clusterer, U-Net)
or a model file, loaded once per worker process and cached; results come back
in input order, whatever order the frames finish in. Without a client the
frames run locally in order.

With ``out_dir``, the run is resumable exactly like
:func:`stemroi.detection.run_batch` (same manifest and result files): each
frame's result is written atomically by the client as it arrives, a re-run
skips the frames already done and retries failed ones, and a failing frame is
recorded instead of stopping the run::

    >>> res = detect_frames(files, "model.stemroi", client=client, out_dir="rois/")
    >>> res.failed                                          # {name: error message}
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterable, Optional, Sequence

__all__ = ["map_frames", "detect_frames", "FrameDetector"]


def map_frames(func: Callable[[Any], Any], frames: Iterable[Any], client=None, *, out_dir=None,
               resume: bool = True, retries: int = 0, progress: Optional[Callable[[int, int], None]] = None):
    """``[func(f) for f in frames]``, on a dask.distributed ``client`` when given.

    ``func`` must be picklable (a module-level function, a functools.partial or
    an instance like :class:`FrameDetector`). Errors on a worker are re-raised
    here with the failing frame named.

    With ``out_dir``, ``func`` must return an :class:`stemroi.ROIResult`;
    frames are paths, arrays or ``(name, frame)`` pairs (``func`` gets the
    frame); results go to files under ``out_dir`` with the manifest of
    :func:`stemroi.detection.run_batch` (``resume``, ``retries`` and
    ``progress`` as there), failures are recorded rather than raised, and a
    :class:`stemroi.detection.BatchResult` is returned.
    """
    if out_dir is not None:
        from ..detection._batch import _FrameJob, _run

        return _run(frames, _FrameJob(func, None), out_dir, resume=resume, retries=retries, progress=progress,
                    client=client)
    frames = list(frames)
    if client is None:
        return [func(f) for f in frames]
    futures = client.map(func, frames, pure=False)
    out = []
    for frame, fut in zip(frames, futures):
        try:
            out.append(fut.result())
        except Exception as exc:
            name = frame if isinstance(frame, (str, os.PathLike)) else f"array {getattr(frame, 'shape', '?')}"
            raise type(exc)(f"frame {name}: {exc}") from exc
    return out


@functools.lru_cache(maxsize=4)
def _load_model(path: str, mtime: float):
    from ..detection._batch import _load_any_model

    return _load_any_model(path)


class FrameDetector:
    """Picklable callable: frame (path or array) -> ROIResult of any detector.

    ``detector``: a fitted :class:`~stemroi.PatchClassifier`,
    :class:`~stemroi.BulkCVAE`, :class:`~stemroi.PatchClusterer` or
    :class:`~stemroi.DefectSegmenter` (shipped to the workers with the
    task), the model file of a savable one (loaded once per worker process
    and cached), or a callable ``image -> ROIResult``; ``detect_kwargs``
    (``patch``, ``stride``, ...) go to the detection function, as in
    :func:`stemroi.detection.make_detector`. Path frames are read on the
    worker with :func:`stemroi.io.read_image`.
    """

    def __init__(self, detector, **detect_kwargs):
        from ..detection._batch import make_detector

        self.model_path = os.fspath(detector) if isinstance(detector, (str, os.PathLike)) else None
        self.detect_kwargs = detect_kwargs
        self.detector = None if self.model_path is not None else make_detector(detector, **detect_kwargs)

    def __call__(self, frame):
        from ..detection._batch import ModelDetector
        from ..io._readers import read_image

        if self.model_path is not None:
            model = _load_model(self.model_path, os.path.getmtime(self.model_path))
            detector = ModelDetector(model, **self.detect_kwargs)
        else:
            detector = self.detector
        image = read_image(frame) if isinstance(frame, (str, os.PathLike)) else frame
        return detector(image)


def detect_frames(frames: Sequence[Any], detector, client=None, *, out_dir=None, resume: bool = True,
                  retries: int = 0, **detect_kwargs):
    """ROIResult for every frame, in input order, using :class:`FrameDetector`
    (any detector: classifier, CVAE map, cluster map, U-Net map, or their
    model files) through :func:`map_frames` (with ``out_dir``: resumable, a
    :class:`stemroi.detection.BatchResult`)."""
    return map_frames(FrameDetector(detector, **detect_kwargs), frames, client=client, out_dir=out_dir,
                      resume=resume, retries=retries)
