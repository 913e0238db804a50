"""Resumable runs of a detector over many frames.

:func:`run_batch` writes each frame's :class:`ROIResult` (its JSON, see
:meth:`ROIResult.to_json`) atomically into an output folder as soon as the
frame is done, and records it in a manifest, so nothing is kept in memory and
a run killed at any point (SIGKILL, Ctrl-C, a power cut) resumes where it
stopped::

    out/
      manifest.jsonl          one JSON record per frame: done / failed (+ error)
      <name>.roi.json         the result of frame <name>

A re-run skips the frames whose result file exists and matches the SHA-256
the manifest recorded for it, and runs the others (failed ones included).
:mod:`stemroi.adapters.dask` runs frames on a cluster through the same code,
so a distributed run resumes the same way.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence as _SequenceABC
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from .._atomic import atomic_open
from .roi import ROIResult

__all__ = ["run_batch", "make_detector", "ModelDetector", "BatchResult", "MANIFEST_NAME", "RESULT_SUFFIX"]

MANIFEST_NAME = "manifest.jsonl"
RESULT_SUFFIX = ".roi.json"
_LOCK_NAME = ".stemroi-batch.lock"
_FORBIDDEN_IN_NAMES = ("/", "\\", "\x00")


# -- detectors ----------------------------------------------------------------------
class ModelDetector:
    """Picklable callable ``image -> ROIResult`` for a fitted model.

    ``model``: a fitted :class:`~stemroi.PatchClassifier` (runs
    :func:`stemroi.detect`), :class:`~stemroi.BulkCVAE`
    (:func:`~stemroi.detection.anomaly_map`), :class:`~stemroi.PatchClusterer`
    (:func:`~stemroi.detection.cluster_map`) or
    :class:`~stemroi.DefectSegmenter`
    (:func:`~stemroi.detection.segmentation_map`), or the path of a model file
    of one of the three savable kinds (loaded once, on first use, in the
    process that runs the frames). ``kwargs`` go to the detection function
    (``patch``, ``stride``, ...). Images other than those given to
    :func:`stemroi.detect` (which scales them itself) are first scaled by
    :func:`stemroi.detection.to_unit_range` (``scale="auto"``).
    """

    def __init__(self, model, **kwargs):
        self.model = os.fspath(model) if isinstance(model, (str, os.PathLike)) else model
        self.kwargs = kwargs
        self._loaded = None

    def __getstate__(self):
        state = dict(self.__dict__)
        if isinstance(self.model, str):
            state["_loaded"] = None  # reloaded from the file in the receiving process
        return state

    def _fitted_model(self):
        if not isinstance(self.model, str):
            return self.model
        if self._loaded is None:
            self._loaded = _load_any_model(self.model)
        return self._loaded

    def __call__(self, image, **kwargs) -> ROIResult:
        """The detection of ``image``; ``kwargs`` (e.g. ``pixel_size``) add to or
        override the detector's own for this call."""
        model = self._fitted_model()
        kind = _detector_kind(model)
        from . import _detect

        kwargs = {**self.kwargs, **kwargs}
        if kind == "classifier":
            return _detect.detect(image, model, **kwargs)
        img = _detect.to_unit_range(image, kwargs.get("scale", "auto"))
        kw = {k: v for k, v in kwargs.items() if k != "scale"}
        if kind == "cvae":
            from ._anomaly_map import anomaly_map

            return anomaly_map(img, model, **kw)
        if kind == "clusterer":
            from ._cluster_map import cluster_map

            return cluster_map(img, model, **kw)
        from ._segmentation_map import segmentation_map

        return segmentation_map(img, model, **kw)

    def __repr__(self) -> str:
        what = self.model if isinstance(self.model, str) else type(self.model).__name__
        return f"ModelDetector({what!r}, **{self.kwargs!r})"


def _detector_kind(model) -> str:
    from ..cluster._patch_clusterer import PatchClusterer
    from ..models.classifier import PatchClassifier
    from ..models.cvae import BulkCVAE
    from ..models.unet import DefectSegmenter

    for cls, kind in ((PatchClassifier, "classifier"), (BulkCVAE, "cvae"), (PatchClusterer, "clusterer"),
                      (DefectSegmenter, "segmenter")):
        if isinstance(model, cls):
            return kind
    raise TypeError(f"model must be a fitted PatchClassifier, BulkCVAE, PatchClusterer or DefectSegmenter "
                    f"(or a model file path), got {type(model).__name__}")


def _load_any_model(path: str):
    """The estimator saved in the model file ``path`` (PatchClassifier, BulkCVAE or DefectSegmenter)."""
    from ..models.classifier import MODEL_ARCHITECTURE, PatchClassifier
    from ..models.cvae import BulkCVAE
    from ..models.unet import DefectSegmenter, _ARCHITECTURE as UNET_ARCHITECTURE

    from ..io.model_file import load_model_file

    _, meta = load_model_file(path)
    arch = meta.get("architecture")
    if arch == MODEL_ARCHITECTURE:
        return PatchClassifier.load(path)
    if arch == UNET_ARCHITECTURE:
        return DefectSegmenter.load(path)
    if arch == "cvae":
        return BulkCVAE.load(path)
    raise ValueError(f"{path}: not a PatchClassifier, BulkCVAE or DefectSegmenter model file (architecture {arch!r})")


def make_detector(model, **kwargs) -> Callable[[Any], ROIResult]:
    """``image -> ROIResult`` for ``model`` (see :class:`ModelDetector`); a callable is returned as is."""
    if isinstance(model, ModelDetector) or (callable(model) and not hasattr(model, "get_params")):
        if kwargs:
            raise TypeError(f"keyword arguments {sorted(kwargs)} apply to a model, not to the callable {model!r}")
        return model
    if not isinstance(model, (str, os.PathLike)):
        _detector_kind(model)
    return ModelDetector(model, **kwargs)


# -- frames -------------------------------------------------------------------------
def _check_name(name, index: int) -> str:
    if not isinstance(name, str):
        raise TypeError(f"frames[{index}]: the frame name must be a str, got {type(name).__name__}")
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in _FORBIDDEN_IN_NAMES):
        raise ValueError(f"frames[{index}]: frame name {name!r} is not a valid file name "
                         "(non-empty, no path separators, not starting with '.')")
    return name


def _frame_entries(frames) -> List[Tuple[str, Any]]:
    """``[(name, source)]``: source a path (str) or an array, names unique."""
    if isinstance(frames, (str, os.PathLike, np.ndarray)) and not (isinstance(frames, np.ndarray) and frames.ndim == 3):
        raise TypeError(f"frames must be a sequence of paths, (name, array) or (name, path) pairs or arrays, "
                        f"got a single {type(frames).__name__}")
    entries: List[Tuple[str, Any]] = []
    seen: Dict[str, int] = {}
    for i, frame in enumerate(frames):
        if isinstance(frame, (str, os.PathLike)):
            source: Any = os.fspath(frame)
            name = Path(source).stem
        elif isinstance(frame, (tuple, list)) and len(frame) == 2 and isinstance(frame[0], str):
            name, source = frame
            source = os.fspath(source) if isinstance(source, (str, os.PathLike)) else source
        elif hasattr(frame, "__array__") or isinstance(frame, np.ndarray):
            name, source = f"frame_{i:06d}", frame
        else:
            raise TypeError(f"frames[{i}]: expected an image path, an array or a (name, array) pair, "
                            f"got {type(frame).__name__}")
        name = _check_name(name, i)
        if name in seen:
            raise ValueError(f"frames[{i}]: duplicate frame name {name!r} (also frames[{seen[name]}]); "
                             "pass (name, path) pairs with unique names")
        seen[name] = i
        entries.append((name, source))
    return entries


def _describe_source(source) -> str:
    if isinstance(source, str):
        return source
    a = np.asarray(source) if not hasattr(source, "shape") else source
    return f"array {tuple(a.shape)} {getattr(a, 'dtype', '')}".rstrip()


class _FrameJob:
    """Picklable ``source -> JSON text`` of one frame: read a path with ``reader``
    (when given), run ``detector``, serialise its ROIResult."""

    def __init__(self, detector: Callable[[Any], Any], reader: Optional[Callable[[str], Any]]):
        self.detector = detector
        self.reader = reader

    def __call__(self, source) -> str:
        image = self.reader(source) if self.reader is not None and isinstance(source, str) else source
        result = self.detector(image)
        if not isinstance(result, ROIResult):
            raise TypeError(f"the detector returned {type(result).__name__}, expected an ROIResult")
        return result.to_json()


# -- manifest -------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(path: Path) -> Dict[str, dict]:
    """name -> last record; lines that do not parse (a run killed mid-write) are ignored."""
    records: Dict[str, dict] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("name"), str):
            records[rec["name"]] = rec
    return records


def _record_line(rec: dict) -> str:
    return json.dumps(rec, sort_keys=True) + "\n"


def _write_manifest(path: Path, records: Iterable[dict]) -> None:
    with atomic_open(path, "w") as f:
        for rec in records:
            f.write(_record_line(rec))


def _result_is_valid(out_dir: Path, rec: Optional[dict]) -> bool:
    """The manifest says done and the result file is there, unchanged, and parses."""
    if not rec or rec.get("status") != "done" or not isinstance(rec.get("file"), str):
        return False
    try:
        data = (out_dir / rec["file"]).read_bytes()
    except OSError:
        return False
    if _sha256(data) != rec.get("sha256"):
        return False
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and "tiles" in doc


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` (two runs into one folder would interleave their manifests)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        yield
        return
    with open(out_dir / _LOCK_NAME, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OSError(f"output folder {out_dir} is in use by another batch run") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of atomic writes interrupted by a kill (``.<name>.<random>.tmp``)."""
    for p in out_dir.glob(".*.tmp"):
        if p.name.startswith(f".{MANIFEST_NAME}.") or RESULT_SUFFIX + "." in p.name:
            with contextlib.suppress(OSError):
                p.unlink()


# -- result ---------------------------------------------------------------------------
@dataclass
class BatchResult(_SequenceABC):
    """The outcome of :func:`run_batch`, in input order.

    A sequence of the frames' results: ``result[i]`` is the
    :class:`ROIResult` of frame ``i`` read back from its file (the tile table,
    as :meth:`ROIResult.from_json` restores it; pixel maps are not stored) or
    ``None`` when the frame failed. Results are read on access, so a batch of
    thousands of frames does not sit in memory.
    """

    out_dir: Path
    names: List[str]
    status: List[str]
    errors: Dict[str, str] = field(default_factory=dict)
    n_computed: int = 0
    n_skipped: int = 0

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = range(len(self))[index]
        if self.status[i] != "done":
            return None
        return ROIResult.from_json(self.file(i))

    def file(self, index: int) -> Path:
        """The result file of frame ``index`` (written only when the frame is done)."""
        return self.out_dir / (self.names[index] + RESULT_SUFFIX)

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    @property
    def failed(self) -> Dict[str, str]:
        """name -> error message of every failed frame."""
        return {n: self.errors[n] for n, s in zip(self.names, self.status) if s == "failed"}

    @property
    def ok(self) -> bool:
        return all(s == "done" for s in self.status)


# -- the run ----------------------------------------------------------------------------
def _execute_local(job: _FrameJob, todo: List[Tuple[int, str, Any]], retries: int):
    """Yield ``(index, json_text or None, error message or None, attempts)`` as frames finish."""
    for i, _name, source in todo:
        for attempt in range(1, retries + 2):
            try:
                text = job(source)
            except Exception as exc:  # recorded in the manifest; KeyboardInterrupt stops the run
                error = f"{type(exc).__name__}: {exc}"
                if attempt > retries:
                    yield i, None, error, attempt
            else:
                yield i, text, None, attempt
                break


def _execute_dask(job: _FrameJob, todo: List[Tuple[int, str, Any]], retries: int, client):
    from distributed import as_completed

    futures = client.map(job, [source for _, _, source in todo], pure=False, retries=retries)
    index_of = {fut.key: i for fut, (i, _, _) in zip(futures, todo)}
    for fut in as_completed(futures):
        i = index_of[fut.key]
        if fut.status == "error":
            exc = fut.exception()
            yield i, None, f"{type(exc).__name__}: {exc}", retries + 1
        else:
            yield i, fut.result(), None, None
        fut.release()


def _run(frames, job: _FrameJob, out_dir, *, resume: bool, retries: int,
         progress: Optional[Callable[[int, int], None]], client=None) -> BatchResult:
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    retries = int(retries)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable(done, total), got {type(progress).__name__}")
    entries = _frame_entries(frames)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir {out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST_NAME
    names = [n for n, _ in entries]
    with _exclusive(out_dir):
        _remove_stale_temporaries(out_dir)
        previous = _read_manifest(manifest) if resume else {}
        records: Dict[str, dict] = {}
        todo: List[Tuple[int, str, Any]] = []
        for i, (name, source) in enumerate(entries):
            rec = previous.pop(name, None)
            if _result_is_valid(out_dir, rec):
                records[name] = rec
            else:
                todo.append((i, name, source))
        # one line per frame: drops lines cut by a kill, so appends start on a fresh line
        others = list(previous.values())
        _write_manifest(manifest, others + [records[n] for n in names if n in records])
        n_skipped = len(entries) - len(todo)
        total = len(entries)
        done = n_skipped
        if progress is not None:
            progress(done, total)
        run = _execute_local(job, todo, retries) if client is None else _execute_dask(job, todo, retries, client)
        with open(manifest, "a") as log:
            for i, text, error, attempts in run:
                name, source = entries[i]
                rec = {"name": name, "source": _describe_source(source)}
                if attempts is not None:
                    rec["attempts"] = attempts
                if error is None:
                    data = text.encode()
                    with atomic_open(out_dir / (name + RESULT_SUFFIX), "wb") as f:
                        f.write(data)
                    rec.update(status="done", file=name + RESULT_SUFFIX, sha256=_sha256(data))
                else:
                    rec.update(status="failed", error=error)
                log.write(_record_line(rec))
                log.flush()
                os.fsync(log.fileno())
                records[name] = rec
                done += 1
                if progress is not None:
                    progress(done, total)
        _write_manifest(manifest, others + [records[n] for n in names])
    status = [records[n]["status"] for n in names]
    errors = {n: records[n]["error"] for n in names if records[n]["status"] == "failed"}
    return BatchResult(out_dir=out_dir, names=names, status=status, errors=errors,
                       n_computed=len(todo), n_skipped=n_skipped)


def run_batch(frames, detector, out_dir, *, resume: bool = True, retries: int = 0,
              progress: Optional[Callable[[int, int], None]] = None,
              reader: Optional[Callable[[str], Any]] = None, **detector_kwargs) -> BatchResult:
    """Run ``detector`` over ``frames``, one result file per frame in ``out_dir``, resumably.

    Parameters
    ----------
    frames : sequence
        Image paths (named by their file stem), ``(name, array)`` or
        ``(name, path)`` pairs, or arrays (named ``frame_000000``, ... by
        position). Names must be unique and usable as file names.
    detector : callable, estimator or path
        A callable ``image -> ROIResult``, or a fitted model or model file path
        made into one by :func:`make_detector` (``detector_kwargs``, e.g.
        ``patch`` and ``stride``, go to the detection function).
    out_dir : path
        Output folder (created). Each frame's result is written atomically to
        ``<out_dir>/<name>.roi.json`` (:meth:`ROIResult.to_json`) as soon as it
        is done; ``<out_dir>/manifest.jsonl`` holds one JSON record per frame:
        ``name``, ``source``, ``status`` ("done" with ``file`` and the file's
        ``sha256``, or "failed" with ``error``, the exception type and
        message) and ``attempts``.
    resume : bool
        Skip the frames the manifest records as done whose result file is
        present, unchanged (SHA-256) and parses; every other frame (failed,
        missing, interrupted) runs again. ``False`` runs every frame again.
    retries : int
        Extra attempts for a frame that raises, within this run.
    progress : callable, optional
        ``progress(done, total)`` after every frame (skipped frames count as
        done from the start).
    reader : callable, optional
        Reads a path frame into an array (default :func:`stemroi.io.read_image`).

    Returns
    -------
    BatchResult
        The results in input order (read back from the files on access;
        ``None`` for failed frames), ``status``, ``failed``.

    Notes
    -----
    A frame that raises does not stop the run: it is recorded as failed with
    its message (``BatchResult.failed``) and retried by the next run.
    ``KeyboardInterrupt`` stops the run; frames finished until then are kept.
    Two runs into the same folder at once are refused (a lock file); results
    are deterministic when the detector is, so a resumed run writes the same
    bytes as an uninterrupted one.
    """
    if reader is None:
        from ..io._readers import read_image as reader
    job = _FrameJob(make_detector(detector, **detector_kwargs), reader)
    return _run(frames, job, out_dir, resume=resume, retries=retries, progress=progress)
