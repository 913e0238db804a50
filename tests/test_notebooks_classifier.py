"""Execute the CdTe / STO study notebooks with small settings (STEMROI_NOTEBOOK_QUICK=1)."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["cdte_vgg16_study.ipynb", "sto_vgg16_study.ipynb"]


# about 8 s per notebook with the quick settings (subset, 32 x 32, 3 epochs)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, notebook_kernel, ayyubi_dir, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("STEMROI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("STEMROI_DATA_DIR", str(ayyubi_dir.parent))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    committed = (ROOT / "notebooks" / name).read_bytes()
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=notebook_kernel,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "spatial-split accuracy" in text
    assert '"mode": "quick"' in text
    assert (ROOT / "notebooks" / name).read_bytes() == committed  # executed in memory, never written back
