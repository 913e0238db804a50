from __future__ import annotations

import importlib


def require(module: str, extra: str):
    """Import ``module`` or raise ImportError naming the pip extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this feature needs the '{module.split('.')[0]}' package: pip install \"stemroi[{extra}]\""
        ) from exc


def calibration(pixel_size, unit):
    from ..io._readers import Calibration

    return Calibration(pixel_size=pixel_size, unit=unit)
