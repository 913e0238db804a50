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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
