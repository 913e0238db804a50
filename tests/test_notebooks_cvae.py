"""Executes notebooks/sto_cvae_anomaly.ipynb with small settings (STEMROI_NOTEBOOK_QUICK=1).

The kernel is the interpreter running the tests (a kernelspec written to a
temporary JUPYTER_PATH), so the notebook sees the same stemroi as the tests
whatever the system's python3 kernel points at (fresh CI clones included)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "sto_cvae_anomaly.ipynb"


def test_cvae_notebook_runs_quick(prifti_dir, notebook_kernel, monkeypatch, tmp_path):
    monkeypatch.setenv("STEMROI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("STEMROI_DATA_DIR", str(prifti_dir.parent))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders PNGs
    committed = NOTEBOOK.read_bytes()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=notebook_kernel, timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = "".join(o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", ""))
                      for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "quick: True" in outputs
    assert "All defects" in outputs and "Bulk kept as bulk" in outputs
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
    assert NOTEBOOK.read_bytes() == committed  # executed in memory, never written back
