"""Old (0.1) import paths keep working for one release, with a FutureWarning
that names the new path, and give the very same objects."""
import importlib
import subprocess
import sys

import pytest

import stemroi
from stemroi import _compat

# one representative name per old flat module
OLD_NAMES = {
    "anomaly": "BulkCVAE", "calibration": "fit_temperature", "classifier": "PatchClassifier",
    "clustering": "PatchClusterer", "cvae_features": "cvae_cluster_workflow", "datasets": "load_patch_folder",
    "descriptors": "FFTMagnitude", "filters": "gaussian_filter", "grouping": "overlap_groups",
    "mobilenet": "MobileNetV2Classifier", "model_file": "save_model_file", "patches": "PatchGrid",
    "plots": "plot_rois", "plots_cluster": "plot_cluster_map", "preprocess": "resize", "roi": "ROIResult",
    "segment": "DefectSegmenter", "synth": "make_image", "weights": "resolve_weights",
}


def test_every_moved_module_is_covered():
    assert set(OLD_NAMES) == set(_compat.MOVED_MODULES)


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_module_path_warns_and_resolves(old):
    sys.modules.pop(f"stemroi.{old}", None)
    with pytest.warns(FutureWarning, match=rf"stemroi\.{old} is deprecated .* use stemroi\.") as record:
        module = importlib.import_module(f"stemroi.{old}")
    assert record[0].filename == __file__, "the warning must point at the importing line"
    name = OLD_NAMES[old]
    value = getattr(module, name)
    new = next(importlib.import_module(t) for t in module._targets if hasattr(importlib.import_module(t), name))
    assert value is getattr(new, name)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        module.not_a_name


@pytest.mark.parametrize("name", sorted(stemroi._MOVED_NAMES))
def test_old_top_level_name_warns_and_resolves(name):
    sub = importlib.import_module(f"stemroi.{stemroi._MOVED_NAMES[name]}")
    with pytest.warns(FutureWarning, match=rf"stemroi\.{name} is deprecated .* stemroi\.{stemroi._MOVED_NAMES[name]}\.{name}"):
        value = getattr(stemroi, name)
    assert value is getattr(sub, name)


def test_curated_top_level_api():
    assert 20 <= len(stemroi.__all__) <= 28
    for name in stemroi.__all__:
        assert getattr(stemroi, name) is not None
    for name in ("PatchGrid", "PCA", "KMeans", "VGG16Features", "PatchClassifier", "BulkCVAE", "DefectSegmenter",
                 "detect", "ROIResult", "read_image", "spatial_train_test_split", "select_n_clusters"):
        assert name in stemroi.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        stemroi.nope


def test_subpackage_names_resolve():
    for sub in ("io", "preprocessing", "features", "decomposition", "cluster", "models", "model_selection",
                "detection", "metrics", "plotting"):
        module = importlib.import_module(f"stemroi.{sub}")
        for name in module.__all__:
            assert getattr(module, name) is not None, f"stemroi.{sub}.{name}"


def test_import_stemroi_is_light():
    # the curated API loads lazily: importing stemroi pulls in neither torch nor the core
    code = "import sys, stemroi; print('torch' in sys.modules, 'stemroi._core' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
