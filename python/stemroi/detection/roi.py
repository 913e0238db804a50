"""ROIResult: the common output of every detector (classifier, CVAE anomaly
map, cluster map, U-Net segmentation map).

One row per tile: pixel origin (row, col), size (height, width), label,
confidence, an unknown flag, optional class-probability vector and score, and,
when the model carries a fitted :class:`stemroi.detection.FeatureNovelty`, an
``unfamiliar`` flag (the tile's features lie outside the training
distribution) with its ``novelty`` score.
Detectors that also produce per-pixel maps attach them as ``maps`` (name ->
2-D array in image pixels). Saved files are written atomically; JSON records
the maps' shapes, not their pixels, and CSV has tile rows only.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .._atomic import atomic_open

__all__ = ["ROIResult", "UNKNOWN"]

UNKNOWN = "unknown"

# How the tile grids of detect and cluster_map treat a border remainder narrower
# than a tile: "shift" covers it with tiles flush with the border, "drop" skips it.
TILE_EDGES = ("shift", "drop")


def check_tile_edge(edge) -> str:
    if not isinstance(edge, str) or edge not in TILE_EDGES:
        raise ValueError(f"edge must be one of {TILE_EDGES} (\"shift\": tiles flush with the bottom and right "
                         f"borders cover the remainder; \"drop\": the remainder is not examined), got {edge!r}")
    return edge


@dataclass
class ROIResult:
    """Per-tile detections over one image.

    Attributes
    ----------
    origins : (n, 2) int array of (row, col) pixel origins.
    sizes : (n, 2) int array of (height, width).
    labels : (n,) array of str, the class of each tile ("unknown" when not convincing).
    confidence : (n,) float array in [0, 1] (max probability, or an anomaly-derived score).
    unknown : (n,) bool array.
    class_names : names of the classes, in probability column order.
    bulk_label : the label that means "not a region of interest".
    probabilities : optional (n, n_classes) float array.
    scores : optional (n,) float array (e.g. anomaly score).
    image_shape : (height, width) of the analysed image.
    method : short description ("vgg16-head", "cvae", ...).
    metadata : free-form JSON-serialisable information (model, weights, thresholds).
    maps : dense per-pixel maps, name -> 2-D array of ``image_shape`` (e.g.
        ``"anomaly"``, ``"cluster"``, one per U-Net channel); empty when the
        detector has none.
    unfamiliar : optional (n,) bool array: the tile's features lie outside the
        model's training distribution (its ``novelty_`` score above the
        threshold calibrated to ``metadata["novelty"]["in_distribution_rate"]``
        of held-out training tiles). Independent of ``unknown`` (low
        confidence) and of ``is_roi``. None when the model has no novelty score.
    novelty : optional (n,) float array, the novelty score behind ``unfamiliar``.
    flagged : optional (n,) bool array, set by detectors that flag tiles by a
        score rather than by their label (``cluster_map(roi="score")``); when
        set, ``is_roi`` is ``flagged | unknown`` instead of "not the bulk label".
    """

    origins: np.ndarray
    sizes: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    unknown: np.ndarray
    class_names: List[str]
    bulk_label: Optional[str] = "Bulk"
    probabilities: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None
    image_shape: Optional[Sequence[int]] = None
    method: str = ""
    metadata: Dict[str, Any] = field(default_factory=dict)
    maps: Dict[str, np.ndarray] = field(default_factory=dict)
    unfamiliar: Optional[np.ndarray] = None
    novelty: Optional[np.ndarray] = None
    flagged: Optional[np.ndarray] = None

    def __post_init__(self):
        self.origins = np.asarray(self.origins, dtype=np.int64).reshape(-1, 2)
        n = len(self.origins)
        self.sizes = np.broadcast_to(np.asarray(self.sizes, dtype=np.int64).reshape(-1, 2), (n, 2)).copy()
        self.labels = np.asarray(self.labels, dtype=object).reshape(n)
        self.confidence = np.asarray(self.confidence, dtype=np.float64).reshape(n)
        self.unknown = np.asarray(self.unknown, dtype=bool).reshape(n)
        self.class_names = [str(c) for c in self.class_names]
        if self.probabilities is not None:
            self.probabilities = np.asarray(self.probabilities, dtype=np.float64)
            if self.probabilities.shape != (n, len(self.class_names)):
                raise ValueError(
                    f"probabilities: expected shape ({n}, {len(self.class_names)}), got {self.probabilities.shape}"
                )
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(n)
        if self.unfamiliar is not None:
            u = np.asarray(self.unfamiliar)
            if u.shape != (n,) or u.dtype.kind not in "bui":
                raise ValueError(f"unfamiliar: expected a boolean array of shape ({n},), got {u.dtype} {u.shape}")
            self.unfamiliar = u.astype(bool)
        if self.novelty is not None:
            self.novelty = np.asarray(self.novelty, dtype=np.float64)
            if self.novelty.shape != (n,):
                raise ValueError(f"novelty: expected shape ({n},), got {self.novelty.shape}")
        if self.flagged is not None:
            f = np.asarray(self.flagged)
            if f.shape != (n,) or f.dtype.kind not in "bui":
                raise ValueError(f"flagged: expected a boolean array of shape ({n},), got {f.dtype} {f.shape}")
            self.flagged = f.astype(bool)
        if self.image_shape is not None:
            self.image_shape = tuple(int(v) for v in self.image_shape)
        self.maps = {str(k): np.asarray(v) for k, v in (self.maps or {}).items()}
        for name, m in self.maps.items():
            if m.ndim != 2 or (self.image_shape is not None and m.shape != self.image_shape):
                raise ValueError(f"maps[{name!r}]: expected a 2-D array of the image shape "
                                 f"{self.image_shape}, got shape {m.shape}")

    def __len__(self) -> int:
        return len(self.origins)

    @property
    def is_roi(self) -> np.ndarray:
        """True for tiles to inspect (not bulk, or ``flagged`` when the detector set it; unknown tiles included)."""
        if self.flagged is not None:
            return self.unknown | self.flagged
        return self.unknown | (self.labels != self.bulk_label)

    def counts(self) -> Dict[str, int]:
        """Tiles per label (``unknown`` included)."""
        names, counts = np.unique(self.labels.astype(str), return_counts=True)
        return {str(k): int(v) for k, v in zip(names, counts)}

    def summary(self) -> Dict[str, Any]:
        return {
            "method": self.method,
            "n_tiles": len(self),
            "n_roi": int(self.is_roi.sum()),
            "n_unknown": int(self.unknown.sum()),
            "n_unfamiliar": None if self.unfamiliar is None else int(self.unfamiliar.sum()),
            "counts": self.counts(),
            "image_shape": list(self.image_shape) if self.image_shape is not None else None,
            "maps": {k: list(m.shape) for k, m in self.maps.items()},
        }

    def pixel_map(self, values, fill=np.nan) -> np.ndarray:
        """Per-tile ``values`` (n,) painted into an ``image_shape`` array: each
        pixel takes the value of the covering tile whose centre is nearest
        (the first such tile in row order on ties); pixels no tile covers get
        ``fill``. The dtype is that of ``values`` and ``fill`` combined."""
        if self.image_shape is None:
            raise ValueError("pixel_map needs image_shape")
        v = np.asarray(values)
        if v.shape != (len(self),):
            raise ValueError(f"values: expected shape ({len(self)},), got {v.shape}")
        h, w = self.image_shape
        out = np.full((h, w), fill, dtype=np.result_type(v, np.asarray(fill)))
        best = np.full((h, w), np.inf)
        for k, ((r, c), (th, tw)) in enumerate(zip(self.origins, self.sizes)):
            r0, r1, c0, c1 = max(r, 0), min(r + th, h), max(c, 0), min(c + tw, w)
            if r0 >= r1 or c0 >= c1:
                continue
            dy = np.arange(r0, r1) - (r + (th - 1) / 2)
            dx = np.arange(c0, c1) - (c + (tw - 1) / 2)
            d = dy[:, None] ** 2 + dx[None, :] ** 2
            closer = d < best[r0:r1, c0:c1]
            best[r0:r1, c0:c1][closer] = d[closer]
            out[r0:r1, c0:c1][closer] = v[k]
        return out

    def records(self) -> List[Dict[str, Any]]:
        out = []
        for i in range(len(self)):
            r: Dict[str, Any] = {
                "row": int(self.origins[i, 0]),
                "col": int(self.origins[i, 1]),
                "height": int(self.sizes[i, 0]),
                "width": int(self.sizes[i, 1]),
                "label": str(self.labels[i]),
                "confidence": float(self.confidence[i]),
                "unknown": bool(self.unknown[i]),
                "roi": bool(self.is_roi[i]),
            }
            if self.scores is not None:
                r["score"] = float(self.scores[i])
            if self.unfamiliar is not None:
                r["unfamiliar"] = bool(self.unfamiliar[i])
            if self.novelty is not None:
                r["novelty"] = float(self.novelty[i]) if np.isfinite(self.novelty[i]) else None
            if self.probabilities is not None:
                for j, c in enumerate(self.class_names):
                    r[f"p_{c}"] = float(self.probabilities[i, j])
            out.append(r)
        return out

    def to_json(self, path=None) -> str:
        """JSON text (and file, written atomically, when ``path`` is given)."""
        doc = {"summary": self.summary(), "class_names": self.class_names, "bulk_label": self.bulk_label,
               "metadata": self.metadata, "tiles": self.records()}
        text = json.dumps(doc, indent=2, default=_json_default)
        if path is not None:
            with atomic_open(path, "w") as f:
                f.write(text)
        return text

    def to_csv(self, path=None) -> str:
        recs = self.records()
        buf = io.StringIO()
        if recs:
            w = csv.DictWriter(buf, fieldnames=list(recs[0]))
            w.writeheader()
            w.writerows(recs)
        text = buf.getvalue()
        if path is not None:
            with atomic_open(path, "w", newline="") as f:
                f.write(text)
        return text

    def to_dataframe(self):
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover
            raise ImportError("to_dataframe needs pandas (pip install pandas)") from exc
        return pd.DataFrame.from_records(self.records())

    @classmethod
    def from_json(cls, text_or_path) -> "ROIResult":
        from pathlib import Path

        text = Path(text_or_path).read_text() if not str(text_or_path).lstrip().startswith("{") else str(text_or_path)
        doc = json.loads(text)
        tiles = doc["tiles"]
        names = doc["class_names"]
        labels = np.array([t["label"] for t in tiles], dtype=object)
        unknown = np.array([t["unknown"] for t in tiles], dtype=bool)
        flagged = None
        if tiles and "roi" in tiles[0]:  # flags that are not "not the bulk label" were set by the detector
            roi = np.array([t["roi"] for t in tiles], dtype=bool)
            if not np.array_equal(roi, unknown | (labels != doc.get("bulk_label"))):
                flagged = roi
        probs = None
        if tiles and f"p_{names[0]}" in tiles[0]:
            probs = np.array([[t[f"p_{c}"] for c in names] for t in tiles])
        return cls(
            origins=np.array([[t["row"], t["col"]] for t in tiles]).reshape(-1, 2),
            sizes=np.array([[t["height"], t["width"]] for t in tiles]).reshape(-1, 2),
            labels=labels,
            confidence=np.array([t["confidence"] for t in tiles]),
            unknown=unknown,
            class_names=names,
            bulk_label=doc.get("bulk_label"),
            probabilities=probs,
            scores=np.array([t["score"] for t in tiles]) if tiles and "score" in tiles[0] else None,
            image_shape=doc["summary"].get("image_shape"),
            method=doc["summary"].get("method", ""),
            metadata=doc.get("metadata", {}),
            unfamiliar=(np.array([t["unfamiliar"] for t in tiles], dtype=bool)
                        if tiles and "unfamiliar" in tiles[0] else None),
            novelty=(np.array([np.inf if t["novelty"] is None else t["novelty"] for t in tiles], dtype=np.float64)
                     if tiles and "novelty" in tiles[0] else None),
            flagged=flagged,
        )


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
