"""Executes notebooks/multidefect_segmentation.ipynb with small settings
(STEMROI_NOTEBOOK_QUICK=1) on a kernel that runs this interpreter."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "multidefect_segmentation.ipynb"


def test_notebook_runs_quick(ayyubi_dir, notebook_kernel, monkeypatch):
    monkeypatch.setenv("STEMROI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("STEMROI_DATA_DIR", str(ayyubi_dir.parent))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    committed = NOTEBOOK.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=notebook_kernel, timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "silhouette-chosen k" in outputs
    # seamless tiling: a constant image gives a constant map
    m = re.search(r"constant image -> map range per channel: (\S+)", outputs)
    assert m and float(m.group(1)) < 1e-4, m
    # every pseudo-label rule leaves bulk patches empty
    for rule in ("deviation", "lattice", "cvae"):
        m = re.search(rf"{rule}\s+mask coverage per class: Bulk (\S+),", outputs)
        assert m and float(m.group(1)) == 0.0, (rule, m)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert NOTEBOOK.read_bytes() == committed  # executed in memory, never written back
