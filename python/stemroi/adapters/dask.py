"""dask.distributed adapter: run a detector over many frames on a cluster.

    >>> from dask.distributed import Client
    >>> client = Client()                                   # or a remote scheduler
    >>> results = stemroi.adapters.dask.detect_frames(files, "model.stemroi", client=client)

Frames may be file paths (read on the worker: nothing large is shipped) or
arrays. The model file is loaded once per worker process and cached; results
come back in input order. Without a client the frames run locally in order.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Iterable, List, Optional, Sequence

__all__ = ["map_frames", "detect_frames", "FrameDetector"]


def map_frames(func: Callable[[Any], Any], frames: Iterable[Any], client=None) -> List[Any]:
    """``[func(f) for f in frames]``, on a dask.distributed ``client`` when given.

    ``func`` must be picklable (a module-level function, a functools.partial or
    an instance like :class:`FrameDetector`). Errors on a worker are re-raised
    here with the failing frame named.
    """
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
    from ..classifier import PatchClassifier

    return PatchClassifier.load(path)


class FrameDetector:
    """Picklable callable: frame (path or array) -> ROIResult, with the model
    loaded once per process from its (safe) model file."""

    def __init__(self, model_path: "os.PathLike[str] | str", **detect_kwargs):
        self.model_path = os.fspath(model_path)
        self.detect_kwargs = detect_kwargs

    def __call__(self, frame):
        from ..detection import detect
        from ..io import read_image

        model = _load_model(self.model_path, os.path.getmtime(self.model_path))
        image = read_image(frame) if isinstance(frame, (str, os.PathLike)) else frame
        return detect(image, model, **self.detect_kwargs)


def detect_frames(frames: Sequence[Any], model_path, client=None, **detect_kwargs):
    """ROIResult for every frame, using :class:`FrameDetector` through :func:`map_frames`."""
    return map_frames(FrameDetector(model_path, **detect_kwargs), frames, client=client)
