"""Overlap-aware evaluation: overlap groups of shifted crops, grouped and
spatial splits that do not leak, a leakage report and a label audit."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "overlap_groups": "._overlap",
    "mosaic_positions": "._overlap",
    "spatial_blocks": "._overlap",
    "purge_overlapping": "._overlap",
    "exact_overlap_positions": "._overlap",
    "grouped_train_test_split": "._overlap",
    "spatial_train_test_split": "._overlap",
    "GroupedStratifiedKFold": "._overlap",
    "leakage_report": "._overlap",
    "label_audit": "._overlap",
})
