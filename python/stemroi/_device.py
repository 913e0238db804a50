"""Where the networks run: the ``device`` parameter of the estimators.

``device`` is "cpu" (the default: bit-reproducible results), "cuda" (the
current CUDA device), "cuda:N" or "auto" ("cuda" when the installed LibTorch
has a usable CUDA device, else "cpu"). The names are checked by the core
(``stemroi._core.resolve_network_device``), which raises ValueError naming the
device for a malformed name or a CUDA device LibTorch cannot use.
"""
from __future__ import annotations

import os
import tempfile

__all__ = ["resolve_device", "place", "on_device"]

DEVICES_DOC = "'cpu', 'cuda', 'cuda:N' or 'auto'"


def resolve_device(device) -> str:
    """The torch device ("cpu", "cuda:0", ...) that ``device`` names; ValueError otherwise."""
    from ._lib import _core

    if not isinstance(device, str):
        raise ValueError(f"device must be {DEVICES_DOC}, got {device!r}")
    return _core.resolve_network_device(device)


def place(network, device):
    """``network`` (a core module built on the CPU) moved to ``device``; returns it."""
    target = resolve_device(device)
    if network.device != target:
        network.to(target)
    return network


def on_device(estimator, device, network_device: str):
    """``estimator`` with its networks on ``device``: itself when ``device`` is None
    or the device of its networks (``network_device``), else a shallow copy whose
    networks are rebuilt there (the estimator itself is left unchanged, so other
    threads may keep using it)."""
    if device is None:
        return estimator
    if resolve_device(device) == network_device:
        return estimator
    moved = object.__new__(type(estimator))  # not copy.copy: pickling would write the networks
    moved.__dict__.update(estimator.__dict__)
    moved.device = device
    with tempfile.TemporaryDirectory(prefix="stemroi-") as tmp:
        path = os.path.join(tmp, "model.stemroi")
        estimator._write_core(path)
        moved._read_core(path)
    return moved
