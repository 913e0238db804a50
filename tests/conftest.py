"""Shared fixtures: the real reference data (skipped with a reason when absent)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("STEMROI_DATA_DIR", ROOT.parent / "shared" / "data"))
AYYUBI = DATA_DIR / "ayyubi-stem-defects"
PRIFTI = DATA_DIR / "prifti-sto-cvae"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real reference data not found at {path} (set STEMROI_DATA_DIR to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require(DATA_DIR)


@pytest.fixture(scope="session")
def ayyubi_dir() -> Path:
    return _require(AYYUBI)


@pytest.fixture(scope="session")
def prifti_dir() -> Path:
    return _require(PRIFTI)


def _repo_module(relpath: str, name: str):
    """A script of the repository (benchmarks/, scripts/) imported by path; skipped where it is absent."""
    import importlib.util

    path = ROOT / relpath
    if not path.is_file():
        pytest.skip(f"{path} is not here (tests run outside the repository)")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def crossimage():
    """benchmarks/_crossimage.py (the CdTe frame, its reference regions and the acquisition shifts of the
    cross-image protocol); skipped when the CdTe patches are absent."""
    _require(AYYUBI / "CdTe")
    return _repo_module("benchmarks/_crossimage.py", "_crossimage")


@pytest.fixture(scope="session")
def pretrain_script():
    """scripts/pretrain_stem.py, the recipe of the shipped STEM weights."""
    return _repo_module("scripts/pretrain_stem.py", "_pretrain_stem")


@pytest.fixture(scope="session")
def planted_point_defects(prifti_dir):
    """150 Prifti SrTiO3 crops per class: bulk, and bulk with one planted point defect of 6 kinds, in
    [0, 1], with labels and class names (benchmarks/_common.py builds the same set for the benchmarks)."""
    return _repo_module("benchmarks/_common.py", "_bench_common").planted_point_defect_set(prifti_dir)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def cdte_fft_features(ayyubi_dir):
    """Real features for the numeric engine: |fftshift(fft2)| of channel 0 of
    every CdTe patch, central 16x16 block (the low frequencies), float64
    (n=1119, d=256), with the class names from the file names."""
    import tifffile

    files = sorted((ayyubi_dir / "CdTe").glob("*.tif"))
    if not files:
        pytest.skip(f"no CdTe TIFF patches in {ayyubi_dir / 'CdTe'}")
    feats, classes = [], []
    for f in files:
        img = np.asarray(tifffile.imread(f))
        ch0 = img[..., 0] if img.ndim == 3 else img
        mag = np.abs(np.fft.fftshift(np.fft.fft2(ch0.astype(np.float64) / 255.0)))
        c0, c1 = mag.shape[0] // 2, mag.shape[1] // 2
        feats.append(mag[c0 - 8 : c0 + 8, c1 - 8 : c1 + 8].ravel())
        classes.append(f.stem.rsplit("_", 1)[0])
    return np.ascontiguousarray(feats, dtype=np.float64), np.asarray(classes)


@pytest.fixture
def notebook_kernel(tmp_path, monkeypatch) -> str:
    """Name of a temporary kernelspec that runs this interpreter (the venv's python),
    so executed notebooks see the same stemroi as the tests whatever kernels the
    machine has (fresh CI clones included)."""
    import json
    import sys

    for mod in ("nbformat", "nbclient", "ipykernel"):
        pytest.importorskip(mod)
    name = "stemroi-test"
    spec_dir = tmp_path / "jupyter" / "kernels" / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "stemroi test", "language": "python"}))
    old = os.environ.get("JUPYTER_PATH")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter") + (os.pathsep + old if old else ""))
    return name
