"""Shared by the benchmark scripts (not a benchmark itself): where the reference data is, and the
planted point-defect set built from it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def data_dir(subfolder: str = "") -> Path:
    """``$STEMROI_DATA_DIR`` (default ``<repo>/../shared/data``), or a subfolder of it;
    exits with a message naming the path when it is absent."""
    base = Path(os.environ.get("STEMROI_DATA_DIR", ROOT.parent / "shared" / "data"))
    d = base / subfolder if subfolder else base
    if not d.is_dir():
        sys.exit(f"{Path(sys.argv[0]).name}: reference data not found at {d} "
                 "(set STEMROI_DATA_DIR to the shared/data folder)")
    return d


def bf16_available() -> tuple[bool, str]:
    """Whether this CPU runs oneDNN's bf16 convolutions (AVX512 BW/VL/DQ), as (ok, why not):
    the benchmarks leave their BF16 variants out where it does not, instead of failing."""
    import torch

    try:
        torch._C._nn.mkldnn_reorder_conv2d_weight(torch.randn(8, 8, 3, 3).to_mkldnn(torch.bfloat16),
                                                  [1, 1], [1, 1], [1, 1], 1)
    except RuntimeError as exc:
        return False, str(exc).splitlines()[0]
    return True, ""


def planted_point_defect_set(folder, per_class: int = 150, seed: int = 0):
    """A third labelled set that no choice was made on: the Prifti SrTiO3 crops.

    Bulk is the bulk testing-set crops; each other class is the same crops with one
    planted point defect of one kind (Ti / Sr vacancy, Ti / Sr column shift, anti-Ti,
    anti-Sr), so the classes differ by one column. ``per_class`` crops of each class,
    drawn independently (seeded), as (patches in [0, 1], labels, class names).
    """
    import numpy as np

    folder = Path(folder)
    names, arrays = ["Bulk"], [np.load(folder / "raw_testing_set_20111206DF_64.npy")]
    for kind in ("TiVacancy", "SrVacancy", "TiFMag", "SrFMag", "antiTi", "antiSr"):
        names.append(kind)
        arrays.append(np.load(folder / f"20111206DFraw_{kind}_defect_64.npy"))
    rng = np.random.default_rng(seed)
    # uint8 scaled to [0, 1], as stemroi.load_patch_folder gives the labelled patch folders
    X = np.concatenate([a[rng.choice(len(a), per_class, replace=False)] for a in arrays]).astype(np.float32) / 255
    return X, np.repeat(np.arange(len(names)), per_class), names
