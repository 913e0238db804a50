"""The ``augment=`` option of the training recipes (PatchClassifier, DefectSegmenter, BulkCVAE).

Acquisition-like changes between microscope sessions, applied per training batch
in the C++ core (``stemroi::augment_batch``), each sample with its own draws from
the training loop's seeded generator (same ``random_state`` -> same batches):

* ``gain``: intensity x exp(u), u ~ U(-gain, gain)
* ``offset``: intensity + u, u ~ U(-offset, offset)
* ``gamma``: intensity ^ exp(u), u ~ U(-gamma, gamma)
* ``noise``: + N(0, s^2), s ~ U(0, noise)
* ``blur``: Gaussian blur, sigma ~ U(0, blur) pixels
* ``scale``: zoom by a factor in [1 / (1 + scale), 1 + scale] (log-uniform)
* ``rotate``: rotation by U(-rotate, rotate) degrees
* ``shear``: scan drift, each row shifted by u * (row - centre) pixels,
  u ~ U(-shear, shear) (not in the "acquisition" group, which predates it)

plus, for the classifier, ``dihedral`` (random rot90 and flips).
"""
from __future__ import annotations

import numbers
from typing import Dict, Tuple

__all__ = ["ACQUISITION", "PRESETS", "AUGMENT_NAMES", "resolve_augment", "augment_options"]

# preset strengths: gain and gamma +-25 % (log), offset +-0.05, noise sd up to 0.03,
# blur sigma up to 1 px, pixel size within 1/1.2 .. 1.2, rotation +-5 degrees
ACQUISITION: Dict[str, float] = dict(gain=0.25, offset=0.05, gamma=0.25, noise=0.03, blur=1.0, scale=0.2, rotate=5.0)
# shear +-0.1 px/row: +-3 px across a 64-px crop, about the drift of a slow scan (kept out of
# "acquisition" so that recipes measured with that group keep their figures)
PRESETS: Dict[str, float] = dict(ACQUISITION, shear=0.1)
_GROUPS = {"intensity": ("gain", "offset", "gamma"), "acquisition": tuple(ACQUISITION)}
AUGMENT_NAMES = ("dihedral",) + tuple(PRESETS) + tuple(_GROUPS)
_LIMITS = dict(gain=2.0, offset=1.0, gamma=2.0, noise=1.0, blur=8.0, scale=0.999, rotate=180.0, shear=1.0)


def resolve_augment(augment, *, true_means: str) -> Tuple[bool, Dict[str, float]]:
    """``(dihedral, strengths)`` of an ``augment=`` value.

    ``augment``: False/None (nothing); True (``true_means``: "dihedral" for the
    classifier, "acquisition" for the U-Net); a name or names joined by "+"
    (``AUGMENT_NAMES``: "dihedral", "gain", "offset", "gamma", "noise", "blur",
    "scale", "rotate", "shear", "intensity" = gain+offset+gamma, "acquisition" =
    gain to rotate), each at its preset strength (``PRESETS``); or a dict
    ``{name: strength}`` (True = the preset strength, 0/False = off).
    """
    if augment is None or augment is False:
        return False, {}
    if augment is True:
        augment = true_means
    if isinstance(augment, str):
        names = [n.strip() for n in augment.split("+") if n.strip()]
        if not names:
            raise ValueError(f"augment: expected names from {AUGMENT_NAMES} joined by '+', got {augment!r}")
        spec = {}
        for n in names:
            if n not in AUGMENT_NAMES:
                raise ValueError(f"augment: unknown augmentation {n!r} in {augment!r}; expected names from "
                                 f"{AUGMENT_NAMES} joined by '+'")
            for k in _GROUPS.get(n, (n,)):
                spec[k] = True
    elif isinstance(augment, dict):
        spec = dict(augment)
    else:
        raise TypeError(f"augment must be a bool, a name string or a dict, got {type(augment).__name__}")
    dihedral = False
    strengths: Dict[str, float] = {}
    for k, v in spec.items():
        if k == "dihedral":
            if not isinstance(v, (bool, numbers.Integral)):
                raise ValueError(f"augment['dihedral'] must be True or False, got {v!r}")
            dihedral = bool(v)
            continue
        if k not in PRESETS:
            raise ValueError(f"augment: unknown augmentation {k!r}; expected one of {('dihedral',) + tuple(PRESETS)}")
        if v is True:
            v = PRESETS[k]
        elif v is False or v is None:
            v = 0.0
        if not isinstance(v, numbers.Real) or not (0.0 <= float(v) <= _LIMITS[k]):
            raise ValueError(f"augment[{k!r}] must be a number in [0, {_LIMITS[k]:g}] or True, got {v!r}")
        if float(v) > 0:
            strengths[k] = float(v)
    return dihedral, strengths


def augment_options(strengths: Dict[str, float]):
    """The core's ``AugmentOptions`` of resolved strengths."""
    from .._lib import _core

    return _core.AugmentOptions(**strengths)
