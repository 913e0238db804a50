"""dask.distributed adapter: run a detector over many frames on a cluster.

    >>> from dask.distributed import Client
    >>> client = Client()                                   # or a remote scheduler
    >>> results = stemroi.adapters.dask.detect_frames(files, "model.stemroi", client=client)

Frames may be file paths (read on the worker: nothing large is shipped) or
arrays. The model file is loaded once per worker process and cached; results
come back in input order. Without a client the frames run locally in order.

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
    from ..models.classifier import PatchClassifier

    return PatchClassifier.load(path)


class FrameDetector:
    """Picklable callable: frame (path or array) -> ROIResult, with the model
    loaded once per process from its (safe) model file."""

    def __init__(self, model_path: "os.PathLike[str] | str", **detect_kwargs):
        self.model_path = os.fspath(model_path)
        self.detect_kwargs = detect_kwargs

    def __call__(self, frame):
        from ..detection._detect import detect
        from ..io._readers import read_image

        model = _load_model(self.model_path, os.path.getmtime(self.model_path))
        image = read_image(frame) if isinstance(frame, (str, os.PathLike)) else frame
        return detect(image, model, **self.detect_kwargs)


def detect_frames(frames: Sequence[Any], model_path, client=None, *, out_dir=None, resume: bool = True,
                  retries: int = 0, **detect_kwargs):
    """ROIResult for every frame, using :class:`FrameDetector` through :func:`map_frames`
    (with ``out_dir``: resumable, a :class:`stemroi.detection.BatchResult`)."""
    return map_frames(FrameDetector(model_path, **detect_kwargs), frames, client=client, out_dir=out_dir,
                      resume=resume, retries=retries)
