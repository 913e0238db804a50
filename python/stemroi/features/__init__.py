"""Patch features: VGG16 embeddings from the core, the STEM-pretrained small CNN's
embeddings, label-free spectral and lattice descriptors, and CVAE residual descriptors."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "VGG16Features": ".vgg16",
    "StemCNNFeatures": ".stem_cnn",
    "extract_image_features": ".vgg16",
    "FFTMagnitude": ".descriptors",
    "PolarPowerSpectrum": ".descriptors",
    "LatticeResidual": ".descriptors",
    "Precomputed": ".descriptors",
    "lattice_fit_residual": ".descriptors",
    "make_descriptor": ".descriptors",
    "difference_features": ".cvae_residual",
    "cvae_cluster_workflow": ".cvae_residual",
    "select_features": ".cvae_residual",
    "per_feature_silhouette": ".cvae_residual",
}, submodules=("vgg16", "descriptors", "cvae_residual", "stem_cnn"))
