"""The project's safe model file: tensors + string metadata, no pickle.

The layout is safetensors' (u64 header length, JSON header, raw data), so the
tensors can be inspected with other tools; stemroi adds ``format``,
``format_version``, ``architecture``, ``config``, ``preprocessing`` and
``model_card`` metadata. Reading validates every offset and shape before use
and never executes anything from the file.

Files are tamper-evident: the writer stores ``tensor_sha256`` (SHA-256 of the
data region) and ``header_sha256`` (SHA-256 of the canonical header without
these two fields: ``json.dumps(header, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``) in the metadata, and every reader (this module, and the
core's own loaders such as ``BulkCVAE.load``) verifies both: a changed byte
anywhere in the file raises :class:`OSError` naming the file and the hash
that failed. Files written before the hashes existed (``format_version`` 1)
still load, with a :class:`UserWarning` that they carry no hash.

The stored hashes catch corruption and edits by tools that do not update
them; they are not a signature. To trust a file from elsewhere, pin it:
``load_model_file(path, sha256=...)`` (and the estimators' ``load(path,
sha256=...)``) refuses a file whose SHA-256 (of the whole file, as
``sha256sum`` prints it; :func:`file_sha256`) differs from the given one.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from .._lib import _core

__all__ = ["save_model_file", "load_model_file", "file_sha256"]

#: Metadata fields holding the file's own hashes (lowercase hex), set by the writer.
HASH_FIELDS = ("tensor_sha256", "header_sha256")


def save_model_file(
    path: "os.PathLike[str] | str",
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write ``tensors`` and ``metadata`` atomically (temporary file + rename).

    Metadata values that are not strings are stored as JSON.
    """
    meta = _encode_metadata(metadata)
    # np.asarray(order="C") keeps 0-d arrays 0-d (ascontiguousarray would make them (1,))
    arrays = {str(k): np.asarray(v, order="C") for k, v in tensors.items()}
    _core.write_model_file(os.fspath(path), arrays, meta)


def load_model_file(
    path: "os.PathLike[str] | str", sha256: Optional[str] = None
) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Return ``(tensors, metadata)``; metadata values written as JSON are decoded.

    The file's stored hashes are verified (:class:`OSError` on a mismatch).
    ``sha256``: the expected SHA-256 of the whole file (64 hex digits, see
    :func:`file_sha256`); a file with another hash is refused with both hashes
    in the message.
    """
    tensors, meta = _core.read_model_file(os.fspath(path), _check_sha256(sha256))
    _warn_if_unhashed(path, meta)
    return dict(tensors), _decode_metadata(meta)


def file_sha256(path: "os.PathLike[str] | str") -> str:
    """SHA-256 (lowercase hex) of the whole file, the value ``sha256=`` pins."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_sha256(sha256: Optional[str]) -> str:
    """The pinned hash as the core takes it ('' for none); ValueError naming a malformed one."""
    if sha256 is None:
        return ""
    if not isinstance(sha256, str):
        raise TypeError(f"sha256 must be a hex string or None, got {type(sha256).__name__}")
    return sha256.strip()


def _warn_if_unhashed(path, meta: Mapping[str, str]) -> None:
    """UserWarning for a file written before model files carried hashes."""
    if not all(k in meta for k in HASH_FIELDS):
        warnings.warn(
            f"model file {os.fspath(path)} carries no hash (format_version {meta.get('format_version', '?')}): "
            "corruption cannot be detected; save it again to add one",
            UserWarning,
            stacklevel=3,
        )


def _encode_metadata(metadata: Mapping[str, Any] | None) -> Dict[str, str]:
    """Metadata as the file stores it: strings kept, anything else as JSON."""
    return {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}


def _decode_metadata(meta: Mapping[str, str]) -> Dict[str, Any]:
    """Stored metadata with the values written as JSON decoded."""
    decoded: Dict[str, Any] = {}
    for k, v in meta.items():
        try:
            decoded[k] = json.loads(v) if k not in ("format", "format_version", "architecture", *HASH_FIELDS) else v
        except json.JSONDecodeError:
            decoded[k] = v
    return decoded
