"""Regions of interest in a whole image: ``detect`` (supervised tiles), the
CVAE anomaly map, cluster and segmentation maps, and ``ROIResult``, their
common output."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "ROIResult": ".roi",
    "UNKNOWN": ".roi",
    "FeatureNovelty": "._novelty",
    "detect": "._detect",
    "to_unit_range": "._detect",
    "anomaly_map": "._anomaly_map",
    "AnomalyMap": "._anomaly_map",
    "cluster_map": "._cluster_map",
    "segmentation_map": "._segmentation_map",
    "map_descriptors": "._segmentation_map",
    "run_batch": "._batch",
    "make_detector": "._batch",
    "ModelDetector": "._batch",
    "BatchResult": "._batch",
}, submodules=("roi",))
