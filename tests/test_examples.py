"""Run every examples/*.py as a user would (subprocess, --quick, --out tmp_path) and check its output.

Examples that need the reference data are skipped with a reason when it is
absent; those that need an optional package (hyperspy, dask.distributed) are
skipped when it is missing. Every example must have a check below, so a new
example without one fails here.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
DATA_DIR = Path(os.environ.get("STEMROI_DATA_DIR", ROOT.parent / "shared" / "data"))

NEEDS_DATA = {"read_and_tile": DATA_DIR / "ayyubi-stem-defects" / "CdTe_Training_Image.tif",
              "grouped_split": DATA_DIR / "ayyubi-stem-defects" / "CdTe"}
# the ones that train a network start first, so the others run beside them
SLOWEST_FIRST = ["cvae_anomaly_map", "segment_multidefect", "detect_rois", "many_frames_dask", "hyperspy_roundtrip"]
NEEDS_MODULE = {"hyperspy_roundtrip": "hyperspy", "many_frames_dask": "distributed",
                "hyperspy_lazy_stack": "hyperspy", "py4dstem_roi_diffraction": "py4DSTEM"}


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def check_read_and_tile(out: Path, stdout: str):
    s = _summary(out)
    assert s["image_shape"] == [768, 768] and s["n_tiles"] == 144 and s["tile_shape"] == [64, 64]
    assert s["input_shape"] == [16, 3, 224, 224]
    with np.load(out / "tiles.npz") as z:
        assert z["tiles"].shape == (144, 64, 64) and 0.0 <= z["tiles"].min() < z["tiles"].max() <= 1.0
        assert z["origins"][-1].tolist() == [704, 704]


def check_grouped_split(out: Path, stdout: str):
    s = _summary(out)
    assert s["n_patches"] == 1119 and s["n_groups"] >= 2
    assert s["random_twin_leakage"] > 0.5  # near-copies in test: the reason for the spatial split
    assert s["spatial"]["twin_leakage"] == 0.0 and s["spatial"]["n_test"] > 0
    assert set(s["untested_classes"]) >= {"LC", "SF1", "Twin_Bound"}  # documented in docs/data.md


def check_cluster_fft_features(out: Path, stdout: str):
    s = _summary(out)
    assert s["n_patches"] == 45 and s["class_names"] == ["Bulk", "vacancy", "stacking_fault"]
    assert 2 <= s["best_k"] <= 7
    assert 1 / 3 <= s["accuracy_best_k"] <= 1.0 and 1 / 3 <= s["accuracy_true_k"] <= 1.0
    assert f"{s['accuracy_best_k']:.3f}" in stdout


def check_hyperspy_roundtrip(out: Path, stdout: str):
    import hyperspy.api as hs

    s = hs.load(out / "synthetic_rois.hspy")
    assert s.data.shape == (256, 256)
    ax = s.axes_manager.signal_axes[0]
    assert ax.scale == pytest.approx(0.0245) and ax.units == "nm"
    doc = json.loads((out / "rois.json").read_text())
    assert doc["summary"]["n_tiles"] == 16 and doc["metadata"]["unit"] == "nm"
    roi = [t for t in doc["tiles"] if t["roi"]]
    assert roi, "the detector flagged nothing on a frame with planted defects"
    markers = {name: m for name, m in s.metadata.Markers}
    assert set(markers) == {t["label"] for t in roi}  # one marker set per ROI label, bulk not drawn
    assert sum(len(m) for m in markers.values()) == len(roi)
    # markers sit in calibrated units: tile (row, col) -> centre ((col + 31.5) * scale, (row + 31.5) * scale)
    t = roi[0]
    offsets = markers[t["label"]].kwargs["offsets"]
    expected = [(t["col"] + 31.5) * 0.0245, (t["row"] + 31.5) * 0.0245]
    assert any(abs(o[0] - expected[0]) < 1e-6 and abs(o[1] - expected[1]) < 1e-6 for o in offsets)


def check_vgg16_features(out: Path, stdout: str):
    s = _summary(out)
    assert s["feature_shape"] == [36, 512] and s["tile_feature_shape"] == [16, 512]
    with np.load(out / "features.npz") as z:
        assert np.isfinite(z["features"]).all() and z["features"].std() > 0
        assert z["origins"][-1].tolist() == [192, 192]
    # k = number of classes (equal sizes): the Hungarian matching cannot score below 1/3
    assert 1 / 3 <= s["cluster_accuracy"] <= 1.0
    assert f"accuracy {s['cluster_accuracy']:.3f}" in stdout


def check_detect_rois(out: Path, stdout: str):
    from stemroi import ROIResult

    s = _summary(out)
    back = ROIResult.from_json(out / "rois.json")
    assert len(back) == s["n_tiles"] == 16 and back.class_names == ["Bulk", "vacancy", "stacking_fault"]
    np.testing.assert_allclose(back.probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert (out / "rois.csv").read_text().count("\n") == 17  # header + one row per tile
    assert (out / "rois.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 0.0 <= s["validation_accuracy"] <= 1.0 and s["defect_tiles"] > 0
    # trained for real: most defect tiles found, few bulk tiles flagged
    assert 2 * s["defect_tiles_flagged"] >= s["defect_tiles"] and s["n_roi"] - s["defect_tiles_flagged"] <= 2


def check_few_labels(out: Path, stdout: str):
    from stemroi import ROIResult

    s = _summary(out)
    assert s["n_labelled"] == 30 and s["n_unlabelled"] == 30 and s["n_test"] == 30
    assert s["method"] == "patch-classifier (FewLabelClassifier)"
    # measured 1.000 against 0.467 for the small CNN from scratch on the same 10 labels per class
    assert s["accuracy_few_label"] >= 0.85 and s["accuracy_few_label"] > s["accuracy_scratch"]
    assert s["n_pseudo_labelled"] == [15, 19, 24, 27, 28]
    back = ROIResult.from_json(out / "rois.json")
    # string labels: the classes in sorted order, as scikit-learn's classifiers keep them
    assert len(back) == s["n_tiles"] == 16 and back.class_names == ["Bulk", "stacking_fault", "vacancy"]
    assert (out / "rois.csv").read_text().count("\n") == 17
    assert (out / "rois.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 2 * s["defect_tiles_flagged"] >= s["defect_tiles"] > 0


def check_cvae_anomaly_map(out: Path, stdout: str):
    s = _summary(out)
    assert s["n_tiles"] > 0 and s["image_shape"] == [256, 256]
    assert s["map_mean_defect"] > 2 * s["map_mean_bulk"] > 0  # reconstruction fails where defects are
    assert s["n_roi"] >= 1 and s["defect_crops_flagged"] >= 0.8 * s["n_roi"]  # flagged crops hold defects
    assert (out / "anomaly_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_many_frames_dask(out: Path, stdout: str):
    s = _summary(out)
    assert s["frames"] == ["frame_000.npy", "frame_001.npy", "frame_002.npy"] and s["n_tiles"] == [16, 16, 16]
    assert s["first_frame_matches_local"] is True
    assert all((out / f"frame_{i:03d}_rois.csv").exists() for i in range(3))
    assert s["workers"] == 2 and set(s["kinds"]) == {"cvae", "clusterer", "segmenter"}
    for kind in s["kinds"].values():  # every detector kind ran on the cluster, as it does locally
        assert kind["first_frame_matches_local"] is True and len(kind["n_tiles"]) == 3


def check_hyperspy_lazy_stack(out: Path, stdout: str):
    s = _summary(out)
    assert s["n_frames"] == 4 and s["scores_shape"] == [4, 3, 3] and s["round_trip_equal"] is True
    assert s["tile_scale"] == pytest.approx(32 * 0.0245) and s["tile_offset"] == pytest.approx(31.5 * 0.0245)
    assert s["units"] == "nm" and s["time_scale"] == 0.5
    for per_frame in s["markers"].values():
        assert len(per_frame) == 4
    assert [sum(v[k] for v in s["markers"].values()) for k in range(4)] == s["n_roi"]


def check_py4dstem_roi_diffraction(out: Path, stdout: str):
    s = _summary(out)
    assert s["masks_shape"] == [2, 48, 48] and s["patterns_shape"] == [2, 32, 32] and "ROI" in s["labels"]
    assert sum(s["n_positions"].values()) == 48 * 48
    assert s["recall"] >= 0.45 and s["precision"] >= 0.95  # measured 0.51 and 1.00
    assert s["precipitate_disc_contrast"] > 5 and s["host_discs_in_roi"] < 0.05  # measured 9.4 and 0.000


def check_cluster_map(out: Path, stdout: str):
    s = _summary(out)
    assert s["n_patches"] == 60 and 2 <= s["n_clusters"] <= 6
    assert 0.25 <= s["weighted_accuracy"] <= 1.0 and 0.25 <= s["accuracy"] <= 1.0  # 4 classes: chance 0.25
    assert s["n_tiles"] == 16 and sum(s["counts"].values()) == 16
    assert (out / "cluster_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def check_segment_multidefect(out: Path, stdout: str):
    s = _summary(out)
    assert s["channel_names"] == ["interstitial", "vacancy", "background"] and s["maps_shape"] == [3, 128, 128]
    rois = json.loads((out / "rois.json").read_text())
    assert s["n_tiles"] == 16 == len(rois["tiles"]) and rois["summary"]["maps"]["vacancy"] == [128, 128]
    assert s["n_roi"] == sum(t["roi"] for t in rois["tiles"])
    first, last = s["loss_first_last"]
    assert last < 0.5 * first
    for name, (on_defect, on_bulk) in s["contrast"].items():  # each map lights up on its own defects
        assert on_defect > 2 * on_bulk, (name, on_defect, on_bulk)
    with np.load(out / "maps.npz") as z:
        assert 0.0 <= z["maps"].min() and z["maps"].max() <= 1.0
    assert (out / "heatmaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CHECKS = {name[len("check_"):]: f for name, f in dict(globals()).items() if name.startswith("check_")}


def _skip_reason(name: str):
    if name in NEEDS_DATA and not NEEDS_DATA[name].exists():
        return f"real reference data not found at {NEEDS_DATA[name]} (set STEMROI_DATA_DIR)"
    if name in NEEDS_MODULE and importlib.util.find_spec(NEEDS_MODULE[name]) is None:
        return f"optional package {NEEDS_MODULE[name]!r} is not installed"
    return None


def _run(script: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], cwd=out,
                          capture_output=True, text=True, timeout=240, env={**os.environ, "MPLBACKEND": "Agg"})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every runnable example at once, a few at a time: on a loaded machine most of an
    example's wall time is spent importing torch/sklearn, which overlaps well."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {}
        for script in sorted(EXAMPLES, key=lambda p: (p.stem not in SLOWEST_FIRST, p.stem)):
            if script.stem in CHECKS and _skip_reason(script.stem) is None:
                out = tmp_path_factory.mktemp(script.stem)
                futures[script.stem] = (pool.submit(_run, script, out), out)
        yield futures


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script: Path, runs):
    name = script.stem
    assert name in CHECKS, f"examples/{script.name} has no output check in tests/test_examples.py"
    doc = script.read_text().split('"""')[1]
    assert "python examples/" + script.name in doc, f"{script.name}: the docstring must say how to run it"
    reason = _skip_reason(name)
    if reason:
        pytest.skip(reason)
    future, out = runs[name]
    proc = future.result()
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout}\n{proc.stderr}"
    CHECKS[name](out, proc.stdout)


def test_examples_readme_lists_every_example():
    readme = (ROOT / "examples" / "README.md").read_text()
    missing = [p.name for p in EXAMPLES if p.name not in readme]
    assert not missing, f"examples/README.md does not list {missing}"
