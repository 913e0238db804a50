"""From an image to network inputs: regular patch grids (``PatchGrid``),
per-patch transforms (resize, 3 channels, normalisation) and filters."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "PatchGrid": ".grid",
    "extract_patches": ".grid",
    "resize": ".transforms",
    "resample": "._resample",
    "to_rgb": ".transforms",
    "normalize": ".transforms",
    "blur": ".transforms",
    "divide_by_max": ".transforms",
    "minmax_scale": ".transforms",
    "prepare_patches": ".transforms",
    "normalization_preset": ".transforms",
    "PRESETS": ".transforms",
    "RESIZE_METHODS": ".transforms",
    "gaussian_filter": ".filters",
    "uniform_filter": ".filters",
}, submodules=("grid", "transforms", "filters"))
