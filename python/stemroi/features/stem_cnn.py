"""Frozen features of the STEM-pretrained ``small_cnn`` shipped with the package
(:class:`StemCNNFeatures`; defined with the weights in :mod:`stemroi.models._pretrained`)."""
from ..models._pretrained import StemCNNFeatures

__all__ = ["StemCNNFeatures"]
