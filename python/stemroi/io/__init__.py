"""Reading data: images with their calibration, labelled patch folders,
synthetic STEM frames with ground truth, and the safe model-file format."""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "Calibration": "._readers",
    "SUPPORTED_SUFFIXES": "._readers",
    "read_image": "._readers",
    "read_image_with_calibration": "._readers",
    "read_stack": "._readers",
    "StackOfFramesError": "._readers",
    "iter_frames": "._readers",
    "scale_to_unit": "._readers",
    "to_grey": "._readers",
    "PatchDataset": ".patch_folders",
    "load_patch_folder": ".patch_folders",
    "class_from_filename": ".patch_folders",
    "save_model_file": ".model_file",
    "load_model_file": ".model_file",
    "file_sha256": ".model_file",
}, submodules=("synth", "model_file", "patch_folders"))
