"""The trained models: the patch classifier (small CNN, VGG16 or MobileNetV2
backbone), the few-label classifier, the bulk CVAE, the U-Net defect segmenter, temperature scaling,
and the one registry of pretrained weights."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "PatchClassifier": ".classifier",
    "FewLabelClassifier": ".few_label",
    "MobileNetV2": ".mobilenet",
    "MobileNetV2Classifier": ".mobilenet",
    "BulkCVAE": ".cvae",
    "preprocess_crops": ".cvae",
    "random_crops": ".cvae",
    "anm_scores": ".cvae",
    "local_energy_scores": ".cvae",
    "DefectSegmenter": ".unet",
    "pseudo_label_masks": ".unet",
    "pseudo_label_scores": ".unet",
    "residual_pseudo_labels": ".unet",
    "local_deviation": ".unet",
    "make_multi_defect_samples": ".unet",
    "unet_encoder_state": ".unet",
    "fit_temperature": ".calibration",
    "softmax": ".calibration",
}, submodules=("classifier", "few_label", "mobilenet", "cvae", "unet", "calibration", "weights"))
