"""The project's safe model file: tensors + string metadata, no pickle.

The layout is safetensors' (u64 header length, JSON header, raw data), so the
tensors can be inspected with other tools; stemroi adds ``format``,
``format_version``, ``architecture``, ``config``, ``preprocessing`` and
``model_card`` metadata. Reading validates every offset and shape before use
and never executes anything from the file.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from ._lib import _core

__all__ = ["save_model_file", "load_model_file"]


def save_model_file(
    path: "os.PathLike[str] | str",
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write ``tensors`` and ``metadata`` atomically (temporary file + rename).

    Metadata values that are not strings are stored as JSON.
    """
    meta: Dict[str, str] = {}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    # np.asarray(order="C") keeps 0-d arrays 0-d (ascontiguousarray would make them (1,))
    arrays = {str(k): np.asarray(v, order="C") for k, v in tensors.items()}
    _core.write_model_file(os.fspath(path), arrays, meta)


def load_model_file(path: "os.PathLike[str] | str") -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Return ``(tensors, metadata)``; metadata values written as JSON are decoded."""
    tensors, meta = _core.read_model_file(os.fspath(path))
    decoded: Dict[str, Any] = {}
    for k, v in meta.items():
        try:
            decoded[k] = json.loads(v) if k not in ("format", "format_version", "architecture") else v
        except json.JSONDecodeError:
            decoded[k] = v
    return dict(tensors), decoded
