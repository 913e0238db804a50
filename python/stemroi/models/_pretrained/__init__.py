"""Weights shipped inside the package, and frozen features from them.

``small_cnn_stem.stemroi``: the ``small_cnn`` backbone pretrained on synthetic
STEM patches by ``scripts/pretrain_stem.py`` (recipe and training log in
``small_cnn_stem.json``); registry key ``"small_cnn-stem"``
(:mod:`stemroi.models.weights`), ``weights="stem"`` in :class:`stemroi.PatchClassifier`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["StemCNNFeatures"]


class StemCNNFeatures:
    """Frozen features of a pretrained ``small_cnn``: patches ``(n, h, w)`` on [0, 1] ->
    ``(n, 256)``, the last block's map average- and max-pooled (as in training).

    ``weights``: "stem" (the shipped STEM weights, SHA-256 checked), a registry key or a
    file written by :func:`stemroi.models.weights.save_backbone`. Patches are resized to
    ``input_size`` and contrast-standardised per patch (``patch_contrast``), as in
    pretraining. Deterministic for a given thread count. ``PatchClusterer(features="stem_cnn")``
    uses it.
    """

    precomputed = False

    def __init__(self, weights="stem", *, input_size: int = 64, pooling: str = "avgmax",
                 patch_contrast: str = "standardize", batch_size: int = 256, n_threads: Optional[int] = None):
        self.weights = weights
        self.input_size = input_size
        self.pooling = pooling
        self.patch_contrast = patch_contrast
        self.batch_size = batch_size
        self.n_threads = n_threads

    def _build(self):
        from ..._lib import _core
        from ..weights import resolve_weights

        state, preprocessing, source = resolve_weights(self.weights, download=False, architecture="small_cnn")
        if state is None:
            raise ValueError(f"StemCNNFeatures needs pretrained weights, got weights={self.weights!r}")
        net = _core.PatchNet("small_cnn", 2, input_size=int(self.input_size), preprocessing=preprocessing or "",
                             seed=0, pooling=self.pooling, patch_contrast=self.patch_contrast)
        net.load_backbone_state(state, str(source))
        self.net_, self.source_ = net, source
        return net

    def fit(self, X=None, y=None):
        """Loads and checks the weights (nothing is learnt)."""
        self._build()
        return self

    def transform(self, X) -> np.ndarray:
        from ..._validation import check_n_threads
        from ..classifier import _check_patches

        net = getattr(self, "net_", None) or self._build()
        X = _check_patches(np.asarray(X, dtype=np.float32))
        return np.asarray(net.embed(X, batch_size=int(self.batch_size), n_threads=check_n_threads(self.n_threads)),
                          dtype=np.float32)

    @property
    def n_features(self) -> int:
        net = getattr(self, "net_", None) or self._build()
        return 2 * int(net.feature_dim) if self.pooling == "avgmax" else int(net.feature_dim)

    # the network is rebuilt from the (checked) weights after unpickling
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "net_"}

    def __repr__(self) -> str:
        return f"StemCNNFeatures(weights={self.weights!r})"
