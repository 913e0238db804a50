"""Load the compiled core after LibTorch, with an actionable error on mismatch.

``stemroi._core`` links the LibTorch of the torch it was built against. Python
torch is imported first so that its copy of LibTorch is the one in the
process; if the versions differ, symbols clash, so we refuse early and say
how to rebuild (as torchvision's ``extension.py`` does).
"""
from __future__ import annotations

import torch  # noqa: F401  (must precede _core)

try:
    from . import _core  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"stemroi's compiled core could not be loaded ({exc}). It must be built against the "
        f"torch in this environment (torch {torch.__version__}); rebuild with "
        "`pip install --no-build-isolation --force-reinstall --no-deps .` from the source tree."
    ) from exc


def _release(v: str) -> tuple:
    """(major, minor, patch) of a torch version string ('2.15.0+cu132', '1.13.0a0')."""
    import re

    return tuple(int(re.match(r"\d+", part).group()) for part in v.split("+")[0].split(".")[:3])


BUILT_AGAINST_TORCH = _core.torch_version

if _release(BUILT_AGAINST_TORCH)[:2] != _release(torch.__version__)[:2]:  # pragma: no cover
    raise ImportError(
        f"stemroi._core was built against LibTorch {BUILT_AGAINST_TORCH}, but torch "
        f"{torch.__version__} is imported. Rebuild stemroi in this environment: "
        "`pip install --no-build-isolation --force-reinstall --no-deps .`"
    )
if _release(BUILT_AGAINST_TORCH) != _release(torch.__version__):  # pragma: no cover
    import warnings

    warnings.warn(
        f"stemroi._core was built against torch {BUILT_AGAINST_TORCH}, but torch {torch.__version__} is "
        "running (same minor release, so it loads); rebuild stemroi if anything misbehaves: "
        "`pip install --no-build-isolation --force-reinstall --no-deps .`",
        stacklevel=2,
    )

__all__ = ["_core", "BUILT_AGAINST_TORCH"]
