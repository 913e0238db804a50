"""Shared by the benchmark scripts (not a benchmark itself): where the reference data is."""
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
