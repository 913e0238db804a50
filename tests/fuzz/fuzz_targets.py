"""The Python fuzz targets: each takes the bytes of a file and must either
read it or refuse it with one of the documented errors. Any other exception
(KeyError, IndexError, struct.error, RuntimeError, ...) or a crash is a bug.

Used by atheris (``atheris_target.py``, run through ``scripts/fuzz.sh``) and
by the pytest regression test (``test_fuzz_targets.py``), which runs the same
targets on generated seeds and deterministic mutations of them.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, Tuple, Type

# tifffile logs every malformed tag it skips; the fuzzer would drown in them.
logging.getLogger("tifffile").setLevel(logging.CRITICAL)

_TMP = Path(tempfile.mkdtemp(prefix="stemroi-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def _write(data: bytes, suffix: str) -> Path:
    path = _TMP / f"input{suffix}"
    path.write_bytes(data)
    return path


def _suffixes():
    from stemroi.io import SUPPORTED_SUFFIXES

    return SUPPORTED_SUFFIXES


def read_image(data: bytes) -> None:
    """``stemroi.io.read_image`` with the suffix chosen by the first byte (so a
    TIFF body under .png etc. is tried too)."""
    from stemroi import _hdf5
    from stemroi.io import read_image as _read_image

    # well under libFuzzer's -timeout=30: a file libhdf5 loops on is refused, not reported as a hang
    _hdf5.PROBE_TIMEOUT = 5.0
    if not data:
        return
    suffixes = _suffixes()
    path = _write(data[1:], suffixes[data[0] % len(suffixes)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _read_image(path)
        except (ValueError, TypeError, OSError, ImportError):
            # ImportError: an optional microscope-format reader (rosettasciio) is absent
            pass


def model_file(data: bytes) -> None:
    from stemroi.io import load_model_file

    path = _write(data, ".stemroi")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # version-1 files warn that they carry no hash
        try:
            load_model_file(path)
        except OSError:
            pass


def torch_weights(data: bytes) -> None:
    from stemroi.models.weights import WeightsError, load_torchvision_state

    path = _write(data, ".pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_torchvision_state(path)
        except WeightsError:
            pass


def keras_h5(data: bytes) -> None:
    """``load_keras_h5`` less its child-process probe (``stemroi._hdf5``), which costs 0.15 s a file
    and would cut the fuzzer to a few runs a second. atheris_target.py runs this target under an
    address-space limit instead: an allocation libhdf5 cannot make becomes an HDF5 error there, as it
    does in the probe's child (which refuses the file); one in stemroi's own code is a MemoryError,
    which the target reports."""
    from stemroi import _hdf5
    from stemroi.models.weights import WeightsError, load_keras_h5

    path = _write(data, ".h5")
    probe, _hdf5.probe = _hdf5.probe, lambda *args, **kwargs: None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_keras_h5(path)
        except (WeightsError, OSError):
            pass
        finally:
            _hdf5.probe = probe


TARGETS: Dict[str, Callable[[bytes], None]] = {
    "read_image": read_image,
    "model_file": model_file,
    "torch_weights": torch_weights,
    "keras_h5": keras_h5,
}

# Modules atheris instruments for coverage feedback, per target.
INSTRUMENT: Dict[str, Tuple[str, ...]] = {
    "read_image": ("stemroi", "tifffile", "numpy.lib.format"),
    "model_file": ("stemroi",),
    "torch_weights": ("stemroi", "torch.serialization", "torch._weights_only_unpickler"),
    "keras_h5": ("stemroi", "h5py"),
}
