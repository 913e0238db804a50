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


def _major_minor(v: str) -> tuple:
    return tuple(v.split("+")[0].split(".")[:2])


if _major_minor(_core.torch_version) != _major_minor(torch.__version__):  # pragma: no cover
    raise ImportError(
        f"stemroi._core was built against LibTorch {_core.torch_version}, but torch "
        f"{torch.__version__} is imported. Rebuild stemroi in this environment: "
        "`pip install --no-build-isolation --force-reinstall --no-deps .`"
    )

__all__ = ["_core"]
