"""Principal component analysis on the C++ core."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {"PCA": "._pca"})
